"""mmcontrast: contrastive representation learning for text, images, audio and video on Hugging Face.

The Python API (docs/python-api.md) is importable from here; it loads on first use, so ``import mmcontrast``
stays light: :func:`load_recipe`, :func:`check_recipe`, :func:`train`, :func:`save_model` (:mod:`mmcontrast.api`),
:class:`Trainer`, :class:`TrainingConfig`, :class:`TrainerCallback` (:mod:`mmcontrast.engine`).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_recipe": "mmcontrast.api",
    "check_recipe": "mmcontrast.api",
    "train": "mmcontrast.api",
    "save_model": "mmcontrast.api",
    "Trainer": "mmcontrast.engine.trainer",
    "TrainingConfig": "mmcontrast.engine.config",
    "TrainerCallback": "mmcontrast.engine.callbacks",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mmcontrast' has no attribute {name!r}")
