"""Training (docs/contract.md §5): ``python -m resmg_zoo.train`` (``cli``) reads a run's settings (``config``,
``recipes``), sets up its data, model and initial weights (``finetune``) and trains it (``engine``)
on one process or many (``distributed``), writing a run folder (``run``, ``checkpoint``, ``log``)
that every tool reads; ``evaluation`` measures a split."""
