"""Build every registered model and print its exact parameter count beside the paper's.

    python -m resmg_zoo.tools.param_table

Each model is built on the CPU and run on one input of its tag's size (a smoke check that it is a
working network); the counts are those of the built modules, for the default pooling block
(``conv``, eq. (3.14)) and the ``restrict`` form (eq. (3.17)), with the CIFAR-10, CIFAR-100 and
MNIST heads. The paper's rounded figures (Tables 2–4) stand beside them.

A second table counts F-ResNet (Algorithm 2) in each of the 16 forms of Table 1 at the default
``fresnet18`` size, and ``mgnet``; the paper states no parameter counts for Table 1.
"""

from __future__ import annotations

import argparse
import sys

import timm
import torch

from ..core.counting import count_parameters
from ..core.paper import paper_result, paper_rows
from ..core.tags import TAGS
from ..models.variants import FORM_SYMBOLS, VARIANTS, ResNetVariant


def built_count(name: str, tag: str, **kwargs: object) -> int:
    """Parameters of the model built for ``tag``, after checking it classifies one input."""
    model = timm.create_model(f"{name}.{tag}", **kwargs).eval()
    with torch.no_grad():
        logits = model(torch.zeros(1, *TAGS[tag].input_size))
    if logits.shape != (1, TAGS[tag].num_classes):
        raise RuntimeError(f"{name}.{tag} produced logits of shape {tuple(logits.shape)}")
    return count_parameters(model)


def _paper(name: str, table: int) -> str:
    row = paper_result(name, table)
    return row["params_reported"] if row else "—"


def param_rows() -> list[dict[str, object]]:
    """One row per registered model: our exact counts and the paper's reported ones."""
    rows = []
    for name, variant in VARIANTS.items():
        if not isinstance(variant, ResNetVariant):
            continue
        rows.append(
            dict(
                model=name,
                paper_name=variant.paper_name,
                cifar10=built_count(name, "cifar10"),
                cifar10_restrict=built_count(name, "cifar10", pool_block="restrict"),
                paper_table3=_paper(name, 3),
                cifar100=built_count(name, "cifar100"),
                paper_table4=_paper(name, 4),
                mnist=built_count(name, "mnist"),
                paper_table2=_paper(name, 2),
            )
        )
    return rows


def markdown_table(rows: list[dict[str, object]]) -> str:
    header = (
        "| model | paper's name | ours CIFAR-10 (`conv`, default) | ours CIFAR-10 (`restrict`) | paper T3 "
        "| ours CIFAR-100 | paper T4 | ours MNIST | paper T2 |"
    )
    lines = [header, "|" + "---|" * 9]
    for r in rows:
        lines.append(
            f"| `{r['model']}` | {r['paper_name']} | {r['cifar10']:,} | {r['cifar10_restrict']:,} | "
            f"{r['paper_table3']} | {r['cifar100']:,} | {r['paper_table4']} | {r['mnist']:,} | {r['paper_table2']} |"
        )
    return "\n".join(lines)


def fresnet_rows() -> list[dict[str, object]]:
    """``fresnet18`` in each form of Table 1 (the paper's order), then ``mgnet``."""
    rows = [
        dict(
            model="fresnet18",
            a_form=r["a_form"],
            b_form=r["b_form"],
            cifar10=built_count("fresnet18", "cifar10", a_form=r["a_form"], b_form=r["b_form"]),
            paper_top1=f"{r['top1']:.2f}",
        )
        for r in paper_rows(1)
    ]
    mgnet = VARIANTS["mgnet"].model_args()
    rows.append(
        dict(
            model="mgnet",
            a_form=mgnet["a_form"],
            b_form=mgnet["b_form"],
            cifar10=built_count("mgnet", "cifar10"),
            paper_top1="— (8.3M, 96.00 in MgNet_Code)",
        )
    )
    return rows


def fresnet_markdown_table(rows: list[dict[str, object]]) -> str:
    lines = [
        "| model | `a_form` | A_ℓ | `b_form` | B_{ℓ,i} | ours CIFAR-10 params | paper Table 1 top-1 |",
        "|" + "---|" * 7,
    ]
    for r in rows:
        lines.append(
            f"| `{r['model']}` | `{r['a_form']}` | {FORM_SYMBOLS[str(r['a_form'])]} | `{r['b_form']}` | "
            f"{FORM_SYMBOLS[str(r['b_form'])]} | {r['cifar10']:,} | {r['paper_top1']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.parse_args(argv)
    print(markdown_table(param_rows()))
    print()
    print(fresnet_markdown_table(fresnet_rows()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
