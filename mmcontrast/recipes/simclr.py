"""The one-tower views recipe: images, audio clips or text -> augmented views -> backbone + heads -> an encoder.

One schema for every method that compares augmented views of one example (`method:` `simclr`, `supcon`, `moco`,
`byol`, `simsiam`, `barlow_twins`, `vicreg`, `memory_bank`): the backbone, views, data and probes are the same,
the method picks the heads and the loss (`model.head`, `model.predictor`, and the method's own section, e.g.
`model.moco`; :func:`mmcontrast.recipes.view_methods.build_method`).

One recipe for three modalities: `model.image` (the default), `model.audio` or `model.text` picks the adapter, and
with it the views (`views:` for images, `views.audio:` for audio, `views.text:` for text) and the data (`data:` for
images, `data.audio:` for audio, the `data:` section of the CPC recipe; `data.text:` for text, handled by
:mod:`mmcontrast.recipes.text_views`, which exports a sentence-transformers folder). The heads only serve the loss:
the export keeps the backbone (``ImageEncoder.save_pretrained`` / ``AudioEncoder.save_pretrained``: safetensors +
config.json + model card), which ``ImageEncoder.from_pretrained(folder)`` / ``AudioEncoder.from_pretrained(folder)``
loads back. An image backbone is scored during the run by kNN and linear probes on frozen features of labelled
images; an audio backbone after it, with ``mmcontrast eval probe`` (docs/audio.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml

from mmcontrast.data.audio import DecodedAudio
from mmcontrast.data.images import DecodedImages, ImageRows, StreamedImageRows, load_image_rows
from mmcontrast.engine.trainer import TrainingResult
from mmcontrast.evaluation.probe import FrozenFeatureProbe, Weighting
from mmcontrast.hub.model_card import CardInfo, training_curve, write_model_card
from mmcontrast.methods.views import ViewsMethod
from mmcontrast.modalities.audio import AudioEncoder
from mmcontrast.recipes.audio_tower import AudioTowerConfig, build_audio_tower
from mmcontrast.recipes.base import (
    EvalSchedule,
    RecipeBase,
    RecipeParts,
    StreamingConfig,
    batch_sampler,
    grouped_batch_sampler,
    streamed_batches,
)
from mmcontrast.recipes.cpc import SpeechDataConfig
from mmcontrast.recipes.image_tower import ImageTowerConfig, build_image_tower
from mmcontrast.recipes.sbert import TextModelConfig
from mmcontrast.recipes.text_views import TextSentencesConfig, TextViewsConfig, text_parts
from mmcontrast.recipes.view_methods import (
    BarlowTwinsConfig,
    ByolConfig,
    HeadConfig,
    MemoryBankConfig,
    MocoConfig,
    VicregConfig,
    ViewsMethodName,
    build_method,
    objective,
)
from mmcontrast.typed_config import (
    FiniteFloat,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Range,
    Seed,
    UnitFloat,
)
from mmcontrast.views.audio import AudioViews, AudioViewsDataset, LogMel, SpecAugment, audio_views
from mmcontrast.views.simclr import StreamedViews, ViewsDataset, simclr_transform

_USAGE = """import torch
from PIL import Image
from mmcontrast.modalities.image import ImageEncoder

encoder = ImageEncoder.from_pretrained("{path}")  # a local folder or a Hub repo id; eval mode, no projection head
with torch.no_grad():
    features = encoder(encoder.preprocess([Image.open("my_image.png")]))  # [1, {dim}]"""

_AUDIO_USAGE = """import torch
from mmcontrast.data.audio import load_audio
from mmcontrast.modalities.audio import AudioEncoder

encoder = AudioEncoder.from_pretrained("{path}")  # eval mode, no projection head
waveform, _ = load_audio("clip.wav", encoder.sample_rate)  # mono, resampled to {rate} Hz
with torch.no_grad():
    embedding = encoder.embed(waveform[None])  # [1, {dim}]: frames pooled ({pooling}), as in training"""


@dataclass
class SimclrModelConfig:
    """Backbone, heads and loss (`model:` section).

    Attributes:
        image: the image backbone, kept after training (image SimCLR, the default).
        audio: instead, the audio backbone (an audio SimCLR recipe: it also reads `views.audio` and `data.audio`),
            with the `model.audio` keys of the cpc and clap recipes; its frames are pooled (`pooling`) into one
            embedding per clip.
        text: instead, a text encoder (a text views recipe, e.g. SimCSE: it also reads `views.text` and `data.text`),
            with the sbert recipe's `model` keys.
        head: the projection head (BYOL, SimSiam: the projector; Barlow Twins, VICReg: the projector / expander).
        predictor: the predictor on top of the head (BYOL, SimSiam, MoCo v3; required there, refused elsewhere).
        loss: SimCLR's loss between views: `nt_xent`, `dcl`, `dclw` (decoupled, Yeh et al.) or `info_nce` (one
            direction, SimCSE's form).
        weight_sigma: DCLW's sigma.
        temperature: softmax temperature of the contrastive methods (null: the paper's, simclr 0.5, supcon 0.1,
            moco 0.2, memory_bank 0.07); lower is sharper.
        gather: use the views of every process (negatives, batch statistics, queue and bank updates).
        loss_chunk_size: compute the loss's logits in tiles of this size (simclr with nt_xent / info_nce).
        moco: MoCo's settings (`method: moco`).
        byol: BYOL's target momentum (`method: byol`).
        barlow_twins: Barlow Twins' loss weight (`method: barlow_twins`).
        vicreg: VICReg's loss weights (`method: vicreg`).
        memory_bank: the bank's negatives and momentum (`method: memory_bank`).
    """

    image: ImageTowerConfig = field(default_factory=ImageTowerConfig)
    audio: AudioTowerConfig | None = None
    text: TextModelConfig | None = None
    head: HeadConfig = field(default_factory=HeadConfig)
    predictor: HeadConfig | None = None
    loss: Literal["nt_xent", "dcl", "dclw", "info_nce"] = "nt_xent"
    weight_sigma: PositiveFloat = 0.5
    temperature: PositiveFloat | None = None
    gather: bool = True
    loss_chunk_size: PositiveInt | None = None
    moco: MocoConfig | None = None
    byol: ByolConfig | None = None
    barlow_twins: BarlowTwinsConfig | None = None
    vicreg: VicregConfig | None = None
    memory_bank: MemoryBankConfig | None = None


@dataclass
class SpecAugmentConfig:
    """SpecAugment on log-mel views (`views.audio.spec_augment:` section; a `mel` encoder only).

    Attributes:
        freq_mask: widest frequency mask (mel bins).
        time_mask: longest time mask (frames).
        freq_masks: frequency masks per view.
        time_masks: time masks per view.
    """

    freq_mask: NonNegativeInt = 8
    time_mask: NonNegativeInt = 10
    freq_masks: NonNegativeInt = 1
    time_masks: NonNegativeInt = 1


@dataclass
class AudioViewsConfig:
    """Audio views, drawn per row from the same seed as image views (`views.audio:` section; audio recipes only).

    Steps in order (mmcontrast.views.audio): random crop, speed change, time shift, gain, noise, then for a `mel`
    encoder optionally log-mel + SpecAugment.

    Attributes:
        seconds: length of the random crop; clips shorter than it are zero padded. null: whole clips, padded per
            batch with an attention mask (the encoder pools only their own frames).
        gain_db: [min, max] gain in dB; null: no gain.
        snr_db: [min, max] SNR in dB of the added white noise; null: no noise.
        noise_p: probability of adding noise.
        shift_seconds: largest time shift (zero fill); 0: no shift.
        speed: [min, max] speed factor (resampling: pitch moves with it); null: no speed change.
        speed_p: probability of a speed change.
        spec_augment: time / frequency masks on log-mel views (a `mel` encoder, with `seconds` set: log-mel views
            must share one length); null: waveform views.
    """

    seconds: PositiveFloat | None = 1.0
    gain_db: list[FiniteFloat] | None = field(default_factory=lambda: [-6.0, 6.0])
    snr_db: list[FiniteFloat] | None = field(default_factory=lambda: [10.0, 40.0])
    noise_p: UnitFloat = 0.5
    shift_seconds: NonNegativeFloat = 0.05
    speed: list[PositiveFloat] | None = field(default_factory=lambda: [0.9, 1.1])
    speed_p: UnitFloat = 0.5
    spec_augment: SpecAugmentConfig | None = None


@dataclass
class ViewsConfig:
    """SimCLR's augmentations, drawn per row from a seed (`views:` section).

    The image keys (`strength` to `grayscale`) make image views; an audio recipe sets `views.audio` instead.

    Attributes:
        num_views: views per example (2 in SimCLR; more gives the mean NT-Xent over pairs of views).
        strength: colour-jitter strength s (brightness, contrast, saturation 0.8s, hue 0.2s; p = 0.8); 0: none.
        crop_scale: [min, max] fraction of the image area kept by the random resized crop.
        flip: random horizontal flip (turn off where mirroring changes the meaning: digits, text).
        blur: Gaussian blur with p = 0.5, kernel ~10% of the side.
        grayscale: random grayscale with p = 0.2.
        audio: the audio views (audio recipes: `model.audio`).
        text: the text views (text recipes: `model.text`).
        seed: seed of the views (default: `train.seed`); row i of epoch e always gets the same views.
    """

    num_views: Annotated[int, Range(ge=2)] = 2
    strength: NonNegativeFloat = 1.0
    crop_scale: list[Annotated[float, Range(gt=0, le=1)]] = field(default_factory=lambda: [0.08, 1.0])
    flip: bool = True
    blur: bool = True
    grayscale: bool = True
    audio: AudioViewsConfig = field(default_factory=AudioViewsConfig)
    text: TextViewsConfig = field(default_factory=TextViewsConfig)
    seed: Seed | None = None


@dataclass
class ImageDataConfig(StreamingConfig):
    """Training images; labels and captions, if any, are not used (`data:` section).

    The image keys (`train` to `limit`, `streaming`, `shuffle_buffer`) read images; an audio recipe sets
    `data.audio` instead.

    Attributes:
        train: `sklearn:digits`, an image folder (one sub-folder per class, or `metadata.csv`/`.jsonl`), or a
            csv / json / jsonl of image paths; streamed (`streaming`): webdataset tar shards, parquet shards or a
            hub dataset.
        image_column: column of a streamed row's image (bytes or a path); a tar sample without it falls back to its
            image member (`jpg`, `png`, ...).
        split: split of `sklearn:digits` (`train`, `test`, `all`).
        image_size: side of the rendered digits.
        limit: use only the first N images.
        audio: training audio of an audio recipe (`model.audio`): the CPC recipe's `data:` keys (`train`,
            `pattern`, `exclude_takes`, `limit`; `batches: speaker` makes each batch one speaker's clips, whose
            negatives then differ in content, not in voice); `window` is CPC's and is not used.
        text: training sentences of a text recipe (`model.text`).
    """

    train: str = "sklearn:digits"
    image_column: str = "image"
    split: str = "train"
    image_size: PositiveInt = 32
    limit: PositiveInt | None = None
    audio: SpeechDataConfig | None = None
    text: TextSentencesConfig | None = None


@dataclass
class ProbeEvalConfig(EvalSchedule):
    """kNN and linear probes on frozen backbone features (`eval:` section).

    Attributes:
        train: labelled images the probes are fit on: `sklearn:digits` or a folder with one sub-folder per
            class; null disables the probes (audio recipes: null; probe the export with `mmcontrast eval probe`).
        train_split: split of `sklearn:digits` for `train`.
        test: labelled images the probes are scored on (default: the same source as `train`).
        test_split: split of `sklearn:digits` for `test`.
        knn: run the cosine kNN probe.
        k: neighbours of the kNN probe.
        weighting: kNN vote: `majority` (one vote per neighbour) or `similarity` (cosine-weighted).
        linear_probe: run the logistic-regression probe on standardised features.
        random_init: also probe the backbone as initialised, before training (the baseline), reported as
            `random_init/...` beside `probe/...`.
        limit: use only the first N images of each probe split (quick checks; text: the first N STS pairs).
        sts: text recipes: an STS file (STS-B TSV or a table with sentence1, sentence2, score) scored during the run.
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
    sts: str | None = None


@dataclass
class SimclrRecipe(RecipeBase):
    """One backbone trained on augmented views of each example: SimCLR (NT-Xent, DCL), SupCon (labelled views),
    MoCo v2 / v3, BYOL, SimSiam, Barlow Twins, VICReg, memory-bank instance discrimination.

    Attributes:
        method: `simclr`, `supcon`, `moco`, `byol`, `simsiam`, `barlow_twins`, `vicreg` or `memory_bank`.
        model: backbone (`model.image` or `model.audio`), heads and loss.
        views: the augmentations.
        data: training images (or `data.audio`: training audio).
        eval: frozen-feature probes of image backbones during the run (audio: null; probe the export).
    """

    method: ViewsMethodName = "simclr"
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


def _changed(config: Any, default: Any, prefix: str, skip: tuple[str, ...] = ()) -> list[str]:
    """Dotted keys of the section ``config`` whose values differ from ``default`` (the keys a recipe set)."""
    return [
        f"{prefix}{f.name}"
        for f in fields(config)
        if f.name not in skip and getattr(config, f.name) != getattr(default, f.name)
    ]


def modality(recipe: SimclrRecipe) -> Literal["image", "audio", "text"]:
    """`audio` when `model.audio` is set, `text` when `model.text` is, else `image`; refuses, by key, the settings
    of the other modalities.

    Raises:
        ValueError: another modality's keys (image keys in an audio or text recipe, `views.audio` in an image recipe,
            ...), an audio or text recipe without its data, or with the in-run image probes still on.
    """
    model, views, data = recipe.model, recipe.views, recipe.data
    if model.audio is not None and model.text is not None:
        raise ValueError("model.audio and model.text are both set: a views recipe trains one backbone; keep one")
    kind: Literal["image", "audio", "text"] = "audio" if model.audio else "text" if model.text else "image"
    stray = []
    if kind != "audio":
        stray += _changed(views.audio, AudioViewsConfig(), "views.audio.") + (["data.audio"] if data.audio else [])
    if kind != "text":
        stray += _changed(views.text, TextViewsConfig(), "views.text.") + (["data.text"] if data.text else [])
        stray += ["eval.sts"] if recipe.eval.sts else []
    if kind != "image":
        stray += (
            _changed(model.image, ImageTowerConfig(), "model.image.")
            + _changed(views, ViewsConfig(), "views.", skip=("num_views", "audio", "text", "seed"))
            + _changed(data, ImageDataConfig(), "data.", skip=("audio", "text"))
        )
    if stray:
        hint = {"image": "", "audio": " (model.audio is set)", "text": " (model.text is set)"}[kind]
        raise ValueError(
            f"{', '.join(stray)}: settings of another modality in a views recipe on {kind}{hint}; remove them (audio "
            "views and data go in views.audio / data.audio with model.audio, text ones in views.text / data.text "
            "with model.text)"
        )
    if kind == "image":
        return kind
    section = getattr(data, kind)
    if section is None or not section.train:
        example = {"audio": "simclr_fsdd", "text": "simcse_stsb"}[kind]
        raise ValueError(
            f"data.{kind}.train is not set: a views recipe on {kind} (model.{kind}) reads its data from data.{kind} "
            f"(see recipes/{example}.yaml)"
        )
    if kind == "audio" and section.window != SpeechDataConfig().window:
        raise ValueError("data.audio.window is CPC's training window; SimCLR crops its views to views.audio.seconds")
    if recipe.eval.train:
        evaluation = (
            "eval.sts scores a text encoder during the run"
            if kind == "text"
            else ("probe the exported encoder with `mmcontrast eval probe --model OUTPUT_DIR/model` (docs/audio.md)")
        )
        raise ValueError(
            f"eval.train: the in-run probes score images; a views recipe on {kind} sets eval.train: null ({evaluation})"
        )
    return kind


def _pair(values: list[float] | None, key: str) -> tuple[float, float] | None:
    if values is None:
        return None
    if len(values) != 2:
        raise ValueError(f"{key} must be [min, max], got {values}")
    return float(values[0]), float(values[1])


def audio_view_pipeline(config: AudioViewsConfig, encoder: AudioEncoder) -> AudioViews:
    """The audio views a `views.audio` section describes, for ``encoder`` (its rate, shortest input, front end)."""
    log_mel = spec_augment = None
    if config.spec_augment is not None:
        if encoder.kind != "mel":
            raise ValueError(
                f"views.audio.spec_augment masks log-mel views: it needs model.audio.kind mel, got {encoder.kind!r}"
            )
        if config.seconds is None:
            raise ValueError("views.audio.spec_augment: log-mel views must share one length; set views.audio.seconds")
        log_mel = LogMel.from_encoder(encoder)
        masks = config.spec_augment
        spec_augment = SpecAugment(masks.freq_mask, masks.time_mask, masks.freq_masks, masks.time_masks)
    return audio_views(
        encoder.sample_rate,
        config.seconds,
        gain_db=_pair(config.gain_db, "views.audio.gain_db"),
        snr_db=_pair(config.snr_db, "views.audio.snr_db"),
        noise_p=config.noise_p,
        shift_seconds=config.shift_seconds,
        speed=_pair(config.speed, "views.audio.speed"),
        speed_p=config.speed_p,
        min_samples=encoder.min_samples,
        standardize=encoder.normalize and log_mel is not None,  # log-mel inputs skip the encoder's normalisation
        log_mel=log_mel,
        spec_augment=spec_augment,
    )


def _export(recipe: SimclrRecipe, raw: dict[str, Any]) -> Any:
    return lambda trained, result, output_dir, model_dir: export(trained, recipe, raw, result, output_dir, model_dir)


def _audio_parts(recipe: SimclrRecipe, raw: dict[str, Any]) -> RecipeParts:
    """Audio backbone, head, method, seeded audio views of the training clips and their batch sampler."""
    tower, data = recipe.model.audio, recipe.data.audio
    assert tower is not None and data is not None  # checked by modality()
    if tower.max_seconds is not None or tower.feature_extractor is not None:
        raise ValueError(
            "model.audio.max_seconds / feature_extractor: audio SimCLR crops clips in its views "
            "(views.audio.seconds) and takes cpc, mel or waveform transformers encoders"
        )
    encoder = build_audio_tower(tower)
    pipeline = audio_view_pipeline(recipe.views.audio, encoder)
    clips, skipped = data.training_clips(encoder.sample_rate, "data.audio")
    if not clips:
        raise ValueError(f"data.audio.train '{data.train}': no clips left to train on")
    method = build_method(recipe, encoder, "audio", len(clips))
    seed = recipe.train.seed if recipe.views.seed is None else recipe.views.seed
    dataset = AudioViewsDataset(
        DecodedAudio(clips, encoder.sample_rate), pipeline, seed=seed, num_views=recipe.views.num_views
    )
    if data.batches == "speaker":
        speakers = [row.get("speaker") for row in clips]
        if any(speaker is None for speaker in speakers):
            raise ValueError(
                f"data.audio.batches=speaker: some clips of '{data.train}' have no speaker; set data.audio.pattern "
                "with a (?P<speaker>...) group, or data.audio.batches=shuffled"
            )
        sampler = grouped_batch_sampler(recipe.train, speakers)
    else:
        sampler = batch_sampler(recipe.train, len(dataset))
    print(f"data.audio: {len(clips)} training clips at {encoder.sample_rate} Hz, {data.batches} batches")
    return RecipeParts(
        method=method,
        dataset=dataset,
        batch_sampler=sampler,
        evaluators={},
        export=_export(recipe, raw),
        skipped_rows=skipped,
    )


def build(recipe: SimclrRecipe, raw: dict[str, Any]) -> RecipeParts:
    """Backbone, head, method, seeded views of the training data, sampler and probes of a SimCLR recipe (image or
    audio: :func:`modality`)."""
    kind = modality(recipe)
    if kind == "audio":
        return _audio_parts(recipe, raw)
    if kind == "text":
        return text_parts(recipe, raw)
    model, data, views = recipe.model, recipe.data, recipe.views
    encoder = build_image_tower(model.image)
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
    seed = recipe.train.seed if views.seed is None else views.seed
    if data.streaming:
        return _streamed_image_parts(recipe, raw, encoder, transform, seed)
    rows: ImageRows = load_image_rows(data.train, split=data.split, image_size=data.image_size)
    for path, reason in rows.skipped[:10]:
        print(f"skipped unreadable image {path}: {reason}")
    if data.limit is not None:
        rows.rows = rows.rows[: data.limit]
    method = build_method(recipe, encoder, "image", len(rows.rows))
    dataset = ViewsDataset(DecodedImages(rows.rows), transform, seed=seed, num_views=views.num_views)
    sampler = batch_sampler(recipe.train, len(dataset))
    return _image_parts(recipe, raw, method, dataset, sampler, len(rows.skipped))


def _streamed_image_parts(
    recipe: SimclrRecipe, raw: dict[str, Any], encoder: Any, transform: Any, seed: int
) -> RecipeParts:
    """An image views recipe on streamed images (`data.streaming`): views drawn from (seed, epoch, sample)."""
    data = recipe.data
    if recipe.method in ("memory_bank", "supcon"):
        needs = "a fixed index per image (its memory bank slot)" if recipe.method == "memory_bank" else "class labels"
        raise ValueError(
            f"method {recipe.method} needs {needs}, which a stream does not give: set data.streaming=false"
        )
    if data.train == "sklearn:digits":
        raise ValueError(
            "data.streaming reads shards (webdataset tar of KEY.jpg / KEY.png, or parquet with an image column) or a "
            "hub dataset, not sklearn:digits: point data.train at them, or set data.streaming=false"
        )
    views = StreamedViews(StreamedImageRows(data.image_column), transform, seed, recipe.views.num_views)
    dataset = streamed_batches(recipe.train, data, data.train, views, split=data.split, limit=data.limit)
    method = build_method(recipe, encoder, "image", 0)
    return _image_parts(recipe, raw, method, dataset, None, 0)


def _image_parts(
    recipe: SimclrRecipe, raw: dict[str, Any], method: ViewsMethod, dataset: Any, sampler: Any, skipped: int
) -> RecipeParts:
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
        batch_sampler=sampler,
        evaluators=evaluators,
        export=_export(recipe, raw),
        skipped_rows=skipped,
    )


def export(
    method: ViewsMethod,
    recipe: SimclrRecipe,
    raw: dict[str, Any],
    result: TrainingResult,
    output_dir: Path,
    model_dir: Path,
) -> Path:
    """Write the model folder (``model_dir``, which the run then moves to `OUTPUT_DIR/model`): the backbone only
    (safetensors + config.json), a model card and the curve."""
    if method.modality == "audio":
        return export_audio(method, recipe, raw, result, output_dir, model_dir)
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
        probes = {
            recipe.method: {k.split("/", 1)[1]: v for k, v in result.final_metrics.items() if k.startswith("probe/")}
        }
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
            title=f"mmcontrast {recipe.method} image encoder ({output_dir.name})",
            description=(
                f"An image encoder (`{backbone}`, {encoder.kind}, {encoder.image_size}x{encoder.image_size} "
                f"input, {encoder.embedding_dim}-dimensional features) trained from scratch with the "
                f"{objective(recipe)} of mmcontrast on `{recipe.data.train}`. The heads were dropped: the features "
                "are the backbone's. "
                f"Evaluation: cosine kNN (k={recipe.eval.k}, {recipe.eval.weighting} vote) and logistic-regression "
                "probes on frozen features (fit on the "
                f"{recipe.eval.train_split} split, scored on the {recipe.eval.test_split} split).{compared}"
            ),
            library_name="mmcontrast",
            pipeline_tag="image-feature-extraction",
            usage=_USAGE.format(path=output_dir / "model", dim=encoder.embedding_dim),
            recipe=yaml.safe_dump(raw, sort_keys=False),
            datasets=[recipe.data.train],
            tags=[recipe.method, "self-supervised", "image-feature-extraction"],
            results=results,
            image=training_curve(result.log_history, model_dir),
        ),
    )
    return model_dir


def export_audio(
    method: ViewsMethod,
    recipe: SimclrRecipe,
    raw: dict[str, Any],
    result: TrainingResult,
    output_dir: Path,
    model_dir: Path,
) -> Path:
    """The audio model folder: the audio encoder alone (``AudioEncoder.save_pretrained``, as the CPC recipe writes
    it; the head is dropped), a model card (`feature-extraction`) and the curve."""
    encoder = method.audio_encoder
    encoder.save_pretrained(model_dir)
    data, views = recipe.data.audio, recipe.views.audio
    assert data is not None
    held_out = f" (takes {data.exclude_takes} left out)" if data.exclude_takes else ""
    length = f"{views.seconds:g} s crops" if views.seconds is not None else "whole clips"
    masks = " and SpecAugment masks on log-mel views" if views.spec_augment is not None else ""
    write_model_card(
        model_dir,
        CardInfo(
            title=f"mmcontrast {recipe.method} audio encoder ({output_dir.name})",
            description=(
                f"An audio encoder (`{encoder.kind}`, {encoder.sample_rate} Hz, {encoder.embedding_dim}-dimensional "
                f"features pooled ({encoder.pooling}) over its frames) trained from scratch with the "
                f"{objective(recipe)} of mmcontrast, on {recipe.views.num_views} augmented views of each clip "
                f"({length}, speed, time shift, gain and noise{masks}) of `{data.train}`{held_out}. "
                "The heads were dropped: the features are the encoder's. "
                "Probe it with `mmcontrast eval probe --model FOLDER --train TABLE --test TABLE --label COLUMN`."
            ),
            library_name="mmcontrast",
            pipeline_tag="feature-extraction",
            usage=_AUDIO_USAGE.format(
                path=output_dir / "model", rate=encoder.sample_rate, dim=encoder.embedding_dim, pooling=encoder.pooling
            ),
            recipe=yaml.safe_dump(raw, sort_keys=False),
            datasets=[data.train],
            tags=[recipe.method, "self-supervised", "audio", "feature-extraction"],
            results=[],
            image=training_curve(result.log_history, model_dir),
        ),
    )
    return model_dir
