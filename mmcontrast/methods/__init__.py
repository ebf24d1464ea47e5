"""Methods: adapters + heads + how positives and negatives are formed."""

from mmcontrast.methods.base import LossOutput, Method
from mmcontrast.methods.sbert import SbertLossConfig, SentenceBERT
from mmcontrast.methods.two_tower import Tower, TwoTower

__all__ = ["LossOutput", "Method", "SbertLossConfig", "SentenceBERT", "Tower", "TwoTower"]
