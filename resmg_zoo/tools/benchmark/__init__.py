"""The benchmark's room: ``resmg-benchmark`` (:mod:`.command`), its timing loop (:mod:`.timing`), the
convolutions-alone "conv ceiling" (:mod:`.conv_ceiling`), where a training step goes (:mod:`.step_profile`),
and its tables and speed targets (:mod:`.report`). Nothing outside this room imports it."""

from .command import console_main, main

__all__ = ["console_main", "main"]
