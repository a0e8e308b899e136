"""The command-line tools over the package, each ``python -m resmg_zoo.tools.<name>`` (``scripts/`` has
thin entry points): ``evaluate``, ``export``, ``benchmark``, ``reproduce`` (the paper's tables),
``landscape`` (Fig. 3/4), ``param_table`` and ``weights_table`` (the README's tables), ``push_to_hub``."""
