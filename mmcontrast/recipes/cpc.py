"""The CPC recipe: speech clips -> windows of each speaker's audio -> CPC -> an audio encoder folder (contexts)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from tqdm.auto import tqdm

from mmcontrast.data.audio import load_audio, load_audio_rows, split_by_take
from mmcontrast.engine.trainer import TrainingResult
from mmcontrast.hub.model_card import CardInfo, training_curve, write_model_card
from mmcontrast.methods.cpc import CPC
from mmcontrast.recipes.audio_tower import AudioContextConfig, AudioTowerConfig, build_audio_tower
from mmcontrast.recipes.base import RecipeBase, RecipeParts, batch_sampler, grouped_batch_sampler
from mmcontrast.typed_config import NonNegativeInt, PositiveFloat, PositiveInt
from mmcontrast.views.windows import SpeakerWindows

_USAGE = """from mmcontrast.modalities.audio import AudioEncoder
from mmcontrast.data.audio import load_audio

encoder = AudioEncoder.from_pretrained("{path}")
waveform, _ = load_audio("clip.wav", encoder.sample_rate)
contexts = encoder(waveform[None])          # [1, frames, {dim}]: CPC's context vectors, one per {hop} samples
utterance = encoder.embed(waveform[None])   # [1, {dim}], pooled ({pooling})"""


def _cpc_audio() -> AudioTowerConfig:
    return AudioTowerConfig(
        kind="cpc",
        sample_rate=16000,
        options={"width": 256, "norm": "channel"},
        context=AudioContextConfig("gru"),
        normalize=True,
    )


@dataclass
class CpcModelConfig:
    """The encoder and the CPC head (`model:` section).

    Attributes:
        audio: the audio encoder; CPC needs its `context` network (`context: {type: gru}`).
        steps: frames predicted ahead (K).
        negatives: negatives per prediction (N).
        predictor: `linear` (one W_k per step, the paper) or `transformer` (one causal layer per step, CPC_audio).
        sampling: where negatives come from: `speaker` (sequences of the query's speaker), `batch` or `sequence`.
        similarity: `dot` (a . b / d, CPC_audio's score) or `cosine`.
        temperature: the scores are divided by it (1.0 with `dot`, as CPC_audio; e.g. 0.1 with `cosine`).
        gather: draw batch negatives from every process's sequences.
    """

    audio: AudioTowerConfig = field(default_factory=_cpc_audio)
    steps: PositiveInt = 12
    negatives: PositiveInt = 128
    predictor: Literal["linear", "transformer"] = "linear"
    sampling: Literal["batch", "speaker", "sequence"] = "speaker"
    similarity: Literal["dot", "cosine"] = "dot"
    temperature: PositiveFloat = 1.0
    gather: bool = False


@dataclass
class SpeechDataConfig:
    """Training audio (`data:` section).

    Attributes:
        train: an audio folder (`metadata.csv`/`.jsonl`, a filename `pattern`, class sub-folders or plain files)
            or a csv / json(l) table of audio paths.
        pattern: a regular expression matched against file names; its named groups become columns (`speaker`,
            `label`, `take`), e.g. FSDD's `(?P<label>\\d)_(?P<speaker>[a-z]+)_(?P<take>\\d+)\\.wav`.
        speaker_column: the column (or pattern group) naming the speaker; null: every clip is its own speaker.
        exclude_takes: leave out the clips with these `take` values (FSDD's test split: takes 0-4).
        window: samples per training window (1.28 s at the encoder's rate in CPC_audio: 20480 at 16 kHz).
        batches: `speaker` (every batch from one speaker, CPC_audio's samespeaker) or `shuffled` (any windows).
        limit: use only the first N clips.
    """

    train: str = ""
    pattern: str | None = None
    speaker_column: str | None = "speaker"
    exclude_takes: list[NonNegativeInt] = field(default_factory=list)
    window: PositiveInt = 20480
    batches: Literal["speaker", "shuffled"] = "speaker"
    limit: PositiveInt | None = None

    def training_clips(self, sample_rate: int, section: str = "data") -> tuple[list[dict[str, Any]], int]:
        """The clip rows to train on and how many files were skipped: `train` read at `sample_rate` (bad files
        skipped, resampled and mixed-down ones reported), the `exclude_takes` left out, the first `limit` kept.
        `section` names this section in the messages (`data`, `data.audio`)."""
        rows = load_audio_rows(
            self.train, pattern=self.pattern, speaker_column=self.speaker_column, sample_rate=sample_rate
        )
        if rows.skipped or rows.resampled or rows.mixed_down:
            print(f"{section}.train '{self.train}': {rows.report()}")
        if self.exclude_takes:
            rows, held_out = split_by_take(rows, self.exclude_takes)
            print(f"{section}: {len(held_out.rows)} clips of takes {self.exclude_takes} left out of training")
        return (rows.rows[: self.limit] if self.limit else rows.rows), len(rows.skipped)


@dataclass
class CpcRecipe(RecipeBase):
    """CPC: contrastive predictive coding on raw audio (van den Oord et al. 2018; Rivière et al. 2020).

    Attributes:
        method: `cpc`.
        model: the encoder and the CPC head.
        data: training audio.
    """

    method: Literal["cpc"] = "cpc"
    output_dir: str = "runs/cpc"
    model: CpcModelConfig = field(default_factory=CpcModelConfig)
    data: SpeechDataConfig = field(default_factory=SpeechDataConfig)


def build(recipe: CpcRecipe, raw: dict[str, Any]) -> RecipeParts:
    """Encoder, CPC head, speaker windows and batch sampler of a CPC recipe."""
    data = recipe.data
    if not data.train:
        raise ValueError("data.train is not set (an audio folder or a table of audio paths)")
    encoder = build_audio_tower(recipe.model.audio)
    method = CPC(
        encoder,
        steps=recipe.model.steps,
        negatives=recipe.model.negatives,
        predictor=recipe.model.predictor,
        sampling=recipe.model.sampling,
        similarity=recipe.model.similarity,
        temperature=recipe.model.temperature,
        gather=recipe.model.gather,
    )
    clips, skipped = data.training_clips(encoder.sample_rate)
    waveforms = [load_audio(row["audio"], encoder.sample_rate)[0] for row in tqdm(clips, desc="decoding", leave=False)]
    speakers = [row.get("speaker") for row in clips] if data.speaker_column else None
    if speakers is not None and any(speaker is None for speaker in speakers):
        raise ValueError(
            f"data.speaker_column '{data.speaker_column}': some clips of '{data.train}' have no speaker; set "
            "data.pattern with a (?P<speaker>...) group, name the column, or set data.speaker_column=null"
        )
    windows = SpeakerWindows(waveforms, speakers, data.window, seed=recipe.train.seed)
    print(
        f"data.train: {len(clips)} clips of {len(windows.speaker_names)} speaker(s) -> {len(windows)} windows of "
        f"{data.window} samples ({data.window / encoder.sample_rate:.2f} s)"
    )
    sampler = (
        grouped_batch_sampler(recipe.train, windows.speakers)
        if data.batches == "speaker"
        else batch_sampler(recipe.train, len(windows))
    )
    return RecipeParts(
        method=method,
        dataset=windows,
        batch_sampler=sampler,
        evaluators={},
        export=lambda trained, result, output_dir, model_dir: export(
            trained, recipe, raw, result, output_dir, model_dir
        ),
        skipped_rows=skipped,
    )


def export(
    method: CPC, recipe: CpcRecipe, raw: dict[str, Any], result: TrainingResult, output_dir: Path, model_dir: Path
) -> Path:
    """Write the model folder: the audio encoder with its context network (safetensors + config), a card, the curve.
    The predictors are training-only and dropped, as CPC_audio's feature extraction does."""
    encoder = method.encoder
    encoder.save_pretrained(model_dir)
    write_model_card(
        model_dir,
        CardInfo(
            title=f"mmcontrast CPC audio encoder ({output_dir.name})",
            description=(
                f"An audio encoder (`{encoder.kind}`, {encoder.sample_rate} Hz, one frame per {encoder.hop} samples, "
                f"{encoder.embedding_dim}-dimensional context vectors) trained from scratch with contrastive "
                f"predictive coding ({recipe.model.steps} steps ahead, {recipe.model.negatives} negatives from the "
                f"same {recipe.model.sampling}) on `{recipe.data.train}`. Its frames are CPC's context vectors."
            ),
            library_name="mmcontrast",
            pipeline_tag="feature-extraction",
            usage=_USAGE.format(
                path=output_dir / "model", dim=encoder.embedding_dim, hop=encoder.hop, pooling=encoder.pooling
            ),
            recipe=yaml.safe_dump(raw, sort_keys=False),
            datasets=[recipe.data.train],
            tags=["cpc", "self-supervised", "audio", "feature-extraction"],
            results=[],
            image=training_curve(result.log_history, model_dir),
        ),
    )
    return model_dir
