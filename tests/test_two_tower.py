"""The two-tower method takes any two towers: a pair of toy modalities trains through the same class CLIP is a
configuration of, with the generic names (``{modality}_encoder``, ``{modality}_projection``), locked towers,
caption masking and the tower interface checked."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmcontrast.losses import info_nce
from mmcontrast.methods.two_tower import Tower, TwoTower, stable_hash


class ToyTower(nn.Module):
    """A tower of a made-up modality: fixed-size float vectors -> a linear map."""

    def __init__(self, width: int, embedding_dim: int) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.linear = nn.Linear(width, embedding_dim)

    def preprocess(self, examples):
        return torch.stack([torch.as_tensor(x, dtype=torch.float32) for x in examples])

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.linear(inputs)


class ToyText(ToyTower):
    def preprocess(self, examples):
        return {"ids": torch.tensor([[len(t), sum(map(ord, t)) % 97] for t in examples], dtype=torch.float32)}

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.linear(inputs["ids"])


def _rows(n: int = 6) -> list[dict]:
    torch.manual_seed(0)
    captions = ["a dog barks", "rain", "a dog barks", "a bell", "wind", "a car"][:n]
    return [{"audio": torch.randn(5).tolist(), "caption": c} for c in captions]


def test_any_two_towers_train_with_generic_names():
    torch.manual_seed(0)
    method = TwoTower({"audio": ToyTower(5, 7), "text": ToyText(2, 3)}, embed_dim=4, gather=False)
    assert isinstance(method.audio_encoder, Tower) and isinstance(method.text_encoder, Tower)
    keys = set(method.state_dict())
    assert {"audio_projection.weight", "text_projection.weight", "logit_scale.log_scale"} <= keys
    rows = _rows()
    batch = method.collate(rows)
    assert set(batch) == {"audio", "text", "positive_ids"}
    ids = batch["positive_ids"].tolist()
    assert ids[0] == ids[2] == stable_hash("a dog barks") and len(set(ids)) == 5  # same caption: not negatives
    embeddings = method.embed(batch)
    assert embeddings["audio"].shape == embeddings["text"].shape == (6, 4)
    output = method(batch)
    expected = info_nce(
        embeddings["audio"], embeddings["text"], scale=method.logit_scale(), symmetric=True,
        normalize=False, labels=batch["positive_ids"], gather=False,
    )  # fmt: skip
    assert torch.allclose(output.loss, expected)
    output.loss.backward()
    assert method.audio_encoder.linear.weight.grad is not None and method.text_projection.weight.grad is not None
    assert method.encode("audio", [row["audio"] for row in rows], batch_size=4).shape == (6, 4)


def test_locked_tower_gets_no_gradient_and_stays_in_eval_mode():
    method = TwoTower({"audio": ToyTower(5, 7), "text": ToyText(2, 3)}, embed_dim=4, locked=("text",), gather=False)
    method.train()
    assert not method.text_encoder.training and method.audio_encoder.training
    method(method.collate(_rows())).loss.backward()
    assert all(p.grad is None for p in method.text_encoder.parameters())
    assert method.text_projection.weight.grad is not None


def test_bad_tower_sets_are_refused():
    with pytest.raises(ValueError, match="exactly two towers"):
        TwoTower({"audio": ToyTower(5, 4)}, embed_dim=4)
    with pytest.raises(ValueError, match="locked towers"):
        TwoTower({"audio": ToyTower(5, 4), "text": ToyText(2, 4)}, embed_dim=4, locked=("image",))
    with pytest.raises(TypeError, match="the text tower"):
        TwoTower({"audio": ToyTower(5, 4), "text": nn.Linear(2, 4)}, embed_dim=4)
    with pytest.raises(ValueError, match=r"project=False\) needs both towers"):
        TwoTower({"audio": ToyTower(5, 4), "text": ToyText(2, 3)}, embed_dim=4, project=False)


def test_clip_is_the_image_text_configuration():
    from mmcontrast.methods.clip import CLIP

    assert issubclass(CLIP, TwoTower)
    assert TwoTower.projection_name("image") == "visual_projection" and TwoTower.batch_key("image") == "pixel_values"
