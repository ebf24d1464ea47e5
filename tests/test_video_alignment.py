"""mmcontrast.evaluation.video_alignment (TCN alignment error, TCC Kendall's tau, clip retrieval, pixel features):
hand-computed examples, brute-force loops on random inputs and errors naming the input; the video plots; and the
frame-equality check of benchmarks/video_decode.py on one real clip (skipped without the shared data)."""

from __future__ import annotations

import importlib
import itertools
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mmcontrast.evaluation import (
    alignment_error,
    clip_retrieval,
    kendall_tau,
    pairwise_alignment,
    pixel_features,
    video_alignment_report,
)
from mmcontrast.evaluation.video_alignment import nearest_neighbours

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"


def one_hot(indices: list[int], size: int) -> torch.Tensor:
    return torch.eye(size)[indices]


# ---- hand-computed examples ----


def test_identity_alignment_is_perfect():
    a = torch.randn(10, 8, generator=torch.Generator().manual_seed(0))
    for metric in ("cosine", "euclidean"):
        assert alignment_error(a, a, metric=metric) == 0.0
        assert kendall_tau(a, a, metric=metric) == pytest.approx(1.0)


def test_reversed_view():
    a = one_hot([0, 1, 2, 3], 4)
    b = a.flip(0)  # nn = [3, 2, 1, 0]
    assert kendall_tau(a, b) == pytest.approx(-1.0)
    assert alignment_error(a, b) == pytest.approx((3 + 1 + 1 + 3) / 4 / 4)


def test_known_permutation():
    a = one_hot([0, 1, 2, 3], 4)
    b = one_hot([1, 0, 2, 3], 4)  # frame 0 of a is frame 1 of b and back: nn = [1, 0, 2, 3]
    assert nearest_neighbours(a, b).tolist() == [1, 0, 2, 3]
    assert alignment_error(a, b) == pytest.approx((1 + 1 + 0 + 0) / 4 / 4)  # |t - nn| / T averaged: 0.125
    assert kendall_tau(a, b) == pytest.approx((5 - 1) / 6)  # 5 concordant pairs, 1 discordant


def test_unequal_lengths_use_relative_positions():
    a = one_hot([0, 1], 2)
    b = one_hot([0, 0, 1, 1], 2)  # ties go to the earliest frame: nn = [0, 2]
    assert nearest_neighbours(a, b).tolist() == [0, 2]
    assert alignment_error(a, b) == 0.0  # 0/2 vs 0/4, 1/2 vs 2/4
    assert alignment_error(b, a) == pytest.approx((0 + 1 / 4 + 0 + 1 / 4) / 4)  # t / 4 vs nn / 2, nn = [0, 0, 1, 1]


def test_degenerate_tau_is_zero_not_nan():
    a = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
    assert kendall_tau(a, a[:1]) == 0.0  # every frame has the same neighbour
    assert kendall_tau(a[:1], a) == 0.0  # a single frame
    assert alignment_error(a[:1], a[:1]) == 0.0


def test_cosine_and_euclidean_neighbours_differ():
    a = torch.tensor([[1.0, 0.0]])
    b = torch.tensor([[2.0, 0.0], [1.0, 0.1]])
    assert nearest_neighbours(a, b, metric="cosine").tolist() == [0]  # same direction
    assert nearest_neighbours(a, b, metric="euclidean").tolist() == [1]  # closer point


def test_numpy_inputs_match_torch():
    a = np.random.default_rng(0).normal(size=(6, 4))
    b = np.random.default_rng(1).normal(size=(5, 4))
    assert alignment_error(a, b) == alignment_error(torch.from_numpy(a), torch.from_numpy(b))
    assert kendall_tau(a, b) == kendall_tau(torch.from_numpy(a), torch.from_numpy(b))


# ---- brute force on random inputs ----


def brute_nn(a: np.ndarray, b: np.ndarray, metric: str) -> list[int]:
    out = []
    for x in a:
        best, best_score = 0, -math.inf
        for j, y in enumerate(b):
            if metric == "cosine":
                score = float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))
            else:
                score = -float(np.sqrt(((x - y) ** 2).sum()))
            if score > best_score + 1e-12:
                best, best_score = j, score
        out.append(best)
    return out


def brute_tau_b(y: list[int]) -> float:
    """Kendall's tau-b of (0, 1, ..., n-1) against y, by counting pairs."""
    concordant = discordant = ties_y = 0
    for i, j in itertools.combinations(range(len(y)), 2):
        if y[i] == y[j]:
            ties_y += 1
        elif y[j] > y[i]:
            concordant += 1
        else:
            discordant += 1
    pairs = len(y) * (len(y) - 1) // 2
    denominator = math.sqrt(pairs * (pairs - ties_y))
    return 0.0 if denominator == 0 else (concordant - discordant) / denominator


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("seed", range(4))
def test_against_brute_force(metric, seed):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(7 + seed, 5)), rng.normal(size=(9, 5))
    b[:4] += np.linspace(0, 3, 4)[:, None]  # some structure; ties in nn indices are likely with 9 frames
    nn = brute_nn(a, b, metric)
    assert nearest_neighbours(a, b, metric=metric).tolist() == nn
    expected_error = np.mean([abs(t / len(a) - n / len(b)) for t, n in enumerate(nn)])
    assert alignment_error(a, b, metric=metric) == pytest.approx(expected_error, abs=1e-12)
    assert kendall_tau(a, b, metric=metric) == pytest.approx(brute_tau_b(nn), abs=1e-12)


def test_pairwise_and_report_average_ordered_pairs():
    rng = np.random.default_rng(3)
    views = [rng.normal(size=(6, 4)), rng.normal(size=(8, 4)), rng.normal(size=(5, 4))]
    pairs = [(i, j) for i in range(3) for j in range(3) if i != j]
    result = pairwise_alignment(views)
    assert result["pairs"] == 6
    assert result["alignment_error"] == pytest.approx(np.mean([alignment_error(views[i], views[j]) for i, j in pairs]))
    assert result["kendall_tau"] == pytest.approx(np.mean([kendall_tau(views[i], views[j]) for i, j in pairs]))

    identity = [one_hot([0, 1, 2, 3], 4)] * 2
    reversed_ = [one_hot([0, 1, 2, 3], 4), one_hot([3, 2, 1, 0], 4)]
    report = video_alignment_report([identity, reversed_])
    assert report["videos"] == 2
    assert report["kendall_tau_per_video"] == pytest.approx([1.0, -1.0])
    assert report["alignment_error_per_video"] == pytest.approx([0.0, 0.5])
    assert report["kendall_tau"] == pytest.approx(0.0)
    assert report["alignment_error"] == pytest.approx(0.25)


# ---- clip retrieval ----


def test_clip_retrieval_known_ranks():
    # keys are one-hot, so query i's cosine to key j orders like scores[i][j]
    scores = torch.tensor(
        [
            [9.0, 1, 1, 1, 1, 1],  # rank 1
            [5.0, 3, 4, 1, 1, 1],  # two keys above the match: rank 3
            [1.0, 1, 5, 5, 1, 1],  # a tie with the match counts against it: rank 2
            [6.0, 6, 6, 1, 6, 6],  # five above: rank 6
            [1.0, 1, 1, 1, 2, 1],  # rank 1
            [5.0, 5, 5, 5, 1, 2],  # four above: rank 5
        ]
    )
    ranks = [1, 3, 2, 6, 1, 5]
    result = clip_retrieval(scores, torch.eye(6))
    assert result["recall@1"] == pytest.approx(2 / 6)
    assert result["recall@5"] == pytest.approx(5 / 6)
    assert result["mrr"] == pytest.approx(np.mean([1 / r for r in ranks]))
    assert clip_retrieval(scores, torch.eye(6), ks=(2, 6))["recall@6"] == 1.0


def test_clip_retrieval_brute_force():
    rng = np.random.default_rng(5)
    queries, keys = rng.normal(size=(20, 6)), rng.normal(size=(20, 6))
    keys[:10] = queries[:10] + 0.3 * rng.normal(size=(10, 6))
    ranks = []
    for i, q in enumerate(queries):
        sims = [q @ k / (np.linalg.norm(q) * np.linalg.norm(k)) for k in keys]
        ranks.append(1 + sum(1 for j, s in enumerate(sims) if j != i and s >= sims[i]))
    result = clip_retrieval(queries, keys)
    assert result["recall@1"] == pytest.approx(np.mean([r <= 1 for r in ranks]))
    assert result["recall@5"] == pytest.approx(np.mean([r <= 5 for r in ranks]))
    assert result["mrr"] == pytest.approx(np.mean([1 / r for r in ranks]))


# ---- pixel features ----


def test_pixel_features_shape_and_standardisation():
    frames = torch.randint(0, 256, (5, 40, 60, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    frames[2] = 77  # a constant frame
    features = pixel_features(frames, size=8)
    assert features.shape == (5, 8 * 8 * 3) and features.dtype == torch.float32
    keep = [0, 1, 3, 4]
    assert torch.allclose(features[keep].mean(dim=1), torch.zeros(4), atol=1e-5)
    assert torch.allclose(features[keep].std(dim=1, unbiased=False), torch.ones(4), atol=1e-4)
    assert torch.equal(features[2], torch.zeros(8 * 8 * 3))
    assert torch.allclose(pixel_features(frames.numpy(), size=8), features)
    assert alignment_error(features[keep], features[keep]) == 0.0


# ---- errors name the input ----


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: alignment_error(torch.zeros(4), torch.zeros(4, 2)), r"^a must be 2-D"),
        (lambda: kendall_tau(torch.zeros(4, 2), torch.zeros(2, 3, 1)), r"^b must be 2-D"),
        (lambda: alignment_error(torch.zeros(4, 2), torch.zeros(3, 5)), "same embedding size, got 2 and 5"),
        (lambda: alignment_error(torch.zeros(0, 2), torch.zeros(3, 2)), "a must hold at least one frame"),
        (lambda: alignment_error(torch.full((2, 2), math.nan), torch.zeros(3, 2)), "a holds NaN"),
        (lambda: kendall_tau(torch.zeros(4, 2), torch.zeros(3, 2), metric="dot"), "metric must be one of"),
        (lambda: clip_retrieval(torch.zeros(4, 2), torch.zeros(3, 2)), "4 queries and 3 keys"),
        (lambda: clip_retrieval(torch.zeros(4, 2), torch.zeros(4, 3)), "queries and keys must have the same"),
        (lambda: clip_retrieval(torch.ones(4, 2), torch.ones(4, 2), ks=(0,)), "ks must be positive"),
        (lambda: pairwise_alignment([torch.zeros(3, 2)]), "at least two views"),
        (lambda: pairwise_alignment([torch.zeros(3, 2), torch.zeros(3, 4)]), r"views\[1\] has embedding size 4"),
        (lambda: video_alignment_report([]), "per_video_views is empty"),
        (lambda: video_alignment_report([[torch.zeros(3, 2)] * 2, [torch.zeros(3)] * 2]), r"per_video_views\[1\]"),
        (lambda: pixel_features(torch.zeros(4, 8, 8, dtype=torch.uint8)), r"frames must be .*\[T, H, W, 3\]"),
        (lambda: pixel_features(torch.zeros(4, 8, 8, 3, dtype=torch.uint8), size=0), "size must be a positive number"),
    ],
)
def test_errors_name_the_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_non_array_input_is_a_type_error():
    with pytest.raises(TypeError, match=r"a must be a torch\.Tensor or numpy array"):
        alignment_error([[0.0, 1.0]], torch.zeros(2, 2))


# ---- plots ----


def test_plots_write_pngs(tmp_path):
    from mmcontrast.evaluation.video_plots import plot_alignment_matrix, plot_embedding_trajectories

    rng = np.random.default_rng(0)
    a = np.cumsum(rng.normal(size=(12, 6)), axis=0)
    b = a[::2] + 0.1 * rng.normal(size=(6, 6))
    matrix = plot_alignment_matrix(a, b, tmp_path / "sub" / "matrix.png", title="a vs b")
    paths = plot_embedding_trajectories([a, b, torch.from_numpy(a[:3])], tmp_path / "traj.png", labels=["a", "b", "c"])
    single = plot_embedding_trajectories([a[:1]], tmp_path / "one.png")
    for path in (matrix, paths, single):
        assert path.is_file() and path.stat().st_size > 1000
        assert path.read_bytes()[:8] == PNG
    with pytest.raises(ValueError, match="labels must name every video"):
        plot_embedding_trajectories([a, b], tmp_path / "x.png", labels=["a"])


# ---- benchmarks/video_decode.py: both methods deliver the same frames ----


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        yield importlib.import_module("video_decode")
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_benchmark_methods_deliver_identical_frames(bench):
    path = bench.video_dir() / "car-detection.mp4"
    if not path.is_file():
        pytest.skip(f"shared video clips not found at {path.parent}")
    from mmcontrast.data.video import probe_video

    duration = probe_video(path).duration  # 30.16 s at 12.5 fps, keyframes every 4.8 s
    starts = bench.clip_starts(duration, 2, 4, 2.0, seed=0)
    clips = [(0.0, 3, 2.0), (4.79, 4, 12.5), *[(s, 4, 2.0) for s in starts], (duration - 0.5, 4, 2.0)]  # last: past end
    assert bench.check_same_frames(path, clips) == 3 + 4 + 8 + 4
