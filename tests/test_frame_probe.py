"""Frame-level probes (`mmcontrast eval probe --frames LABELS.txt --audio-root FOLDER`): CPC_audio's phone-label
format, alignment of frames to labels, the split by utterance, the 10 ms frame-rate check, and a real run on
LibriSpeech utterances with the random-init and MFCC baselines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile
import torch
from conftest import SHARED_DATA

from mmcontrast.cli import main
from mmcontrast.evaluation.frame_probe import (
    FRAME_TOLERANCE,
    check_frame_rate,
    mfcc_frames,
    probe_frames,
    read_frame_labels,
    read_sequence_list,
    split_frames,
)
from mmcontrast.modalities.audio import AudioEncoder

LIBRISPEECH = SHARED_DATA / "librispeech-mini"


def _error_line(capsys) -> str:
    """The one line on standard error, besides progress bars."""
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "it/s]" not in line]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.fixture(scope="module")
def cpc_model(tmp_path_factory) -> Path:
    """A tiny random CPC export: conv encoder (32 wide) + GRU context network (32), 16 kHz, 10 ms frames."""
    torch.manual_seed(1)
    encoder = AudioEncoder("cpc", sample_rate=16000, context={"type": "gru", "dim": 32}, width=32)
    return encoder.save_pretrained(tmp_path_factory.mktemp("cpc") / "model")


def test_label_file_errors_name_the_file_and_line(tmp_path):
    path = tmp_path / "phones.txt"
    path.write_text("a 1 1 2\n\nb 3 4\n")
    labels = read_frame_labels(path)
    assert list(labels) == ["a", "b"] and labels["a"].tolist() == [1, 1, 2]
    cases = {
        "a 1 2\nb\n": ("line 2", "'b' has no labels"),
        "a 1 2\nb 3 x 4\n": ("line 2", "'x'"),
        "a 1 2.5\n": ("line 1", "'2.5'"),
        "a 1 -2\n": ("line 1", "negative"),
        "a 1 2\nb 1\na 3\n": ("line 3", "line 1"),
        "\n\n": ("no labelled sequence", "phones.txt"),
    }
    for text, expected in cases.items():
        path.write_text(text)
        with pytest.raises(ValueError) as error:
            read_frame_labels(path, option="--frames")
        message = str(error.value)
        assert "--frames" in message and str(path) in message, message
        assert all(part in message for part in expected), message
    with pytest.raises(FileNotFoundError, match=r"missing\.txt"):
        read_frame_labels(tmp_path / "missing.txt")


def test_sequence_lists_and_splits(tmp_path):
    listed = tmp_path / "test.txt"
    listed.write_text("a\n\nsome/dir/c.flac\n")
    assert read_sequence_list(listed, option="--test") == ["a", "c"]
    two = split_frames(["b", "a"])
    assert two.kind == "two-fold" and [(tr[0][0], te[0][0]) for tr, te in two.folds] == [("a", "b"), ("b", "a")]
    held = split_frames([f"u{i}" for i in range(10)], test_fraction=0.2, seed=3)
    ((train, test),) = held.folds
    assert held.kind == "held-out" and len(test) == 2 and len(train) == 8
    assert not {n for n, _, _ in train} & {n for n, _, _ in test}
    assert split_frames(["u"]).kind == "frames"
    lists = split_frames(["a", "b", "c"], test=["c"])
    assert lists.kind == "lists" and [n for n, _, _ in lists.folds[0][0]] == ["a", "b"]
    with pytest.raises(ValueError, match="share 1 sequence"):
        split_frames(["a", "b"], train=["a", "b"], test=["b"])
    with pytest.raises(ValueError, match="--test-fraction"):
        split_frames(["a", "b", "c"], test_fraction=1.0)


def test_frame_rate_must_be_10_ms():
    check_frame_rate(AudioEncoder("cpc", sample_rate=16000, width=8), "ok")
    check_frame_rate(AudioEncoder("mel", sample_rate=8000, hop_length=80, width=8, n_fft=200), "ok")
    with pytest.raises(ValueError, match=r"20 ms \(160 samples at 8000 Hz\).*10 ms"):
        check_frame_rate(AudioEncoder("cpc", sample_rate=8000, width=8), "slow-model")


def test_mfcc_frames_are_one_per_10_ms():
    for samples in (81520, 16000, 159, 30):
        frames = mfcc_frames(torch.randn(samples), 16000)
        assert frames.shape[1] == 13 and frames.shape[0] == max(1, samples // 160)


def test_alignment_truncates_and_reports_mismatches(tmp_path, cpc_model):
    """Frames and labels are cut to the shortest; a difference beyond FRAME_TOLERANCE is reported, not refused."""
    root = tmp_path / "audio" / "spk" / "ch"
    root.mkdir(parents=True)
    generator = torch.Generator().manual_seed(0)
    lengths = {"utt-a": 16000, "utt-b": 12000, "utt-c": 8000}  # 100, 75, 50 frames of 10 ms
    label_counts = {"utt-a": 100, "utt-b": 76, "utt-c": 50 + FRAME_TOLERANCE + 5}
    lines = []
    for name, samples in lengths.items():
        soundfile.write(root / f"{name}.flac", (0.1 * torch.randn(samples, generator=generator)).numpy(), 16000)
        count = label_counts[name]
        lines.append(f"{name} " + " ".join(str((i // 7) % 4) for i in range(count)))
    lines.append("utt-without-audio 1 2 3")
    (tmp_path / "labels.txt").write_text("\n".join(lines) + "\n")
    test_list = tmp_path / "test.txt"
    test_list.write_text("utt-b\n")
    report = probe_frames(
        cpc_model, tmp_path / "labels.txt", tmp_path / "audio", test=test_list, baselines=["mfcc"], k=5
    )
    assert report["utterances"] == {"labelled": 4, "with_audio": 3, "used": 3}
    assert report["missing_audio"] == ["utt-without-audio"]
    assert [item["sequence"] for item in report["mismatched"]] == ["utt-c"]
    assert report["mismatched"][0]["labels"] == 57 and report["mismatched"][0]["model"] == 50
    assert report["split"]["kind"] == "lists" and report["split"]["folds"][0]["test"] == ["utt-b"]
    assert report["test_frames"] == 75 and report["train_frames"] == 100 + 50
    assert report["classes"] == [0, 1, 2, 3]
    for scores in report["results"].values():
        assert 0.0 <= scores["linear_probe_top1"] <= 1.0 and 0.0 <= scores["knn_top1"] <= 1.0
    # one utterance: a contiguous frame split, said so
    (tmp_path / "one.txt").write_text(lines[0] + "\n")
    single = probe_frames(cpc_model, tmp_path / "one.txt", tmp_path / "audio", k=5)
    assert single["split"]["kind"] == "frames" and "flatters" in single["split"]["description"]
    assert single["split"]["folds"] == [{"train": ["utt-a[0:80]"], "test": ["utt-a[80:]"]}]
    assert (single["train_frames"], single["test_frames"]) == (80, 20)


def test_cli_errors_are_one_line(tmp_path, cpc_model, capsys):
    base = ["eval", "probe", "--model", str(cpc_model)]
    labels = tmp_path / "labels.txt"
    labels.write_text("x 1 2 3\n")
    assert main([*base, "--frames", str(labels)]) == 2
    assert "--audio-root" in _error_line(capsys)
    (tmp_path / "empty").mkdir()
    assert main([*base, "--frames", str(labels), "--audio-root", str(tmp_path / "empty")]) == 2
    line = _error_line(capsys)
    assert "--audio-root" in line and "x.flac" in line
    assert main([*base, "--frames", str(labels), "--audio-root", str(tmp_path), "--pooling", "last"]) == 2
    assert "--pooling" in _error_line(capsys)
    labels.write_text("x 1 2\ny 1 one\n")
    assert main([*base, "--frames", str(labels), "--audio-root", str(tmp_path)]) == 2
    line = _error_line(capsys)
    assert "labels.txt" in line and "line 2" in line and "'one'" in line
    slow = AudioEncoder("cpc", sample_rate=8000, width=8).save_pretrained(tmp_path / "slow")
    assert main(["eval", "probe", "--model", str(slow), "--frames", str(labels), "--audio-root", str(tmp_path)]) == 2
    assert "10 ms" in _error_line(capsys)


def test_phone_probe_on_librispeech(cpc_model, tmp_path, capsys):
    """The real check: 2 LibriSpeech utterances with CPC_audio phone labels (41 classes), two folds by utterance;
    MFCC frames must beat the majority class, and the card gets the model's entries."""
    labels = LIBRISPEECH / "phone_labels.txt"
    if not labels.is_file() or not (LIBRISPEECH / "test_db").is_dir():
        pytest.skip(f"shared LibriSpeech phone labels not found at {LIBRISPEECH}")
    output = tmp_path / "frames.json"
    argv = ["eval", "probe", "--model", str(cpc_model), "--frames", str(labels)]
    argv += ["--audio-root", str(LIBRISPEECH / "test_db"), "--baselines", "random-init", "mfcc"]
    assert main([*argv, "--output", str(output), "--update-card"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report == json.loads(output.read_text())
    assert report["level"] == "frame" and report["label"] == "phone"
    assert report["utterances"]["used"] == 2 and report["split"]["kind"] == "two-fold"
    assert report["mismatched"] == []  # 509 / 1121 CPC frames for 508 / 1119 labels
    assert report["train_frames"] == report["test_frames"] == 508 + 1119
    assert set(report["results"]) == {"model", "random-init", "mfcc"}
    for scores in report["results"].values():
        assert 0.0 <= scores["linear_probe_top1"] <= 1.0 and 0.0 <= scores["knn_top1"] <= 1.0
        assert len(scores["folds"]) == 2
    assert report["results"]["model"]["dim"] == 32 and report["results"]["mfcc"]["dim"] == 13
    mfcc = report["results"]["mfcc"]
    assert mfcc["linear_probe_top1"] > mfcc["majority_top1"] + 0.03, mfcc
    assert "two folds" in captured.err and "4 of 6 labelled utterances have no audio" in captured.err

    from huggingface_hub import ModelCard

    card = ModelCard.load(cpc_model / "README.md")
    names = {result.metric_name: result for result in card.data.eval_results}
    entry = names["linear probe accuracy (phone, frames)"]
    assert entry.task_type == "audio-classification" and entry.dataset_name == "librispeech-mini (phone_labels.txt)"
    assert entry.metric_value == pytest.approx(report["results"]["model"]["linear_probe_top1"])
