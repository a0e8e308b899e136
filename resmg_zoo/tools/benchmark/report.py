"""The benchmark's report: its rows as Markdown tables and the project's speed targets checked on them
(:data:`TARGETS`; benchmarks, never timed tests). Part of :mod:`.benchmark`, kept apart so that the
measuring reads on its own."""

from __future__ import annotations

from typing import Any, Optional

from .step_profile import CATEGORIES


def twin_of(name: str) -> Optional[str]:
    """The unshared model a sharing variant is measured against (``resnet18_sharedA`` → ``resnet18_unshared``)."""
    base, sep, sharing = name.rpartition("_")
    return f"{base}_unshared" if sep and sharing.startswith("shared") else None


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | params | checkpoint MB | GFLOPs/img | train img/s | infer img/s | train × ref | infer × ref "
        "| train × conv ceiling | train % peak | infer % peak | page faults / train step "
        "| fast infer img/s | fast × conv ceiling | int8 img/s | int8 × fast |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "loader_img_s" in r:
            lines.append(f"| {r['model']} | | | | {r['loader_img_s']:,.0f} | | | | | | | | | | | |")
        elif "conv_flops" in r:
            lines.append(
                f"| {r['model']} | | | {r['conv_flops'] / 1e9:.3f} | {r['train_img_s']:.1f} | {r['infer_img_s']:.1f} "
                f"| | | | {r['train_pct_peak']:.0f} | {r['infer_pct_peak']:.0f} | | | | | |"
            )
        elif "params" in r:
            lines.append(
                f"| `{r['model']}` | {r['params']:,} | {r['checkpoint_bytes'] / 1e6:.1f} | {r['flops'] / 1e9:.3f} | "
                f"{r['train_img_s']:.1f} | {r['infer_img_s']:.1f} | {r['train_vs_reference']:.2f} | "
                f"{r['infer_vs_reference']:.2f} | {r['train_vs_conv_ceiling']:.2f} | {r['train_pct_peak']:.0f} | "
                f"{r['infer_pct_peak']:.0f} | {r['train_faults_per_step']:,.0f} "
                f"| {_num(r.get('fast_infer_img_s'), '.1f')} "
                f"| {_num(r.get('fast_infer_vs_conv_ceiling'), '.2f')} "
                f"| {_num(r.get('int8_img_s'), '.1f')} | {_num(r.get('int8_vs_fast'), '.2f')} |"
            )
    return "\n".join(lines)


def _num(value: Optional[float], fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def profile_markdown(rows: list[dict[str, Any]]) -> str:
    """The ``--profile`` rows: % of a training step's wall time per category."""
    profiles = [r for r in rows if "profile" in r]
    if not profiles:
        return ""
    lines = ["| training step of | " + " | ".join(CATEGORIES) + " |", "|---" * (len(CATEGORIES) + 1) + "|"]
    for r in profiles:
        lines.append(f"| {r['model']} | " + " | ".join(f"{r['profile'][c]:.1f}" for c in CATEGORIES) + " |")
    return "\n".join(lines)


# The speed targets: (row key, bound, which rows, precision it applies to or None for any).
TARGETS: tuple[tuple[str, float, str, Optional[str]], ...] = (
    ("train_vs_twin", 0.98, "sharing variants", None),
    ("infer_vs_twin", 0.98, "sharing variants", None),
    ("train_vs_reference", 1.0, "sharing variants", None),
    ("infer_vs_reference", 1.0, "sharing variants", None),
    ("train_pct_peak", 50.0, "every model", None),
    ("infer_pct_peak", 70.0, "every model", None),
    ("train_vs_conv_ceiling", 0.9, "every model", None),
    ("fast_infer_vs_conv_ceiling", 0.9, "zoo models", None),
)


def check_targets(rows: list[dict[str, Any]]) -> list[str]:
    """One line per target and model: the measured value, the bound, met or missed."""
    lines = []
    models = [r for r in rows if "params" in r]
    for key, bound, which, precision in TARGETS:
        for r in models:
            if precision and r["precision"] != precision:
                continue
            if which == "sharing variants" and twin_of(r["model"]) is None:
                continue
            if which == "zoo models" and r.get("fast_infer_img_s") is None:
                continue
            value = r.get(key)
            if value is None:
                why = "its twin was not measured (add it to --models)" if "twin" in key else "not measured"
                lines.append(f"- {r['model']} {key}: {why}")
                continue
            verdict = "met" if value >= bound else "MISSED"
            lines.append(f"- {r['model']} {key} = {value:.3g} (target ≥ {bound:g}): {verdict}")
    return lines
