"""Frame-level probes: phone (or any) labels per 10 ms frame, read off an audio encoder's frozen frames.

The protocol of CPC's phone linear separability (van den Oord et al. 2018; facebookresearch/CPC_audio
``cpc/eval/linear_separability.py``): every frame of the encoder (for a CPC export, the context vector ``c_t``) is
one example, labelled by the aligned phone; a logistic regression (:func:`~mmcontrast.evaluation.probe.
linear_probe_predict`) and a cosine kNN are fit on the frames of the training utterances and scored on the frames of
held-out utterances.

Inputs:

- a *frame-label file* in CPC_audio's format: one utterance a line, ``SEQ_NAME label label ...``, one integer
  label per 10 ms frame (LibriSpeech's ``converted_aligned_phones.txt``: 41 phone classes);
- an *audio root*: a folder searched recursively for ``SEQ_NAME.flac`` (or any audio suffix), e.g. LibriSpeech's
  ``SPEAKER/CHAPTER/SEQ_NAME.flac``. Labelled utterances without audio are counted and left out.

Frames and labels are aligned from the start and truncated to the shorter (and, so that every feature set scores the
same frames, to the shortest of the encoder, the baselines and the labels); an utterance whose counts differ by more
than :data:`FRAME_TOLERANCE` frames is reported. The encoder must give one frame per 10 ms at its sample rate: any
other hop is refused, since its frames would not line up with the labels.

Splits, always by utterance when there are at least two (frames of one utterance are strongly correlated):

- ``train`` / ``test`` sequence lists (CPC_audio's ``--pathTrain`` / ``--pathVal`` files: one name a line);
- otherwise, three or more utterances: a seeded ``test_fraction`` of them held out;
- exactly two: two folds, each utterance fit on the other and scored, accuracy over the frames of both;
- one: a contiguous frame split (the first ``1 - test_fraction`` of the frames fit, the rest scored), which
  flatters every feature set (same speaker, same recording) and is reported as such.

Baselines on the same frames: ``random-init`` (the same architecture, untrained) and ``mfcc`` (13 MFCCs of a 25 ms
window centred on each 10 ms label frame: the waveform is padded with 7.5 ms of zeros at each end, so MFCC frame
``t`` covers samples ``[160 t - 120, 160 t + 280)`` at 16 kHz, centred on label frame ``t``).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

FRAME_SECONDS = 0.010
"""The label frame of CPC_audio's phone alignments: 10 ms (160 samples at 16 kHz)."""
FRAME_TOLERANCE = 2
"""Frames by which an encoder and the labels may differ before the utterance is reported."""


@dataclass
class FrameSplit:
    """Which frames fit the probe and which score it, per fold.

    Attributes:
        kind: ``lists``, ``held-out``, ``two-fold`` or ``frames`` (see the module docstring).
        description: one sentence saying what was done.
        folds: ``(train, test)`` per fold, each a list of ``(sequence, start, stop)`` frame ranges
            (``stop`` None: to the end).
    """

    kind: str
    description: str
    folds: list[tuple[list[tuple[str, int, int | None]], list[tuple[str, int, int | None]]]]


def read_frame_labels(path: str | Path, *, option: str = "--frames") -> dict[str, torch.Tensor]:
    """The labels of a CPC_audio frame-label file: ``{sequence: int64 tensor [frames]}``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a line without labels, a label that is not a non-negative integer, a sequence named twice,
            or an empty file; each naming ``option``, the file and the line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{option}: frame-label file '{path}' does not exist")
    labels: dict[str, torch.Tensor] = {}
    first_line: dict[str, int] = {}
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields:
                continue
            where = f"{option}: '{path}', line {number}"
            name, values = fields[0], fields[1:]
            if not values:
                raise ValueError(f"{where}: '{name}' has no labels; each line is 'SEQ_NAME label label ...'")
            try:
                parsed = [int(value) for value in values]
            except ValueError:
                bad = next(value for value in values if not value.lstrip("-").isdigit())
                raise ValueError(
                    f"{where}: label '{bad}' of '{name}' is not an integer; labels are class indices, one per frame"
                ) from None
            if min(parsed) < 0:
                raise ValueError(f"{where}: label {min(parsed)} of '{name}' is negative; labels are class indices")
            if name in labels:
                raise ValueError(f"{where}: '{name}' is already labelled on line {first_line[name]}; keep one line")
            labels[name], first_line[name] = torch.tensor(parsed, dtype=torch.long), number
    if not labels:
        raise ValueError(f"{option}: frame-label file '{path}' holds no labelled sequence")
    return labels


def read_sequence_list(path: str | Path, *, option: str) -> list[str]:
    """Sequence names of a CPC_audio sequence list: one a line (a name, or a path whose file stem is the name)."""
    from mmcontrast.data.audio import AUDIO_SUFFIXES

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{option}: sequence list '{path}' does not exist")
    names = []
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = Path(line.strip())
        if line.strip():
            names.append(entry.stem if entry.suffix.lower() in AUDIO_SUFFIXES else entry.name)
    if not names:
        raise ValueError(f"{option}: sequence list '{path}' is empty; give one sequence name a line")
    return names


def find_audio(root: str | Path, names: Sequence[str], *, option: str = "--audio-root") -> dict[str, Path]:
    """``{sequence: file}`` for the ``names`` that have an audio file ``NAME.<audio suffix>`` under ``root``
    (searched recursively); two files of one name are an error that names both."""
    from mmcontrast.data.audio import AUDIO_SUFFIXES

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{option}: '{root}' is not a folder; give the folder that holds the audio files")
    wanted, found = set(names), {}
    for file in sorted(root.rglob("*")):
        if file.stem in wanted and file.suffix.lower() in AUDIO_SUFFIXES and file.is_file():
            if file.stem in found:
                raise ValueError(f"{option}: two audio files for '{file.stem}': '{found[file.stem]}' and '{file}'")
            found[file.stem] = file
    return found


def check_frame_rate(encoder: Any, model: str | Path) -> None:
    """Refuse an encoder whose frames are not 10 ms apart at its sample rate (they would not match the labels)."""
    hop, rate = int(getattr(encoder, "hop", 0) or 0), int(encoder.sample_rate)
    if not hop or hop * round(1 / FRAME_SECONDS) != rate:
        step = f"{1000 * hop / rate:g} ms ({hop} samples at {rate} Hz)" if hop else "unknown"
        raise ValueError(
            f"--frames: the labels are one per 10 ms, but the frames of '{model}' are {step} apart; a frame-level "
            f"probe needs an encoder with one frame per 10 ms (a CPC or mel encoder with a hop of "
            f"{rate // 100} samples at {rate} Hz)"
        )


@torch.no_grad()
def encoder_frames(encoder: Any, waveform: torch.Tensor) -> torch.Tensor:
    """The frames ``[F, d]`` (fp32, CPU) of one utterance: an audio encoder's output (contexts, for a CPC export)."""
    parameter = next(encoder.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    batch = encoder.preprocess([waveform])
    frames = encoder(batch["input_values"].to(device), batch["attention_mask"].to(device))
    return frames[0].float().cpu()


def mfcc_frames(waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """13 MFCCs per 10 ms frame ``[F, 13]``, each window centred on its label frame (see the module docstring)."""
    from mmcontrast.evaluation.features import mfcc_transform

    transform = mfcc_transform(sample_rate)
    window = transform.MelSpectrogram.spectrogram.n_fft
    hop = transform.MelSpectrogram.spectrogram.hop_length
    side = (window - hop) // 2
    padded = torch.nn.functional.pad(waveform.float().reshape(1, -1), (side, side))
    if padded.shape[-1] < window:
        padded = torch.nn.functional.pad(padded, (0, window - padded.shape[-1]))
    return transform(padded)[0].T.contiguous()


def split_frames(
    names: Sequence[str],
    *,
    train: Sequence[str] | None = None,
    test: Sequence[str] | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> FrameSplit:
    """The train / test split of the utterances ``names`` (see the module docstring)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"--test-fraction must be in (0, 1), got {test_fraction}")
    everything = list(names)
    if train is not None or test is not None:
        test_names = list(test) if test is not None else [name for name in everything if name not in set(train or ())]
        train_names = list(train) if train is not None else [name for name in everything if name not in set(test_names)]
        overlap = sorted(set(train_names) & set(test_names))
        if overlap:
            raise ValueError(
                f"--train and --test share {len(overlap)} sequence(s), e.g. '{overlap[0]}'; keep them apart"
            )
        for option, chosen in (("--train", train_names), ("--test", test_names)):
            if not chosen:
                raise ValueError(f"{option}: no sequence left to {'fit' if option == '--train' else 'score'} on")
        full = lambda chosen: [(name, 0, None) for name in chosen]  # noqa: E731
        return FrameSplit(
            "lists",
            f"by utterance, from the sequence lists: fit on {len(train_names)}, scored on {len(test_names)}",
            [(full(train_names), full(test_names))],
        )
    if len(everything) >= 3:
        shuffled = sorted(everything)
        random.Random(seed).shuffle(shuffled)
        count = min(len(shuffled) - 1, max(1, round(test_fraction * len(shuffled))))
        held = sorted(shuffled[:count])
        kept = sorted(shuffled[count:])
        return FrameSplit(
            "held-out",
            f"by utterance: {count} of {len(everything)} utterances held out (seed {seed}, --test-fraction "
            f"{test_fraction:g}), the probe fit on the other {len(kept)}",
            [([(n, 0, None) for n in kept], [(n, 0, None) for n in held])],
        )
    if len(everything) == 2:
        first, second = sorted(everything)
        return FrameSplit(
            "two-fold",
            f"by utterance, two folds: fit on '{first}' and scored on '{second}', then the reverse; accuracy over "
            "the frames of both",
            [([(first, 0, None)], [(second, 0, None)]), ([(second, 0, None)], [(first, 0, None)])],
        )
    return FrameSplit(
        "frames",
        f"one utterance only: a contiguous frame split (first {1 - test_fraction:.0%} of its frames fit, the rest "
        "scored); same speaker and recording on both sides, so this flatters every feature set",
        [],  # filled in by the caller, which knows the frame count
    )


def probe_frames(
    model: str | Path,
    frames: str | Path,
    audio_root: str | Path,
    *,
    train: str | Path | None = None,
    test: str | Path | None = None,
    test_fraction: float = 0.2,
    baselines: Sequence[str] = (),
    label: str = "phone",
    k: int = 20,
    seed: int = 0,
    confusion_matrix: str | Path | None = None,
) -> dict[str, Any]:
    """Frame-level linear-probe and kNN accuracy of an audio encoder folder (see the module docstring).

    Args:
        model: an audio encoder folder (one frame per 10 ms).
        frames: the frame-label file (``SEQ_NAME label ...``).
        audio_root: the folder searched for ``SEQ_NAME.<audio suffix>``.
        train, test: optional sequence lists (one name a line); without them the split is automatic.
        test_fraction: the utterances (or, with one utterance, the frames) held out by the automatic split.
        baselines: ``random-init`` and / or ``mfcc``, on the same frames.
        label: what the labels are (``phone``), for the report and the model card.
        k: neighbours of the kNN probe.
        seed: of the held-out split and of the random-init baseline.
        confusion_matrix: a PNG path for the model's linear-probe confusion matrix (over all test frames).

    Returns:
        A JSON-ready report: ``model``, ``modality`` (``audio``), ``format``, ``level`` (``frame``), ``label``,
        ``frames`` (the label file), ``audio_root``, ``utterances`` (labelled / with audio / used), ``missing_audio``
        (up to 10 labelled sequences without audio), ``skipped`` (undecodable files), ``mismatched`` (utterances
        whose frame counts differ by more than :data:`FRAME_TOLERANCE`), ``split`` (kind, description, folds),
        ``classes``, ``train_frames``, ``test_frames`` and ``results`` (``{"model" | baseline: {"linear_probe_top1",
        "knn_top1", "knn_k", "majority_top1", "dim", "folds": [...]}}``, accuracies over all test frames).
    """
    from mmcontrast.data.audio import load_audio
    from mmcontrast.evaluation.features import load_encoder
    from mmcontrast.evaluation.probe import BASELINES, probe_scores

    unknown = [name for name in baselines if name not in BASELINES]
    if unknown:
        raise ValueError(f"--baselines: unknown baseline {unknown[0]!r}; choose from {', '.join(BASELINES)}")
    loaded = load_encoder(model)
    if loaded.modality != "audio":
        raise ValueError(f"--frames: frame-level probes are for audio encoders; '{model}' is a {loaded.modality} model")
    encoder = loaded.model
    check_frame_rate(encoder, model)
    labels = read_frame_labels(frames)
    lists = {
        option: read_sequence_list(path, option=option) if path is not None else None
        for option, path in (("--train", train), ("--test", test))
    }
    files = find_audio(audio_root, list(labels))
    for option, names in lists.items():
        absent = [name for name in names or () if name not in files]
        if absent:
            raise ValueError(
                f"{option}: {len(absent)} listed sequence(s) have no labels in --frames or no audio under "
                f"--audio-root, e.g. '{absent[0]}'; list only labelled sequences with audio"
            )
    if not files:
        raise ValueError(
            f"--audio-root: no audio file under '{audio_root}' is named after any of the {len(labels)} sequences of "
            f"--frames '{frames}' (looked for e.g. '{next(iter(labels))}.flac'); point --audio-root at their folder"
        )
    waveforms, skipped = {}, []
    rate = int(encoder.sample_rate)
    for name, file in tqdm(sorted(files.items()), desc="decoding --audio-root", leave=False):
        try:
            waveforms[name] = load_audio(file, rate)[0]
        except Exception as error:  # undecodable files are skipped and reported, never a crash
            skipped.append([str(file), f"{type(error).__name__}: {error}"])
    if not waveforms:
        raise ValueError(f"--audio-root: none of the {len(files)} audio file(s) under '{audio_root}' could be decoded")
    names = sorted(waveforms)
    split = split_frames(names, train=lists["--train"], test=lists["--test"], test_fraction=test_fraction, seed=seed)
    feature_sets: dict[str, dict[str, torch.Tensor]] = {}
    for run in ("model", *baselines):
        if run == "mfcc":
            feature_sets[run] = {n: mfcc_frames(waveforms[n], rate) for n in tqdm(names, desc="mfcc", leave=False)}
            continue
        net = encoder if run == "model" else load_encoder(model, random_init=True, seed=seed).model
        feature_sets[run] = {n: encoder_frames(net, waveforms[n]) for n in tqdm(names, desc=run, leave=False)}
    aligned_labels, mismatched = {}, []
    for name in names:
        counts = {run: int(feats[name].shape[0]) for run, feats in feature_sets.items()}
        length = min(len(labels[name]), *counts.values())
        if max(abs(count - len(labels[name])) for count in counts.values()) > FRAME_TOLERANCE:
            mismatched.append({"sequence": name, "labels": len(labels[name]), **counts})
        aligned_labels[name] = labels[name][:length]
        for feats in feature_sets.values():
            feats[name] = feats[name][:length]
    if split.kind == "frames":
        (name,) = names
        cut = max(1, min(len(aligned_labels[name]) - 1, round((1 - test_fraction) * len(aligned_labels[name]))))
        split.folds = [([(name, 0, cut)], [(name, cut, None)])]

    def gather(items: list[tuple[str, int, int | None]], source: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([source[name][start:stop] for name, start, stop in items])

    used = sorted({name for fold in split.folds for side in fold for name, _, _ in side})
    all_test = torch.cat([gather(test_items, aligned_labels) for _, test_items in split.folds])
    all_train = torch.cat([gather(train_items, aligned_labels) for train_items, _ in split.folds])
    classes = sorted({int(value) for value in torch.cat([all_train, all_test]).tolist()})
    report: dict[str, Any] = {
        "model": str(model),
        "modality": "audio",
        "format": loaded.format,
        "level": "frame",
        "label": label,
        "frames": str(frames),
        "audio_root": str(audio_root),
        "utterances": {"labelled": len(labels), "with_audio": len(files), "used": len(used)},
        "missing_audio": sorted(set(labels) - set(files))[:10],
        "skipped": skipped,
        "mismatched": mismatched,
        "split": {
            "kind": split.kind,
            "description": split.description,
            "folds": [
                {"train": [_range(item) for item in tr], "test": [_range(item) for item in te]}
                for tr, te in split.folds
            ],
        },
        "classes": classes,
        "train_frames": int(all_train.numel()),
        "test_frames": int(all_test.numel()),
        "results": {},
    }
    for run, feats in feature_sets.items():
        folds, correct, knn_correct, majority_correct, predictions = [], 0.0, 0.0, 0.0, []
        for train_items, test_items in split.folds:
            train_y, test_y = gather(train_items, aligned_labels), gather(test_items, aligned_labels)
            if train_y.unique().numel() < 2:
                raise ValueError(
                    f"--frames: the training frames of fold {len(folds) + 1} hold one class only "
                    f"({int(train_y[0])}); a probe needs at least two: use more or longer utterances"
                )
            scores, predicted = probe_scores(gather(train_items, feats), train_y, gather(test_items, feats), test_y, k)
            majority = Counter(train_y.tolist()).most_common(1)[0][0]
            scores["majority_top1"] = float((test_y == majority).double().mean())
            scores["test_frames"] = int(test_y.numel())
            folds.append(scores)
            correct += scores["linear_probe_top1"] * test_y.numel()
            knn_correct += scores["knn_top1"] * test_y.numel()
            majority_correct += scores["majority_top1"] * test_y.numel()
            predictions.append(predicted)
        total = all_test.numel()
        report["results"][run] = {
            "linear_probe_top1": correct / total,
            "knn_top1": knn_correct / total,
            "knn_k": min(folds[i]["knn_k"] for i in range(len(folds))),
            "majority_top1": majority_correct / total,
            "dim": folds[0]["dim"],
            "folds": folds,
        }
        if run == "model" and confusion_matrix:
            from mmcontrast.evaluation.plots import plot_confusion_matrix

            index = {value: i for i, value in enumerate(classes)}
            plot_confusion_matrix(
                [index[int(v)] for v in all_test.tolist()],
                [index.get(int(v), 0) for v in torch.cat(predictions).tolist()],
                [str(value) for value in classes],
                confusion_matrix,
                title=f"frame-level linear probe: {label}",
            )
            report["confusion_matrix"] = str(confusion_matrix)
    return report


def _range(item: tuple[str, int, int | None]) -> str:
    """``name`` for a whole utterance, ``name[start:stop]`` for a frame range."""
    name, start, stop = item
    if start == 0 and stop is None:
        return name
    return f"{name}[{start}:{'' if stop is None else stop}]"
