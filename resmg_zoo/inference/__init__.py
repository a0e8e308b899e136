"""Inference: the eval-mode model rewritten to run the convolutions and little else (``fold``: batch
norm folded into the convolution before it, one module per call site), the fast path every inference
command takes (``fast_path``), and int8 programs through torchao's PT2E flow (``int8``)."""
