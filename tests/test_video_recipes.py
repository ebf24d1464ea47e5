"""The video recipes end to end at tiny scale: TCN (multi-view on generated moving digits, single-view on the shared
clips with broken files beside them), CVRL, video-text; their exports loaded back; `mmcontrast eval video`."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from test_video_vfr import write_vfr

from mmcontrast.cli import main
from mmcontrast.hub.mmcontrast_clip import load_mmcontrast_clip
from mmcontrast.hub.push import check_model_folder as check_push_folder
from mmcontrast.modalities.video import VideoEncoder, load_video_encoder
from mmcontrast.recipe import load_recipe
from mmcontrast.run_recipe import train_recipe

VIDEO_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "video"
TINY_TOWER = (
    "model.video.image.config={model_type: clip_vision_model, image_size: 32, patch_size: 8, hidden_size: 32, "
    "num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 64}"
)
TINY_RUN = ["train.epochs=1", "train.logging_steps=1", "train.save_steps=1000", "train.eval_steps=1000"]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run(recipe: str, output_dir: Path, *overrides: str) -> dict:
    config = load_recipe(recipe, [f"output_dir={output_dir}", TINY_TOWER, *TINY_RUN, *overrides])
    return train_recipe(config)


def test_multi_view_tcn_on_moving_digits_scores_model_random_init_and_pixels(tmp_path: Path) -> None:
    summary = run(
        "recipes/tcn_multiview_digits.yaml",
        tmp_path,
        "data.moving_digits.num_videos=16",
        "data.moving_digits.num_frames=6",
        "windows.num_frames=4",
        "eval.num_videos=4",
        "train.batch_size=4",
    )
    scores = json.loads((tmp_path / "video_eval.json").read_text())
    assert set(scores) == {"model", "random_init", "pixels"}
    assert set(scores["model"]) == {
        "alignment_error",
        "kendall_tau",
        "retrieval/recall@1",
        "retrieval/recall@5",
        "retrieval/mrr",
    }
    assert scores["model"] != scores["random_init"]  # the baseline is the untrained copy, not the trained encoder
    encoder = load_video_encoder(summary["model_dir"])
    assert isinstance(encoder, VideoEncoder) and not encoder.frames_see_position
    card = (Path(summary["model_dir"]) / "README.md").read_text()
    assert "pipeline_tag: feature-extraction" in card and "alignment error" in card
    assert (Path(summary["model_dir"]) / "alignment_matrix.png").is_file()
    assert (Path(summary["model_dir"]) / "trajectories.png").is_file()
    assert check_push_folder(summary["model_dir"]) == Path(summary["model_dir"])  # pushable as exported


def test_tcn_refuses_a_video_model_whose_frames_see_position(tmp_path: Path) -> None:
    videomae = (
        "model.video={kind: transformers, config: {model_type: videomae, image_size: 32, patch_size: 8, "
        "num_frames: 4, tubelet_size: 2, hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, "
        "intermediate_size: 64}}"
    )
    config = load_recipe("recipes/tcn_multiview_digits.yaml", [f"output_dir={tmp_path}", videomae])
    with pytest.raises(ValueError, match="counting frames"):
        train_recipe(config)


def broken_videos(folder: Path) -> list[str]:
    """Beside links to the real clips: a zero-byte file, a truncated mp4, an audio-only file, a text file (all
    unusable), and two usable odd ones: a variable-frame-rate file and a 0.5 s clip shorter than a window."""
    folder.mkdir()
    for clip in sorted(VIDEO_DIR.glob("*.mp4")):
        os.symlink(clip, folder / clip.name)
    write_vfr(folder / "vfr.mkv")
    write_vfr(folder / "short.mkv", times=[0.0, 0.2, 0.4])
    (folder / "empty.mp4").write_bytes(b"")
    data = (VIDEO_DIR / "car-detection.mp4").read_bytes()
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (folder / "notes.avi").write_text("not a video")
    import av
    import numpy as np

    with av.open(str(folder / "audio_only.mp4"), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return ["empty.mp4", "truncated.mp4", "notes.avi", "audio_only.mp4"]


def test_single_view_tcn_on_real_clips_skips_and_reports_broken_files(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    if not VIDEO_DIR.is_dir():
        pytest.skip(f"no shared clips at {VIDEO_DIR}")
    bad = broken_videos(tmp_path / "videos")
    with pytest.warns(UserWarning, match="skipped 4 unusable video"):
        summary = run(
            "recipes/tcn_videos.yaml",
            tmp_path / "run",
            f"data.train={tmp_path / 'videos'}",
            f"data.cache={tmp_path / 'cache'}",
            "windows.num_frames=4",
            "windows.items_per_video=2",
            "eval.max_frames=6",
            "train.batch_size=3",
        )
    assert summary["skipped_rows"] == 4
    out = capsys.readouterr().out
    for name in bad:
        assert name in out
    assert "1 video(s) shorter than 4 frames at 4 fps are padded by repeating their last frame: short.mkv" in out
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 5  # each usable video decoded once (VFR, short too)
    scores = json.loads((tmp_path / "run" / "video_eval.json").read_text())
    assert set(scores) == {"model", "random_init", "pixels"}


def test_cvrl_recipe_trains_and_exports_a_video_encoder(tmp_path: Path) -> None:
    summary = run(
        "recipes/cvrl_videos.yaml",
        tmp_path,
        "data.moving_digits.num_videos=12",
        "clips.num_frames=4",
        "eval.num_videos=4",
        "train.batch_size=4",
        "model.video.heads=2",
    )
    encoder = load_video_encoder(summary["model_dir"])
    assert encoder.pooling == "attention"
    assert "retrieval" in (Path(summary["model_dir"]) / "README.md").read_text()


@pytest.mark.parametrize("pooling", ["transformer", "mean"])
def test_video_text_recipe_exports_a_two_tower_folder_that_reloads_exactly(tmp_path: Path, pooling: str) -> None:
    summary = run(
        "recipes/video_text_digits.yaml",
        tmp_path,
        "data.moving_digits.num_videos=16",
        "data.moving_digits.num_frames=4",
        "num_frames=4",
        "eval.num_videos=8",
        "train.batch_size=8",
        f"model.video.pooling={pooling}",
        "model.video.heads=2",
    )
    metrics = json.loads((tmp_path / "zero_shot.json").read_text())
    assert {"direction_accuracy", "digit_accuracy", "video_to_text/recall@1", "text_to_video/recall@5"} <= set(metrics)
    model = load_mmcontrast_clip(summary["model_dir"])
    assert set(model.modalities) == {"video", "text"}
    video = load_video_encoder(Path(summary["model_dir"]) / "video_encoder")
    clip = torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(
            video(**video.preprocess([clip])), model.video_encoder.eval()(**video.preprocess([clip]))
        )
    card = (Path(summary["model_dir"]) / "README.md").read_text()
    assert "pipeline_tag: video-classification" in card
    assert main(["zero-shot", "--model", summary["model_dir"], "--images", "x.png"]) == 2
    assert main(["eval", "sts", "--model", summary["model_dir"], "--data", "x.csv"]) == 2


def test_eval_video_cli_reports_model_random_init_and_pixels(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    summary = run(
        "recipes/tcn_multiview_digits.yaml",
        tmp_path / "run",
        "data.moving_digits.num_videos=8",
        "data.moving_digits.num_frames=6",
        "windows.num_frames=4",
        "eval.num_videos=2",
        "train.batch_size=4",
    )
    capsys.readouterr()
    output = tmp_path / "eval.json"
    args = ["eval", "video", "--model", summary["model_dir"], "--data", "moving_digits", "--limit", "5"]
    assert main([*args, "--output", str(output), "--plots", str(tmp_path / "plots")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["videos"] == 5 and report["views"] == 2
    assert json.loads(output.read_text()) == report
    assert {"model", "random_init", "pixels"} <= set(report)
    assert (tmp_path / "plots" / "alignment_matrix.png").is_file()


def test_eval_video_cli_reads_a_table_of_synchronised_views(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from mmcontrast.data.moving_digits import moving_digits, write_moving_digits
    from mmcontrast.modalities.image import ImageEncoder

    table = write_moving_digits(tmp_path / "digits", moving_digits(3, num_frames=6, num_views=2, seed=5), fps=4)
    model = VideoEncoder(ImageEncoder.create("timm/test_vit", image_size=32), "mean").save_pretrained(tmp_path / "m")
    assert main(["eval", "video", "--model", str(model), "--data", str(table), "--size", "32", "--fps", "4"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["videos"] == 3  # grouped by the sync column: 6 files, 3 videos of 2 cameras
    shutil.rmtree(tmp_path / "m")
    assert main(["eval", "video", "--model", str(tmp_path / "m"), "--data", str(table)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_multi_view_tcn_trains_from_a_table_of_synchronised_files(tmp_path: Path, capsys: pytest.CaptureFixture):
    from mmcontrast.data.moving_digits import moving_digits, write_moving_digits

    table = write_moving_digits(tmp_path / "digits", moving_digits(6, num_frames=6, num_views=2, seed=3), fps=4)
    summary = run(
        "recipes/tcn_multiview_digits.yaml",
        tmp_path / "run",
        f"data.train={table}",
        "data.frame_size=32",
        "windows.num_frames=4",
        "eval.max_frames=6",
        "train.batch_size=3",
    )
    assert "12 files = 6 videos x 2 cameras" in capsys.readouterr().out
    assert summary["global_step"] == 2
    assert set(json.loads((tmp_path / "run" / "video_eval.json").read_text())) == {"model", "random_init", "pixels"}
