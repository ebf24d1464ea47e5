"""The SimCLR recipe: unlabelled images -> augmented views -> backbone + MLP head -> a generic encoder folder.

The projection head only serves the loss: the export keeps the backbone (``ImageEncoder.save_pretrained``:
safetensors + config.json + model card), which ``ImageEncoder.from_pretrained(folder)`` loads back. The
representation is scored by kNN and linear probes on frozen features of labelled images.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml

from mmcontrast.data.images import DecodedImages, ImageRows, load_image_rows
from mmcontrast.engine.trainer import TrainingResult
from mmcontrast.evaluation.probe import FrozenFeatureProbe, Weighting
from mmcontrast.hub.model_card import CardInfo, training_curve, write_model_card
from mmcontrast.methods.simclr import SimCLR
from mmcontrast.modalities.heads import HeadKind, projection_head
from mmcontrast.recipes.base import RecipeBase, RecipeParts, batch_sampler
from mmcontrast.recipes.image_tower import ImageTowerConfig, build_image_tower
from mmcontrast.typed_config import NonNegativeFloat, PositiveFloat, PositiveInt, Range, Seed
from mmcontrast.views.simclr import ViewsDataset, simclr_transform

_USAGE = """import torch
from PIL import Image
from mmcontrast.modalities.image import ImageEncoder

encoder = ImageEncoder.from_pretrained("{path}")  # a local folder or a Hub repo id; eval mode, no projection head
with torch.no_grad():
    features = encoder(encoder.preprocess([Image.open("my_image.png")]))  # [1, {dim}]"""


@dataclass
class HeadConfig:
    """The projection head, used in training and dropped at export (`model.head:` section).

    Attributes:
        kind: `mlp` (SimCLR's 2-layer head) or `linear`.
        hidden_dim: width of the MLP's hidden layer (default: the backbone's feature size).
        out_dim: size of the projections the loss compares (SimCLR: 128).
        batch_norm: Linear-BN-ReLU-Linear (SimCLR's reference code; clearly better on digits) instead of the
            paper's Linear-ReLU-Linear; under `train.cache_chunk_size` its statistics are per chunk.
    """

    kind: HeadKind = "mlp"
    hidden_dim: PositiveInt | None = None
    out_dim: PositiveInt = 128
    batch_norm: bool = True


@dataclass
class SimclrModelConfig:
    """Backbone, head and loss (`model:` section).

    Attributes:
        image: the backbone, kept after training.
        head: the projection head.
        temperature: NT-Xent temperature (SimCLR: 0.5 at batch 256..4096; lower is sharper).
        gather: use the views of every process as negatives (exact NT-Xent of the global batch).
        loss_chunk_size: compute the loss's logits in tiles of this size (memory for very large batches).
    """

    image: ImageTowerConfig = field(default_factory=ImageTowerConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    temperature: PositiveFloat = 0.5
    gather: bool = True
    loss_chunk_size: PositiveInt | None = None


@dataclass
class ViewsConfig:
    """SimCLR's augmentations, drawn per row from a seed (`views:` section).

    Attributes:
        num_views: views per image (2 in SimCLR; more gives the mean NT-Xent over pairs of views).
        strength: colour-jitter strength s (brightness, contrast, saturation 0.8s, hue 0.2s; p = 0.8); 0: none.
        crop_scale: [min, max] fraction of the image area kept by the random resized crop.
        flip: random horizontal flip (turn off where mirroring changes the meaning: digits, text).
        blur: Gaussian blur with p = 0.5, kernel ~10% of the side.
        grayscale: random grayscale with p = 0.2.
        seed: seed of the views (default: `train.seed`); row i of epoch e always gets the same views.
    """

    num_views: Annotated[int, Range(ge=2)] = 2
    strength: NonNegativeFloat = 1.0
    crop_scale: list[Annotated[float, Range(gt=0, le=1)]] = field(default_factory=lambda: [0.08, 1.0])
    flip: bool = True
    blur: bool = True
    grayscale: bool = True
    seed: Seed | None = None


@dataclass
class ImageDataConfig:
    """Training images; labels and captions, if any, are not used (`data:` section).

    Attributes:
        train: `sklearn:digits`, an image folder (one sub-folder per class, or `metadata.csv`/`.jsonl`), or a
            csv / json / jsonl of image paths.
        split: split of `sklearn:digits` (`train`, `test`, `all`).
        image_size: side of the rendered digits.
        limit: use only the first N images.
    """

    train: str = "sklearn:digits"
    split: str = "train"
    image_size: PositiveInt = 32
    limit: PositiveInt | None = None


@dataclass
class ProbeEvalConfig:
    """kNN and linear probes on frozen backbone features (`eval:` section).

    Attributes:
        train: labelled images the probes are fit on: `sklearn:digits` or a folder with one sub-folder per
            class; null disables the probes.
        train_split: split of `sklearn:digits` for `train`.
        test: labelled images the probes are scored on (default: the same source as `train`).
        test_split: split of `sklearn:digits` for `test`.
        knn: run the cosine kNN probe.
        k: neighbours of the kNN probe.
        weighting: kNN vote: `majority` (one vote per neighbour) or `similarity` (cosine-weighted).
        linear_probe: run the logistic-regression probe on standardised features.
        random_init: also probe the backbone as initialised, before training (the baseline), reported as
            `random_init/...` beside `probe/...`.
        limit: use only the first N images of each probe split (quick checks).
    """

    train: str | None = "sklearn:digits"
    train_split: str = "train"
    test: str | None = None
    test_split: str = "test"
    knn: bool = True
    k: PositiveInt = 20
    weighting: Weighting = "majority"
    linear_probe: bool = True
    random_init: bool = False
    limit: PositiveInt | None = None


@dataclass
class SimclrRecipe(RecipeBase):
    """SimCLR: an image backbone trained by NT-Xent between augmented views of each image.

    Attributes:
        method: `simclr`.
        model: backbone, projection head and loss.
        views: the augmentations.
        data: training images.
        eval: frozen-feature probes.
    """

    method: Literal["simclr"] = "simclr"
    output_dir: str = "runs/simclr"
    model: SimclrModelConfig = field(default_factory=SimclrModelConfig)
    views: ViewsConfig = field(default_factory=ViewsConfig)
    data: ImageDataConfig = field(default_factory=ImageDataConfig)
    eval: ProbeEvalConfig = field(default_factory=ProbeEvalConfig)


def _labelled(source: str, split: str, key: str, recipe: SimclrRecipe) -> tuple[list[Any], list[int]]:
    rows = load_image_rows(source, split=split, image_size=recipe.data.image_size)
    if not rows.classes or any("label" not in row for row in rows.rows):
        raise ValueError(f"{key} '{source}' has no labels: give labelled images (sklearn:digits or class folders)")
    decoded = DecodedImages(rows.rows[: recipe.eval.limit])
    return [decoded[i]["image"] for i in range(len(decoded))], [row["label"] for row in decoded.rows]


def probe(recipe: SimclrRecipe) -> FrozenFeatureProbe | None:
    """The kNN / linear probe evaluator of the recipe's `eval` section (None when disabled)."""
    config = recipe.eval
    if not config.train or not (config.knn or config.linear_probe):
        return None
    train_images, train_labels = _labelled(config.train, config.train_split, "eval.train", recipe)
    test_images, test_labels = _labelled(config.test or config.train, config.test_split, "eval.test", recipe)
    return FrozenFeatureProbe(
        train_images,
        train_labels,
        test_images,
        test_labels,
        encoder_of=lambda method: method.image_encoder,
        k=config.k,
        weighting=config.weighting,
        knn=config.knn,
        linear=config.linear_probe,
    )


def build(recipe: SimclrRecipe, raw: dict[str, Any]) -> RecipeParts:
    """Backbone, head, method, seeded views of the training images, sampler and probes of a SimCLR recipe."""
    model, data, views = recipe.model, recipe.data, recipe.views
    encoder = build_image_tower(model.image)
    head = projection_head(
        model.head.kind,
        encoder.embedding_dim,
        model.head.out_dim,
        hidden_dim=model.head.hidden_dim,
        batch_norm=model.head.batch_norm,
    )
    method = SimCLR(encoder, head, temperature=model.temperature, gather=model.gather, chunk_size=model.loss_chunk_size)
    if len(views.crop_scale) != 2:
        raise ValueError(f"views.crop_scale must be [min, max], got {views.crop_scale}")
    transform = simclr_transform(
        encoder.image_size,
        encoder.mean,
        encoder.std,
        strength=views.strength,
        crop_scale=views.crop_scale,
        flip=views.flip,
        blur=views.blur,
        grayscale=views.grayscale,
    )
    rows: ImageRows = load_image_rows(data.train, split=data.split, image_size=data.image_size)
    for path, reason in rows.skipped[:10]:
        print(f"skipped unreadable image {path}: {reason}")
    if data.limit is not None:
        rows.rows = rows.rows[: data.limit]
    seed = recipe.train.seed if views.seed is None else views.seed
    dataset = ViewsDataset(DecodedImages(rows.rows), transform, seed=seed, num_views=views.num_views)
    evaluators: dict[str, Any] = {}
    probes = probe(recipe)
    if probes is not None:
        if recipe.eval.random_init:
            baseline = probes(method)  # the backbone as initialised: the same seed, before any step
            evaluators["random_init"] = lambda _: baseline
        evaluators["probe"] = probes
    return RecipeParts(
        method=method,
        dataset=dataset,
        batch_sampler=batch_sampler(recipe.train, len(dataset)),
        evaluators=evaluators,
        export=lambda trained, result, output_dir, model_dir: export(
            trained, recipe, raw, result, output_dir, model_dir
        ),
        skipped_rows=len(rows.skipped),
    )


def export(
    method: SimCLR,
    recipe: SimclrRecipe,
    raw: dict[str, Any],
    result: TrainingResult,
    output_dir: Path,
    model_dir: Path,
) -> Path:
    """Write the model folder (``model_dir``, which the run then moves to `OUTPUT_DIR/model`): the backbone only
    (safetensors + config.json), a model card and the curve."""
    encoder = method.image_encoder
    encoder.save_pretrained(model_dir)
    source = recipe.eval.test or recipe.eval.train or ""
    name = source.removeprefix("sklearn:") if source.startswith("sklearn:") else Path(source).name
    dataset = f"{name} ({recipe.eval.test_split})"
    results, baseline = [], {}
    for key, value in result.final_metrics.items():
        group, metric = key.split("/", 1)
        if group == "probe":
            results.append(("image-classification", dataset, metric, value))
        elif group == "random_init":
            baseline[metric] = value
    if results:
        probes = {"simclr": {k.split("/", 1)[1]: v for k, v in result.final_metrics.items() if k.startswith("probe/")}}
        (output_dir / "probe.json").write_text(json.dumps({**probes, "random_init": baseline}, indent=1))
    compared = ""
    if baseline:
        compared = " The same backbone randomly initialised scores " + ", ".join(
            f"{metric} {value:.4f}" for metric, value in baseline.items()
        )
        compared += " with the same probes."
    backbone = encoder.name or (recipe.model.image.config or {}).get("model_type", encoder.kind)
    write_model_card(
        model_dir,
        CardInfo(
            title=f"mmcontrast simclr image encoder ({output_dir.name})",
            description=(
                f"An image encoder (`{backbone}`, {encoder.kind}, {encoder.image_size}x{encoder.image_size} "
                f"input, {encoder.embedding_dim}-dimensional features) trained from scratch with the SimCLR method "
                f"of mmcontrast (NT-Xent between augmented views, temperature {recipe.model.temperature}) on "
                f"`{recipe.data.train}`. The projection head was dropped: the features are the backbone's. "
                f"Evaluation: cosine kNN (k={recipe.eval.k}, {recipe.eval.weighting} vote) and logistic-regression "
                "probes on frozen features (fit on the "
                f"{recipe.eval.train_split} split, scored on the {recipe.eval.test_split} split).{compared}"
            ),
            library_name="mmcontrast",
            pipeline_tag="image-feature-extraction",
            usage=_USAGE.format(path=output_dir / "model", dim=encoder.embedding_dim),
            recipe=yaml.safe_dump(raw, sort_keys=False),
            datasets=[recipe.data.train],
            tags=["simclr", "self-supervised", "image-feature-extraction"],
            results=results,
            image=training_curve(result.log_history, model_dir),
        ),
    )
    return model_dir
