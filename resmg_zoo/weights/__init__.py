"""Published weights (docs/weights.md): the ``manifest`` of what is published, the ``resolve``-ing and sha256
check of a file for ``pretrained=True``, the one way a state dict is ``loading``-ed into a model,
``publish``-ing a folder in the Hub's layout, and importing a ``mirror`` of such folders."""
