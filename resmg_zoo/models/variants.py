"""What each registered name means, in the paper's terms: the catalogue the docstrings, the hub
entry points and the parameter tables are written from.

Two families (docs/contract.md §1–2): the 16 (pre-act) ResNets with operator sharing, and F-ResNet (Algorithm 2)
with ``fresnet18`` and ``mgnet``, the setting of it that is MgNet. Each entry's ``model_args()`` are the
arguments its name builds with: the registered functions in :mod:`~resmg_zoo.models.resnet` and
:mod:`~resmg_zoo.models.fresnet` read them from here (``VARIANTS[name].model_args()``, under the caller's
kwargs); a test checks that they build what this catalogue says.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ..core.paper import TABLE_DATASETS, paper_result, paper_rows
from ..core.tags import PAPER_ID, TAGS

DEPTHS: dict[int, tuple[int, ...]] = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
SHARE_SUFFIX: dict[str, str] = {"none": "unshared", "A": "sharedA", "B": "sharedB", "AB": "sharedAB"}
PAPER_NAMES: dict[str, str] = {"none": "A_{ℓ,i}-B_{ℓ,i}", "A": "A_ℓ-B_{ℓ,i}", "B": "A_{ℓ,i}-B_ℓ", "AB": "A_ℓ-B_ℓ"}
SHARE_MEANING: dict[str, str] = {
    "none": "the classic model: every block has its own A_{ℓ,i} and B_{ℓ,i}",
    "A": "ONE data-feature map A_ℓ per level, shared by all its blocks (eq. (3.11)/(3.12))",
    "B": "ONE B_ℓ per level for the non-pooling blocks; the strided B̃_{ℓ,0} keeps its own (eq. (5.1))",
    "AB": "ONE A_ℓ and ONE B_ℓ per level (eq. (5.2))",
}
FORM_SYMBOLS: dict[str, str] = {"linear": "K∗", "pre": "K∗σ", "post": "σ∘K∗", "both": "σ∘K∗σ"}


@dataclass(frozen=True)
class ResNetVariant:
    """One registered model of the (pre-act) ResNet family."""

    depth: int
    preact: bool
    share: str

    @property
    def name(self) -> str:
        return f"{'preact_' if self.preact else ''}resnet{self.depth}_{SHARE_SUFFIX[self.share]}"

    @property
    def paper_name(self) -> str:
        return f"{'pre-act ' if self.preact else ''}ResNet{self.depth}-{PAPER_NAMES[self.share]}"

    def model_args(self) -> dict[str, Any]:
        return dict(layers=DEPTHS[self.depth], preact=self.preact, share=self.share)

    def docstring(self) -> str:
        block = "r ← r + A ∗ σ(BN(B ∗ σ(BN(r))))" if self.preact else "r ← σ(r + BN(A ∗ σ(BN(B ∗ r))))"
        return (
            f"{self.paper_name}: {'pre-act ' if self.preact else ''}ResNet{self.depth} with "
            f"{SHARE_MEANING[self.share]}.\n\n"
            f"Block {block}; blocks per level {DEPTHS[self.depth]}, widths 64-128-256-512, 3×3 stride-1 stem "
            f"without max-pool.\nPaper: He, Chen, Zhang, Xu, {PAPER_ID}. Tags: {', '.join(TAGS)}."
        )

    def paper_accuracies(self) -> list[str]:
        """The paper's reported figures for this model (Tables 2–4)."""
        lines = []
        for table in (2, 3, 4):
            row = paper_result(self.name, table)
            if row is not None:
                lines.append(
                    f"{TABLE_DATASETS[table]}: {row['top1']:.2f} % top-1 reported by the paper (Table {table}, "
                    f"{row['params_reported']} parameters)"
                )
        return lines


@dataclass(frozen=True)
class FResNetVariant:
    """A registered F-ResNet (Algorithm 2); the forms of A and B stay keyword arguments."""

    name: str
    paper_name: str
    summary: str
    args: tuple[tuple[str, Any], ...]

    def model_args(self) -> dict[str, Any]:
        return dict(self.args)

    def docstring(self) -> str:
        args = self.model_args()
        a, b = args.get("a_form", "linear"), args.get("b_form", "both")
        return (
            f"{self.paper_name}: {self.summary}\n\n"
            f"u ← u + B_{{ℓ,i}}(f_ℓ − A_ℓ(u)) with A_ℓ = {FORM_SYMBOLS[a]} (a_form={a!r}) and "
            f"B_{{ℓ,i}} = {FORM_SYMBOLS[b]} (b_form={b!r}); σ = ReLU∘BN. Any of the 16 forms: "
            f"a_form=/b_form= one of {', '.join(FORM_SYMBOLS)}. "
            f"Π, R followed by transfer_norm={args.get('transfer_norm', 'bn')!r}; ν = {args['layers']}, "
            f"widths {args['widths']}.\n"
            f"Paper: He, Chen, Zhang, Xu, {PAPER_ID}. Tags: {', '.join(TAGS)}."
        )

    def paper_accuracies(self) -> list[str]:
        """Table 1's figure for the default forms (F-ResNet only; MgNet's own paper is not transcribed)."""
        if self.name == "mgnet":
            return ["cifar10: 96.00 %, cifar100: 79.94 % top-1 reported by XuTeam/MgNet_Code (not this paper's tables)"]
        args = self.model_args()
        row = next(r for r in paper_rows(1) if (r["a_form"], r["b_form"]) == (args["a_form"], args["b_form"]))
        return [f"cifar10: {row['top1']:.2f} % top-1 reported by the paper (Table 1, this form, size not stated)"]


FRESNET_VARIANTS: tuple[FResNetVariant, ...] = (
    FResNetVariant(
        "fresnet18",
        "F-ResNet (Algorithm 2)",
        "the iteration in feature space, ONE A_ℓ per level and a B_{ℓ,i} per step; default forms = the best row "
        "of Table 1 (A linear, B = σ∘B∗σ).",
        (("layers", (2, 2, 2, 2)), ("widths", (64, 128, 256, 512)), ("a_form", "linear"), ("b_form", "both")),
    ),
    FResNetVariant(
        "mgnet",
        "MgNet[2,2,2,2]-256 (He & Xu 2019)",
        "F-ResNet with 256 channels on every level, ONE B_ℓ per level (share_b) and BN-ReLU after Π and R "
        "(transfer_norm='bn_act'), as in XuTeam/MgNet_Code; that repository reports 8.3M parameters.",
        (
            ("layers", (2, 2, 2, 2)),
            ("widths", (256, 256, 256, 256)),
            ("a_form", "linear"),
            ("b_form", "both"),
            ("share_b", True),
            ("transfer_norm", "bn_act"),
        ),
    ),
)

VARIANTS: dict[str, ResNetVariant | FResNetVariant] = {
    v.name: v
    for v in (
        *(ResNetVariant(d, preact, share) for preact in (False, True) for d in DEPTHS for share in SHARE_SUFFIX),
        *FRESNET_VARIANTS,
    )
}
"""Every registered name, in registration order."""


FnT = TypeVar("FnT", bound=Callable[..., Any])


def documented(fn: FnT) -> FnT:
    """Give a registered model function the docstring of its catalogue entry (paper name, equation, tags)."""
    fn.__doc__ = VARIANTS[fn.__name__].docstring()
    return fn
