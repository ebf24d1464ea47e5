"""The CLAP recipe: (audio clip, caption) data -> audio + text towers -> a transformers ClapModel folder.

The recipe only wires: its schema builds the towers (:mod:`mmcontrast.modalities.audio_tower` around the audio
adapter, a transformers text tower) and the CLAP method (the audio-text configuration of
:class:`~mmcontrast.methods.two_tower.TwoTower`); the export picks the format in :mod:`mmcontrast.hub`: a transformers
``ClapModel`` (:mod:`~mmcontrast.hub.transformers_clap`) when the towers are CLAP-shaped, else mmcontrast's own
two-tower format (:mod:`~mmcontrast.hub.mmcontrast_clip`).

Labelled audio (class folders, a label column, or a file-name pattern such as FSDD's) gets *generated* captions:
the class name put into each caption template (row ``i`` gets template ``i mod len``); the run says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
import yaml

from mmcontrast.data.audio import (
    AUDIO_MEMBERS,
    FSDD_PATTERN,
    MIN_SECONDS,
    AudioDecodeError,
    AudioRows,
    DecodedAudio,
    decode_audio_bytes,
    load_audio_rows,
    resample,
    split_by_take,
    to_mono,
)
from mmcontrast.data.streaming import TEXT_MEMBERS, BadSample, sample_key, stream_column
from mmcontrast.engine.trainer import TrainingResult
from mmcontrast.evaluation.plots import plot_confusion_matrix
from mmcontrast.evaluation.zero_shot import (
    AUDIO_TEMPLATES,
    AudioTextEncoder,
    classes_by_name,
    modality_text_retrieval,
    zero_shot_classifier,
    zero_shot_metrics,
)
from mmcontrast.hub.mmcontrast_clip import register_method_builder, save_mmcontrast_clip
from mmcontrast.hub.model_card import CardInfo, training_curve, write_model_card
from mmcontrast.hub.transformers_clap import TransformersClapEncoder, clap_shape_problem, export_transformers_clap
from mmcontrast.methods.clap import CLAP
from mmcontrast.modalities.audio import crop_or_pad
from mmcontrast.modalities.audio_tower import AudioTower, ProjectedTower, byte_level_tokenizer
from mmcontrast.modalities.text import Pooling, TextEncoder
from mmcontrast.recipes.audio_tower import AudioTowerConfig, build_audio_tower
from mmcontrast.recipes.base import (
    EvalSchedule,
    RecipeBase,
    RecipeParts,
    StreamingConfig,
    batch_sampler,
    streamed_batches,
    transformers_config,
)
from mmcontrast.recipes.two_tower import TwoTowerLossConfig, siglip_bias_note
from mmcontrast.typed_config import NonNegativeInt, PositiveInt, Range
from mmcontrast.typed_config import build as build_config
from mmcontrast.views.audio import CroppedAudio
from mmcontrast.views.simclr import view_seed

PATTERNS = {"fsdd": FSDD_PATTERN}
"""Named file-name patterns for `data.pattern`."""

_USAGE = """import soundfile
from transformers import pipeline

classifier = pipeline("zero-shot-audio-classification", model="{path}")
audio, rate = soundfile.read("my_clip.wav")  # mono, resampled to {rate} Hz
print(classifier(audio, candidate_labels=[{labels}], hypothesis_template="{template}"))"""

_MMCONTRAST_USAGE = """import mmcontrast.recipe  # registers the recipe builders that rebuild mmcontrast-format models
from mmcontrast.data.audio import load_audio
from mmcontrast.evaluation.zero_shot import zero_shot_classifier
from mmcontrast.hub.dual_encoders import load_dual_encoder

model = load_dual_encoder("{path}")
labels = [{labels}]
classifier = zero_shot_classifier(model, labels, ["{template}"])
audio, _ = load_audio("my_clip.wav", model.sample_rate)
print(labels[(model.encode_audio([audio]) @ classifier.T).argmax()])"""


@dataclass
class ClapTextTowerConfig:
    """The text tower (`model.text:` section).

    Attributes:
        name_or_path: a local transformers / sentence-transformers folder or hub name.
        config: instead, a transformers text config for a randomly initialised tower (`model_type: clap_text_model`
            for CLAP's RoBERTa text tower).
        tokenizer: tokenizer of a `config` tower: `bytes` (a RoBERTa tokenizer with one token per byte, built
            offline: vocab_size 261) or a tokenizer folder.
        pooling: `pooler` (the model's own pooled output; needed for the ClapModel export), `mean`, `cls` or
            `last`; default `pooler` for `config` towers.
        max_length: tokens per caption.
    """

    name_or_path: str | None = None
    config: dict[str, Any] | None = None
    tokenizer: str = "bytes"
    pooling: Pooling | None = None
    max_length: PositiveInt | None = None


@dataclass
class ClapModelConfig:
    """The two towers and the shared space (`model:` section).

    Attributes:
        audio: the audio tower.
        text: the text tower.
        embed_dim: size of the shared embedding space.
        projection: `clap` (CLAP's two-layer projection, linear-ReLU-linear with biases, held in each tower: the
            ClapModel form) or `linear` (the two-tower method's bias-free linear projections).
        logit_scale_init: initial logit scale (1 / temperature); null: the loss's own (1/0.07, SigLIP: 10);
            learned within [1, 100].
        lock_text: freeze the text tower.
        gather: use every process's pairs as negatives.
        mask_positives: clips of the same class (or caption) are not negatives of each other (`info_nce` only).
        loss: the loss between the towers (`info_nce` or `siglip`).
    """

    audio: AudioTowerConfig = field(default_factory=AudioTowerConfig)
    text: ClapTextTowerConfig = field(default_factory=ClapTextTowerConfig)
    embed_dim: PositiveInt = 512
    projection: Literal["clap", "linear"] = "clap"
    logit_scale_init: Annotated[float, Range(ge=1, le=100)] | None = None
    lock_text: bool = False
    gather: bool = True
    mask_positives: bool = True
    loss: TwoTowerLossConfig = field(default_factory=TwoTowerLossConfig)


@dataclass
class AudioTextDataConfig(StreamingConfig):
    """(audio, caption) training data (`data:` section), read whole or streamed (`streaming`: webdataset tar shards
    of `KEY.flac` + `KEY.txt`, parquet with an audio column, or a hub dataset).

    Attributes:
        train: an audio folder (`metadata.csv`/`.jsonl` with `file_name`, one sub-folder per class, or files
            named by `pattern`) or a csv / tsv / json / jsonl table of audio paths; streamed: shards or a hub name.
        audio_column: column of a streamed row's audio (its bytes, or a path); a tar sample without it falls back
            to its audio member (`flac`, `wav`, `mp3`, ...).
        pattern: a regular expression over file names whose named groups give fields (`label`, `speaker`,
            `take`), or `fsdd` (`{digit}_{speaker}_{take}.wav`).
        label_column: column (or group) holding the class.
        caption_column: column holding the caption of unlabelled data (labelled data gets generated captions).
        captions: templates that turn class names into captions for labelled data; row i gets template i mod len.
            Such captions are generated, not written by people.
        test_takes: rows whose `take` is one of these are held out of training (the FSDD split: takes 0-4); the
            zero-shot evaluation uses them (`eval.zero_shot: held_out`); empty: no hold-out.
        limit: use only the first N training rows.
    """

    train: str = ""
    audio_column: str = "audio"
    pattern: str | None = None
    label_column: str = "label"
    caption_column: str = "text"
    captions: list[str] = field(default_factory=lambda: list(AUDIO_TEMPLATES))
    test_takes: list[NonNegativeInt] = field(default_factory=list)
    limit: PositiveInt | None = None


@dataclass
class ZeroShotAudioEvalConfig(EvalSchedule):
    """Zero-shot audio classification and audio-text retrieval (`eval:` section).

    Attributes:
        zero_shot: labelled clips to classify: `held_out` (the rows `data.test_takes` kept out of training) or an
            audio folder / table (read with `data.pattern`); null: none.
        classes: class names used in the prompts: the data's own names in any order (matched by name, never by
            position); default: the data's names.
        templates: prompt templates; each class's embeddings are averaged over them.
        retrieval: also report audio-text retrieval recall@1/5/10 on the zero-shot clips and their generated
            captions.
        limit: evaluate on the first N clips only.
    """

    zero_shot: str | None = None
    classes: list[str] | None = None
    templates: list[str] = field(default_factory=lambda: list(AUDIO_TEMPLATES[:1]))
    retrieval: bool = False
    limit: PositiveInt | None = None


@dataclass
class ClapRecipe(RecipeBase):
    """CLAP: audio and text towers aligned by symmetric InfoNCE with a learnable temperature (or SigLIP).

    Attributes:
        method: `clap`.
        model: the towers.
        data: (audio, caption) data.
        eval: zero-shot audio classification and audio-text retrieval.
    """

    method: Literal["clap"] = "clap"
    output_dir: str = "runs/clap"
    model: ClapModelConfig = field(default_factory=ClapModelConfig)
    data: AudioTextDataConfig = field(default_factory=AudioTextDataConfig)
    eval: ZeroShotAudioEvalConfig = field(default_factory=ZeroShotAudioEvalConfig)


def _clap_feature_extractor(options: dict[str, Any], num_mel_bins: int) -> Any:
    from transformers import ClapFeatureExtractor

    options = {"feature_size": num_mel_bins, "truncation": "rand_trunc", **options}
    try:
        return ClapFeatureExtractor(**options)
    except TypeError as error:
        raise ValueError(f"model.audio.feature_extractor: {error}") from None


def _audio_tower(config: AudioTowerConfig, seed: int) -> AudioTower:
    encoder = build_audio_tower(config)
    extractor = None
    if config.feature_extractor is not None:
        if encoder.kind != "transformers" or encoder.backbone.config.model_type != "clap_audio_model":
            raise ValueError("model.audio.feature_extractor is for the CLAP audio tower (model_type clap_audio_model)")
        extractor = _clap_feature_extractor(config.feature_extractor, encoder.backbone.config.num_mel_bins)
    rate = int(extractor.sampling_rate) if extractor is not None else encoder.sample_rate
    if config.max_seconds is not None:
        max_samples: int | None = round(config.max_seconds * rate)
    else:
        limit = getattr(extractor or encoder.feature_extractor, "nb_max_samples", None)
        max_samples = int(limit) if limit else None
    return AudioTower(encoder, max_samples=max_samples, feature_extractor=extractor, seed=seed)


def _text_tower(config: ClapTextTowerConfig) -> TextEncoder:
    if config.config is not None:
        from transformers import AutoModel, AutoTokenizer, ClapTextModel

        model_config = transformers_config(config.config, "model.text.config")
        limit = int(model_config.max_position_embeddings) - 2  # RoBERTa positions start after the padding index
        max_length = config.max_length or limit
        if config.tokenizer == "bytes":
            tokenizer = byte_level_tokenizer(max_length)
        else:
            tokenizer = AutoTokenizer.from_pretrained(config.tokenizer)
        if len(tokenizer) > model_config.vocab_size:
            raise ValueError(
                f"model.text.config: vocab_size {model_config.vocab_size} is smaller than the tokenizer's "
                f"{len(tokenizer)} tokens (model.text.tokenizer: {config.tokenizer})"
            )
        is_clap = model_config.model_type == "clap_text_model"
        transformer = ClapTextModel(model_config) if is_clap else AutoModel.from_config(model_config)
        return TextEncoder(transformer, tokenizer, pooling=config.pooling or "pooler", max_length=max_length)
    if config.name_or_path:
        return TextEncoder.from_pretrained(
            config.name_or_path, pooling=config.pooling, normalize=False, max_length=config.max_length
        )
    raise ValueError("model.text needs a name_or_path (a folder or hub name) or a config")


def _clap_head(tower_config: Any, embed_dim: int) -> torch.nn.Module:
    from transformers.models.clap.modeling_clap import ClapProjectionLayer

    config = tower_config.__class__.from_dict(tower_config.to_dict())
    config.hidden_size = tower_config.hidden_size
    config.projection_dim = embed_dim
    return ClapProjectionLayer(config)


def _method(model: ClapModelConfig, seed: int = 0) -> CLAP:
    """The CLAP method a `model:` section describes (CLAP-shaped towers when `projection: clap`)."""
    torch.manual_seed(seed)
    audio, text = _audio_tower(model.audio, seed), _text_tower(model.text)
    options = {
        "logit_scale_init": model.logit_scale_init,
        "lock_text": model.lock_text,
        "gather": model.gather,
        "mask_positives": model.mask_positives,
        **model.loss.method_options(),
    }
    if model.projection == "linear":
        return CLAP(audio, text, model.embed_dim, **options)
    backbone = getattr(audio.encoder.backbone, "config", None)
    if backbone is None or getattr(text.transformer, "config", None) is None:
        raise ValueError(
            "model.projection 'clap' needs transformers towers (CLAP's projection layer reads their configs); use "
            "model.projection: linear for cpc / mel audio towers"
        )
    audio_head = _clap_head(backbone, model.embed_dim)
    text_head = _clap_head(text.transformer.config, model.embed_dim)
    towers = (ProjectedTower(audio, audio_head, model.embed_dim), ProjectedTower(text, text_head, model.embed_dim))
    return CLAP(*towers, model.embed_dim, project=False, **options)


def _pattern(data: AudioTextDataConfig) -> str | None:
    return PATTERNS.get(data.pattern, data.pattern) if data.pattern else None


def caption_audio_rows(rows: AudioRows, templates: list[str], classes: list[str] | None = None) -> AudioRows:
    """Give every labelled row a generated ``caption``: ``templates[i % len].format(class name)``."""
    if not templates or any("{}" not in t for t in templates):
        raise ValueError(f"data.captions: every caption template needs a '{{}}' for the class name, got {templates}")
    names = classes or rows.classes
    out = [
        dict(row, caption=templates[i % len(templates)].format(names[row["label"]])) for i, row in enumerate(rows.rows)
    ]
    return AudioRows(out, rows.classes, rows.skipped, rows.resampled, rows.mixed_down, rows.sample_rate)


def _read_rows(source: str, data: AudioTextDataConfig, sample_rate: int, key: str) -> AudioRows:
    if not source:
        raise ValueError(f"{key} is empty: give an audio folder or a table of audio paths")
    return load_audio_rows(source, pattern=_pattern(data), label_column=data.label_column, sample_rate=sample_rate)


class _ZeroShot:
    """Zero-shot top-1 / top-5 / mean per-class recall of a model on labelled clips (an engine evaluator)."""

    def __init__(self, rows: AudioRows, classes: list[str], class_rows: list[int], templates: list[str]) -> None:
        decoded = DecodedAudio(rows)
        self.waveforms = [decoded[i]["audio"] for i in range(len(decoded))]
        self.labels = [class_rows[row["label"]] for row in rows.rows]
        self.captions = [templates[0].format(classes[label]) for label in self.labels]
        self.classes, self.templates = classes, templates
        self.retrieval = False

    def evaluate(self, encoder: AudioTextEncoder) -> tuple[dict[str, float], list[int]]:
        classifier = zero_shot_classifier(encoder, self.classes, self.templates)
        embeddings = encoder.encode_audio(self.waveforms)
        metrics, predictions = zero_shot_metrics(embeddings, self.labels, classifier)
        if self.retrieval:
            metrics |= modality_text_retrieval(embeddings, self.captions, encoder, "audio")
        return metrics, predictions.tolist()

    def __call__(self, encoder: AudioTextEncoder) -> dict[str, float]:
        return self.evaluate(encoder)[0]


class StreamedAudioTextRows:
    """A streamed (audio, caption) row as the CLAP method takes it: the clip decoded (soundfile, else PyAV) to mono
    at the audio tower's rate and, when longer than the tower's window, cut to a window drawn from the seed, the
    epoch and the sample (:func:`~mmcontrast.data.streaming.sample_key`), as map-style data is cut by (seed,
    epoch, row). A clip that
    does not decode or is shorter than 20 ms, or a missing caption, is a bad sample (skipped and counted)."""

    def __init__(
        self, audio_column: str, caption_column: str, sample_rate: int, max_samples: int | None, seed: int
    ) -> None:
        self.audio_column, self.caption_column = audio_column, caption_column
        self.sample_rate, self.max_samples, self.seed = sample_rate, max_samples, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the windows of epoch ``epoch`` from now on (called by the stream in its worker)."""
        self.epoch = int(epoch)

    def __call__(self, raw: dict[str, Any]) -> dict[str, Any]:
        audio_field = stream_column(raw, self.audio_column, AUDIO_MEMBERS, "data.audio_column")
        caption_field = stream_column(raw, self.caption_column, TEXT_MEMBERS, "data.caption_column")
        caption, value = raw[caption_field], raw[audio_field]
        if not isinstance(caption, str) or not caption.strip():
            raise BadSample(f"caption '{caption_field}' is missing or empty")
        if isinstance(value, dict):
            value = value.get("bytes") or value.get("path")
        if value is None:
            raise BadSample(f"audio '{audio_field}' is missing")
        try:
            data = value if isinstance(value, bytes) else Path(value).read_bytes()
            samples, rate = decode_audio_bytes(data, str(raw.get("__key__", audio_field)))
        except (AudioDecodeError, OSError) as error:
            raise BadSample(f"audio '{audio_field}' does not decode: {error}") from error
        waveform = resample(to_mono(samples), rate, self.sample_rate)
        if waveform.shape[-1] < MIN_SECONDS * self.sample_rate:
            raise BadSample(f"audio '{audio_field}' is shorter than {MIN_SECONDS * 1000:.0f} ms")
        if self.max_samples is not None:
            generator = torch.Generator().manual_seed(view_seed(self.seed, self.epoch, sample_key(raw)))
            waveform = crop_or_pad(waveform, self.max_samples, train=True, generator=generator)
        return {"audio": waveform.contiguous(), "sample_rate": self.sample_rate, "caption": caption}


def _streamed_rows(recipe: ClapRecipe, method: CLAP) -> Any:
    """The streamed (audio, caption) batches of `data.streaming`: clips decoded as they arrive, bad ones skipped."""
    data = recipe.data
    for key, value in (("pattern", data.pattern), ("test_takes", data.test_takes), ("limit", data.limit)):
        if value:
            raise ValueError(
                f"data.{key} is set, but streamed rows come with their captions (tar shards of KEY.flac + KEY.txt, or "
                f"a table's caption column) and are not held out or cut: leave data.{key} unset with data.streaming"
            )
    if recipe.eval.zero_shot == "held_out":
        raise ValueError("eval.zero_shot is held_out, but a stream holds nothing out: name labelled clips instead")
    audio_tower = method.tower("audio")
    max_samples = (audio_tower.tower if isinstance(audio_tower, ProjectedTower) else audio_tower).max_samples
    decode = StreamedAudioTextRows(
        data.audio_column, data.caption_column, method.sample_rate, max_samples, recipe.train.seed
    )
    return streamed_batches(recipe.train, data, data.train, decode)


def build(recipe: ClapRecipe, raw: dict[str, Any]) -> RecipeParts:
    """Towers, method, (audio, caption) rows, sampler and evaluators of a CLAP recipe."""
    data = recipe.data
    method = _method(recipe.model, recipe.train.seed)
    rate = method.sample_rate
    if data.streaming:
        return _parts(recipe, raw, method, _streamed_rows(recipe, method), None, _zero_shot(recipe, None, rate), 0)
    rows = _read_rows(data.train, data, rate, "data.train")
    held_out = None
    if data.test_takes:
        rows, held_out = split_by_take(rows, data.test_takes)
    if rows.classes:
        rows = caption_audio_rows(rows, data.captions)
        print(
            f"data.train '{data.train}': captions are generated from the class labels ({len(data.captions)} "
            f"templates, e.g. {rows.rows[0]['caption']!r}), not written by people"
        )
    elif any("caption" not in row and data.caption_column not in row for row in rows.rows):
        raise ValueError(
            f"data.train '{data.train}' has neither class labels nor a '{data.caption_column}' column of captions"
        )
    else:
        rows.rows = [dict(row, caption=row.get("caption", row.get(data.caption_column))) for row in rows.rows]
    if rows.skipped:
        print(rows.report())
    if data.limit is not None:
        rows.rows = rows.rows[: data.limit]
    print(f"data.train: {len(rows.rows)} clips at {rate} Hz" + (f", {len(held_out.rows)} held out" if held_out else ""))
    dataset: Any = DecodedAudio(rows)
    audio_tower = method.tower("audio")
    max_samples = (audio_tower.tower if isinstance(audio_tower, ProjectedTower) else audio_tower).max_samples
    if max_samples is not None:  # training crops seeded by (seed, epoch, row), cut in the DataLoader
        dataset = CroppedAudio(dataset, max_samples, seed=recipe.train.seed)
    zero_shot = _zero_shot(recipe, held_out, rate)
    sampler = batch_sampler(recipe.train, len(dataset))
    return _parts(recipe, raw, method, dataset, sampler, zero_shot, len(rows.skipped))


def _parts(
    recipe: ClapRecipe,
    raw: dict[str, Any],
    method: CLAP,
    dataset: Any,
    sampler: Any,
    zero_shot: _ZeroShot | None,
    skipped: int,
) -> RecipeParts:
    evaluators: dict[str, Any] = {"zero_shot": zero_shot} if zero_shot is not None else {}
    return RecipeParts(
        method=method,
        dataset=dataset,
        batch_sampler=sampler,
        evaluators=evaluators,
        export=lambda trained, result, output_dir, model_dir: export(
            trained, recipe, raw, result, output_dir, model_dir, zero_shot
        ),
        skipped_rows=skipped,
    )


def _zero_shot(recipe: ClapRecipe, held_out: AudioRows | None, rate: int) -> _ZeroShot | None:
    config = recipe.eval
    if not config.zero_shot:
        return None
    if config.zero_shot == "held_out":
        if held_out is None:
            raise ValueError("eval.zero_shot 'held_out' needs data.test_takes (the takes kept out of training)")
        rows = held_out
    else:
        rows = _read_rows(config.zero_shot, recipe.data, rate, "eval.zero_shot")
    if not rows.classes:
        raise ValueError(f"eval.zero_shot '{config.zero_shot}' has no classes: give labelled clips")
    if config.limit is not None:
        rows = AudioRows(rows.rows[: config.limit], rows.classes, sample_rate=rows.sample_rate)
    classes, class_rows = classes_by_name(
        config.classes, rows.classes, classes_name="eval.classes", data_name=f"eval.zero_shot '{config.zero_shot}'"
    )
    evaluator = _ZeroShot(rows, classes, class_rows, config.templates)
    evaluator.retrieval = config.retrieval
    return evaluator


def export(
    method: CLAP,
    recipe: ClapRecipe,
    raw: dict[str, Any],
    result: TrainingResult,
    output_dir: Path,
    model_dir: Path,
    zero_shot: _ZeroShot | None,
) -> Path:
    """Write the model folder: a transformers ClapModel + ClapProcessor when the towers are CLAP-shaped, else
    mmcontrast's two-tower format; a model card with the zero-shot results, and the confusion matrix."""
    problem = clap_shape_problem(method)
    encoder: AudioTextEncoder
    if problem is None:
        export_transformers_clap(method, model_dir)
        encoder, library, usage = TransformersClapEncoder(model_dir), "transformers", _USAGE
        description = "An audio-text dual encoder (transformers ClapModel)"
    else:
        save_mmcontrast_clip(method, raw, model_dir)
        encoder, library, usage = method, "mmcontrast", _MMCONTRAST_USAGE
        description = "An audio-text dual encoder (mmcontrast's own format)"
        print(f"no transformers ClapModel export ({problem}): saved in mmcontrast's format (load_dual_encoder)")
    image, results = training_curve(result.log_history, model_dir), []
    dataset = Path(recipe.data.train).name or "audio"
    if zero_shot is not None:
        metrics, predictions = zero_shot.evaluate(encoder)
        plot_confusion_matrix(zero_shot.labels, predictions, zero_shot.classes, model_dir / "confusion_matrix.png")
        results += [
            ("zero-shot-audio-classification", f"{dataset} ({recipe.eval.zero_shot})", name, value)
            for name, value in metrics.items()
        ]
        (output_dir / "zero_shot.json").write_text(json.dumps(metrics, indent=1))
        print(
            f"zero-shot on {len(zero_shot.labels)} clips of eval.zero_shot '{recipe.eval.zero_shot}': top1 "
            f"{metrics['top1']:.3f} (chance {1 / len(zero_shot.classes):.3f})"
        )
    template = recipe.eval.templates[0]
    labels = ", ".join(f'"{c}"' for c in (zero_shot.classes[:3] if zero_shot else ["dog", "rain"]))
    captions = "generated from the class labels" if recipe.data.captions else "from the data"
    write_model_card(
        model_dir,
        CardInfo(
            title=f"mmcontrast clap model ({output_dir.name})",
            description=(
                f"{description} trained with the CLAP method of mmcontrast on `{recipe.data.train}` (captions "
                f"{captions}). Use it for zero-shot audio classification and audio-text retrieval."
                + siglip_bias_note(method, keeps_bias=library == "mmcontrast")
            ),
            library_name=library,
            pipeline_tag="zero-shot-audio-classification",
            usage=usage.format(path=output_dir / "model", labels=labels, template=template, rate=method.sample_rate),
            recipe=yaml.safe_dump(raw, sort_keys=False),
            base_model=recipe.model.text.name_or_path,
            datasets=[recipe.data.train],
            tags=["clap", "zero-shot-audio-classification", "audio-text"],
            results=results,
            image=image,
        ),
    )
    return model_dir


def method_from_recipe(raw: dict[str, Any], source: str) -> CLAP:
    """The untrained CLAP method of a stored recipe (how :mod:`mmcontrast.hub.mmcontrast_clip` rebuilds a folder in
    mmcontrast's format before reading its weights)."""
    recipe = build_config(ClapRecipe, raw, source=source)
    return _method(recipe.model, recipe.train.seed)


register_method_builder("clap", method_from_recipe)
