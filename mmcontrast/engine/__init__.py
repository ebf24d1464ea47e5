"""Engine: the one Accelerate training loop, and atomic checkpoints."""

from mmcontrast.engine.config import TrainingConfig
from mmcontrast.engine.trainer import Trainer, TrainingResult

__all__ = ["Trainer", "TrainingConfig", "TrainingResult"]
