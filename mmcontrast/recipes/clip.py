"""The CLIP recipe: (image, caption) data -> two towers -> a transformers or open_clip folder for zero-shot use.

The recipe only wires: its schema builds the towers and the CLIP method (the image-text configuration of
:class:`~mmcontrast.methods.two_tower.TwoTower`), and :func:`export` picks the format; the save and load code of
each format lives in :mod:`mmcontrast.hub` (``transformers_clip``, ``open_clip_folder``,
``open_clip_to_transformers``, ``mmcontrast_clip``, and ``dual_encoders`` which recognises an exported folder).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml

from mmcontrast.data.images import (
    DIGIT_CAPTIONS,
    DecodedImages,
    ImageRows,
    StreamedImageRows,
    caption_rows,
    load_image_rows,
)
from mmcontrast.data.samplers import MultiSourceBatchSampler, MultiSourceStrategy
from mmcontrast.engine.trainer import TrainingResult
from mmcontrast.evaluation.plots import plot_confusion_matrix
from mmcontrast.evaluation.zero_shot import (
    classes_by_name,
    image_text_retrieval,
    zero_shot_classifier,
    zero_shot_metrics,
)
from mmcontrast.hub.dual_encoders import load_dual_encoder  # noqa: F401  (earlier model cards import it from here)
from mmcontrast.hub.mmcontrast_clip import register_method_builder, save_mmcontrast_clip
from mmcontrast.hub.model_card import CardInfo, training_curve, write_model_card
from mmcontrast.hub.open_clip_folder import OpenClipDualEncoder, save_open_clip
from mmcontrast.hub.open_clip_to_transformers import convertible, save_open_clip_as_transformers
from mmcontrast.hub.transformers_clip import (
    TransformersDualEncoder,
    export_transformers_clip,
    transformers_export_kind,
)
from mmcontrast.methods.clip import CLIP
from mmcontrast.modalities.clip_tokenizer import clip_tokenizer
from mmcontrast.modalities.open_clip_towers import open_clip_towers
from mmcontrast.modalities.text import Pooling, TextEncoder
from mmcontrast.recipes.base import (
    EvalSchedule,
    RecipeBase,
    RecipeParts,
    StreamingConfig,
    batch_sampler,
    streamed_batches,
    transformers_config,
)
from mmcontrast.recipes.image_tower import ImageTowerConfig, build_image_tower
from mmcontrast.recipes.two_tower import TwoTowerLossConfig, siglip_bias_note
from mmcontrast.typed_config import NonNegativeFloat, PositiveInt, Range, Seed, UnitFloat
from mmcontrast.typed_config import build as build_config
from mmcontrast.views.simclr import AugmentedDataset, image_augmentation

_USAGE = """from transformers import pipeline

classifier = pipeline("zero-shot-image-classification", model="{path}")
print(classifier("my_image.png", candidate_labels=[{labels}], hypothesis_template="{template}"))"""

_MMCONTRAST_USAGE = """from PIL import Image
import mmcontrast.recipe  # registers the recipe builders that rebuild mmcontrast-format models
from mmcontrast.evaluation.zero_shot import zero_shot_classifier
from mmcontrast.hub.dual_encoders import load_dual_encoder

model = load_dual_encoder("{path}")
labels = [{labels}]
classifier = zero_shot_classifier(model, labels, ["{template}"])
print(labels[(model.encode_images([Image.open("my_image.png")]) @ classifier.T).argmax()])"""

_OPEN_CLIP_USAGE = """import open_clip
import torch
from PIL import Image

model, _, preprocess = open_clip.create_model_and_transforms("local-dir:{path}")
tokenizer = open_clip.get_tokenizer("local-dir:{path}")
labels = [{labels}]
with torch.no_grad():
    image = model.encode_image(preprocess(Image.open("my_image.png")).unsqueeze(0), normalize=True)
    text = model.encode_text(tokenizer(["{template}".format(c) for c in labels]), normalize=True)
print(labels[(image @ text.T).argmax()])"""


@dataclass
class TextTowerConfig:
    """The text tower (`model.text:` section).

    Attributes:
        name_or_path: a local transformers / sentence-transformers folder or hub name (e.g. all-MiniLM-L6-v2).
        config: instead, a transformers text config for a randomly initialised tower
            (`{model_type: clip_text_model, hidden_size: 64, ...}`).
        tokenizer: tokenizer of a `config` tower: `clip` (OpenAI CLIP's BPE, no download) or a folder.
        pooling: `pooler` (the model's own pooled output: CLIP's end-of-text token; needed for the
            transformers export), `mean`, `cls` or `last`; default `pooler` for `config` towers.
        max_length: tokens per caption.
    """

    name_or_path: str | None = None
    config: dict[str, Any] | None = None
    tokenizer: str = "clip"
    pooling: Pooling | None = None
    max_length: PositiveInt | None = None


@dataclass
class OpenClipConfig:
    """An open_clip model as both towers (`model.open_clip:` section; used instead of `image` and `text`).

    The towers keep open_clip's own projections and the run also exports an open_clip folder
    (`open_clip.create_model_and_transforms("local-dir:OUTPUT_DIR/model")`).

    Attributes:
        name: a model of open_clip's registry (`ViT-B-32`, `RN50`...), randomly initialised unless `pretrained`
            or `weights` is given.
        model_cfg: instead, an open_clip model config: `{embed_dim: 64, vision_cfg: {...}, text_cfg: {...}}`.
        weights: a local open_clip checkpoint (safetensors or state dict) to start from.
        pretrained: instead of `weights`, one of open_clip's pretrained tags of `name` (`laion2b_s34b_b79k`,
            `openai`; `open_clip.list_pretrained_tags_by_model(name)`), with its preprocessing and its logit
            scale. Read from the Hugging Face cache, downloaded there when missing (not with `HF_HUB_OFFLINE=1`).
    """

    name: str | None = None
    model_cfg: dict[str, Any] | None = None
    weights: str | None = None
    pretrained: str | None = None

    @property
    def enabled(self) -> bool:
        return self.name is not None or self.model_cfg is not None


@dataclass
class ClipModelConfig:
    """The two towers and the shared space (`model:` section).

    Attributes:
        image: the image tower.
        text: the text tower.
        open_clip: instead of `image` and `text`, both towers from one open_clip model.
        embed_dim: size of the shared embedding space (an open_clip model brings its own).
        logit_scale_init: initial logit scale (1 / temperature); null: the loss's own (CLIP: 1/0.07, SigLIP: 10).
            The scale is learned within [1, 100].
        lock_text: freeze the text tower (LiT: a pretrained text encoder, only the image side learns).
        gather: use every process's pairs as negatives.
        mask_positives: rows known to match (the same class label, or the same caption) are not negatives of
            each other; false makes every other row of the batch a negative, as CLIP and open_clip do
            (`info_nce` only).
        loss: the loss between the towers (`info_nce` or `siglip`).
    """

    image: ImageTowerConfig = field(default_factory=ImageTowerConfig)
    text: TextTowerConfig = field(default_factory=TextTowerConfig)
    open_clip: OpenClipConfig = field(default_factory=OpenClipConfig)
    embed_dim: PositiveInt = 512
    logit_scale_init: Annotated[float, Range(ge=1, le=100)] | None = None
    lock_text: bool = False
    gather: bool = True
    mask_positives: bool = True
    loss: TwoTowerLossConfig = field(default_factory=TwoTowerLossConfig)


@dataclass
class ImageAugmentConfig:
    """Augmentation of the training images (`data.augment:` section), the options of open_clip's
    `AugmentationCfg` (`scale`, `color_jitter`, `color_jitter_prob`, `gray_scale_prob`).

    Only training rows are augmented, never evaluation or zero-shot images. Row i of epoch e is augmented under a
    seed drawn from (seed, e, i): a resumed run sees the same images, and each epoch sees new ones.

    Attributes:
        enabled: augment the training images (false: they are preprocessed as evaluation images are).
        crop_scale: [min, max] fraction of the image area kept by the random resized crop to the tower's input
            size (open_clip's `scale`, default [0.9, 1.0]).
        flip: random horizontal flip (p = 0.5); off by default: mirrored digits and text change their meaning.
        color_jitter: [brightness, contrast, saturation, hue] strengths of the colour jitter (hue at most 0.5).
        color_jitter_prob: probability of the colour jitter; 0: none.
        grayscale_prob: probability of turning an image grayscale; 0: never.
        seed: seed of the augmentation (default: `train.seed`).
    """

    enabled: bool = False
    crop_scale: list[Annotated[float, Range(gt=0, le=1)]] = field(default_factory=lambda: [0.9, 1.0])
    flip: bool = False
    color_jitter: list[NonNegativeFloat] = field(default_factory=lambda: [0.4, 0.4, 0.4, 0.1])
    color_jitter_prob: UnitFloat = 0.0
    grayscale_prob: UnitFloat = 0.0
    seed: Seed | None = None

    def transform(self, size: int) -> Any:
        """The augmentation to ``size`` pixels (:func:`~mmcontrast.views.simclr.image_augmentation`)."""
        if len(self.crop_scale) != 2 or self.crop_scale[0] > self.crop_scale[1]:
            raise ValueError(f"data.augment.crop_scale must be [min, max] with min <= max, got {self.crop_scale}")
        if len(self.color_jitter) != 4 or self.color_jitter[3] > 0.5:
            raise ValueError(
                "data.augment.color_jitter must be [brightness, contrast, saturation, hue] with hue <= 0.5, got "
                f"{self.color_jitter}"
            )
        return image_augmentation(
            size,
            crop_scale=self.crop_scale,
            flip=self.flip,
            color_jitter=self.color_jitter,
            color_jitter_prob=self.color_jitter_prob,
            grayscale_prob=self.grayscale_prob,
        )


@dataclass
class ImageTextTableConfig:
    """One source of (image, caption) rows.

    Attributes:
        train: `sklearn:digits`, an image folder (`metadata.csv`/`.jsonl` with `file_name` + caption, or one
            sub-folder per class), or a csv / json / jsonl of image paths and captions.
        split: split of `sklearn:digits` (`train`, `test`, `all`).
        image_column: column of the image path in a table.
        caption_column: column of the caption.
        captions: templates that turn class names into captions for labelled data (digits, class folders);
            row i gets template i mod len. Such captions are generated, not written by people.
        limit: use only the first N rows.
    """

    train: str = "sklearn:digits"
    split: str = "train"
    image_column: str = "file_name"
    caption_column: str = "text"
    captions: list[str] = field(default_factory=lambda: list(DIGIT_CAPTIONS))
    limit: PositiveInt | None = None


@dataclass
class ImageTextDataConfig(ImageTextTableConfig, StreamingConfig):
    """(image, caption) training data (`data:` section): one source (`data.train` and the keys beside it) or several
    (`datasets`), read whole or streamed (`streaming`: parquet or webdataset tar shards, or a hub dataset).

    Attributes:
        image_size: side of the rendered digits.
        augment: augmentation of the training images (off by default).
        datasets: several training sources, `NAME: {train: ..., image_column: ..., caption_column: ..., ...}`, each
            with the source keys of this section; every batch comes from one source, so in-batch negatives never
            mix them (sentence-transformers' multi-dataset training). Set `train: null` with it.
        multi_dataset_sampler: with `datasets`, which source each batch comes from: `round_robin` (each in turn,
            until the smallest runs out) or `proportional` (every batch of every source once per epoch, in a seeded
            random order: sources drawn in proportion to their size).
    """

    train: str | None = "sklearn:digits"
    image_size: PositiveInt = 32
    augment: ImageAugmentConfig = field(default_factory=ImageAugmentConfig)
    datasets: dict[str, ImageTextTableConfig] = field(default_factory=dict)
    multi_dataset_sampler: MultiSourceStrategy = "round_robin"


@dataclass
class ZeroShotEvalConfig(EvalSchedule):
    """Zero-shot classification and retrieval (`eval:` section).

    Attributes:
        zero_shot: labelled images to classify: `sklearn:digits` or a folder with one sub-folder per class.
        split: split of `sklearn:digits`.
        classes: class names used in the prompts: the data's own class names, in any order (matched by name,
            never by position); default: the data's names.
        templates: prompt templates; each class's embeddings are averaged over them.
        retrieval: captioned images for image-text retrieval recall@1/5/10 (same sources as `data.train`).
    """

    zero_shot: str | None = None
    split: str = "test"
    classes: list[str] | None = None
    templates: list[str] = field(default_factory=lambda: ["a photo of a {}."])
    retrieval: str | None = None


@dataclass
class ClipRecipe(RecipeBase):
    """CLIP: image and text towers aligned by symmetric InfoNCE with a learnable temperature (or SigLIP).

    Attributes:
        method: `clip`.
        model: the towers.
        data: (image, caption) data.
        eval: zero-shot classification and retrieval.
    """

    method: Literal["clip"] = "clip"
    output_dir: str = "runs/clip"
    model: ClipModelConfig = field(default_factory=ClipModelConfig)
    data: ImageTextDataConfig = field(default_factory=ImageTextDataConfig)
    eval: ZeroShotEvalConfig = field(default_factory=ZeroShotEvalConfig)


def build_text_tower(config: TextTowerConfig) -> TextEncoder:
    """The text encoder a `model.text` section describes (a pretrained folder, or a random `config` tower)."""
    if config.config is not None:
        from transformers import AutoModel, AutoTokenizer

        model_config = transformers_config(config.config, "model.text.config")
        max_length = config.max_length or model_config.max_position_embeddings
        tokenizer = (
            clip_tokenizer(max_length)
            if config.tokenizer == "clip"
            else AutoTokenizer.from_pretrained(config.tokenizer)
        )
        transformer = AutoModel.from_config(model_config)
        return TextEncoder(transformer, tokenizer, pooling=config.pooling or "pooler", max_length=max_length)
    if config.name_or_path:
        return TextEncoder.from_pretrained(
            config.name_or_path, pooling=config.pooling, normalize=False, max_length=config.max_length
        )
    raise ValueError("model.text needs a name_or_path (a folder or hub name) or a config")


def _rows(source: str, split: str, data: ImageTextTableConfig, image_size: int) -> ImageRows:
    return load_image_rows(
        source,
        split=split,
        image_size=image_size,
        image_column=data.image_column,
        caption_column=data.caption_column,
    )


def image_text_sources(data: ImageTextDataConfig) -> dict[str, ImageTextTableConfig]:
    """`data` as one source named `train`, or the sources of `data.datasets` by name."""
    if data.datasets:
        if data.train:
            raise ValueError(
                "data.train and data.datasets are both set: train on one source (data.train) or on several "
                "(data.datasets, with data.train=null), not both"
            )
        return dict(data.datasets)
    if not data.train:
        raise ValueError("data.train is not set (sklearn:digits, an image folder or a table), nor data.datasets")
    return {"train": data}


def _training_rows(name: str, source: ImageTextTableConfig, image_size: int) -> ImageRows:
    """A source's (image, caption) rows: captions generated for labelled data, unreadable images skipped."""
    key = "data" if name == "train" else f"data.datasets.{name}"
    rows = _rows(source.train, source.split, source, image_size)
    if rows.classes:
        rows = caption_rows(rows, source.captions)
        print(
            f"{key}.train '{source.train}': captions are generated from class names ({len(source.captions)} templates)"
        )
    for path, reason in rows.skipped[:10]:
        print(f"skipped unreadable image {path}: {reason}")
    if source.limit is not None:
        rows.rows = rows.rows[: source.limit]
    if not rows.rows:
        raise ValueError(f"{key}.train '{source.train}' gives no (image, caption) row")
    return rows


class _ZeroShot:
    """Zero-shot top-1 / top-5 / mean per-class recall of a model on labelled images (an engine evaluator).

    ``classes`` are the names to prompt with; ``class_rows[label]`` is the index in ``classes`` of the rows'
    class ``label`` (matched by name: :func:`~mmcontrast.evaluation.zero_shot.classes_by_name`).
    """

    def __init__(self, rows: ImageRows, classes: list[str], class_rows: list[int], templates: list[str]) -> None:
        self.images = [DecodedImages(rows.rows)[i]["image"] for i in range(len(rows.rows))]
        self.labels = [class_rows[row["label"]] for row in rows.rows]
        self.classes, self.templates = classes, templates

    def evaluate(self, encoder) -> tuple[dict[str, float], list[int]]:
        classifier = zero_shot_classifier(encoder, self.classes, self.templates)
        metrics, predictions = zero_shot_metrics(encoder.encode_images(self.images), self.labels, classifier)
        return metrics, predictions.tolist()

    def __call__(self, encoder) -> dict[str, float]:
        return self.evaluate(encoder)[0]


def _zero_shot(recipe: ClipRecipe) -> _ZeroShot | None:
    config = recipe.eval
    if not config.zero_shot:
        return None
    rows = _rows(config.zero_shot, config.split, recipe.data, recipe.data.image_size)
    if not rows.classes:
        raise ValueError(f"eval.zero_shot '{config.zero_shot}' has no classes: give labelled images (class folders)")
    classes, class_rows = classes_by_name(
        config.classes, rows.classes, classes_name="eval.classes", data_name=f"eval.zero_shot '{config.zero_shot}'"
    )
    return _ZeroShot(rows, classes, class_rows, config.templates)


def _method(model: ClipModelConfig) -> tuple[CLIP, dict[str, Any] | None]:
    """The CLIP method, and the open_clip model config when its towers come from open_clip."""
    options = {"lock_text": model.lock_text, "gather": model.gather, "mask_positives": model.mask_positives}
    options |= model.loss.method_options()
    if not model.open_clip.enabled:
        image, text = build_image_tower(model.image), build_text_tower(model.text)
        return CLIP(image, text, model.embed_dim, logit_scale_init=model.logit_scale_init, **options), None
    image = model.image
    if (
        image.backbone
        or image.config
        or image.weights
        or image.pretrained
        or model.text.name_or_path
        or model.text.config
    ):
        raise ValueError(
            "model.open_clip replaces model.image and model.text (their backbone, config, weights, pretrained and "
            "name_or_path): give one or the other"
        )
    config = model.open_clip
    towers = open_clip_towers(config.name, config.model_cfg, config.weights, config.pretrained)
    scale = towers.logit_scale if config.weights or config.pretrained else model.logit_scale_init
    method = CLIP(
        towers.image, towers.text, towers.model_cfg["embed_dim"], logit_scale_init=scale, project=False, **options
    )
    return method, towers.model_cfg


def build(recipe: ClipRecipe, raw: dict[str, Any]) -> RecipeParts:
    """Towers, method, (image, caption) rows, sampler and evaluators of a CLIP recipe."""
    data = recipe.data
    if data.streaming:
        method, open_clip_cfg = _method(recipe.model)
        return _parts(recipe, raw, method, open_clip_cfg, _streamed_rows(recipe), None, 0)
    sources = {name: _training_rows(name, source, data.image_size) for name, source in image_text_sources(data).items()}
    method, open_clip_cfg = _method(recipe.model)
    # several sources are one list of rows; the multi-source sampler keeps each batch within one source
    dataset: DecodedImages | AugmentedDataset = DecodedImages([row for rows in sources.values() for row in rows.rows])
    sizes = [len(rows.rows) for rows in sources.values()]
    if data.datasets:
        offsets = [sum(sizes[:i]) for i in range(len(sizes))]
        samplers = [batch_sampler(recipe.train, size) for size in sizes]
        sampler: Any = MultiSourceBatchSampler(samplers, offsets, data.multi_dataset_sampler, recipe.train.seed)
    else:
        sampler = batch_sampler(recipe.train, sizes[0])
    if data.augment.enabled:  # training rows only: the evaluators read their own rows
        seed = recipe.train.seed if data.augment.seed is None else data.augment.seed
        dataset = AugmentedDataset(dataset, data.augment.transform(method.image_encoder.image_size), seed)
    return _parts(recipe, raw, method, open_clip_cfg, dataset, sampler, sum(len(r.skipped) for r in sources.values()))


def _streamed_rows(recipe: ClipRecipe) -> Any:
    """The streamed (image, caption) batches of `data.streaming`: images decoded as they arrive, bad ones skipped."""
    data = recipe.data
    if data.datasets:
        raise ValueError("data.streaming streams one source (data.train); data.datasets cannot be streamed yet")
    if data.augment.enabled:
        raise ValueError("data.augment is on, but augmentation of streamed images is not supported yet: turn it off")
    if data.train == "sklearn:digits":
        raise ValueError(
            "data.streaming reads shards (parquet, or webdataset tar: KEY.jpg + KEY.txt) or a hub dataset, not "
            "sklearn:digits: point data.train at them, or set data.streaming=false"
        )
    decode = StreamedImageRows(data.image_column, data.caption_column)
    return streamed_batches(recipe.train, data, str(data.train), decode, split=data.split, limit=data.limit)


def _parts(
    recipe: ClipRecipe,
    raw: dict[str, Any],
    method: CLIP,
    open_clip_cfg: dict[str, Any] | None,
    dataset: Any,
    sampler: Any,
    skipped: int,
) -> RecipeParts:
    """The recipe's parts: the method and its data, with the evaluators (zero-shot, retrieval) and the export."""
    data = recipe.data
    evaluators: dict[str, Any] = {}
    zero_shot = _zero_shot(recipe)
    if zero_shot is not None:
        evaluators["zero_shot"] = zero_shot
    if recipe.eval.retrieval:
        paired = _rows(recipe.eval.retrieval, recipe.eval.split, data, data.image_size)
        paired = caption_rows(paired, data.captions) if paired.classes else paired
        images = [DecodedImages(paired.rows)[i]["image"] for i in range(len(paired.rows))]
        captions = [row["caption"] for row in paired.rows]
        evaluators["retrieval"] = lambda m: image_text_retrieval(m.encode_images(images), captions, m)
    return RecipeParts(
        method=method,
        dataset=dataset,
        batch_sampler=sampler,
        evaluators=evaluators,
        export=lambda trained, result, output_dir, model_dir: export(
            trained, recipe, raw, result, output_dir, model_dir, zero_shot, open_clip_cfg
        ),
        skipped_rows=skipped,
    )


def export(
    method: CLIP,
    recipe: ClipRecipe,
    raw: dict[str, Any],
    result: TrainingResult,
    output_dir: Path,
    model_dir: Path,
    zero_shot: _ZeroShot | None,
    open_clip_cfg: dict[str, Any] | None = None,
) -> Path:
    """Write the model folder (``model_dir``, which the run then moves to `OUTPUT_DIR/model`), a model card and
    plots: a transformers CLIP / dual encoder + processor; for open_clip towers an open_clip folder, which also
    holds the transformers ``CLIPModel`` when the model has the standard CLIP form."""
    kind = transformers_export_kind(method)
    if open_clip_cfg is not None:
        towers = (method.image_encoder, method.text_encoder, method.logit_scale.log_scale, open_clip_cfg)
        save_open_clip(*towers, model_dir)
        encoder, library, usage = OpenClipDualEncoder(model_dir), "open_clip", _OPEN_CLIP_USAGE
        description = "An open_clip model"
        reason = convertible(open_clip_cfg)
        if reason is None:  # the same folder also loads in transformers
            save_open_clip_as_transformers(*towers, model_dir)
            usage += "\n\n# or with transformers\n" + _USAGE
            description += " (also saved as a transformers CLIPModel)"
        else:
            print(f"open_clip model saved; no transformers CLIPModel export: {reason}")
    elif kind is not None:
        export_transformers_clip(method, model_dir)
        encoder, library, usage = TransformersDualEncoder(model_dir), "transformers", _USAGE
        description = f"An image-text dual encoder ({'CLIPModel' if kind == 'clip' else 'VisionTextDualEncoderModel'})"
    else:
        save_mmcontrast_clip(method, raw, model_dir)
        encoder, library, usage = method, "mmcontrast", _MMCONTRAST_USAGE  # the folder holds it exactly (tested)
        description = "An image-text dual encoder (mmcontrast's own format: its towers have no transformers form)"
        print("the towers have no transformers or open_clip form: saved in mmcontrast's format (load_dual_encoder)")
    image, results = training_curve(result.log_history, model_dir), []
    dataset = Path(recipe.eval.retrieval or "").name or "retrieval"
    results += [
        ("image-text-retrieval", dataset, name.removeprefix("retrieval/"), value)
        for name, value in result.final_metrics.items()
        if name.startswith("retrieval/")
    ]
    if zero_shot is not None:
        metrics, predictions = zero_shot.evaluate(encoder)
        plot_confusion_matrix(zero_shot.labels, predictions, zero_shot.classes, model_dir / "confusion_matrix.png")
        dataset = Path(recipe.eval.zero_shot or "").name or "zero-shot"
        results += [("zero-shot-image-classification", dataset, name, value) for name, value in metrics.items()]
        (output_dir / "zero_shot.json").write_text(json.dumps(metrics, indent=1))
    template = recipe.eval.templates[0]
    trained_on = ", ".join(f"`{source.train}`" for source in image_text_sources(recipe.data).values())
    labels = ", ".join(f'"{c}"' for c in (zero_shot.classes[:3] if zero_shot else ["cat", "dog"]))
    write_model_card(
        model_dir,
        CardInfo(
            title=f"mmcontrast clip model ({output_dir.name})",
            description=(
                f"{description} trained with the CLIP method of mmcontrast on {trained_on}. Use it for "
                "zero-shot image classification and image-text retrieval."
                + siglip_bias_note(method, keeps_bias=library == "mmcontrast")
            ),
            library_name=library,
            pipeline_tag="zero-shot-image-classification",
            usage=usage.format(path=output_dir / "model", labels=labels, template=template),
            recipe=yaml.safe_dump(raw, sort_keys=False),
            base_model=recipe.model.text.name_or_path,
            datasets=[source.train for source in image_text_sources(recipe.data).values()],
            tags=["clip", "zero-shot-image-classification", "image-text"],
            results=results,
            image=image,
        ),
    )
    return model_dir


def method_from_recipe(raw: dict[str, Any], source: str) -> CLIP:
    """The untrained CLIP method of a stored recipe (how :mod:`mmcontrast.hub.mmcontrast_clip` rebuilds a
    folder in mmcontrast's format before reading its weights)."""
    return _method(build_config(ClipRecipe, raw, source=source).model)[0]


register_method_builder("clip", method_from_recipe)
