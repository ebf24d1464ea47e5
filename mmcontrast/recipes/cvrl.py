"""The CVRL recipe: videos -> two clips of each video a random gap apart, each augmented consistently in time ->
SimCLR's NT-Xent over clip embeddings (other videos' clips are the negatives) -> a video encoder folder."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from mmcontrast.engine.trainer import TrainingResult
from mmcontrast.evaluation.video_views import embed_views, view_metrics
from mmcontrast.hub.model_card import CardInfo, training_curve, write_model_card
from mmcontrast.methods.simclr import SimCLR
from mmcontrast.recipes.base import RecipeBase, RecipeParts, batch_sampler
from mmcontrast.recipes.tcn import VideoViewsEvalConfig, held_out_views, save_and_score, tiny_frames_tower, versus
from mmcontrast.recipes.video_data import VideoAugmentConfig, VideoDataConfig
from mmcontrast.recipes.video_tower import VideoTowerConfig, build_video_tower
from mmcontrast.recipes.view_methods import HeadConfig, build_head
from mmcontrast.typed_config import NonNegativeInt, PositiveFloat, PositiveInt
from mmcontrast.views.video import ClipSampling, VideoClipViews

_USAGE = """from mmcontrast.data.video import decode_clip
from mmcontrast.modalities.video import load_video_encoder

encoder = load_video_encoder("{path}")
clip = decode_clip("clip.mp4", start=0.0, num_frames={frames}, fps={fps}, size={size})
embedding = encoder(**encoder.preprocess([clip]))  # [1, {dim}]"""


@dataclass
class CvrlModelConfig:
    """Encoder, head and loss (`model:` section).

    Attributes:
        video: the video tower (its clip embedding is trained; any pooling, transformers video models too).
        head: the projection head (training only).
        temperature: NT-Xent temperature.
        gather: use every process's clips as negatives.
    """

    video: VideoTowerConfig = field(default_factory=tiny_frames_tower)
    head: HeadConfig = field(default_factory=HeadConfig)
    temperature: PositiveFloat = 0.1
    gather: bool = True


@dataclass
class ClipsConfig:
    """The two clips of each video (`clips:` section).

    Attributes:
        num_frames: frames per clip (at `data.fps` for files).
        max_gap: the largest start gap between the clips, in frames (null: the whole video); gaps are drawn from
            CVRL's decreasing density, so close clips are more likely.
        power: how fast the gap density decreases (1: CVRL's linear density).
        camera: the camera clips are cut from, for generated multi-camera videos (null: clip k from camera k).
    """

    num_frames: PositiveInt = 8
    max_gap: NonNegativeInt | None = None
    power: PositiveFloat = 1.0
    camera: NonNegativeInt | None = 0


@dataclass
class CvrlRecipe(RecipeBase):
    """Clip-level contrast (CVRL, Qian et al. 2021): NT-Xent between two clips of each video.

    Attributes:
        method: `cvrl`.
        model: encoder, head and loss.
        data: training videos.
        clips: how the two clips are cut.
        augment: one augmentation per clip, the same on all its frames.
        eval: held-out views to score on (clip retrieval between views, frame alignment).
    """

    method: Literal["cvrl"] = "cvrl"
    output_dir: str = "runs/cvrl"
    model: CvrlModelConfig = field(default_factory=CvrlModelConfig)
    data: VideoDataConfig = field(default_factory=VideoDataConfig)
    clips: ClipsConfig = field(default_factory=ClipsConfig)
    augment: VideoAugmentConfig = field(default_factory=VideoAugmentConfig)
    eval: VideoViewsEvalConfig = field(default_factory=VideoViewsEvalConfig)


def build(recipe: CvrlRecipe, raw: dict[str, Any]) -> RecipeParts:
    """Encoder, SimCLR method, clip pairs and sampler of a CVRL recipe."""
    model = recipe.model
    encoder = build_video_tower(model.video)
    method = SimCLR(
        encoder,
        build_head(model.head, encoder.embedding_dim),
        modality="video",
        temperature=model.temperature,
        gather=model.gather,
    )
    untrained = copy.deepcopy(encoder)
    rows, skipped = recipe.data.rows()
    recipe.data.report_short(rows, recipe.clips.num_frames)
    clips = VideoClipViews(
        rows,
        ClipSampling(num_frames=recipe.clips.num_frames, fps=recipe.data.fps),
        recipe.augment.build(),
        mode="cvrl",
        max_gap=recipe.clips.max_gap,
        power=recipe.clips.power,
        camera=recipe.clips.camera,
        seed=recipe.train.seed,
        size=recipe.data.frame_size,
        cache=recipe.data.frame_cache(),
    )
    views = held_out_views(recipe.data, recipe.eval, recipe.augment, rows)
    return RecipeParts(
        method=method,
        dataset=clips,
        batch_sampler=batch_sampler(recipe.train, len(clips)),
        evaluators={"views": lambda trained: view_metrics(*embed_views(trained.encoder, views))},
        export=lambda trained, result, output_dir, model_dir: export(
            trained, recipe, raw, result, output_dir, model_dir, views, untrained
        ),
        skipped_rows=skipped,
    )


def export(
    method: SimCLR,
    recipe: CvrlRecipe,
    raw: dict[str, Any],
    result: TrainingResult,
    output_dir: Path,
    model_dir: Path,
    views: list[list[Any]],
    untrained: Any,
) -> Path:
    """Write the video encoder folder (the head is dropped), scored against its random init and raw pixels on the
    held-out views (`video_eval.json`, plots, card)."""
    encoder = method.encoder
    scores = save_and_score(encoder, views, untrained, output_dir, model_dir)
    dataset = recipe.eval.data or "held-out"
    write_model_card(
        model_dir,
        CardInfo(
            title=f"mmcontrast CVRL video encoder ({output_dir.name})",
            description=(
                f"A video encoder trained with clip-level contrast (CVRL: NT-Xent between two clips of "
                f"{recipe.clips.num_frames} frames of each video, a random gap apart; temperature "
                f"{recipe.model.temperature}) on `{recipe.data.train}`"
                + (" (synthetic moving digits generated at run time)" if recipe.data.generated else "")
                + ". Held-out views: "
                + versus(scores, "retrieval/recall@1", "clip retrieval recall@1")
                + ". The projection head was dropped."
            ),
            library_name="mmcontrast",
            pipeline_tag="feature-extraction",
            usage=_USAGE.format(
                path=output_dir / "model",
                frames=recipe.clips.num_frames,
                fps=recipe.data.fps,
                size=recipe.data.frame_size,
                dim=encoder.embedding_dim,
            ),
            recipe=yaml.safe_dump(raw, sort_keys=False),
            datasets=[recipe.data.train],
            tags=["cvrl", "self-supervised", "video", "feature-extraction"],
            results=[("video-retrieval", dataset, name, value) for name, value in scores["model"].items()],
            image=training_curve(result.log_history, model_dir),
        ),
    )
    return model_dir
