"""Speed of the models in one process, interleaved with a reference, as a Markdown table or JSON.

    python -m resmg_zoo.tools.benchmark --models preact_resnet18_sharedA,preact_resnet18_unshared --profile

For each model: parameters, checkpoint bytes, forward and training FLOPs per image (both counted by
``torch.utils.flop_counter``, the training ones over forward + backward; a multiply-add is 2 FLOPs),
training (forward + backward + SGD step) and inference images/s, the minor page faults of a training
step, and the FLOP/s they reach as a percentage of the **peak**: the best FLOP/s of a square
``torch.mm`` in the same precision over the ``--peak-sizes`` and the rounds, measured in the same run.
Inference is timed twice: the model as trained (``infer``), and on the **fast path** every inference
command takes (:mod:`resmg_zoo.inference.fast_path`: BN folded, ``--fast-compile`` adds freezing),
which "fast × conv ceiling" sets against the convolutions alone; ``--int8`` adds the model quantized
by torchao (:mod:`resmg_zoo.inference.int8`, random weights: a speed, not an accuracy).
Models are measured round-robin, ``--rounds`` times, with the reference — torchvision's ``resnet18``
with a 3×3 stride-1 stem and no max-pool — among them, and the median of the rounds is reported, so
slow drifts of the machine hit all alike. Among them too: the **conv ceiling**, the models' own
convolution calls alone (forward and both backward passes, :mod:`.conv_ceiling`), so
that "train × conv ceiling" says whether the convolutions or the rest of the step bind. The in-memory
loader's images/s is measured in the same run; ``--profile`` adds where a training step goes
(:mod:`.step_profile`). The precision is ``auto`` unless given, as in training, and the
allocator keeps freed memory, as in training (``--default-malloc``: as glibc has it).

The project's speed targets are checked on the measured rows and printed after the table
(:data:`.report.TARGETS`); they are benchmarks, never timed tests.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import timm
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ...core.choices import parse_ints
from ...core.cli import add_precision_argument
from ...core.counting import checkpoint_bytes, count_parameters
from ...core.errors import UsageError
from ...core.hardware import (
    autocast_context,
    choose_precision,
    command_line_allocator,
    describe_hardware,
    freed_memory_retained,
    matmul_peak,
)
from ...data.datasets import ImageSplit
from ...data.loader import EpochPlan, Materializer
from ...inference.fast_path import FastPath, FastPathSettings
from ...inference.int8 import Int8Model, quantize_int8
from .conv_ceiling import ConvCeiling, record_convs
from .report import check_targets, markdown, profile_markdown, twin_of
from .step_profile import profile_training_step
from .timing import Timed, ratio

REFERENCE = "tv_resnet18_cifar"


def reference_resnet18(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
    """torchvision's resnet18 with a 3×3 stride-1 stem and no max-pool (= resnet18_unshared)."""
    model = torchvision.models.resnet18(num_classes=num_classes)
    model.conv1 = nn.Conv2d(in_chans, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def random_model(name: str, in_chans: int, num_classes: int = 10) -> nn.Module:
    """``name`` with random weights (speed only), or the torchvision reference."""
    if name == REFERENCE:
        return reference_resnet18(num_classes, in_chans)
    return timm.create_model(name, in_chans=in_chans, num_classes=num_classes)


def forward_flops(model: nn.Module, input_size: tuple[int, int, int]) -> int:
    """Forward FLOPs for one image (a multiply-add counts as 2)."""
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, *input_size))
    return int(counter.get_total_flops())


def training_flops(model: nn.Module, input_size: tuple[int, int, int]) -> int:
    """FLOPs of forward + backward for one image in train mode (the gradients a training step needs)."""
    model.train()
    x = torch.zeros(2, *input_size)  # batch 2: BN in train mode needs more than one value per channel
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), torch.zeros(2, dtype=torch.long)).backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops()) // 2


class Bench(Timed):
    """One model's timed steps, ready to run again in each round."""

    def __init__(self, name: str, args: argparse.Namespace, input_size: tuple[int, int, int]):
        super().__init__()
        self.name = name
        self.batch_size = args.batch_size
        torch.manual_seed(0)
        self.model = random_model(name, input_size[0])
        self.params = count_parameters(self.model)
        self.flops = forward_flops(self.model, input_size)
        self.train_flops = training_flops(self.model, input_size)
        self.checkpoint_bytes = checkpoint_bytes(self.model)
        self.memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
        self.model = self.model.to(memory_format=self.memory_format)
        self.x = torch.randn(args.batch_size, *input_size).contiguous(memory_format=self.memory_format)
        self.y = torch.randint(0, 10, (args.batch_size,))
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        self.precision = args.precision
        self.infer_model: Callable[[torch.Tensor], torch.Tensor] = self.model
        self.train_model: Callable[[torch.Tensor], torch.Tensor] = self.model
        if args.compile_inference:
            self.infer_model = torch.compile(self.model, mode=args.compile_inference)
        if args.compile_train:
            self.train_model = torch.compile(self.model)
        # the same convolutions in any order make the same ceiling (resnet18's variants and the reference)
        self.conv_calls = tuple(sorted(record_convs(self.model, self.x, self.precision), key=repr))
        if name != REFERENCE:  # the fast path every inference command takes (BN folded, channels_last)
            fast = FastPath(self.model.eval(), FastPathSettings(self.precision, compile=args.fast_compile))
            self.extra["fast"] = lambda: fast(self.x)
        if args.int8 and name != REFERENCE:  # speed only: random weights, calibrated on the random batch
            int8 = Int8Model(quantize_int8(self.model.eval(), [self.x], self.x[:2]).program)
            self.extra["int8"] = lambda: int8(self.x)

    def train_step(self) -> None:
        self.model.train()
        with autocast_context(self.precision, torch.device("cpu")):
            loss = F.cross_entropy(self.train_model(self.x).float(), self.y)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    @torch.no_grad()
    def infer_step(self) -> None:
        self.model.eval()
        with autocast_context(self.precision, torch.device("cpu")):
            self.infer_model(self.x)


class CeilingBench(Timed):
    """The convolutions of one or more models (the same calls) alone: :mod:`.conv_ceiling`."""

    def __init__(self, bench: Bench, precision: str):
        super().__init__()
        self.name = "conv ceiling"
        self.batch_size = bench.batch_size
        self.ceiling = ConvCeiling(list(bench.conv_calls), precision)

    def train_step(self) -> None:
        self.ceiling.train_step()

    def infer_step(self) -> None:
        self.ceiling.infer_step()


def synthetic_loader(
    batch_size: int, input_size: tuple[int, int, int], channels_last: bool, batches: int = 20
) -> tuple[Materializer, EpochPlan]:
    """The training loader (index, crop+flip, normalise) on ``batches`` batches of random uint8 images."""
    n = batches * batch_size
    split = ImageSplit(torch.randint(0, 256, (n, *input_size), dtype=torch.uint8), torch.zeros(n, dtype=torch.long))
    channels = input_size[0]
    data = Materializer(split, (0.5,) * channels, (0.25,) * channels, "crop_flip", channels_last=channels_last)
    return data, EpochPlan(n, batch_size, seed=0)


def loader_rate(batch_size: int, input_size: tuple[int, int, int], channels_last: bool) -> float:
    """Images/s of the training loader on CIFAR-sized uint8 data."""
    data, plan = synthetic_loader(batch_size, input_size, channels_last)
    tic = time.perf_counter()
    for batch in plan.batches(0):
        data(batch)
    return len(plan) * batch_size / (time.perf_counter() - tic)


def step_profile(bench: Bench, args: argparse.Namespace, input_size: tuple[int, int, int]) -> dict[str, float]:
    """Where one of ``bench``'s training steps goes, batches from the loader (:mod:`~resmg_zoo.train.step_profile`)."""
    data, plan = synthetic_loader(args.batch_size, input_size, args.channels_last, args.steps + args.warmup)
    return profile_training_step(
        bench.model, bench.optimizer, data, plan.batches(0), args.precision, args.steps, args.warmup
    )


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    input_size = tuple(int(v) for v in args.input_size.split(","))
    names = [n for n in args.models.split(",") if n]
    if REFERENCE not in names:
        names.append(REFERENCE)
    if args.threads:
        torch.set_num_threads(args.threads)
    peak_sizes = parse_ints("--peak-sizes", args.peak_sizes)
    if args.inductor_freezing:
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
    benches = [Bench(name, args, input_size) for name in names]
    ceilings: dict[tuple[Any, ...], CeilingBench] = {}  # one per distinct set of convolutions
    for bench in benches:
        if bench.conv_calls not in ceilings:
            ceilings[bench.conv_calls] = CeilingBench(bench, args.precision)
    if len(ceilings) > 1:  # models with different convolutions: one ceiling each, named by the first
        for ceiling in ceilings.values():
            ceiling.name = f"conv ceiling ({next(b.name for b in benches if ceilings[b.conv_calls] is ceiling)})"
    peaks: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for _ in range(args.rounds):
        for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            peaks[precision].append(matmul_peak(dtype, peak_sizes))
        for timed in (*benches, *ceilings.values()):
            timed.measure(args.steps, args.warmup)
    peak = {k: max(v) for k, v in peaks.items()}
    reference = next(b for b in benches if b.name == REFERENCE)
    ref_train, ref_infer = statistics.median(reference.train_rates), statistics.median(reference.infer_rates)
    rates = {b.name: (statistics.median(b.train_rates), statistics.median(b.infer_rates)) for b in benches}
    rows = []
    for b in benches:
        train, infer = rates[b.name]
        twin = twin_of(b.name)
        twin_rates = rates.get(twin) if twin else None
        ceiling = ceilings[b.conv_calls]
        ceiling_train, ceiling_infer = statistics.median(ceiling.train_rates), statistics.median(ceiling.infer_rates)
        fast, int8 = b.extra_rate("fast"), b.extra_rate("int8")
        rows.append(
            dict(
                model=b.name,
                params=b.params,
                flops=b.flops,
                train_flops=b.train_flops,
                checkpoint_bytes=b.checkpoint_bytes,
                train_img_s=train,
                infer_img_s=infer,
                train_vs_reference=train / ref_train,
                infer_vs_reference=infer / ref_infer,
                twin=twin if twin_rates else None,
                train_vs_twin=train / twin_rates[0] if twin_rates else None,
                infer_vs_twin=infer / twin_rates[1] if twin_rates else None,
                conv_ceiling=ceiling.name,
                train_vs_conv_ceiling=train / ceiling_train,
                train_faults_per_step=statistics.median(b.train_faults),
                infer_vs_conv_ceiling=infer / ceiling_infer,
                fast_infer_img_s=fast,
                fast_infer_vs_conv_ceiling=ratio(fast, ceiling_infer),
                int8_img_s=int8,
                int8_vs_fast=ratio(int8, fast),
                train_pct_peak=100.0 * train * b.train_flops / peak[args.precision],
                infer_pct_peak=100.0 * infer * b.flops / peak[args.precision],
                peak_fp32_flops=peak["fp32"],
                peak_bf16_flops=peak["bf16"],
                batch_size=args.batch_size,
                precision=args.precision,
                channels_last=args.channels_last,
                compile_inference=args.compile_inference,
                compile_train=args.compile_train,
                inductor_freezing=args.inductor_freezing,
                fast_compile=args.fast_compile,
                rounds=args.rounds,
                steps=args.steps,
                input_size=list(input_size),
                threads=torch.get_num_threads(),
                retain_freed_memory=freed_memory_retained(),  # set by the console entry point only
                hardware=describe_hardware(),
            )
        )
    for ceiling in ceilings.values():
        forward, training = ceiling.ceiling.flops_per_image()
        train, infer = statistics.median(ceiling.train_rates), statistics.median(ceiling.infer_rates)
        rows.append(
            dict(
                model=ceiling.name,
                conv_flops=forward,
                conv_train_flops=training,
                train_img_s=train,
                infer_img_s=infer,
                train_pct_peak=100.0 * train * training / peak[args.precision],
                infer_pct_peak=100.0 * infer * forward / peak[args.precision],
                models=[b.name for b in benches if ceilings[b.conv_calls] is ceiling],
            )
        )
    rows.append(
        dict(model="loader (crop+flip)", loader_img_s=loader_rate(args.batch_size, input_size, args.channels_last))
    )
    if args.profile:
        for b in benches:
            if b.name != REFERENCE:
                rows.append(dict(model=f"profile ({b.name})", profile=step_profile(b, args, input_size)))
    return rows


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m resmg_zoo.tools.benchmark", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="resnet18_unshared,resnet18_sharedA", help="comma-separated model names")
    p.add_argument("--batch-size", type=int, default=128)
    add_precision_argument(p)
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--input-size", default="3,32,32", help="C,H,W")
    p.add_argument("--steps", type=int, default=3, help="timed steps per round")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps before each timed run")
    p.add_argument("--rounds", type=int, default=2, help="round-robin repetitions (the median is reported)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--compile-inference", default=None, help="torch.compile mode for inference, e.g. max-autotune")
    p.add_argument(
        "--inductor-freezing",
        action="store_true",
        help="with --compile-inference: let inductor treat weights as constants (folds BN into convs, prepacks)",
    )
    p.add_argument("--compile-train", action="store_true", help="torch.compile the training forward (default mode)")
    p.add_argument(
        "--fast-compile",
        action="store_true",
        help="the fast path column compiled with freezing",
    )
    p.add_argument("--int8", action="store_true", help="also time each model quantized to int8 (needs torchao)")
    p.add_argument(
        "--default-malloc",
        action="store_true",
        help="leave glibc's malloc as it is (training sets it to keep freed memory: retain_freed_memory)",
    )
    p.add_argument("--peak-sizes", default="1024,2048", help="square matmul sizes of the same-run FLOP/s peak")
    p.add_argument(
        "--profile",
        action="store_true",
        help="also profile each model's training step (torch.profiler): %% of the step per kind of work",
    )
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        parse_ints("--peak-sizes", args.peak_sizes)
    except UsageError as err:
        parser.error(str(err))
    choice = choose_precision(args.precision)
    args.precision = choice.precision
    print(f"precision: {choice.reason}")
    rows = run(args)
    print(
        f"batch {args.batch_size}, {args.precision}, channels_last={args.channels_last}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    first = rows[0]
    print(
        f"same-run matmul peak: fp32 {first['peak_fp32_flops'] / 1e9:.0f} GFLOP/s, "
        f"bf16 {first['peak_bf16_flops'] / 1e9:.0f} GFLOP/s"
    )
    print(markdown(rows))
    if args.profile:
        print(f"\nWhere a training step goes (% of its wall time, {args.steps} profiled steps):")
        print(profile_markdown(rows))
    print("\nTargets (one run, so a ratio within the round-to-round noise of a few % is no verdict):")
    print("\n".join(check_targets(rows)))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0


def console_main() -> int:
    """``resmg-benchmark``: the allocator set as ``resmg-train`` sets it, then :func:`main`."""
    command_line_allocator(sys.argv[1:])
    return main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(console_main())
