"""The pretrained tags (datasets) every model is registered with, and their input statistics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .choices import check_choice

PAPER_ID = "arXiv:1911.10428"
PAPER_TITLE = "Constrained Linear Data-feature Mapping for Image Classification"
DEFAULT_HUB_ORG = "resmg-zoo"
LICENSE = "mit"
PAPER_BIBTEX = """@article{he2019constrained,
  title   = {Constrained Linear Data-feature Mapping for Image Classification},
  author  = {He, Juncai and Chen, Yuyan and Zhang, Lian and Xu, Jinchao},
  journal = {arXiv preprint arXiv:1911.10428},
  year    = {2019}
}"""


@dataclass(frozen=True)
class DatasetTag:
    """What a ``<model>.<tag>`` checkpoint expects as input and predicts as output."""

    name: str
    num_classes: int
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    label_names: tuple[str, ...]
    hub_dataset: str  # the dataset's id on the Hugging Face Hub, for model cards
    train_images: int  # the sizes of the standard train and test splits
    test_images: int

    @property
    def in_chans(self) -> int:
        return self.input_size[0]


# Mean/std are the usual per-channel statistics of each training set (0–1 scale).
# Class names in label order (torchvision's; for CIFAR-10 and MNIST also the sorted folder names of the archives).
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR100_CLASSES = tuple(
    """apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can
    castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin
    elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster
    man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck
    pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk
    skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger
    tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm""".split()
)
MNIST_CLASSES = tuple(str(d) for d in range(10))
TAGS: dict[str, DatasetTag] = {
    "cifar10": DatasetTag(
        "cifar10", 10, (3, 32, 32), (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
        CIFAR10_CLASSES, "uoft-cs/cifar10", 50_000, 10_000,
    ),
    "cifar100": DatasetTag(
        "cifar100", 100, (3, 32, 32), (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
        CIFAR100_CLASSES, "uoft-cs/cifar100", 50_000, 10_000,
    ),
    "mnist": DatasetTag("mnist", 10, (1, 28, 28), (0.1307,), (0.3081,), MNIST_CLASSES, "ylecun/mnist", 60_000, 10_000),
}  # fmt: skip
DEFAULT_TAG = "cifar10"


def get_tag(name: str) -> DatasetTag:
    """The tag called ``name``; an unknown name raises ``ValueError`` listing the valid ones."""
    return TAGS[check_choice("pretrained tag", name, TAGS)]


def resolve_tag(pretrained_cfg: Any) -> str:
    """The tag a ``pretrained_cfg`` argument names: timm passes the ``.tag`` of a name as a string,
    an ``hf-hub:``/``local-dir:`` config as a dict; nothing means the default tag."""
    if pretrained_cfg is None or pretrained_cfg == "":
        return DEFAULT_TAG
    if isinstance(pretrained_cfg, str):
        return get_tag(pretrained_cfg).name
    tag = pretrained_cfg.get("tag") if isinstance(pretrained_cfg, dict) else getattr(pretrained_cfg, "tag", None)
    return get_tag(tag).name if tag else DEFAULT_TAG


class HubIdError(ValueError):
    """A Hub repository id that huggingface_hub would refuse (or that would escape a folder as a path)."""


def check_hub_id(repo_id: str, what: str = "hub id") -> str:
    """``repo_id`` if it is ``<namespace>/<name>`` by huggingface_hub's own rule (``validate_repo_id``:
    letters, digits, ``-_.``, no ``..`` or ``--``, at most 96 characters); else :class:`HubIdError` naming it.
    Only such an id is ever joined into a path (a mirror folder) or sent to the Hub."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise HubIdError(f"{what} {repo_id!r} is not a valid Hugging Face Hub repo id: {err}") from None
    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise HubIdError(
            f"{what} {repo_id!r} must be <namespace>/<name> (one '/'), e.g. {DEFAULT_HUB_ORG}/<model>.<tag>"
        )
    return repo_id


def hub_id(model: str, tag: str, org: str = DEFAULT_HUB_ORG) -> str:
    """The Hugging Face Hub repository id ``<org>/<model>.<tag>`` of a published checkpoint (checked)."""
    return check_hub_id(f"{org}/{model}.{tag}", "the Hub id made from --org")


def pool_size(input_size: tuple[int, int, int], num_poolings: int = 3) -> tuple[int, int]:
    """Spatial size after ``num_poolings`` stride-2 3×3 convolutions with padding 1 (ceil halving)."""
    h, w = input_size[1:]
    for _ in range(num_poolings):
        h, w = (h + 1) // 2, (w + 1) // 2
    return h, w
