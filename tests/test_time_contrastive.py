"""The time-contrastive method (mmcontrast.methods.time_contrastive): batches, position check, and its loss against
the loss core called by hand on the same frame embeddings."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmcontrast.losses import info_nce, multi_positive_info_nce, time_masks, triplet_margin_loss
from mmcontrast.methods.time_contrastive import TimeContrastive, moment_ids
from mmcontrast.modalities.image import ImageEncoder
from mmcontrast.modalities.video import VideoEncoder


def encoder() -> VideoEncoder:
    torch.manual_seed(0)
    return VideoEncoder(ImageEncoder.create("timm/test_vit", image_size=32), "mean")


def rows(num_rows: int, views: int, frames: int = 5, seed: int = 0) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    out = []
    for index in range(num_rows):
        shape = (views, frames, 32, 32, 3) if views > 1 else (frames, 32, 32, 3)
        clip = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
        times = torch.sort(torch.randperm(20, generator=generator)[:frames]).values.double()
        out.append({"views" if views > 1 else "frames": clip, "times": times, "video": index // 2})
    return out


class SeesPosition(torch.nn.Module):
    frames_see_position = True

    def encode_frames(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return pixel_values.mean(dim=(2, 3, 4))[..., None]


def test_refuses_frame_embeddings_that_see_position() -> None:
    with pytest.raises(ValueError, match="counting frames"):
        TimeContrastive(SeesPosition())
    with pytest.raises(TypeError, match="encode_frames"):
        TimeContrastive(torch.nn.Linear(2, 2))


def test_a_video_encoder_with_a_temporal_transformer_is_accepted_its_frames_do_not_see_position() -> None:
    tower = ImageEncoder.create("timm/test_vit", image_size=32)
    method = TimeContrastive(VideoEncoder(tower, "transformer", layers=1, heads=4, max_frames=8))
    assert method.encoder.sees_position and not method.encoder.frames_see_position


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="pos_radius <= neg_radius"):
        TimeContrastive(encoder(), pos_radius=3, neg_radius=1)
    with pytest.raises(ValueError, match="loss must be one of"):
        TimeContrastive(encoder(), loss="hinge")


@pytest.mark.parametrize("views", [1, 2])
def test_batch_shapes(views: int) -> None:
    method = TimeContrastive(encoder(), loss="triplet", pos_radius=1, neg_radius=3)
    batch = method.collate(rows(4, views))
    assert batch["pixel_values"].shape == (4, views, 5, 3, 32, 32)
    assert batch["times"].shape == (4, 5) and batch["videos"].tolist() == [0, 0, 1, 1]
    frames = method.embed(batch)["frames"]
    assert frames.shape == (4, views, 5, method.encoder.embedding_dim)
    torch.testing.assert_close(frames.norm(dim=-1), torch.ones(4, views, 5))


def test_rows_without_frames_are_refused() -> None:
    with pytest.raises(ValueError, match="FrameWindows"):
        TimeContrastive(encoder()).collate([{"video": 0, "times": [0.0]}])


@pytest.mark.parametrize("loss", ["triplet", "infonce"])
@pytest.mark.parametrize("views", [1, 3])
def test_loss_is_the_core_loss_over_masks_built_from_video_and_time(loss: str, views: int) -> None:
    method = TimeContrastive(encoder(), loss=loss, pos_radius=2, neg_radius=4, temperature=0.2, gather=False)
    batch = method.collate(rows(4, views))
    embeddings = method.embed(batch)
    flat = embeddings["frames"].reshape(-1, embeddings["frames"].shape[-1])
    # frame k of view v of row b sits at flat index (b * views + v) * 5 + k
    times = batch["times"][:, None, :].expand(4, views, 5).reshape(-1)
    videos = batch["videos"][:, None, None].expand(4, views, 5).reshape(-1)
    positive, negative = time_masks(times, videos, pos_radius=2, neg_radius=4)
    if loss == "triplet":
        expected = triplet_margin_loss(
            flat, positive_mask=positive, negative_mask=negative, margin=0.2, mining="semi_hard", distance="euclidean"
        )
    else:
        expected = multi_positive_info_nce(flat, positive_mask=positive, negative_mask=negative, scale=5.0)
    output = method.loss(embeddings, batch)
    torch.testing.assert_close(output.loss, expected)
    assert output.loss > 0 and set(output.metrics) == {"positive_cosine", "negative_cosine"}


def test_multi_view_positives_are_the_same_moment_in_other_views() -> None:
    times = torch.tensor([0.0, 1.0, 0.0, 1.0])
    videos = torch.zeros(4, dtype=torch.long)  # frames 0, 1 seen by view 0, then by view 1
    positive, negative = time_masks(times, videos, pos_radius=0, neg_radius=0)
    assert positive.tolist() == [
        [False, False, True, False],
        [False, False, False, True],
        [True, False, False, False],
        [False, True, False, False],
    ]
    assert negative.tolist() == [
        [False, True, False, True],
        [True, False, True, False],
        [False, True, False, True],
        [True, False, True, False],
    ]


def test_npairs_is_info_nce_between_views_plus_the_l2_penalty() -> None:
    method = TimeContrastive(encoder(), loss="npairs", l2_penalty=0.01, gather=False)
    batch = method.collate(rows(4, 2))
    embeddings = method.embed(batch)
    frames = embeddings["frames"]
    assert not torch.allclose(frames.norm(dim=-1), torch.ones(4, 2, 5))  # raw dot products, not unit vectors
    ids = moment_ids(batch["videos"][:, None].expand(4, 5), batch["times"]).reshape(-1)
    a, b = frames[:, 0].reshape(20, -1), frames[:, 1].reshape(20, -1)
    expected = (
        info_nce(a, b, scale=1.0, normalize=False, labels=ids) + info_nce(b, a, scale=1.0, normalize=False, labels=ids)
    ) / 2
    expected = expected + 0.01 * frames.reshape(40, -1).pow(2).sum(-1).mean()
    torch.testing.assert_close(method.loss(embeddings, batch).loss, expected)
    with pytest.raises(ValueError, match="synchronised views"):
        single = method.collate(rows(2, 1))
        method.loss(method.embed(single), single)


def test_training_steps_lower_the_loss_on_a_fixed_batch() -> None:
    method = TimeContrastive(encoder(), loss="infonce", pos_radius=1, neg_radius=3, gather=False)
    batch = method.collate(rows(4, 2))
    optimizer = torch.optim.AdamW(method.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        output = method(batch)
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        losses.append(float(output.loss.detach()))
    assert losses[-1] < losses[0] - 0.1, losses
    assert all(F.normalize(p.grad.flatten(), dim=0).isfinite().all() for p in method.parameters() if p.grad is not None)
