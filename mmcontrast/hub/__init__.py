"""Hub: model cards written with the model folders, and pushing those folders to the Hugging Face Hub."""

from mmcontrast.hub.model_card import CardInfo, training_curve, write_model_card
from mmcontrast.hub.push import PushError, push_model

__all__ = ["CardInfo", "PushError", "push_model", "training_curve", "write_model_card"]
