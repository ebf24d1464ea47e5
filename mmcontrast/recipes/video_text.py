"""The video-text recipe: (video clip, caption) pairs -> the two-tower method with a video tower and a text tower ->
a two-tower folder, scored by zero-shot classification of held-out clips from text prompts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
import yaml

from mmcontrast.data.moving_digits import DIGIT_NAMES, DIRECTIONS
from mmcontrast.engine.trainer import TrainingResult
from mmcontrast.evaluation.plots import plot_confusion_matrix
from mmcontrast.evaluation.zero_shot import modality_text_retrieval
from mmcontrast.hub.mmcontrast_clip import load_mmcontrast_clip, register_method_builder, save_mmcontrast_clip
from mmcontrast.hub.model_card import CardInfo, training_curve, write_model_card
from mmcontrast.methods.two_tower import TwoTower
from mmcontrast.recipes.base import EvalSchedule, RecipeBase, RecipeParts, batch_sampler
from mmcontrast.recipes.clip import TextTowerConfig, build_text_tower
from mmcontrast.recipes.tcn import tiny_frames_tower
from mmcontrast.recipes.two_tower import TwoTowerLossConfig, siglip_bias_note
from mmcontrast.recipes.video_data import VideoAugmentConfig, VideoDataConfig
from mmcontrast.recipes.video_tower import VideoTowerConfig, build_video_tower
from mmcontrast.typed_config import PositiveInt, Range, Seed
from mmcontrast.typed_config import build as build_config
from mmcontrast.views.video import ClipSampling, VideoClipViews

_USAGE = """import mmcontrast.recipe  # registers the video-text builder
from mmcontrast.hub.mmcontrast_clip import load_mmcontrast_clip

model = load_mmcontrast_clip("{path}")
videos = model.encode("video", clips)            # clips: uint8 [T, H, W, 3] tensors (mmcontrast.data.video)
texts = model.encode("text", ["a seven moving up", "a seven moving down"])
print((videos @ texts.T).argmax(dim=1))"""

_DIRECTION_TEMPLATES = [f"a {digit} moving {{}}" for digit in DIGIT_NAMES]
_DIGIT_TEMPLATES = [f"a {{}} moving {direction}" for direction in DIRECTIONS]


def _text_default() -> TextTowerConfig:
    return TextTowerConfig(
        config={
            "model_type": "clip_text_model",
            "vocab_size": 49408,
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 128,
            "max_position_embeddings": 16,
            "bos_token_id": 49406,
            "eos_token_id": 49407,
            "pad_token_id": 49407,
        },
        tokenizer="clip",
    )


@dataclass
class VideoTextModelConfig:
    """The two towers and the shared space (`model:` section).

    Attributes:
        video: the video tower (`pooling: transformer` sees frame order; `mean` cannot tell a direction of motion).
        text: the text tower (a pretrained folder, or a `config` tower with OpenAI CLIP's tokenizer).
        embed_dim: size of the shared embedding space.
        logit_scale_init: initial logit scale (1 / temperature); null: the loss's own (1/0.07, SigLIP: 10);
            learned within [1, 100].
        gather: use every process's pairs as negatives.
        mask_positives: pairs with the same caption are not negatives of each other (`info_nce` only).
        loss: the loss between the towers (`info_nce` or `siglip`).
    """

    video: VideoTowerConfig = field(default_factory=tiny_frames_tower)
    text: TextTowerConfig = field(default_factory=_text_default)
    embed_dim: PositiveInt = 64
    logit_scale_init: Annotated[float, Range(ge=1, le=100)] | None = None
    gather: bool = True
    mask_positives: bool = True
    loss: TwoTowerLossConfig = field(default_factory=TwoTowerLossConfig)


@dataclass
class VideoTextEvalConfig(EvalSchedule):
    """Zero-shot classification of held-out clips (`eval:` section; generated moving digits only).

    Attributes:
        num_videos: held-out moving-digits videos (test digits, another seed).
        seed: their seed.
    """

    num_videos: PositiveInt = 200
    seed: Seed = 1000


@dataclass
class VideoTextRecipe(RecipeBase):
    """Video-text: a video tower and a text tower aligned by symmetric InfoNCE or SigLIP (the two-tower method).

    Attributes:
        method: `video_text`.
        model: the towers.
        data: captioned videos (`caption` column, or the generated moving digits).
        num_frames: frames per training clip (at `data.fps` for files; generated videos are used whole when they are
            this long).
        augment: one augmentation per clip, the same on all its frames (no flip: it would turn left into right).
        eval: zero-shot direction and digit classification.
    """

    method: Literal["video_text"] = "video_text"
    output_dir: str = "runs/video_text"
    model: VideoTextModelConfig = field(default_factory=VideoTextModelConfig)
    data: VideoDataConfig = field(default_factory=VideoDataConfig)
    num_frames: PositiveInt = 16
    augment: VideoAugmentConfig = field(default_factory=lambda: VideoAugmentConfig(enabled=False))
    eval: VideoTextEvalConfig = field(default_factory=VideoTextEvalConfig)


def _method(model: VideoTextModelConfig) -> TwoTower:
    towers = {"video": build_video_tower(model.video), "text": build_text_tower(model.text)}
    return TwoTower(
        towers,
        model.embed_dim,
        logit_scale_init=model.logit_scale_init,
        gather=model.gather,
        mask_positives=model.mask_positives,
        **model.loss.method_options(),
    )


class CaptionedClips(torch.utils.data.Dataset):
    """One clip per video under ``video`` (the two-tower method's column) with its caption. A class ``label`` is
    dropped: pairs are positives of each other when their captions are equal, not when one label (the digit) is, or
    "a seven moving up" and "a seven moving down" would never be told apart."""

    def __init__(self, clips: VideoClipViews) -> None:
        self.clips = clips

    def set_epoch(self, epoch: int) -> None:
        self.clips.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.clips[index]
        row["video"] = row.pop("views")[0]
        row.pop("label", None)
        return row


class ZeroShotVideo:
    """Zero-shot accuracy of direction and digit on held-out moving digits (camera 0), from prompt ensembles (a
    direction's text embedding is the mean over the ten digits, "a zero moving up", ...; a digit's over the four
    directions), and video-text retrieval recall@1/5/10 against their captions (identical captions all count)."""

    def __init__(self, rows: Sequence[dict[str, Any]]) -> None:
        self.clips = [torch.as_tensor(row["views"][0]) for row in rows]
        self.captions = [str(row["caption"]) for row in rows]
        self.labels = {
            "direction": [int(row["direction_label"]) for row in rows],
            "digit": [int(row["digit"]) for row in rows],
        }

    def predictions(self, method: TwoTower, videos: torch.Tensor | None = None) -> dict[str, list[int]]:
        """Predicted direction and digit of every held-out clip."""
        videos = F.normalize(method.encode("video", self.clips) if videos is None else videos, dim=-1)
        out = {}
        for name, classes, templates in (
            ("direction", DIRECTIONS, _DIRECTION_TEMPLATES),
            ("digit", DIGIT_NAMES, _DIGIT_TEMPLATES),
        ):
            prompts = [template.format(c) for c in classes for template in templates]
            texts = F.normalize(method.encode_texts(prompts), dim=-1).view(len(classes), len(templates), -1)
            classifier = F.normalize(texts.mean(dim=1), dim=-1)
            out[name] = (videos @ classifier.T).argmax(dim=1).tolist()
        return out

    def __call__(self, method: TwoTower) -> dict[str, float]:
        videos = method.encode("video", self.clips)
        predictions = self.predictions(method, videos)
        metrics = {
            f"{name}_accuracy": sum(p == y for p, y in zip(predictions[name], self.labels[name], strict=True))
            / len(self.labels[name])
            for name in predictions
        }
        return metrics | modality_text_retrieval(videos, self.captions, method, "video")


def build(recipe: VideoTextRecipe, raw: dict[str, Any]) -> RecipeParts:
    """Towers, method, captioned clips, sampler and the zero-shot evaluator of a video-text recipe."""
    method = _method(recipe.model)
    rows, skipped = recipe.data.rows()
    recipe.data.report_short(rows, recipe.num_frames)
    missing = [i for i, row in enumerate(rows) if not row.get("caption")]
    if missing:
        raise ValueError(
            f"data.train '{recipe.data.train}': {len(missing)} video(s) have no caption (first: row {missing[0]}); "
            "give a `caption` column in metadata.csv"
        )
    clips = VideoClipViews(
        rows,
        ClipSampling(num_frames=recipe.num_frames, fps=recipe.data.fps),
        recipe.augment.build(),
        num_views=1,
        mode="same",
        seed=recipe.train.seed,
        size=recipe.data.frame_size,
        cache=recipe.data.frame_cache(),
    )
    dataset = CaptionedClips(clips)
    evaluators: dict[str, Any] = {}
    zero_shot = None
    if recipe.data.generated:
        held_out = recipe.data.moving_digits.held_out(recipe.eval.num_videos, recipe.eval.seed)
        zero_shot = ZeroShotVideo(held_out)
        evaluators["zero_shot"] = zero_shot
    return RecipeParts(
        method=method,
        dataset=dataset,
        batch_sampler=batch_sampler(recipe.train, len(dataset)),
        evaluators=evaluators,
        export=lambda trained, result, output_dir, model_dir: export(
            trained, recipe, raw, result, output_dir, model_dir, zero_shot
        ),
        skipped_rows=skipped,
    )


def export(
    method: TwoTower,
    recipe: VideoTextRecipe,
    raw: dict[str, Any],
    result: TrainingResult,
    output_dir: Path,
    model_dir: Path,
    zero_shot: ZeroShotVideo | None,
) -> Path:
    """Write the two-tower folder (mmcontrast's format: ``load_mmcontrast_clip``), the video tower alone under
    ``video_encoder/`` (for ``mmcontrast eval video``), zero-shot results with confusion matrices, and the card."""
    save_mmcontrast_clip(method, raw, model_dir)
    method.tower("video").save_pretrained(model_dir / "video_encoder")
    results: list[tuple[str, str, str, float]] = []
    if zero_shot is not None:
        reloaded = load_mmcontrast_clip(model_dir)  # score what the folder holds
        metrics = zero_shot(reloaded)
        predictions = zero_shot.predictions(reloaded)
        plot_confusion_matrix(
            zero_shot.labels["direction"], predictions["direction"], list(DIRECTIONS), model_dir / "directions.png"
        )
        plot_confusion_matrix(
            zero_shot.labels["digit"], predictions["digit"], list(DIGIT_NAMES), model_dir / "digits.png"
        )
        (output_dir / "zero_shot.json").write_text(json.dumps(metrics, indent=1))
        results = [
            ("video-text-retrieval" if "/" in name else "zero-shot-video-classification", "moving-digits", name, value)
            for name, value in metrics.items()
        ]
    pooling = recipe.model.video.pooling if recipe.model.video.kind == "frames" else recipe.model.video.kind
    write_model_card(
        model_dir,
        CardInfo(
            title=f"mmcontrast video-text model ({output_dir.name})",
            description=(
                f"A video tower ({pooling} over frames) and a text tower aligned with the two-tower method of "
                f"mmcontrast ({'SigLIP' if method.loss_name == 'siglip' else 'symmetric InfoNCE'}) on "
                f"`{recipe.data.train}`"
                + (" (synthetic moving digits generated at run time)" if recipe.data.generated else "")
                + ". Use it for zero-shot video classification and video-text retrieval."
                + siglip_bias_note(method, keeps_bias=True)
            ),
            library_name="mmcontrast",
            pipeline_tag="video-classification",
            usage=_USAGE.format(path=output_dir / "model"),
            recipe=yaml.safe_dump(raw, sort_keys=False),
            datasets=[recipe.data.train],
            tags=["video-text", "zero-shot", "video"],
            results=results,
            image=training_curve(result.log_history, model_dir),
        ),
    )
    return model_dir


def method_from_recipe(raw: dict[str, Any], source: str) -> TwoTower:
    """The untrained video-text method of a stored recipe (rebuilt before a saved folder's weights are read)."""
    return _method(build_config(VideoTextRecipe, raw, source=source).model)


register_method_builder("video_text", method_from_recipe)
