"""A local HTTP stand-in for the Hugging Face Hub's file endpoints, serving a mirror folder.

It answers ``HEAD``/``GET /<org>/<name>/resolve/<revision>/<file>`` the way the Hub does for a
plain (non-Xet) file — ``X-Repo-Commit``, ``ETag``/``X-Linked-Etag``, ``Content-Length`` — so the
real ``huggingface_hub`` client (``HF_ENDPOINT=http://127.0.0.1:<port>``) downloads, caches and
revalidates through its own code. Only loopback; it stops with the test.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _handler(root: Path, log: list[str]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _file(self) -> Path | None:
            parts = unquote(self.path.split("?")[0]).strip("/").split("/")
            if len(parts) < 5 or parts[2] != "resolve":
                return None
            path = root.joinpath(parts[0], parts[1], *parts[4:])
            return path if path.is_file() else None

        def _headers(self, path: Path | None) -> None:
            log.append(f"{self.command} {self.path}")
            if path is None:
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = path.read_bytes()
            etag = hashlib.sha256(body).hexdigest()
            self.send_response(200)
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("ETag", f'"{etag}"')
            self.send_header("X-Linked-Etag", f'"{etag}"')
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()

        def do_HEAD(self) -> None:
            self._headers(self._file())

        def do_GET(self) -> None:
            path = self._file()
            self._headers(path)
            if path is not None:
                self.wfile.write(path.read_bytes())

        def log_message(self, *_args: object) -> None:
            pass

    return Handler


@contextmanager
def serve(root: Path) -> Iterator[tuple[str, list[str]]]:
    """Serve ``root`` (``<org>/<name>/<file>``) on a free loopback port; yield (endpoint, request log)."""
    log: list[str] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(root, log))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", log
    finally:
        server.shutdown()
        server.server_close()
