"""The int8 record: what static int8 quantization needs beyond the float weights, stored as data.

An int8 model is never stored as a program. ``int8.json`` holds, for the registered architecture and
float weights it names (their sha256), the quantization parameters of every activation quantizer —
scale, zero point, dtype and range, keyed by the observer's place in the prepared graph and the node
it observes — with the quantizer's settings and the torch/torchao versions. The per-channel symmetric
weight quantization is a function of the folded float weights (:mod:`.fold`), so no int8 weight is
stored. :func:`resmg_zoo.inference.int8.rebuild_int8` rebuilds the program from these, with our own
code: nothing read from the file is unpickled, evaluated or imported.

A folder holding ``int8.json`` beside the ``model.safetensors`` it names is an **int8 folder**: what
``resmg-export --format int8`` writes, and what a published folder becomes once ``resmg-mirror refresh
--int8`` puts the record there. Every value is checked here before anything uses it (types, finite
positive scales, zero points inside their range, a known dtype and scheme, architecture arguments
only), so a crafted record is refused with a message naming the file, never a traceback.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..core.counting import ModelArgsError, check_model_args, param_count
from ..core.files import UnreadableFileError, parse_json, read_regular, require_keys
from ..models.variants import VARIANTS
from ..weights.manifest import INT8_RECORD_NAME, SHA256, WEIGHTS_NAME

RECORD_NAME = INT8_RECORD_NAME
FORMAT = "resmg-zoo int8 record v1"
MAX_RECORD_BYTES = 1 << 20
# How the record's model was quantized; a record made another way is refused (not reproduced).
QUANTIZER = dict(
    name="torchao X86InductorQuantizer",
    config="get_default_x86_inductor_quantization_config() (static, not QAT)",
    weights="int8 per-channel symmetric, computed from the folded float weights on load",
    activations="uint8 per-tensor affine, the recorded scales and zero points",
    folding="batch norm folded into the convolution before it, one convolution module per call site",
)
DTYPES = ("torch.uint8", "torch.int8")
QSCHEMES = ("torch.per_tensor_affine", "torch.per_tensor_symmetric")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "lanczos", "box", "hamming")
CROP_MODES = ("center", "squash", "border")
OLD_PROGRAM_FILES = ("model.pt2", "export.json")  # the pre-record format: a program, never loaded
# The preprocessing a record keeps (the keys timm's data config reads, and the classes).
CFG_KEYS = ("input_size", "mean", "std", "interpolation", "crop_pct", "crop_mode", "label_names", "num_classes")
MAX_SIDE = 512  # the rebuild runs the model once at the record's input size
MIN_SIDE = 16  # a four-level model needs 8 pixels; the zoo's data have 28 or more
MAX_PARAMS = 100_000_000  # the zoo's largest model has 21.8 M: a record never builds a giant
MAX_WEIGHTS_BYTES = 1 << 30


class Int8RecordError(UnreadableFileError):
    """An int8 record that is not one this project writes (a usage error: exit 2); the message names it."""


@dataclass(frozen=True)
class ActivationQParams:
    """One activation quantizer of the prepared graph: where it sits and what it quantizes with."""

    observer: str
    observes: str
    scale: float
    zero_point: int
    dtype: str
    qscheme: str
    quant_min: int
    quant_max: int

    @classmethod
    def from_json(cls, item: Any, where: str) -> ActivationQParams:
        if not isinstance(item, dict):
            raise Int8RecordError(f"{where}: an activation entry is a {type(item).__name__}, not an object")
        keys: dict[str, type | tuple[type, ...]] = dict(
            observer=str, observes=str, scale=(int, float), zero_point=int, dtype=str, qscheme=str,
            quant_min=int, quant_max=int,
        )  # fmt: skip
        require_keys(item, keys, where)
        unknown = sorted(set(item) - set(keys))
        if unknown:
            raise Int8RecordError(f"{where}: unknown activation keys {unknown}")
        q = cls(**{k: item[k] for k in keys})
        if q.dtype not in DTYPES or q.qscheme not in QSCHEMES:
            raise Int8RecordError(f"{where}: {q.observer} has dtype {q.dtype!r} / scheme {q.qscheme!r}")
        if not (type(q.scale) is float and math.isfinite(q.scale) and q.scale > 0):
            raise Int8RecordError(f"{where}: {q.observer} has scale {q.scale!r}, not a finite positive number")
        if not -128 <= q.quant_min <= q.zero_point <= q.quant_max <= 255:
            raise Int8RecordError(f"{where}: {q.observer} has zero point {q.zero_point} outside its range")
        return q

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _printable_name(name: Any) -> bool:
    """A class name that prints as itself: a short string of printable characters (no escape sequence, no
    line break, no lone surrogate) — it is written to terminals and result files."""
    return isinstance(name, str) and 0 < len(name) < 256 and name.isprintable() and _encodes(name)


def _encodes(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_cfg(cfg: Any, where: str) -> None:
    """The preprocessing a record names: the keys timm's data config reads, each in its range."""
    if not isinstance(cfg, dict):
        raise Int8RecordError(f"{where}: pretrained_cfg is not an object")
    size = cfg.get("input_size")
    if not (
        isinstance(size, list)
        and len(size) == 3
        and type(size[0]) is int
        and 1 <= size[0] <= 16
        and all(type(v) is int and MIN_SIDE <= v <= MAX_SIDE for v in size[1:])
    ):
        raise Int8RecordError(
            f"{where}: pretrained_cfg.input_size must be channels (1 to 16) and a side from {MIN_SIDE} to {MAX_SIDE}"
        )
    for key in ("mean", "std"):
        values = cfg.get(key)
        if not (
            isinstance(values, list)
            and len(values) in (1, size[0])
            and all(type(v) is float and math.isfinite(v) and (key == "mean" or v > 0) for v in values)
        ):
            raise Int8RecordError(f"{where}: pretrained_cfg.{key} must be one finite number, or one per channel")
    classes = cfg.get("num_classes")
    if not (type(classes) is int and 1 <= classes <= 100_000):
        raise Int8RecordError(f"{where}: pretrained_cfg.num_classes must be an integer from 1 to 100,000")
    names = cfg.get("label_names")
    if names is not None and not (
        isinstance(names, list) and len(names) == classes and all(_printable_name(n) for n in names)
    ):
        raise Int8RecordError(f"{where}: pretrained_cfg.label_names must be one short printable name per class")
    if cfg.get("interpolation", "bilinear") not in INTERPOLATIONS or cfg.get("crop_mode", "center") not in CROP_MODES:
        raise Int8RecordError(f"{where}: pretrained_cfg names an unknown interpolation or crop mode")
    crop = cfg.get("crop_pct", 1.0)
    if not (type(crop) in (int, float) and 0.05 <= crop <= 1.0):
        raise Int8RecordError(f"{where}: pretrained_cfg.crop_pct must be a number from 0.05 to 1")
    unknown = sorted(set(cfg) - set(CFG_KEYS))
    if unknown:
        raise Int8RecordError(f"{where}: pretrained_cfg has keys the project never writes: {unknown}")


def validate_record(record: Any, where: str) -> dict[str, Any]:
    """``record`` if it is an int8 record this project writes, else :class:`Int8RecordError`."""
    if not isinstance(record, dict):
        raise Int8RecordError(f"{where} holds a JSON {type(record).__name__}, not an int8 record")
    if record.get("format") != FORMAT:
        raise Int8RecordError(f"{where} is not a {FORMAT!r} record (format: {record.get('format')!r})")
    require_keys(
        record,
        dict(model=str, name=str, model_args=dict, pretrained_cfg=dict, weights=dict, quantizer=dict,
             activations=list, versions=dict, calibration=dict, quantized_convs=int, float_sites_bytes=int),
        where,
    )  # fmt: skip
    require_keys(record["calibration"], dict(dataset=str, images=int), f"{where} (calibration)")
    require_keys(record["versions"], dict(torch=str, torchao=str), f"{where} (versions)")
    if record["model"] not in VARIANTS:
        raise Int8RecordError(f"{where}: {record['model']!r} is not a model of the zoo")
    try:
        check_model_args(record["model"], record["model_args"])
    except ModelArgsError as err:
        raise Int8RecordError(f"{where}: {err}") from None
    if param_count(record["model"], **record["model_args"]) > MAX_PARAMS:
        raise Int8RecordError(f"{where}: model_args build more than {MAX_PARAMS:,} parameters")
    _check_cfg(record["pretrained_cfg"], where)
    cfg, args = record["pretrained_cfg"], record["model_args"]
    if cfg["input_size"][0] != args.get("in_chans", 3) or cfg["num_classes"] != args.get("num_classes", 1000):
        raise Int8RecordError(f"{where}: pretrained_cfg's input channels or classes are not model_args'")
    weights = record["weights"]
    require_keys(weights, dict(file=str, sha256=str, bytes=int), f"{where} (weights)")
    if not 0 < weights["bytes"] <= MAX_WEIGHTS_BYTES:
        raise Int8RecordError(f"{where}: weights.bytes must be from 1 to {MAX_WEIGHTS_BYTES:,}")
    if weights["file"] != WEIGHTS_NAME or not SHA256.match(weights["sha256"]):
        raise Int8RecordError(f"{where}: weights must name model.safetensors and its sha256 (64 lowercase hex digits)")
    if record["quantizer"] != QUANTIZER:
        raise Int8RecordError(f"{where} was made by another quantizer than this one ({record['quantizer']})")
    if not 1 <= len(record["activations"]) <= 10_000:
        raise Int8RecordError(f"{where}: {len(record['activations'])} activation entries")
    qparams = [ActivationQParams.from_json(item, where) for item in record["activations"]]
    if len({q.observer for q in qparams}) != len(qparams):
        raise Int8RecordError(f"{where}: an observer is listed twice")
    return record


def activation_qparams(record: dict[str, Any]) -> dict[str, ActivationQParams]:
    """The record's activation quantizers by observer name (the record was validated when read)."""
    return {q.observer: q for q in (ActivationQParams(**item) for item in record["activations"])}


def parse_record(data: bytes, where: str) -> dict[str, Any]:
    """An int8 record from the bytes of its file (UTF-8 JSON of bounded depth, then validated)."""
    return validate_record(parse_json(data, where), where)


def record_path(path: str | Path) -> Path:
    """The ``int8.json`` that ``path`` names: the file itself, or the one in the folder ``path``; an old
    export folder (a saved program) is refused with what to do."""
    path = Path(path)
    if path.name == RECORD_NAME:
        return path
    if any((path / name).exists() for name in OLD_PROGRAM_FILES) and not (path / RECORD_NAME).exists():
        raise Int8RecordError(
            f"{path} is an int8 export of the old format (a saved torch.export program, model.pt2), which can run "
            "code when loaded and is never loaded: export it again with resmg-export --format int8"
        )
    return path / RECORD_NAME


def read_record(path: str | Path) -> tuple[dict[str, Any], bytes]:
    """The validated record of an int8 folder (or of the ``int8.json`` named; never a link) and the bytes it
    was parsed from."""
    file = record_path(path)
    data = read_regular(file, MAX_RECORD_BYTES, "int8 record", follow=False)
    return parse_record(data, str(file)), data


def is_int8_folder(path: str | Path) -> bool:
    """Whether ``path`` is an int8 folder, the ``int8.json`` of one, or an old-format export folder
    (which :func:`record_path` then refuses with a message)."""
    path = Path(path)
    if path.name == RECORD_NAME:
        return path.is_file()
    return path.is_dir() and any((path / n).exists() for n in (RECORD_NAME, *OLD_PROGRAM_FILES))
