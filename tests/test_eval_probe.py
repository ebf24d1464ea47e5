"""`mmcontrast eval probe`: linear-probe and kNN accuracy of any encoder folder on labelled tables, with the
random-init and MFCC baselines, through the CLI; bad inputs are one stderr line and exit 2."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from conftest import SHARED_DATA

from mmcontrast.cli import main

FSDD = SHARED_DATA / "fsdd" / "recordings"
SPEAKERS = ("jackson", "theo")
TAKES = (0, 1, 2, 10, 11, 12, 13, 14)  # test = takes 0-2, train = takes 10-14


def _write_table(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def fsdd_tables(tmp_path_factory) -> tuple[Path, Path]:
    """train.csv / test.csv over 2 speakers x 10 digits x 8 takes of FSDD (test: takes 0-2), relative paths."""
    missing = [s for s in SPEAKERS if not (FSDD / f"0_{s}_0.wav").is_file()]
    if missing:
        pytest.skip(f"shared FSDD recordings not found at {FSDD}")
    folder = tmp_path_factory.mktemp("fsdd-tables")
    (folder / "recordings").symlink_to(FSDD)
    rows: dict[str, list[dict[str, str]]] = {"train": [], "test": []}
    for speaker in SPEAKERS:
        for digit in range(10):
            for take in TAKES:
                split = "test" if take < 5 else "train"
                name = f"recordings/{digit}_{speaker}_{take}.wav"
                rows[split].append({"file_name": name, "digit": str(digit), "speaker": speaker})
    return _write_table(folder / "train.csv", rows["train"]), _write_table(folder / "test.csv", rows["test"])


@pytest.fixture(scope="module")
def audio_model(tmp_path_factory) -> Path:
    from mmcontrast.modalities.audio import AudioEncoder

    torch.manual_seed(1)
    return AudioEncoder("cpc", sample_rate=8000, width=32).save_pretrained(tmp_path_factory.mktemp("cpc") / "model")


def _error_line(capsys) -> str:
    """The one line on standard error, besides progress bars (which a terminal clears)."""
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "it/s]" not in line]
    assert len(lines) == 1, lines
    return lines[0]


def test_audio_probe_with_baselines(fsdd_tables, audio_model, tmp_path, capsys):
    train, test = fsdd_tables
    output, matrix = tmp_path / "out" / "metrics.json", tmp_path / "cm.png"
    argv = ["eval", "probe", "--model", str(audio_model), "--train", str(train), "--test", str(test)]
    argv += ["--label", "digit", "--baselines", "random-init", "mfcc", "--output", str(output)]
    argv += ["--confusion-matrix", str(matrix), "--batch-size", "16"]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    report = json.loads(output.read_text())
    assert printed == report
    assert report["modality"] == "audio" and report["format"] == "mmcontrast-audio-encoder"
    assert report["classes"] == [str(d) for d in range(10)] and report["pooling"] == "mean"
    assert (report["train_rows"], report["test_rows"]) == (100, 60)
    assert report["skipped"] == {"train": [], "test": []}
    assert set(report["results"]) == {"model", "random-init", "mfcc"}
    for scores in report["results"].values():
        assert set(scores) == {"linear_probe_top1", "knn_top1", "knn_k", "dim"}
        assert 0.0 <= scores["linear_probe_top1"] <= 1.0 and 0.0 <= scores["knn_top1"] <= 1.0
    assert report["results"]["model"]["dim"] == 32 and report["results"]["mfcc"]["dim"] == 26
    assert report["results"]["mfcc"]["linear_probe_top1"] >= 0.6  # chance is 0.1
    assert matrix.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_audio_probe_last_frame_and_skipped_file(fsdd_tables, audio_model, tmp_path, capsys):
    """--pooling last (one frame; MFCC: the last frame); a bad wav in a table is skipped, named and counted."""
    train, test = fsdd_tables
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot audio at all")
    rows = list(csv.DictReader(test.open()))
    rows = [{**row, "file_name": str(test.parent / row["file_name"])} for row in rows]
    rows.append({"file_name": "broken.wav", "digit": "3", "speaker": "theo"})
    bad_test = _write_table(tmp_path / "test.csv", rows)
    argv = ["eval", "probe", "--model", str(audio_model), "--train", str(train), "--test", str(bad_test)]
    assert main([*argv, "--label", "speaker", "--pooling", "last", "--baselines", "mfcc"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["pooling"] == "last" and report["classes"] == sorted(SPEAKERS)
    assert report["results"]["mfcc"]["dim"] == 13
    assert report["test_rows"] == 60 and [Path(p).name for p, _ in report["skipped"]["test"]] == ["broken.wav"]
    assert "--test: skipped unreadable file" in captured.err and "broken.wav" in captured.err


def test_image_probe_on_digit_pngs(tmp_path, capsys):
    from PIL import Image
    from sklearn.datasets import load_digits

    from mmcontrast.modalities.image import ImageEncoder

    torch.manual_seed(0)
    model = ImageEncoder.create("timm/test_resnet", image_size=32).save_pretrained(tmp_path / "model")
    data = load_digits()
    tables = {}
    for split, indices in (("train", range(0, 200)), ("test", range(200, 260))):
        rows = []
        for i in indices:
            name = f"images/{i}.png"
            (tmp_path / "images").mkdir(exist_ok=True)
            Image.fromarray((data.images[i] * 255 / 16).astype("uint8")).save(tmp_path / name)
            rows.append({"file_name": name, "label": str(data.target[i])})
        tables[split] = _write_table(tmp_path / f"{split}.csv", rows)
    argv = ["eval", "probe", "--model", str(model), "--train", str(tables["train"]), "--test", str(tables["test"])]
    assert main([*argv, "--label", "label", "--baselines", "random-init", "--k", "5"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["modality"] == "image" and set(report["results"]) == {"model", "random-init"}
    assert report["results"]["model"]["knn_k"] == 5 and report["test_rows"] == 60
    assert report["results"]["model"]["linear_probe_top1"] > 0.3  # chance is 0.1


def test_bad_inputs_are_one_line_and_exit_2(fsdd_tables, audio_model, tmp_path, capsys):
    train, test = fsdd_tables
    base = ["eval", "probe", "--train", str(train), "--test", str(test), "--label", "digit"]
    # a folder of the wrong kind: a training checkpoint, and a folder that holds no model
    checkpoint = tmp_path / "checkpoint-00000010"
    checkpoint.mkdir()
    (checkpoint / "trainer_state.json").write_text("{}")
    assert main([*base, "--model", str(checkpoint)]) == 2
    assert "training checkpoint" in _error_line(capsys)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("x")
    assert main([*base, "--model", str(tmp_path / "notes")]) == 2
    assert "not a model folder" in _error_line(capsys)
    # a label column the table lacks
    argv = ["eval", "probe", "--model", str(audio_model), "--train", str(train), "--test", str(test)]
    assert main([*argv, "--label", "colour"]) == 2
    line = _error_line(capsys)
    assert "--train" in line and "colour" in line and "line 2" in line
    # an unreadable table, and a missing one
    (tmp_path / "bad.csv").write_bytes(b"\xff\xfe\x00garbage\x00")
    bad = ["eval", "probe", "--model", str(audio_model), "--train", str(tmp_path / "bad.csv"), "--test", str(test)]
    assert main([*bad, "--label", "digit"]) == 2
    assert "bad.csv" in _error_line(capsys)
    assert main([*argv[:-2], "--test", str(tmp_path / "missing.csv"), "--label", "digit"]) == 2
    assert "missing.csv" in _error_line(capsys)
    # a table whose every file is unreadable
    (tmp_path / "junk.wav").write_bytes(b"junk")
    junk = _write_table(tmp_path / "junk.csv", [{"file_name": "junk.wav", "digit": "1"}])
    assert main([*argv[:-2], "--test", str(junk), "--label", "digit"]) == 2
    assert "junk.csv" in _error_line(capsys)
    # mfcc is for audio encoders; probe options on another task
    text_like = tmp_path / "image-model"
    from mmcontrast.modalities.image import ImageEncoder

    ImageEncoder.create("timm/test_resnet", image_size=32).save_pretrained(text_like)
    assert main([*base, "--model", str(text_like), "--baselines", "mfcc"]) == 2
    assert "mfcc" in _error_line(capsys)
    assert main(["eval", "sts", "--model", str(audio_model), "--data", str(test), "--label", "digit"]) == 2
    assert "--label" in _error_line(capsys)


def test_context_encoder_last_pooling_uses_the_contexts(fsdd_tables, tmp_path, capsys):
    """An encoder with a context network (a CPC export): features are its contexts; random init rebuilds it too."""
    import inspect

    from mmcontrast.modalities.audio import AudioEncoder

    if "context" not in inspect.signature(AudioEncoder).parameters:
        pytest.skip("AudioEncoder has no context network option")
    torch.manual_seed(0)
    encoder = AudioEncoder("cpc", sample_rate=8000, width=16, context={"type": "gru", "dim": 12})
    model = encoder.save_pretrained(tmp_path / "model")
    train, test = fsdd_tables
    argv = ["eval", "probe", "--model", str(model), "--train", str(train), "--test", str(test), "--label", "speaker"]
    assert main([*argv, "--pooling", "last", "--baselines", "random-init"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["results"]["model"]["dim"] == 12 and report["results"]["random-init"]["dim"] == 12


def test_update_card_writes_model_index_entries_once(fsdd_tables, audio_model, tmp_path, capsys):
    """--update-card: the model's probe accuracies become model-index entries of the folder's card (parsed back by
    huggingface_hub); a re-run replaces them, another probe adds its own, and the rest of the card is kept."""
    import shutil

    from huggingface_hub import ModelCard

    from mmcontrast.hub.model_card import CardInfo, write_model_card

    model = Path(shutil.copytree(audio_model, tmp_path / "model"))
    write_model_card(
        model,
        CardInfo(
            title="a CPC encoder",
            description="Trained for a test.",
            library_name="mmcontrast",
            pipeline_tag="feature-extraction",
            usage="print('hello')",
            recipe="method: cpc\n",
            results=[("audio-classification", "fsdd", "zero-shot top1", 0.5)],
        ),
    )
    train, test = fsdd_tables
    argv = ["eval", "probe", "--model", str(model), "--train", str(train), "--test", str(test), "--update-card"]
    for _ in range(2):
        assert main([*argv, "--label", "digit", "--k", "5"]) == 0
        report = json.loads(capsys.readouterr().out)
    assert report["model_card"] == str(model / "README.md")
    card = ModelCard.load(model / "README.md")
    assert card.data.pipeline_tag == "feature-extraction" and card.data.model_name == "a CPC encoder"
    results = [(r.task_type, r.dataset_name, r.metric_name, r.metric_value) for r in card.data.eval_results]
    dataset = f"{test.parent.name} (train.csv / test.csv)"
    scores = report["results"]["model"]
    assert sorted(results) == sorted(
        [
            ("audio-classification", "fsdd", None, 0.5),
            ("audio-classification", dataset, "linear probe accuracy (digit, mean)", scores["linear_probe_top1"]),
            ("audio-classification", dataset, "5-NN accuracy (digit, mean)", scores["knn_top1"]),
        ]
    )
    assert all(r.metric_type == "accuracy" for r in card.data.eval_results if r.metric_name)
    text = (model / "README.md").read_text()
    assert text.count("## Probe results") == 1 and text.count("linear probe accuracy (digit, mean)") == 2
    assert "# a CPC encoder" in text and "print('hello')" in text and "method: cpc" in text
    assert text.index("## Probe results") < text.index("## Training")
    # another probe (label, dataset name) adds its entries next to the first ones
    assert main([*argv, "--label", "speaker", "--k", "5", "--dataset-name", "fsdd-speakers"]) == 0
    capsys.readouterr()
    card = ModelCard.load(model / "README.md")
    names = [(r.dataset_name, r.metric_name) for r in card.data.eval_results]
    assert len(names) == 5 and ("fsdd-speakers", "linear probe accuracy (speaker, mean)") in names
    assert (model / "README.md").read_text().count("| audio-classification |") == 5  # 1 recipe row + 4 probe rows


def test_update_card_creates_a_card_for_a_bare_folder(tmp_path):
    """A folder without README.md gets a minimal card with the modality's pipeline tag."""
    from huggingface_hub import ModelCard

    from mmcontrast.hub.model_card import update_card_results

    (tmp_path / "enc").mkdir()
    update_card_results(
        tmp_path / "enc", [("image-classification", "digits", "linear probe accuracy", 0.9)], modality="image"
    )
    card = ModelCard.load(tmp_path / "enc" / "README.md")
    assert card.data.pipeline_tag == "image-feature-extraction" and card.data.library_name == "mmcontrast"
    (entry,) = card.data.eval_results
    assert (entry.task_type, entry.dataset_name, entry.metric_value) == ("image-classification", "digits", 0.9)
    with pytest.raises(ValueError, match="not a local model folder"):
        update_card_results(tmp_path / "nope", [], modality="image")
