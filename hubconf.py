"""torch.hub entry points of resmg_zoo: one per registered model.

    model = torch.hub.load("<owner>/resmg_zoo", "preact_resnet18_sharedA", dataset="cifar10")

Each entry point takes ``pretrained=False``, ``dataset="cifar10"`` (the pretrained tag: ``cifar10``,
``cifar100`` or ``mnist``, which also sets ``num_classes`` and ``in_chans``) and any keyword that
``timm.create_model`` accepts (``num_classes``, ``in_chans``, ``share``, ``pool_block``, ``widths``…).
``pretrained=True`` resolves the published weights: ``$RESMG_ZOO_HUB_DIR/<hub id>/``, then the Hub,
each file checked against the sha256 of ``weights_manifest.json``.
"""

dependencies = ["torch", "torchvision", "timm", "safetensors", "huggingface_hub"]

import resmg_zoo as _resmg_zoo  # noqa: E402  (torch.hub reads `dependencies` first)
from resmg_zoo.models.hub import make_entrypoint as _make_entrypoint  # noqa: E402

for _name in _resmg_zoo.list_models():
    globals()[_name] = _make_entrypoint(_name)
