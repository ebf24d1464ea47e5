"""Contrastive losses on embeddings: functional forms plus thin ``nn.Module`` wrappers.

Every loss validates its inputs (errors name the offending argument), computes in float32 even
under autocast, and takes embeddings, never a model. The softmax and sigmoid losses take
``gather=True`` (cross-process negatives, :mod:`~mmcontrast.losses.distributed`) and
``chunk_size`` (tiled evaluation, :mod:`~mmcontrast.losses.tiled`). :class:`MemoryQueue` and
:class:`EMA` hold the state of momentum methods (MoCo, BYOL). :func:`time_masks` and
:func:`label_masks` build explicit positive / negative masks (Time-Contrastive Networks) for
:func:`triplet_margin_loss` and :func:`multi_positive_info_nce`. :func:`matryoshka_loss` wraps any of them to
train nested embedding prefixes. See ``docs/losses.md`` for the
formulas and ``docs/scaling.md`` for large batches.
"""

from mmcontrast.losses.candidates import (
    CandidateInfoNCELoss,
    CPCLoss,
    CPCOutput,
    candidate_info_nce,
    cpc_info_nce,
    sample_cpc_negatives,
)
from mmcontrast.losses.debiased import (
    DebiasedNTXentLoss,
    HardNegativeNTXentLoss,
    debiased_nt_xent,
    hard_negative_nt_xent,
)
from mmcontrast.losses.decoupled import DCLLoss, DCLWLoss, dcl
from mmcontrast.losses.ema import EMA, MomentumSchedule, cosine_momentum
from mmcontrast.losses.hypersphere import HypersphereLoss, alignment, hypersphere_loss, uniformity
from mmcontrast.losses.info_nce import InfoNCELoss, LogitScale, info_nce
from mmcontrast.losses.lifted import LiftedStructureLoss, lifted_structure_loss
from mmcontrast.losses.matryoshka import MatryoshkaLoss, check_matryoshka_dims, matryoshka_loss, truncate
from mmcontrast.losses.mochi import MochiInfoNCELoss, MochiMixing, mochi_info_nce, mochi_negatives, sample_mochi_mixing
from mmcontrast.losses.multi_positive import MultiPositiveInfoNCELoss, multi_positive_info_nce
from mmcontrast.losses.nce import BinaryNCELoss, MemoryBank, binary_nce, estimate_normaliser
from mmcontrast.losses.non_contrastive import (
    BarlowTwinsLoss,
    NegativeCosineLoss,
    VICRegLoss,
    barlow_twins,
    negative_cosine,
    vicreg,
)
from mmcontrast.losses.npairs import NPairsLoss, npairs
from mmcontrast.losses.nt_xent import NTXentLoss, nt_xent
from mmcontrast.losses.pair_margin import PairMarginLoss, pair_margin_loss
from mmcontrast.losses.queue import MemoryQueue
from mmcontrast.losses.scored_pairs import (
    CoSENTLoss,
    CosineSimilarityLoss,
    cosent_loss,
    cosine_similarity_loss,
)
from mmcontrast.losses.sigmoid import SigmoidLoss, sigmoid_loss
from mmcontrast.losses.soft_nn import SoftNearestNeighbourLoss, soft_nearest_neighbour_loss
from mmcontrast.losses.supcon import SupConLoss, supcon
from mmcontrast.losses.time_masks import label_masks, time_masks
from mmcontrast.losses.triplet import TripletMarginLoss, triplet_margin_loss

__all__ = [
    "EMA",
    "BarlowTwinsLoss",
    "BinaryNCELoss",
    "CPCLoss",
    "CPCOutput",
    "CandidateInfoNCELoss",
    "CoSENTLoss",
    "CosineSimilarityLoss",
    "DCLLoss",
    "DCLWLoss",
    "DebiasedNTXentLoss",
    "HardNegativeNTXentLoss",
    "HypersphereLoss",
    "InfoNCELoss",
    "LiftedStructureLoss",
    "LogitScale",
    "MatryoshkaLoss",
    "MemoryBank",
    "MemoryQueue",
    "MochiInfoNCELoss",
    "MochiMixing",
    "MomentumSchedule",
    "MultiPositiveInfoNCELoss",
    "NPairsLoss",
    "NTXentLoss",
    "NegativeCosineLoss",
    "PairMarginLoss",
    "SigmoidLoss",
    "SoftNearestNeighbourLoss",
    "SupConLoss",
    "TripletMarginLoss",
    "VICRegLoss",
    "alignment",
    "barlow_twins",
    "binary_nce",
    "candidate_info_nce",
    "check_matryoshka_dims",
    "cosent_loss",
    "cosine_momentum",
    "cosine_similarity_loss",
    "cpc_info_nce",
    "dcl",
    "debiased_nt_xent",
    "estimate_normaliser",
    "hard_negative_nt_xent",
    "hypersphere_loss",
    "info_nce",
    "label_masks",
    "lifted_structure_loss",
    "matryoshka_loss",
    "mochi_info_nce",
    "mochi_negatives",
    "multi_positive_info_nce",
    "negative_cosine",
    "npairs",
    "nt_xent",
    "pair_margin_loss",
    "sample_cpc_negatives",
    "sample_mochi_mixing",
    "sigmoid_loss",
    "soft_nearest_neighbour_loss",
    "supcon",
    "time_masks",
    "triplet_margin_loss",
    "truncate",
    "uniformity",
    "vicreg",
]
