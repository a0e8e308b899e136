"""The README's numbers come from code, and the packaged paper tables are the shared transcription."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import REPO_ROOT

from resmg_zoo import list_models
from resmg_zoo.core.paper import paper_tables
from resmg_zoo.tools.param_table import main


def test_readme_parameter_table_is_the_main_commands_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0  # python -m resmg_zoo.tools.param_table
    printed = capsys.readouterr().out.strip()
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    start, end = "<!-- param-table:start -->\n", "\n<!-- param-table:end -->"
    assert readme[readme.index(start) + len(start) : readme.index(end)] == printed
    assert all(f"`{name}`" in printed for name in list_models())


def test_packaged_paper_tables_equal_the_shared_transcription() -> None:
    shared = Path(os.environ.get("RESMG_ZOO_DATA", REPO_ROOT.parent / "shared" / "data")).parent / "paper"
    source = shared / "tables.json"
    if not source.exists():
        pytest.skip(f"no shared paper folder at {shared}")
    assert paper_tables() == json.loads(source.read_text(encoding="utf-8"))


def test_readme_weights_table_is_generated_from_the_manifest(capsys: pytest.CaptureFixture[str]) -> None:
    from resmg_zoo.tools import weights_table

    assert weights_table.main([]) == 0
    printed = capsys.readouterr().out.strip()
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    start, end = "<!-- weights-table:start -->\n", "\n<!-- weights-table:end -->"
    assert readme[readme.index(start) + len(start) : readme.index(end)] == printed
