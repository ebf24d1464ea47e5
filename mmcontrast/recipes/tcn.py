"""The TCN recipe: videos -> frame sets in time (one camera or synchronised cameras) -> time-contrastive learning ->
a video encoder folder, scored against random init and raw pixels on held-out views."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from mmcontrast.engine.trainer import TrainingResult
from mmcontrast.evaluation.video_views import (
    compare_on_views,
    embed_views,
    plot_views,
    summary_table,
    view_metrics,
)
from mmcontrast.hub.model_card import CardInfo, training_curve, write_model_card
from mmcontrast.methods.time_contrastive import TimeContrastive
from mmcontrast.recipes.base import EvalSchedule, RecipeBase, RecipeParts, batch_sampler
from mmcontrast.recipes.video_data import VideoAugmentConfig, VideoDataConfig
from mmcontrast.recipes.video_tower import VideoTowerConfig, build_video_tower
from mmcontrast.typed_config import NonNegativeFloat, PositiveFloat, PositiveInt, Seed
from mmcontrast.views.video import FrameWindows, views_from_rows

_USAGE = """from mmcontrast.data.video import decode_video
from mmcontrast.modalities.video import load_video_encoder

encoder = load_video_encoder("{path}")
batch = encoder.preprocess([decode_video("clip.mp4", fps={fps}, size={size})])
frames = encoder.encode_frames(**batch)  # [1, T, {dim}]: one embedding per frame (time-contrastive)
clip = encoder(**batch)                  # [1, {dim}]: pooled over the frames"""


def tiny_frames_tower() -> VideoTowerConfig:
    """The default video tower of the video recipes: a small CLIP vision transformer on 32 x 32 frames, mean pooled."""
    tower = VideoTowerConfig()
    tower.image.config = {
        "model_type": "clip_vision_model",
        "image_size": 32,
        "patch_size": 4,
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 128,
    }
    return tower


@dataclass
class TcnModelConfig:
    """The frame encoder and the time-contrastive loss (`model:` section).

    Attributes:
        video: the video tower; its frame embeddings (the image tower on each frame) are trained. Transformers video
            models mix frames with positional embeddings and are refused (they could count frames).
        loss: `triplet` (semi-hard, TCN's default), `infonce` (multi-positive) or `npairs` (multi-view only).
        pos_radius: frames of one video at most this far apart in time are positives (seconds for files, frames
            for generated videos); 0 with synchronised views: the same moment seen by another camera.
        neg_radius: frames farther apart than this are negatives (frames in between are ignored); frames of other
            videos are always negatives.
        margin: triplet margin (embeddings are unit vectors).
        temperature: InfoNCE temperature.
        l2_penalty: n-pairs' penalty on the squared embedding norm.
        gather: take positives and negatives from every process's frames.
    """

    video: VideoTowerConfig = field(default_factory=tiny_frames_tower)
    loss: Literal["triplet", "infonce", "npairs"] = "triplet"
    pos_radius: NonNegativeFloat = 0.0
    neg_radius: NonNegativeFloat = 0.0
    margin: NonNegativeFloat = 0.2
    temperature: PositiveFloat = 0.1
    l2_penalty: NonNegativeFloat = 0.0
    gather: bool = True


@dataclass
class FrameWindowsConfig:
    """What one training item is (`windows:` section).

    Attributes:
        num_frames: frames drawn (sorted, distinct times, uniform over the whole video) per item.
        augmented_views: for single-camera videos, differently augmented copies of the item's frames (>= 2 makes
            the same moment under two augmentations a positive: invariance to the augmentation, as two cameras give).
        items_per_video: items per video and epoch.
    """

    num_frames: PositiveInt = 8
    augmented_views: PositiveInt = 1
    items_per_video: PositiveInt = 1


@dataclass
class VideoViewsEvalConfig(EvalSchedule):
    """Held-out views to score the encoder on (`eval:` section): alignment error, Kendall's tau, clip retrieval.

    Attributes:
        data: a folder or table of videos (a `sync` column groups synchronised views); null: for generated
            training data, new moving-digits videos of the test digits (other seed), else the training videos.
        num_videos: generated held-out videos.
        num_views: views per video (synchronised cameras, else differently augmented copies).
        max_frames: frames per view decoded from files (at `data.fps`).
        seed: seed of the held-out videos and of the views' augmentation.
        synchronised: views are the synchronised cameras where the data has them; false: augmented copies of each
            video (of its first camera).
    """

    data: str | None = None
    num_videos: PositiveInt = 64
    num_views: PositiveInt = 2
    max_frames: PositiveInt = 64
    seed: Seed = 1000
    synchronised: bool = True


@dataclass
class TcnRecipe(RecipeBase):
    """Time-contrastive networks (Sermanet et al. 2018): single-view and multi-view TCN on videos.

    Attributes:
        method: `tcn`.
        model: the encoder and the loss.
        data: training videos.
        windows: frames per training item.
        augment: one augmentation per item (per camera), the same on all its frames.
        eval: held-out views to score on.
    """

    method: Literal["tcn"] = "tcn"
    output_dir: str = "runs/tcn"
    model: TcnModelConfig = field(default_factory=TcnModelConfig)
    data: VideoDataConfig = field(default_factory=VideoDataConfig)
    windows: FrameWindowsConfig = field(default_factory=FrameWindowsConfig)
    augment: VideoAugmentConfig = field(default_factory=VideoAugmentConfig)
    eval: VideoViewsEvalConfig = field(default_factory=VideoViewsEvalConfig)


def held_out_views(
    data: VideoDataConfig, config: VideoViewsEvalConfig, augment: VideoAugmentConfig, rows: list[dict[str, Any]]
) -> list[list[Any]]:
    """The evaluation views of a video recipe (see :class:`VideoViewsEvalConfig`)."""
    if config.data is None and data.generated:
        rows = data.moving_digits.held_out(config.num_videos, config.seed, config.num_views)
    elif config.data is not None:
        rows = VideoDataConfig(train=config.data, fps=data.fps, frame_size=data.frame_size).rows()[0]
    views, _ = views_from_rows(
        rows,
        num_views=config.num_views,
        augment=augment.build() or VideoAugmentConfig().build(),
        fps=data.fps,
        size=data.frame_size,
        max_frames=config.max_frames,
        seed=config.seed,
        synchronised=config.synchronised,
    )
    return views


def build(recipe: TcnRecipe, raw: dict[str, Any]) -> RecipeParts:
    """Encoder, method, frame windows and sampler of a TCN recipe; held-out views scored during and after it."""
    model = recipe.model
    encoder = build_video_tower(model.video)
    method = TimeContrastive(
        encoder,
        loss=model.loss,
        pos_radius=model.pos_radius,
        neg_radius=model.neg_radius,
        margin=model.margin,
        temperature=model.temperature,
        l2_penalty=model.l2_penalty,
        gather=model.gather,
    )
    untrained = copy.deepcopy(encoder)  # the random-init baseline: exactly where training starts
    rows, skipped = recipe.data.rows()
    recipe.data.report_short(rows, recipe.windows.num_frames)
    windows = FrameWindows(
        rows,
        recipe.windows.num_frames,
        fps=recipe.data.fps,
        augment=recipe.augment.build(),
        augmented_views=recipe.windows.augmented_views,
        items_per_video=recipe.windows.items_per_video,
        seed=recipe.train.seed,
        size=recipe.data.frame_size,
        cache=recipe.data.frame_cache(),
    )
    views = held_out_views(recipe.data, recipe.eval, recipe.augment, rows)
    print(f"eval: {len(views)} held-out videos x {len(views[0])} views")
    evaluators = {"views": lambda trained: view_metrics(*embed_views(trained.encoder, views))}
    return RecipeParts(
        method=method,
        dataset=windows,
        batch_sampler=batch_sampler(recipe.train, len(windows)),
        evaluators=evaluators,
        export=lambda trained, result, output_dir, model_dir: export(
            trained, recipe, raw, result, output_dir, model_dir, views, untrained
        ),
        skipped_rows=skipped,
    )


def versus(scores: dict[str, dict[str, float]], key: str, name: str) -> str:
    """``name`` of the model, then of its random init and raw pixels, for a model card."""
    model, init, pixels = (scores[kind][key] for kind in ("model", "random_init", "pixels"))
    return f"{name} {model:.3f} (random init {init:.3f}, raw pixels {pixels:.3f})"


def save_and_score(
    encoder: Any, views: list[list[Any]], untrained: Any, output_dir: Path, model_dir: Path
) -> dict[str, dict[str, float]]:
    """Save a video encoder folder and score it, its random init (``untrained``) and raw pixels on held-out views:
    ``OUTPUT_DIR/video_eval.json``, a printed table, and the alignment and trajectory plots in the model folder."""
    encoder.save_pretrained(model_dir)
    scores = compare_on_views(encoder, views, baseline=untrained)
    (output_dir / "video_eval.json").write_text(json.dumps(scores, indent=1))
    print("held-out views:\n" + summary_table(scores))
    plot_views(encoder, views, model_dir)
    return scores


def export(
    method: TimeContrastive,
    recipe: TcnRecipe,
    raw: dict[str, Any],
    result: TrainingResult,
    output_dir: Path,
    model_dir: Path,
    views: list[list[Any]],
    untrained: Any,
) -> Path:
    """Write the video encoder folder, score it against its random init and raw pixels on the held-out views
    (`video_eval.json` in the run folder, plots and results in the card)."""
    encoder = method.encoder
    scores = save_and_score(encoder, views, untrained, output_dir, model_dir)
    setting = "synchronised cameras" if len(views[0]) > 1 and recipe.data.generated else "views"
    results = [
        ("video-alignment", recipe.eval.data or "held-out", name, value) for name, value in scores["model"].items()
    ]
    write_model_card(
        model_dir,
        CardInfo(
            title=f"mmcontrast TCN video encoder ({output_dir.name})",
            description=(
                f"A frame encoder trained with time-contrastive learning (TCN, {recipe.model.loss} loss; positives "
                f"within {recipe.model.pos_radius:g} of each other in time, negatives beyond "
                f"{recipe.model.neg_radius:g}) on `{recipe.data.train}`"
                + (" (synthetic moving digits generated at run time)" if recipe.data.generated else "")
                + f". Held-out {setting}: "
                + versus(scores, "alignment_error", "alignment error")
                + ", "
                + versus(scores, "kendall_tau", "Kendall's tau")
                + "."
            ),
            library_name="mmcontrast",
            pipeline_tag="feature-extraction",
            usage=_USAGE.format(
                path=output_dir / "model", fps=recipe.data.fps, size=recipe.data.frame_size, dim=encoder.embedding_dim
            ),
            recipe=yaml.safe_dump(raw, sort_keys=False),
            datasets=[recipe.data.train],
            tags=["tcn", "time-contrastive", "self-supervised", "video", "feature-extraction"],
            results=results,
            image=training_curve(result.log_history, model_dir),
        ),
    )
    return model_dir
