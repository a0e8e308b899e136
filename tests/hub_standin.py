"""A local HTTP stand-in for the Hugging Face Hub, on loopback only, for the real ``huggingface_hub`` client.

It answers the endpoints that the client's code calls for what resmg_zoo does, the way the Hub does:

- downloads: ``HEAD``/``GET /<org>/<name>/resolve/<revision>/<file>`` with ``X-Repo-Commit``,
  ``ETag``/``X-Linked-Etag`` and ``Content-Length``; ``<revision>`` is ``main`` or a commit id, and an
  unknown one is a 404 with ``X-Error-Code: RevisionNotFound``;
- uploads: ``POST /api/repos/create``, ``POST /api/validate-yaml`` (the card's metadata must parse,
  model-index included), ``POST /api/models/<id>/preupload/<rev>`` (``.safetensors`` as
  LFS, the rest as regular files), the LFS batch API ``POST /<id>.git/info/lfs/objects/batch`` with
  a basic ``PUT`` transfer (the object's sha256 checked on arrival), and ``POST
  /api/models/<id>/commit/<rev>`` (the client's NDJSON), which makes a new commit on ``main``;
- ``POST /api/models/<id>/paths-info/<rev>``: each file's size, git blob id and, for an LFS file, its
  sha256 (``lfs.oid``), as ``HfApi.get_paths_info`` reads them.

Every folder ``<org>/<name>`` of ``root`` is a repo whose first commit (:data:`COMMIT`) holds its files.
The client talks to it through ``HF_ENDPOINT=http://127.0.0.1:<port>`` (and ``HF_HUB_DISABLE_XET=1``
for uploads: Xet storage is not imitated). It stops with the test.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Store:
    """The repos: for each id, its commits (oldest first) as ``(commit id, {path: bytes})``; LFS objects by sha256."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.repos: dict[str, list[tuple[str, dict[str, bytes]]]] = {}
        self.lfs: dict[str, bytes] = {}
        self.lock = threading.Lock()

    def commits(self, repo_id: str) -> list[tuple[str, dict[str, bytes]]] | None:
        if repo_id not in self.repos:
            folder = self.root / repo_id
            if not folder.is_dir():
                return None
            self.repos[repo_id] = [(COMMIT, {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()})]
        return self.repos[repo_id]

    def at(self, repo_id: str, revision: str) -> tuple[str, dict[str, bytes]] | str | None:
        """The commit ``revision`` names (``main``: the newest); ``"no repo"`` or ``None`` (no such revision)."""
        commits = self.commits(repo_id)
        if commits is None:
            return "no repo"
        if revision == "main":
            return commits[-1] if commits else ("0" * 40, {})  # a new repo: nothing committed yet
        return next((c for c in commits if c[0] == revision), None)


def _handler(store: Store, log: list[str]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status: int, value: object, headers: dict[str, str] | None = None) -> None:
            self._send(status, json.dumps(value).encode(), {"Content-Type": "application/json", **(headers or {})})

        def _error(self, status: int, code: str, message: str) -> None:
            self._json(status, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message})

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _endpoint(self) -> str:
            return f"http://{self.headers['Host']}"

        # ---------------------------------------------------------------- downloads
        def _resolve(self) -> None:
            parts = unquote(self.path.split("?")[0]).strip("/").split("/")
            if len(parts) < 5 or parts[2] != "resolve":
                return self._error(404, "NotFound", f"no such endpoint {self.path}")
            repo_id, revision, path = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
            with store.lock:
                found = store.at(repo_id, revision)
            if found == "no repo":
                return self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
            if found is None:
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            commit, files = found
            if path not in files:
                return self._error(404, "EntryNotFound", f"{path} does not exist at {revision}")
            body = files[path]
            etag = hashlib.sha256(body).hexdigest() if path.endswith(".safetensors") else git_blob_id(body)
            headers = {"X-Repo-Commit": commit, "ETag": f'"{etag}"', "Content-Type": "application/octet-stream"}
            if path.endswith(".safetensors"):
                headers |= {"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(body))}
            self._send(200, body, headers)

        def do_HEAD(self) -> None:
            log.append(f"HEAD {self.path}")
            self._resolve()

        def do_GET(self) -> None:
            log.append(f"GET {self.path}")
            self._resolve()

        # ---------------------------------------------------------------- uploads
        def do_PUT(self) -> None:
            log.append(f"PUT {self.path}")
            oid, data = self.path.rsplit("/", 1)[-1], self._body()
            if hashlib.sha256(data).hexdigest() != oid:
                return self._error(400, "BadRequest", "the uploaded object does not have its sha256")
            with store.lock:
                store.lfs[oid] = data
            self._send(200)

        def do_POST(self) -> None:
            path = unquote(self.path.split("?")[0])
            log.append(f"POST {path}")
            body = self._body()
            if path == "/api/repos/create":
                request = json.loads(body)
                repo_id = f"{request['organization']}/{request['name']}"
                with store.lock:
                    if store.commits(repo_id) is None:
                        store.repos[repo_id] = []
                return self._json(200, {"url": f"{self._endpoint()}/{repo_id}", "name": repo_id})
            if path == "/api/validate-yaml":
                return self._validate_yaml(json.loads(body)["content"])
            if path.endswith(".git/info/lfs/objects/batch"):
                request = json.loads(body)
                objects = []
                for obj in request["objects"]:
                    href = f"{self._endpoint()}/_lfs/{obj['oid']}"
                    actions = {} if obj["oid"] in store.lfs else {"actions": {"upload": {"href": href}}}
                    objects.append({"oid": obj["oid"], "size": obj["size"], "authenticated": True, **actions})
                return self._json(200, {"transfer": "basic", "objects": objects})
            parts = path.strip("/").split("/")  # api, models, org, name, <endpoint>, revision
            if len(parts) < 6 or parts[:2] != ["api", "models"]:
                return self._error(404, "NotFound", f"no such endpoint {path}")
            repo_id, action, revision = "/".join(parts[2:4]), parts[4], "/".join(parts[5:])
            with store.lock:
                found = store.at(repo_id, revision)
            if found == "no repo":
                return self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
            if action == "preupload":
                files = json.loads(body)["files"]
                return self._json(
                    200,
                    {
                        "files": [
                            {
                                "path": f["path"],
                                "uploadMode": "lfs" if f["path"].endswith(".safetensors") else "regular",
                                "shouldIgnore": False,
                                "oid": None,
                            }
                            for f in files
                        ]
                    },
                )
            if action == "commit":
                return self._commit(repo_id, found, body)
            if action == "paths-info":
                return self._paths_info(found, parse_qs(body.decode()))
            return self._error(404, "NotFound", f"no such endpoint {path}")

        def _commit(self, repo_id: str, parent: object, body: bytes) -> None:
            files = dict(parent[1]) if isinstance(parent, tuple) else {}
            for line in body.splitlines():
                item = json.loads(line)
                value = item["value"]
                if item["key"] == "file":
                    files[value["path"]] = base64.b64decode(value["content"])
                elif item["key"] == "lfsFile":
                    if value["oid"] not in store.lfs:
                        return self._error(400, "BadRequest", f"LFS object {value['oid']} was never uploaded")
                    files[value["path"]] = store.lfs[value["oid"]]
                elif item["key"] in ("deletedFile",):
                    files.pop(value["path"], None)
            with store.lock:
                commits = store.commits(repo_id)
                assert commits is not None
                seed = json.dumps([len(commits), sorted((p, git_blob_id(d)) for p, d in files.items())]).encode()
                commit = hashlib.sha1(seed).hexdigest()
                commits.append((commit, files))
            self._json(200, {"commitUrl": f"{self._endpoint()}/{repo_id}/commit/{commit}", "commitOid": commit})

        def _validate_yaml(self, content: str) -> None:
            """The card's metadata must parse, and its model-index as the Hub reads it."""
            import yaml
            from huggingface_hub.repocard_data import model_index_to_eval_results

            try:
                front = content.split("---\n")[1] if content.startswith("---\n") else ""
                data = yaml.safe_load(front) or {}
                if not isinstance(data, dict):
                    raise ValueError("the metadata is not a mapping")
                if "model-index" in data:
                    model_index_to_eval_results(data["model-index"])
            except Exception as err:  # any parse or schema problem is the card's error
                return self._json(400, {"errors": [{"message": str(err)}], "warnings": []})
            self._json(200, {"errors": [], "warnings": []})

        def _paths_info(self, found: object, form: dict[str, list[str]]) -> None:
            if not isinstance(found, tuple):
                return self._error(404, "RevisionNotFound", "Invalid rev id")
            files = found[1]
            out = []
            for path in form.get("paths", []):
                if path not in files:
                    continue
                data = files[path]
                info = {"type": "file", "path": path, "size": len(data), "oid": git_blob_id(data)}
                if path.endswith(".safetensors"):
                    info["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
                out.append(info)
            self._json(200, out)

        def log_message(self, *_args: object) -> None:
            pass

    return Handler


@contextmanager
def serve(root: Path) -> Iterator[tuple[str, list[str]]]:
    """Serve the repos of ``root`` (``<org>/<name>/<file>``) on a free loopback port; yield (endpoint, request log)."""
    log: list[str] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(Store(root), log))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", log
    finally:
        server.shutdown()
        server.server_close()
