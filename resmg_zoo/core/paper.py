"""The paper's Tables 1–4 as data (``paper_tables.json``, a copy of ``shared/paper/tables.json``).

These are the paper's reported figures, to be printed *beside* ours — never as ours.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from .errors import UsageError

TABLE_KEYS: dict[int, str] = {
    1: "table1_cifar10_fresnet",
    2: "table2_mnist",
    3: "table3_cifar10",
    4: "table4_cifar100",
}
TABLE_DATASETS: dict[int, str] = {1: "cifar10", 2: "mnist", 3: "cifar10", 4: "cifar100"}
# the table of the ResNets on each dataset (Table 1 is F-ResNet's)
TABLE_OF_DATASET: dict[str, int] = {dataset: table for table, dataset in TABLE_DATASETS.items() if table > 1}


@cache
def paper_tables() -> dict[str, Any]:
    """The whole transcription, as loaded from the package."""
    return json.loads(resources.files(__package__).joinpath("paper_tables.json").read_text(encoding="utf-8"))


def paper_rows(table: int) -> list[dict[str, Any]]:
    """The rows of the paper's Table ``table`` (1–4)."""
    if table not in TABLE_KEYS:
        raise UsageError(f"the paper has Tables 1–4, not {table!r}")
    return list(paper_tables()[TABLE_KEYS[table]])


def paper_result(model: str, table: int) -> dict[str, Any] | None:
    """The paper's row for ``model`` in Table 2, 3 or 4, or ``None`` if the table lacks it."""
    return next((row for row in paper_rows(table) if row.get("model") == model), None)
