"""Engine: the one Accelerate training loop, and atomic checkpoints."""

from mmcontrast.engine.trainer import Trainer, TrainingConfig, TrainingResult

__all__ = ["Trainer", "TrainingConfig", "TrainingResult"]
