"""`mmcontrast eval probe` on video encoder folders: linear probe + kNN on clip embeddings of labelled video tables
(moving digits written as mp4), the random-init baseline, skipped broken files, and video folder kinds."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from mmcontrast.cli import main
from mmcontrast.data.moving_digits import moving_digits, write_moving_digits
from mmcontrast.hub.folders import ModelFolderError, check_model_folder, folder_kind

VIDEOMAE = {
    "model_type": "videomae",
    "image_size": 32,
    "patch_size": 8,
    "num_frames": 4,
    "tubelet_size": 2,
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}


@pytest.fixture(scope="module")
def video_model(tmp_path_factory) -> Path:
    from mmcontrast.modalities.image import ImageEncoder
    from mmcontrast.modalities.video import VideoEncoder

    torch.manual_seed(7)  # not the random-init baseline's seed (0): timm keeps PyTorch's default conv init
    encoder = VideoEncoder(ImageEncoder.create("timm/test_vit", image_size=32), "mean")
    return encoder.save_pretrained(tmp_path_factory.mktemp("video") / "model")


@pytest.fixture(scope="module")
def videomae_model(tmp_path_factory) -> Path:
    from mmcontrast.modalities.transformers_video import TransformersVideoEncoder

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("videomae") / "model"
    TransformersVideoEncoder.from_config(VIDEOMAE).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def video_tables(tmp_path_factory) -> tuple[Path, Path]:
    """train (16 videos + one zero-byte mp4) and test (8 videos) tables of moving digits, label column direction."""
    root = tmp_path_factory.mktemp("digits")
    train = write_moving_digits(root / "train", moving_digits(16, num_frames=6, size=32, seed=1), fps=4)
    test = write_moving_digits(root / "test", moving_digits(8, num_frames=6, size=32, seed=2), fps=4)
    with train.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    (train.parent / "broken.mp4").write_bytes(b"")
    rows.append({**rows[0], "file_name": "broken.mp4"})
    with train.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return train, test


def _directions(table: Path) -> list[str]:
    with table.open(newline="") as handle:
        return [row["direction"] for row in csv.DictReader(handle)]


def test_video_probe_with_random_init(video_model, video_tables, tmp_path, capsys):
    train, test = video_tables
    directions = _directions(train)[:-1]  # the broken row is left out
    assert set(_directions(test)) <= set(directions)
    output = tmp_path / "out" / "probe.json"
    argv = ["eval", "probe", "--model", str(video_model), "--train", str(train), "--test", str(test)]
    argv += ["--label", "direction", "--baselines", "random-init", "--output", str(output), "--k", "3"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    report = json.loads(output.read_text())
    assert json.loads(captured.out) == report
    assert report["modality"] == "video" and report["format"] == "mmcontrast-video-encoder"
    assert report["label"] == "direction" and report["classes"] == sorted(set(directions))
    assert (report["train_rows"], report["test_rows"]) == (16, 8)
    assert report["skipped"]["test"] == []
    [(path, reason)] = report["skipped"]["train"]
    assert Path(path).name == "broken.mp4" and reason
    assert "broken.mp4" in captured.err
    assert set(report["results"]) == {"model", "random-init"}
    for scores in report["results"].values():
        assert set(scores) == {"linear_probe_top1", "knn_top1", "knn_k", "dim"}
        assert 0.0 <= scores["linear_probe_top1"] <= 1.0 and 0.0 <= scores["knn_top1"] <= 1.0
        assert scores["knn_k"] == 3 and scores["dim"] == report["results"]["model"]["dim"]


def test_video_random_init_redraws_every_weight(video_model):
    from mmcontrast.evaluation.features import encoder_features, load_encoder

    trained = load_encoder(video_model)
    fresh = load_encoder(video_model, random_init=True, seed=0)
    assert fresh.modality == "video" and type(fresh.model) is type(trained.model)
    trained_weights, fresh_weights = trained.model.state_dict(), fresh.model.state_dict()
    assert trained_weights.keys() == fresh_weights.keys()
    for name, value in trained_weights.items():
        if value.is_floating_point() and value.unique().numel() > 1:  # not a constant init (norm weights: ones)
            assert not torch.equal(value, fresh_weights[name]), name
    again = load_encoder(video_model, random_init=True, seed=0).model.state_dict()
    assert all(torch.equal(value, again[name]) for name, value in fresh_weights.items())
    clips = [torch.randint(0, 256, (n, 40, 48, 3), dtype=torch.uint8) for n in (3, 5, 2)]
    feats = encoder_features(trained, clips, batch_size=2)
    assert feats.dtype == torch.float32 and feats.shape == (3, trained.model.embedding_dim)
    with torch.no_grad():
        alone = trained.model(**trained.model.preprocess(clips[1:2]))
    torch.testing.assert_close(feats[1:2], alone, atol=1e-5, rtol=1e-5)


def test_video_probe_errors(video_model, video_tables, capsys):
    train, test = video_tables
    base = ["eval", "probe", "--model", str(video_model), "--train", str(train), "--test", str(test)]
    assert main([*base, "--label", "direction", "--baselines", "mfcc"]) == 2
    err = capsys.readouterr().err
    assert "mfcc" in err and "audio" in err
    assert main(["eval", "sts", "--model", str(video_model), "--data", str(test)]) == 2
    assert "video encoder" in capsys.readouterr().err


def test_video_folder_kinds(video_model, videomae_model, tmp_path):
    found = folder_kind(video_model)
    assert (found.kind, found.format) == ("video", "mmcontrast-video-encoder")
    found = folder_kind(videomae_model)
    assert (found.kind, found.format) == ("video", "transformers videomae")
    assert (videomae_model / "mmcontrast_video.json").is_file()
    # a plain transformers folder (no mmcontrast_video.json) is a video encoder too
    (videomae_model / "mmcontrast_video.json").rename(tmp_path / "wrapper.json")
    try:
        assert folder_kind(videomae_model).kind == "video"
    finally:
        (tmp_path / "wrapper.json").rename(videomae_model / "mmcontrast_video.json")
    for folder in (video_model, videomae_model):
        check_model_folder(folder, ("audio", "image", "text", "video"))
        with pytest.raises(ModelFolderError, match="is a video encoder folder"):
            check_model_folder(folder, "text")
        with pytest.raises(ModelFolderError, match="video model folder"):
            check_model_folder(folder, ("audio", "image"))


def test_videomae_probe(videomae_model, video_tables, capsys):
    train, test = video_tables
    argv = ["eval", "probe", "--model", str(videomae_model), "--train", str(train), "--test", str(test)]
    assert main([*argv, "--label", "direction", "--baselines", "random-init", "--k", "3", "--batch-size", "4"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["modality"] == "video" and report["format"] == "transformers videomae"
    assert set(report["results"]) == {"model", "random-init"} and report["results"]["model"]["dim"] == 32
