"""Input validation: every error names the loss and the offending argument."""

from __future__ import annotations

import re

import pytest
import torch

from mmcontrast.losses import (
    CoSENTLoss,
    InfoNCELoss,
    LogitScale,
    NTXentLoss,
    PairMarginLoss,
    SigmoidLoss,
    TripletMarginLoss,
    cosent_loss,
    cosine_similarity_loss,
    info_nce,
    nt_xent,
    pair_margin_loss,
    sigmoid_loss,
    triplet_margin_loss,
)


def x(*shape: int) -> torch.Tensor:
    return torch.randn(*shape)


def with_value(tensor: torch.Tensor, index: tuple[int, ...], value: float) -> torch.Tensor:
    tensor = tensor.clone()
    tensor[index] = value
    return tensor


LABELS = torch.tensor([0, 0, 1, 1])

CASES = {
    # info_nce
    "info_nce shape mismatch": (
        lambda: info_nce(x(4, 8), x(3, 8)),
        ValueError,
        "info_nce: anchors has shape (4, 8) but positives has shape (3, 8); every anchor needs exactly one positive",
    ),
    "info_nce dim mismatch": (lambda: info_nce(x(4, 8), x(4, 6)), ValueError, "positives has shape (4, 6)"),
    "info_nce 1-D anchors": (
        lambda: info_nce(x(8), x(8)),
        ValueError,
        "info_nce: anchors must have shape [B, d], got a 1-D tensor of shape (8,)",
    ),
    "info_nce empty batch": (
        lambda: info_nce(x(0, 8), x(0, 8)),
        ValueError,
        "info_nce: anchors is empty (shape (0, 8))",
    ),
    "info_nce NaN positive": (
        lambda: info_nce(x(4, 8), with_value(x(4, 8), (2, 5), float("nan"))),
        ValueError,
        "info_nce: positives contains NaN or Inf at row 2",
    ),
    "info_nce Inf negative": (
        lambda: info_nce(x(4, 8), x(4, 8), with_value(x(4, 3, 8), (1, 2, 0), float("inf"))),
        ValueError,
        "info_nce: negatives contains NaN or Inf at row 1",
    ),
    "info_nce negatives batch": (
        lambda: info_nce(x(4, 8), x(4, 8), x(5, 8)),
        ValueError,
        "info_nce: negatives has shape (5, 8) but anchors has shape (4, 8); "
        "negatives must be [B, d] or [B, K, d] with B=4, d=8",
    ),
    "info_nce negatives dim": (
        lambda: info_nce(x(4, 8), x(4, 8), x(4, 2, 7)),
        ValueError,
        "negatives has shape",
    ),
    "info_nce negatives 4-D": (
        lambda: info_nce(x(4, 8), x(4, 8), x(4, 2, 2, 8)),
        ValueError,
        "info_nce: negatives must have shape [B, d] or [B, K, d], got a 4-D tensor",
    ),
    "info_nce labels length": (
        lambda: info_nce(x(4, 8), x(4, 8), labels=torch.arange(5)),
        ValueError,
        "info_nce: labels has shape (5,) but the batch has 4 rows",
    ),
    "info_nce float labels": (
        lambda: info_nce(x(4, 8), x(4, 8), labels=torch.zeros(4)),
        TypeError,
        "info_nce: labels must hold integer class ids",
    ),
    "info_nce scale": (
        lambda: info_nce(x(4, 8), x(4, 8), scale=0.0),
        ValueError,
        "info_nce: scale must be a positive finite number",
    ),
    "info_nce tensor scale": (
        lambda: info_nce(x(4, 8), x(4, 8), scale=torch.ones(2)),
        ValueError,
        "info_nce: scale must be a scalar tensor",
    ),
    "info_nce list input": (
        lambda: info_nce([[1.0]], x(1, 1)),
        TypeError,
        "info_nce: anchors must be a torch.Tensor, got list",
    ),
    "info_nce integer input": (
        lambda: info_nce(torch.ones(2, 3, dtype=torch.long), x(2, 3)),
        TypeError,
        "info_nce: anchors must be a floating-point tensor",
    ),
    "info_nce shared negatives dim": (
        lambda: info_nce(x(4, 8), x(4, 8), shared_negatives=x(16, 7)),
        ValueError,
        "info_nce: shared_negatives has shape (16, 7) but anchors has shape (4, 8); "
        "shared_negatives must be [M, d] with d=8",
    ),
    "info_nce shared negatives 3-D": (
        lambda: info_nce(x(4, 8), x(4, 8), shared_negatives=x(4, 2, 8)),
        ValueError,
        "info_nce: shared_negatives must have shape [M, d], got a 3-D tensor",
    ),
    "info_nce chunk_size": (
        lambda: info_nce(x(4, 8), x(4, 8), chunk_size=0),
        ValueError,
        "info_nce: chunk_size must be a positive int or None, got 0",
    ),
    "info_nce float chunk_size": (
        lambda: info_nce(x(4, 8), x(4, 8), chunk_size=2.5),
        ValueError,
        "info_nce: chunk_size must be a positive int or None, got 2.5",
    ),
    # nt_xent
    "nt_xent chunk_size": (
        lambda: nt_xent(x(4, 8), x(4, 8), chunk_size=-1),
        ValueError,
        "nt_xent: chunk_size must be a positive int or None, got -1",
    ),
    "nt_xent shape mismatch": (
        lambda: nt_xent(x(4, 8), x(5, 8)),
        ValueError,
        "nt_xent: z1 has shape (4, 8) but z2 has shape (5, 8)",
    ),
    "nt_xent empty": (lambda: nt_xent(x(0, 8), x(0, 8)), ValueError, "nt_xent: z1 is empty"),
    "nt_xent NaN": (
        lambda: nt_xent(x(4, 8), with_value(x(4, 8), (3, 0), float("nan"))),
        ValueError,
        "nt_xent: z2 contains NaN or Inf at row 3",
    ),
    "nt_xent temperature": (
        lambda: nt_xent(x(4, 8), x(4, 8), temperature=-0.1),
        ValueError,
        "nt_xent: temperature must be a positive finite number",
    ),
    "nt_xent labels": (
        lambda: nt_xent(x(4, 8), x(4, 8), labels=torch.arange(8)),
        ValueError,
        "nt_xent: labels has shape (8,) but the batch has 4 rows",
    ),
    # triplet_margin_loss
    "triplet labels length": (
        lambda: triplet_margin_loss(x(5, 8), LABELS),
        ValueError,
        "triplet_margin_loss: labels has shape (4,) but the batch has 5 rows",
    ),
    "triplet labels 2-D": (
        lambda: triplet_margin_loss(x(4, 8), LABELS[:, None]),
        ValueError,
        "triplet_margin_loss: labels has shape (4, 1)",
    ),
    "triplet mining": (
        lambda: triplet_margin_loss(x(4, 8), LABELS, mining="hardest"),
        ValueError,
        "triplet_margin_loss: mining must be one of 'batch_all', 'batch_hard', 'semi_hard', got 'hardest'",
    ),
    "triplet distance": (
        lambda: triplet_margin_loss(x(4, 8), LABELS, distance="manhattan"),
        ValueError,
        "triplet_margin_loss: distance must be one of",
    ),
    "triplet empty": (
        lambda: triplet_margin_loss(x(0, 8), LABELS[:0]),
        ValueError,
        "triplet_margin_loss: embeddings is empty",
    ),
    "triplet Inf": (
        lambda: triplet_margin_loss(with_value(x(4, 8), (1, 1), float("-inf")), LABELS),
        ValueError,
        "triplet_margin_loss: embeddings contains NaN or Inf at row 1",
    ),
    # pair_margin_loss
    "pair shape mismatch": (
        lambda: pair_margin_loss(x(4, 8), x(4, 9), LABELS),
        ValueError,
        "pair_margin_loss: a has shape (4, 8) but b has shape (4, 9)",
    ),
    "pair labels values": (
        lambda: pair_margin_loss(x(4, 8), x(4, 8), torch.tensor([0, 1, 2, 1])),
        ValueError,
        "pair_margin_loss: labels must be 0 (dissimilar) or 1 (similar)",
    ),
    "pair labels length": (
        lambda: pair_margin_loss(x(4, 8), x(4, 8), LABELS[:3]),
        ValueError,
        "pair_margin_loss: labels has shape (3,) but the batch has 4 rows",
    ),
    "pair NaN labels": (
        lambda: pair_margin_loss(x(4, 8), x(4, 8), torch.tensor([0.0, 1.0, float("nan"), 1.0])),
        ValueError,
        "pair_margin_loss: labels contains NaN or Inf at row 2",
    ),
    "pair reduction": (
        lambda: pair_margin_loss(x(4, 8), x(4, 8), LABELS, reduction="avg"),
        ValueError,
        "pair_margin_loss: reduction must be one of 'mean', 'sum', 'none', got 'avg'",
    ),
    "pair distance": (
        lambda: pair_margin_loss(x(4, 8), x(4, 8), LABELS, distance="dot"),
        ValueError,
        "pair_margin_loss: distance must be one of",
    ),
    "pair empty": (
        lambda: pair_margin_loss(x(0, 8), x(0, 8), LABELS[:0]),
        ValueError,
        "pair_margin_loss: a is empty",
    ),
    # cosent_loss / cosine_similarity_loss
    "cosent scores length": (
        lambda: cosent_loss(x(4, 8), x(4, 8), torch.rand(3)),
        ValueError,
        "cosent_loss: scores has shape (3,) but the batch has 4 rows",
    ),
    "cosent NaN scores": (
        lambda: cosent_loss(x(4, 8), x(4, 8), torch.tensor([0.1, float("nan"), 0.3, 0.4])),
        ValueError,
        "cosent_loss: scores contains NaN or Inf at row 1",
    ),
    "cosent NaN input": (
        lambda: cosent_loss(with_value(x(4, 8), (0, 0), float("nan")), x(4, 8), torch.rand(4)),
        ValueError,
        "cosent_loss: a contains NaN or Inf at row 0",
    ),
    "cosent scale": (
        lambda: cosent_loss(x(4, 8), x(4, 8), torch.rand(4), scale=-1.0),
        ValueError,
        "cosent_loss: scale must be a positive finite number",
    ),
    "cosine similarity mismatch": (
        lambda: cosine_similarity_loss(x(4, 8), x(2, 8), torch.rand(4)),
        ValueError,
        "cosine_similarity_loss: a has shape (4, 8) but b has shape (2, 8)",
    ),
    "cosine similarity empty": (
        lambda: cosine_similarity_loss(x(4, 0), x(4, 0), torch.rand(4)),
        ValueError,
        "cosine_similarity_loss: a is empty (shape (4, 0))",
    ),
    "cosine similarity scores 2-D": (
        lambda: cosine_similarity_loss(x(4, 8), x(4, 8), torch.rand(4, 1)),
        ValueError,
        "cosine_similarity_loss: scores has shape (4, 1)",
    ),
    # sigmoid_loss
    "sigmoid shape mismatch": (
        lambda: sigmoid_loss(x(4, 8), x(3, 8)),
        ValueError,
        "sigmoid_loss: a has shape (4, 8) but b has shape (3, 8); every a needs exactly one positive b",
    ),
    "sigmoid NaN": (
        lambda: sigmoid_loss(x(4, 8), with_value(x(4, 8), (2, 1), float("nan"))),
        ValueError,
        "sigmoid_loss: b contains NaN or Inf at row 2",
    ),
    "sigmoid scale": (lambda: sigmoid_loss(x(4, 8), x(4, 8), scale=-1.0), ValueError, "sigmoid_loss: scale must be"),
    "sigmoid bias": (
        lambda: sigmoid_loss(x(4, 8), x(4, 8), bias=float("nan")),
        ValueError,
        "sigmoid_loss: bias must be a finite number, got nan",
    ),
    "sigmoid tensor bias": (
        lambda: sigmoid_loss(x(4, 8), x(4, 8), bias=torch.zeros(2)),
        ValueError,
        "sigmoid_loss: bias must be a scalar tensor, got shape (2,)",
    ),
    "sigmoid chunk_size": (
        lambda: sigmoid_loss(x(4, 8), x(4, 8), chunk_size=True),
        ValueError,
        "sigmoid_loss: chunk_size must be a positive int or None, got True",
    ),
    # modules
    "SigmoidLoss bias_init": (
        lambda: SigmoidLoss(bias_init=float("inf")),
        ValueError,
        "SigmoidLoss: bias_init must be a finite number, got inf",
    ),
    "SigmoidLoss scale_init": (lambda: SigmoidLoss(scale_init=0.5), ValueError, "LogitScale: init must lie in"),
    "InfoNCELoss chunk_size": (
        lambda: InfoNCELoss(chunk_size=0),
        ValueError,
        "InfoNCELoss: chunk_size must be a positive int or None",
    ),
    "InfoNCELoss scale and logit_scale": (
        lambda: InfoNCELoss(scale=10.0, logit_scale=LogitScale()),
        ValueError,
        "InfoNCELoss: pass either scale or logit_scale, not both",
    ),
    "InfoNCELoss scale": (lambda: InfoNCELoss(scale=0.0), ValueError, "InfoNCELoss: scale must be"),
    "NTXentLoss temperature": (lambda: NTXentLoss(temperature=0.0), ValueError, "NTXentLoss: temperature"),
    "TripletMarginLoss mining": (
        lambda: TripletMarginLoss(mining="all"),
        ValueError,
        "TripletMarginLoss: mining must be one of",
    ),
    "TripletMarginLoss distance": (
        lambda: TripletMarginLoss(distance="l1"),
        ValueError,
        "TripletMarginLoss: distance must be one of",
    ),
    "PairMarginLoss reduction": (
        lambda: PairMarginLoss(reduction="avg"),
        ValueError,
        "PairMarginLoss: reduction must be one of",
    ),
    "CoSENTLoss scale": (lambda: CoSENTLoss(scale=float("inf")), ValueError, "CoSENTLoss: scale must be"),
    "LogitScale max_scale": (
        lambda: LogitScale(max_scale=0.5),
        ValueError,
        "LogitScale: max_scale must be a finite number >= 1",
    ),
    "LogitScale init": (
        lambda: LogitScale(init=0.5),
        ValueError,
        "LogitScale: init must lie in [1, max_scale=100.0], got 0.5",
    ),
    "module forward": (
        lambda: TripletMarginLoss()(x(4, 8), LABELS[:2]),
        ValueError,
        "triplet_margin_loss: labels has shape (2,)",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_error_names_the_argument(case):
    call, error, message = CASES[case]
    with pytest.raises(error, match=re.escape(message)):
        call()


def test_valid_edge_cases_do_not_raise():
    # A single pair is a valid (if trivial) batch for the softmax losses.
    assert info_nce(x(1, 4), x(1, 4)).item() == pytest.approx(0.0, abs=1e-6)
    assert nt_xent(x(1, 4), x(1, 4)).item() == pytest.approx(0.0, abs=1e-6)
    # Pair labels and scores may be bool or integer.
    pair_margin_loss(x(2, 4), x(2, 4), torch.tensor([True, False]))
    cosent_loss(x(2, 4), x(2, 4), torch.tensor([1, 0]))
