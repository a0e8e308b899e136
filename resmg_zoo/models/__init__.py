"""The models of the paper, registered with timm when this package is imported.

``resnet``: the 16 (pre-act) ResNets with operator sharing (Algorithm 1, §3); ``fresnet``: F-ResNet
(Algorithm 2, §4) as ``fresnet18`` and ``mgnet``. Both are built of ``blocks`` on the ``base`` class
by the ``builder``, which also loads published weights; ``variants`` is the catalogue of names and
``hub`` the ``torch.hub`` entry points.
"""

from .base import LevelNetwork
from .fresnet import FORM_CHOICES, TRANSFER_NORM_CHOICES, FResNet, FResNetLevel
from .resnet import POOL_BLOCK_CHOICES, SHARE_CHOICES, ResMgLevel, ResMgResNet
from .variants import VARIANTS

__all__ = [
    "FORM_CHOICES",
    "POOL_BLOCK_CHOICES",
    "SHARE_CHOICES",
    "TRANSFER_NORM_CHOICES",
    "VARIANTS",
    "FResNet",
    "FResNetLevel",
    "LevelNetwork",
    "ResMgLevel",
    "ResMgResNet",
]
