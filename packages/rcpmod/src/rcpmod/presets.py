"""Per-dataset hyperparameters of the official ``configure.py`` (B1/B2 of the spec), plus the
CPU preset used for the shipped data.

Every value can be overridden by the matching :class:`~rcpmod.RCPMOD` argument. Fields:

* ``hidden``: encoder widths between input and latent; ``latent``: latent size;
* ``epochs``; ``memory_size``: batches kept in the potential-outlier bank;
* ``rw``: weight of the reconstruction score in the fusion;
* ``warmup_max``, ``sr_final``, ``schedule_epochs``: the w(t) schedule (``loss_paras[2]`` is
  ``sr_final``); ``neg_rank``: the rank of the triplet negative; ``change_neg_epoch``.
"""

from __future__ import annotations

__all__ = ["PRESETS"]

_COMMON = {"neg_rank": 50, "change_neg_epoch": 5, "warmup_max": 0.02}

PRESETS: dict[str, dict] = {
    "scene15": {**_COMMON, "hidden": (1024, 1024), "latent": 64, "epochs": 90, "memory_size": 5,
                "rw": 0.25, "sr_final": 0.4, "schedule_epochs": 400},
    "landuse21": {**_COMMON, "hidden": (1024, 1024), "latent": 64, "epochs": 115,
                  "memory_size": 5, "rw": 0.6, "sr_final": 0.2, "schedule_epochs": 1000},
    "bdgp": {**_COMMON, "hidden": (1024,), "latent": 64, "epochs": 130, "memory_size": 10,
             "rw": 0.25, "warmup_max": 0.01, "sr_final": 0.2, "schedule_epochs": 1000,
             "change_neg_epoch": 1},
    "handwritten": {**_COMMON, "hidden": (1024, 1024), "latent": 64, "epochs": 50,
                    "memory_size": 5, "rw": 0.7, "sr_final": 0.2, "schedule_epochs": 1000},
    "fashion": {**_COMMON, "hidden": (1024,), "latent": 256, "epochs": 400, "memory_size": 10,
                "rw": 0.5, "warmup_max": 0.05, "sr_final": 0.4, "schedule_epochs": 700,
                "change_neg_epoch": 10},
    # not in the official code: Scene-15's recipe at width 256 (spec B4 calibration), for CPUs;
    # rw 0.5 is Fashion's value, the middle of the official range (chosen before any run)
    "cpu256": {**_COMMON, "hidden": (256, 256), "latent": 64, "epochs": 90, "memory_size": 5,
               "rw": 0.5, "sr_final": 0.2, "schedule_epochs": 400},
}  # fmt: skip
