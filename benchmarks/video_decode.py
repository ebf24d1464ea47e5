"""Sampled video decoding: ``mmcontrast.data.video.decode_clip`` against decoding every frame with plain PyAV.

Both methods deliver the same frames for the same times, on the camera clips in ``shared/data/video``:

* ``mmcontrast``: ``decode_clip(path, start, num_frames, fps)`` per clip, which seeks to the keyframe before
  ``start``, decodes from there, converts only the frames it returns to RGB and stops after the clip's last time;
* ``plain PyAV``: ``av.open``, ``container.decode(video=0)`` over the **whole** file once per video, every frame
  converted with ``frame.to_ndarray(format="rgb24")``, and the clips' frames picked in Python.

The baseline picks with ``decode_clip``'s rule: frame ``i`` of a clip starting at ``start`` is the last frame whose
time ``(frame.pts - stream.start_time) * time_base`` is ``<= start + i / fps`` (up to 1e-6 s of float slack), the
first frame when none is that early, the last frame repeated past the end; frames without a pts are dropped. Both
keep the file's frame size (``size=None``) and decode on one thread (``--threads`` gives both FFmpeg's threads).

Settings:

* ``sparse``: ``--clips`` clips per video (4) of ``--frames`` frames (8) at ``--fps`` (2), at random starts
  (seeded) in ``[0, duration - clip length)``: what a contrastive data loader asks for;
* ``dense``: the whole video at its native frame rate (``decode_clip(path, 0, grid_length, fps)``, what
  ``decode_video(path, info.fps)`` does).

Each (video, setting) is timed ``--repeats`` times per method, the methods alternating so that a load change on a
shared machine hits both alike (median reported); frames/s is the frames delivered divided by the median wall time.
Before timing, the frames of both methods are compared (every frame of every clip must be byte-identical) and the
script stops if they differ. Writes ``benchmarks/results/video_decode.json``, prints a markdown table, and exits 1 if
``mmcontrast`` is not faster than the baseline in the sparse setting.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/video_decode.py                # the published run
    python benchmarks/video_decode.py --repeats 1 --videos car-detection.mp4
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VIDEO_DIR = ROOT.parent / "shared" / "data" / "video"
VIDEOS = ("bottle-detection.mp4", "car-detection.mp4", "one-by-one-person-detection.mp4")
EPS = 1e-6  # the slack decode_clip allows when comparing a frame's time with a wanted time


def video_dir() -> Path:
    """The shared clips: next to the repository, else /work/shared/data/video."""
    return VIDEO_DIR if VIDEO_DIR.is_dir() else Path("/work/shared/data/video")


def clip_starts(duration: float, clips: int, frames: int, fps: float, seed: int) -> list[float]:
    """``clips`` random starts (seeded) such that the clip ends before ``duration``."""
    length = (frames - 1) / fps
    generator = random.Random(seed)
    return sorted(round(generator.uniform(0.0, max(0.0, duration - length - 0.1)), 3) for _ in range(clips))


def wanted_times(start: float, frames: int, fps: float) -> list[float]:
    """The same float times decode_clip computes."""
    return [start + i / fps for i in range(frames)]


def decode_adapter(path: Path, clips: list[tuple[float, int, float]], threads: bool) -> list[np.ndarray]:
    """Every clip ``(start, frames, fps)`` with ``decode_clip``: one ``[T, H, W, 3]`` array per clip."""
    from mmcontrast.data.video import decode_clip

    return [decode_clip(path, start, n, fps, threads=threads).numpy() for start, n, fps in clips]


def decode_plain(path: Path, clips: list[tuple[float, int, float]], threads: bool) -> list[np.ndarray]:
    """Every frame of the file decoded and converted with plain PyAV; the clips' frames picked in Python."""
    import av

    wanted = sorted(
        (time_, clip, slot)
        for clip, (start, n, fps) in enumerate(clips)
        for slot, time_ in enumerate(wanted_times(start, n, fps))
    )
    out: list[list[np.ndarray | None]] = [[None] * n for _, n, _ in clips]
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if threads:
            stream.thread_type = "AUTO"
        first = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        previous = None
        position = 0
        for frame in container.decode(video=0):
            if frame.pts is None:
                continue
            array = frame.to_ndarray(format="rgb24")  # every frame converted, as a plain loop does
            time_ = float(frame.pts * stream.time_base) - first
            while position < len(wanted) and time_ > wanted[position][0] + EPS:
                _, clip, slot = wanted[position]
                out[clip][slot] = previous if previous is not None else array
                position += 1
            previous = array
        for _, clip, slot in wanted[position:]:  # past the end: the last frame
            out[clip][slot] = previous
    return [np.stack(frames) for frames in out]


METHODS = {"mmcontrast": decode_adapter, "plain PyAV": decode_plain}


def settings_for(path: Path, args: argparse.Namespace) -> dict[str, list[tuple[float, int, float]]]:
    """The clips of each setting for one video."""
    from mmcontrast.data.video import grid_length, probe_video

    info = probe_video(path)
    starts = clip_starts(info.duration, args.clips, args.frames, args.fps, args.seed)
    return {
        "sparse": [(start, args.frames, args.fps) for start in starts],
        "dense": [(0.0, grid_length(info, info.fps), info.fps)],
    }


def check_same_frames(path: Path, clips: list[tuple[float, int, float]], threads: bool = False) -> int:
    """Decode ``clips`` both ways and assert byte-identical frames; returns the number of frames compared."""
    adapter, plain = decode_adapter(path, clips, threads), decode_plain(path, clips, threads)
    for index, (ours, theirs) in enumerate(zip(adapter, plain, strict=True)):
        assert ours.shape == theirs.shape, f"{path.name} clip {index}: shapes {ours.shape} vs {theirs.shape}"
        for slot, (x, y) in enumerate(zip(ours, theirs, strict=True)):
            assert np.array_equal(x, y), f"{path.name} clip {index} ({clips[index]}): frame {slot} differs"
    return sum(len(clip) for clip in adapter)


def time_methods(path: Path, clips: list[tuple[float, int, float]], repeats: int, threads: bool) -> dict:
    """Each method ``repeats`` times, alternating (mmcontrast, plain, mmcontrast, ...) so that a load change on a
    shared machine hits both alike; the median wall time and the frames delivered per second at that median."""
    times: dict[str, list[float]] = {name: [] for name in METHODS}
    frames = dict.fromkeys(METHODS, 0)
    for _ in range(repeats):
        for name, method in METHODS.items():
            start = time.perf_counter()
            result = method(path, clips, threads)
            times[name].append(time.perf_counter() - start)
            frames[name] = sum(len(clip) for clip in result)
            del result
    out = {}
    for name in METHODS:
        median = statistics.median(times[name])
        out[name] = {
            "times_s": times[name],
            "median_s": median,
            "frames": frames[name],
            "frames_per_s": frames[name] / median,
        }
    return out


def benchmark(args: argparse.Namespace, log=None) -> dict:
    log = log or (lambda *parts: print(*parts, flush=True))
    folder = video_dir()
    paths = [folder / name for name in args.videos]
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise SystemExit(f"video clips not found: {', '.join(missing)} (expected the shared data in {folder})")
    records = []
    load_before = os.getloadavg()
    for path in paths:
        for setting, clips in settings_for(path, args).items():
            if setting not in args.settings:
                continue
            compared = check_same_frames(path, clips, args.threads)
            log(f"{path.name} {setting}: {compared} frames identical in both methods")
            record = {"video": path.name, "setting": setting, "clips": clips, "frames_compared": compared}
            record.update(time_methods(path, clips, args.repeats, args.threads))
            for name in METHODS:
                log(f"  {name}: {record[name]['median_s']:.3f} s, {record[name]['frames_per_s']:.1f} frames/s")
            record["speedup"] = record["plain PyAV"]["median_s"] / record["mmcontrast"]["median_s"]
            records.append(record)
    totals = {}
    for setting in args.settings:
        rows = [r for r in records if r["setting"] == setting]
        if not rows:
            continue
        entry = {}
        for name in METHODS:
            seconds = sum(r[name]["median_s"] for r in rows)
            frames = sum(r[name]["frames"] for r in rows)
            entry[name] = {"median_s": seconds, "frames": frames, "frames_per_s": frames / seconds}
        entry["speedup"] = entry["plain PyAV"]["median_s"] / entry["mmcontrast"]["median_s"]
        totals[setting] = entry
    import av
    import torch

    return {
        "records": records,
        "totals": totals,
        "settings": {
            "sparse": {"clips_per_video": args.clips, "frames": args.frames, "fps": args.fps, "seed": args.seed},
            "dense": "every video whole at its native fps",
            "repeats": args.repeats,
            "ffmpeg_threads": args.threads,
            "size": None,
        },
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "pyav": av.__version__,
            "torch": torch.__version__,
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
    }


def table(result: dict) -> str:
    lines = [
        "| video | setting | frames | mmcontrast s | mmcontrast frames/s | plain PyAV s | plain PyAV frames/s "
        "| speedup |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def row(video: str, setting: str, entry: dict) -> str:
        ours, theirs = entry["mmcontrast"], entry["plain PyAV"]
        return (
            f"| {video} | {setting} | {ours['frames']} | {ours['median_s']:.3f} | {ours['frames_per_s']:.1f} | "
            f"{theirs['median_s']:.3f} | {theirs['frames_per_s']:.1f} | {entry['speedup']:.2f}x |"
        )

    lines += [row(r["video"], r["setting"], r) for r in result["records"]]
    lines += [row("**all videos**", setting, entry) for setting, entry in result["totals"].items()]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", nargs="+", default=list(VIDEOS), help="file names in shared/data/video")
    parser.add_argument("--settings", nargs="+", default=["sparse", "dense"], choices=["sparse", "dense"])
    parser.add_argument("--clips", type=int, default=4, help="sparse: clips per video")
    parser.add_argument("--frames", type=int, default=8, help="sparse: frames per clip")
    parser.add_argument("--fps", type=float, default=2.0, help="sparse: frames per second of a clip")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sparse clip starts")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case (the median is reported)")
    parser.add_argument("--threads", action="store_true", help="let FFmpeg decode with threads (both methods)")
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "video_decode.json"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = benchmark(args)
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps(result, indent=1) + "\n")
    print()
    print(table(result))
    print(f"\nresults in {args.results}")
    sparse = result["totals"].get("sparse")
    if sparse is not None and sparse["speedup"] <= 1.0:
        print(f"FAIL: mmcontrast is not faster than plain PyAV in the sparse setting ({sparse['speedup']:.2f}x)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
