"""Hub: model cards and (later) pushing to the Hugging Face Hub."""

from mmcontrast.hub.model_card import CardInfo, write_model_card

__all__ = ["CardInfo", "write_model_card"]
