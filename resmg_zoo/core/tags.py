"""The dataset registry: every fact about a dataset in one entry — its classes, input size and
channels, mean/std, standard augmentation, torchvision class, split sizes, Hub id and the epochs of
each recipe. Each entry is also a pretrained tag (``<model>.<tag>``) that every model is registered
with. Adding a dataset is adding one entry to :data:`TAGS`; the loader, the recipes, the model cfgs
and the model cards read it from there."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

from .choices import check_choice
from .errors import UsageError

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


@dataclass(frozen=True, eq=False)
class DatasetTag:
    """One dataset: what a ``<model>.<tag>`` checkpoint expects as input and predicts as output, and
    how it is trained by default.

    ``epochs``: the epochs of each named recipe that leaves them to the dataset (``paper``, ``short``,
    ``sprint``); ``augment``: the standard augmentation (``none``, ``crop``, ``crop_flip``);
    ``torchvision``: the class in ``torchvision.datasets`` that downloads it."""

    name: str
    label_names: tuple[str, ...]
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]  # per channel, 0–1 scale: the usual statistics of the training set
    std: tuple[float, ...]
    augment: str
    epochs: Mapping[str, int]
    torchvision: str
    hub_dataset: str  # the dataset's id on the Hugging Face Hub, for model cards
    train_images: int  # the sizes of the standard train and test splits
    test_images: int
    data_copy: str = ""  # the images the zoo trains on, said where a model card compares its figures with the paper's

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    @property
    def in_chans(self) -> int:
        return self.input_size[0]

    @property
    def pil_mode(self) -> str:
        """What every image decodes to: ``L`` (grayscale) or ``RGB``."""
        return "L" if self.in_chans == 1 else "RGB"


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
    tag.name: tag
    for tag in (
        DatasetTag(
            name="cifar10",
            label_names=CIFAR10_CLASSES,
            input_size=(3, 32, 32),
            mean=(0.4914, 0.4822, 0.4465),
            std=(0.2470, 0.2435, 0.2616),
            augment="crop_flip",
            epochs={"paper": 120, "short": 15, "sprint": 16},
            torchvision="CIFAR10",
            hub_dataset="uoft-cs/cifar10",
            train_images=50_000,
            test_images=10_000,
            data_copy="a JPEG copy of CIFAR-10 at quality 75 (lossy)",
        ),
        DatasetTag(
            name="cifar100",
            label_names=CIFAR100_CLASSES,
            input_size=(3, 32, 32),
            mean=(0.5071, 0.4865, 0.4409),
            std=(0.2673, 0.2564, 0.2762),
            augment="crop_flip",
            epochs={"paper": 120, "short": 15, "sprint": 16},
            torchvision="CIFAR100",
            hub_dataset="uoft-cs/cifar100",
            train_images=50_000,
            test_images=10_000,
        ),
        DatasetTag(
            name="mnist",
            label_names=MNIST_CLASSES,
            input_size=(1, 28, 28),
            mean=(0.1307,),
            std=(0.3081,),
            augment="none",
            epochs={"paper": 60, "short": 3, "sprint": 3},
            torchvision="MNIST",
            hub_dataset="ylecun/mnist",
            train_images=60_000,
            test_images=10_000,
            data_copy="a bit-exact PNG copy of MNIST",
        ),
    )
}
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


class HubIdError(UsageError):
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


REVISION = re.compile(r"^(?:[0-9a-f]{40}|[A-Za-z0-9][A-Za-z0-9_.-]{0,99}(?:/[A-Za-z0-9][A-Za-z0-9_.-]{0,99}){0,4})$")


def check_revision(revision: str, what: str = "revision") -> str:
    """``revision`` if it is a commit id (40 hex digits) or a safe ref name (a branch or tag: letters,
    digits, ``_.-``, ``/``-separated parts that start with a letter or digit, no ``..``, no ``.lock``
    ending); else :class:`HubIdError`. Checked before a revision reaches a URL or a cache path."""
    if not isinstance(revision, str) or not REVISION.match(revision) or ".." in revision or revision.endswith(".lock"):
        raise HubIdError(
            f"{what} {revision!r} is neither a commit id (40 hex digits) nor a branch or tag name "
            "(letters, digits, '_', '.', '-', parts separated by '/', no '..')"
        )
    return revision


def hub_id(model: str, tag: str, org: str = DEFAULT_HUB_ORG) -> str:
    """The Hugging Face Hub repository id ``<org>/<model>.<tag>`` of a published checkpoint (checked)."""
    return check_hub_id(f"{org}/{model}.{tag}", "the Hub id made from --org")


def pool_size(input_size: tuple[int, int, int], num_poolings: int = 3) -> tuple[int, int]:
    """Spatial size after ``num_poolings`` stride-2 3×3 convolutions with padding 1 (ceil halving)."""
    h, w = input_size[1:]
    for _ in range(num_poolings):
        h, w = (h + 1) // 2, (w + 1) // 2
    return h, w


@dataclass(frozen=True)
class DatasetIdentity:
    """What a ``--dataset`` value (as given, or as a run's ``config.json`` records it) names: a dataset of
    the registry by ``name`` (``known``), read from ``path`` where one was given, or an ImageFolder of
    the user's own at ``path``, called ``name``."""

    name: str
    path: Optional[str]

    @property
    def known(self) -> bool:
        return self.name in TAGS


def dataset_identity(value: str) -> DatasetIdentity:
    """The one rule for what a dataset value names. A registry name (``mnist``) is that dataset and never
    a folder of the current directory; anything else is a path — a zip or folder whose name, less
    ``.zip``, is a registry name (``../shared/data/mnist.zip``) is that registry dataset (its tag,
    statistics, recipe), read from the file; any other is the user's own ImageFolder."""
    if value in TAGS:
        return DatasetIdentity(value, None)
    name = value.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1].removesuffix(".zip")
    return DatasetIdentity(name, value)
