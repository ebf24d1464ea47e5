"""Contrastive losses on embeddings: functional forms plus thin ``nn.Module`` wrappers.

Every loss validates its inputs (errors name the offending argument), computes in float32 even
under autocast, and takes embeddings, never a model. See ``docs/losses.md`` for the formulas.
"""

from mmcontrast.losses.info_nce import InfoNCELoss, LogitScale, info_nce
from mmcontrast.losses.nt_xent import NTXentLoss, nt_xent
from mmcontrast.losses.pair_margin import PairMarginLoss, pair_margin_loss
from mmcontrast.losses.scored_pairs import (
    CoSENTLoss,
    CosineSimilarityLoss,
    cosent_loss,
    cosine_similarity_loss,
)
from mmcontrast.losses.triplet import TripletMarginLoss, triplet_margin_loss

__all__ = [
    "CoSENTLoss",
    "CosineSimilarityLoss",
    "InfoNCELoss",
    "LogitScale",
    "NTXentLoss",
    "PairMarginLoss",
    "TripletMarginLoss",
    "cosent_loss",
    "cosine_similarity_loss",
    "info_nce",
    "nt_xent",
    "pair_margin_loss",
    "triplet_margin_loss",
]
