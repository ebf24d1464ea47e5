"""SimCLR: seeded views (same in any worker, new each epoch), projection heads, the method's loss against the
functional NT-Xent, the backbone-only export and its reload, the kNN / linear probes against scikit-learn, a
short run through the CLI, and (slow) the acceptance run: SimCLR beats the randomly initialised backbone."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from torch.utils.data import DataLoader

from mmcontrast.cli import main
from mmcontrast.data.images import digits
from mmcontrast.evaluation.probe import encode_images, knn_accuracy, knn_predict, linear_probe_accuracy
from mmcontrast.losses import nt_xent
from mmcontrast.methods.simclr import SimCLR
from mmcontrast.modalities.heads import LinearHead, MLPHead, projection_head
from mmcontrast.modalities.image import ImageEncoder, image_transform
from mmcontrast.views import ViewsDataset, blur_kernel_size, simclr_transform

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "simclr_digits.yaml"
TINY_VIT = {
    "model_type": "clip_vision_model",
    "image_size": 32,
    "patch_size": 8,
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}


def tiny_transformers_encoder() -> ImageEncoder:
    from transformers import AutoConfig, AutoModel

    options = dict(TINY_VIT)
    model_type = options.pop("model_type")
    return ImageEncoder.from_transformers(AutoModel.from_config(AutoConfig.for_model(model_type, **options)))


@pytest.fixture(scope="module")
def digit_rows() -> list[dict]:
    return digits("train").rows[:12]


def _views_dataset(rows, seed=3) -> ViewsDataset:
    transform = simclr_transform(32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), crop_scale=(0.2, 1.0), flip=True)
    return ViewsDataset(rows, transform, seed=seed)


def _all_views(dataset, order) -> dict[int, torch.Tensor]:
    return {i: torch.stack(dataset[i]["views"]) for i in order}


def test_views_depend_only_on_seed_epoch_and_row(digit_rows):
    dataset = _views_dataset(digit_rows)
    dataset.set_epoch(1)
    state = torch.get_rng_state()
    forward = _all_views(dataset, range(len(digit_rows)))
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is left alone
    torch.manual_seed(1234)  # another global RNG state, another access order: the same views
    backward = _all_views(dataset, reversed(range(len(digit_rows))))
    assert all(torch.equal(forward[i], backward[i]) for i in forward)
    first = forward[0]
    assert first.shape == (2, 3, 32, 32) and first.dtype == torch.float32
    assert not torch.equal(first[0], first[1])  # two different views of one image

    # worker processes (any split of the rows over them) compute the same views
    def collate(rows):
        return [(row["index"], torch.stack(row["views"])) for row in rows]

    loader = DataLoader(dataset, batch_size=5, shuffle=True, num_workers=2, collate_fn=collate)
    from_workers = {index: views for batch in loader for index, views in batch}
    assert sorted(from_workers) == list(range(len(digit_rows)))
    assert all(torch.equal(forward[i], from_workers[i]) for i in forward)

    # a fresh dataset (a resumed run) gives the same views; another epoch or seed gives new ones
    again = _views_dataset(digit_rows)
    again.set_epoch(1)
    assert torch.equal(torch.stack(again[4]["views"]), forward[4])
    again.set_epoch(2)
    assert not any(torch.equal(torch.stack(again[i]["views"]), forward[i]) for i in forward)
    other_seed = _views_dataset(digit_rows, seed=4)
    other_seed.set_epoch(1)
    assert not torch.equal(torch.stack(other_seed[4]["views"]), forward[4])


def test_views_keep_labels_and_check_inputs(digit_rows):
    row = _views_dataset(digit_rows)[2]
    assert row["label"] == digit_rows[2]["label"] and row["index"] == 2 and "image" not in row
    with pytest.raises(ValueError, match="num_views"):
        ViewsDataset(digit_rows, lambda image: image, num_views=1)
    with pytest.raises(ValueError, match="crop_scale"):
        simclr_transform(32, (0.5,) * 3, (0.5,) * 3, crop_scale=(0.5, 2.0))
    with pytest.raises(ValueError, match="strength"):
        simclr_transform(32, (0.5,) * 3, (0.5,) * 3, strength=-1)
    three = ViewsDataset(digit_rows, simclr_transform(16, (0.5,) * 3, (0.5,) * 3), num_views=3)
    assert torch.stack(three[0]["views"]).shape == (3, 3, 16, 16)


def test_simclr_transform_pipeline():
    assert [blur_kernel_size(s) for s in (8, 32, 96, 224)] == [3, 3, 11, 23]  # ~10% of the side, odd
    transform = simclr_transform(32, (0.1, 0.2, 0.3), (0.5, 0.5, 0.5), strength=0.5, flip=False)
    names = [type(step).__name__ for step in transform.transforms]
    assert "RandomHorizontalFlip" not in names and names[-1] == "Normalize"
    jitter = transform.transforms[names.index("RandomApply")].transforms[0]
    assert jitter.brightness == pytest.approx((0.6, 1.4)) and jitter.hue == pytest.approx((-0.1, 0.1))
    assert transform.transforms[names.index("RandomApply")].p == 0.8
    assert "RandomGrayscale" in names
    blank = transform(torch.zeros(3, 8, 8, dtype=torch.uint8))  # black stays black, then normalised
    expected = torch.tensor([-0.2, -0.4, -0.6]).view(3, 1, 1).expand(3, 32, 32)
    assert torch.allclose(blank, expected, atol=1e-6)


def test_projection_heads():
    features = torch.randn(6, 20)
    mlp = projection_head("mlp", 20, 8, hidden_dim=16)
    assert isinstance(mlp, MLPHead) and [type(m).__name__ for m in mlp] == ["Linear", "ReLU", "Linear"]
    assert mlp(features).shape == (6, 8)
    with_bn = projection_head("mlp", 20, 8, batch_norm=True)
    assert [type(m).__name__ for m in with_bn] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert with_bn[0].bias is None and with_bn[0].out_features == 20
    linear = projection_head("linear", 20, 8)
    assert isinstance(linear, LinearHead) and linear(features).shape == (6, 8)
    with pytest.raises(ValueError, match="kind"):
        projection_head("deep", 20, 8)  # type: ignore[arg-type]


def test_method_loss_is_nt_xent_over_the_views():
    torch.manual_seed(0)
    encoder = tiny_transformers_encoder()
    method = SimCLR(encoder, projection_head("mlp", encoder.embedding_dim, 16), temperature=0.2)
    rows = [{"views": [torch.randn(3, 32, 32) for _ in range(2)], "label": i % 3} for i in range(5)]
    batch = method.collate(rows)
    assert batch["pixel_values"].shape == (5, 2, 3, 32, 32)
    method.eval()
    embeddings = method.embed(batch)
    z = embeddings["projections"]
    assert z.shape == (5, 2, 16)
    # per view: the projection of that view alone
    alone = method.head(encoder(batch["pixel_values"][:, 1]))
    assert torch.allclose(z[:, 1], alone, atol=1e-5)
    output = method.loss(embeddings, batch)
    expected = nt_xent(z[:, 0], z[:, 1], temperature=0.2)
    assert torch.allclose(output.loss, expected) and 0 < output.metrics["positive_cosine"] <= 1
    output.loss.backward()
    assert encoder.backbone.embeddings.patch_embedding.weight.grad is not None

    three = torch.randn(7, 3, 16, requires_grad=True)  # V = 3: mean NT-Xent over the three pairs of views
    pairs = [(0, 1), (0, 2), (1, 2)]
    reference = sum(nt_xent(three[:, a], three[:, b], temperature=0.2) for a, b in pairs) / 3
    assert torch.allclose(method.loss({"projections": three}, {}).loss, reference)
    with pytest.raises(ValueError, match="views"):
        method.collate([{"image": None}])


def test_cached_large_batch_gives_the_whole_batch_gradients(tmp_path, digit_rows):
    """GradCache through the embed / loss split: views are embedded per row, so chunks give the same gradients."""
    from mmcontrast.data.samplers import ShuffledBatchSampler
    from mmcontrast.engine.trainer import Trainer, TrainingConfig

    torch.manual_seed(0)
    encoder = tiny_transformers_encoder()
    method = SimCLR(encoder, projection_head("mlp", encoder.embedding_dim, 16), temperature=0.5)
    dataset = _views_dataset(digit_rows[:8])
    rows = [dataset[i] for i in range(len(dataset))]
    gradients = []
    for chunk in (None, 3):
        config = TrainingConfig(batch_size=len(rows), cache_chunk_size=chunk, progress_bar=False)
        trainer = Trainer(method, rows, ShuffledBatchSampler(len(rows), len(rows), shuffle=False), config, tmp_path)
        method.zero_grad(set_to_none=True)
        trainer.backward(trainer.collate(rows))
        gradients.append({name: p.grad.clone() for name, p in method.named_parameters() if p.grad is not None})
    whole, cached = gradients
    assert whole.keys() == cached.keys() and len(whole) > 10
    for name, gradient in whole.items():
        assert torch.allclose(cached[name], gradient, atol=1e-5, rtol=1e-4), name


@pytest.mark.parametrize("kind", ["transformers", "timm"])
def test_export_and_reload_give_identical_features(kind, tmp_path, digit_rows):
    torch.manual_seed(0)
    encoder = tiny_transformers_encoder() if kind == "transformers" else ImageEncoder.create("timm/test_resnet")
    if kind == "timm":  # running statistics must travel too
        encoder.train()
        with torch.no_grad():
            encoder(torch.randn(8, 3, encoder.image_size, encoder.image_size) * 2 + 1)
    encoder.mean, encoder.std = (0.3, 0.3, 0.3), (0.2, 0.2, 0.2)
    encoder.transform = image_transform(encoder.image_size, encoder.mean, encoder.std)
    folder = encoder.save_pretrained(tmp_path / "encoder")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["kind"] == kind and config["image_size"] == encoder.image_size and config["mean"] == [0.3] * 3
    loaded = ImageEncoder.from_pretrained(folder)
    assert not loaded.training and loaded.mean == (0.3, 0.3, 0.3)
    images = [row["image"] for row in digit_rows]
    theirs = encode_images(loaded, images)
    ours = encode_images(encoder, images)
    assert (ours - theirs).abs().max() < 1e-6


def test_reload_refuses_unknown_code_and_other_folders(tmp_path):
    encoder = tiny_transformers_encoder()
    folder = encoder.save_pretrained(tmp_path / "encoder")
    config = json.loads((folder / "config.json").read_text())
    config["transformers_config"]["model_type"] = "my_remote_model"
    config["transformers_config"]["auto_map"] = {"AutoModel": "modeling.MyModel"}
    (folder / "modeling.py").write_text("raise SystemExit('code from the folder ran')\n")
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="model_type"):
        ImageEncoder.from_pretrained(folder)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"model_type": "vit"}))
    (tmp_path / "other" / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="not an mmcontrast image encoder"):
        ImageEncoder.from_pretrained(tmp_path / "other")
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        ImageEncoder.from_pretrained(tmp_path / "missing")


def _clustered(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, rows)
    centres = np.random.default_rng(99).normal(size=(4, 12))
    return (centres[labels] + 1.5 * rng.normal(size=(rows, 12))).astype(np.float32), labels


def test_knn_probe_matches_sklearn_and_brute_force():
    from sklearn.neighbors import KNeighborsClassifier

    train_x, train_y = _clustered(200, 0)
    test_x, test_y = _clustered(80, 1)
    for k in (1, 5, 20):
        theirs = KNeighborsClassifier(k, metric="cosine", algorithm="brute").fit(train_x, train_y)
        ours = knn_predict(train_x, train_y, test_x, k=k)
        assert ours.tolist() == theirs.predict(test_x).tolist()
        assert knn_accuracy(train_x, train_y, test_x, test_y, k) == pytest.approx(theirs.score(test_x, test_y))
        weighted = KNeighborsClassifier(k, metric="cosine", algorithm="brute", weights=lambda d: 1.0 - d)
        ours = knn_predict(train_x, train_y, test_x, k=k, weighting="similarity")
        assert ours.tolist() == weighted.fit(train_x, train_y).predict(test_x).tolist()
    # brute force: loop over queries, sort all similarities, vote
    unit = train_x / np.linalg.norm(train_x, axis=1, keepdims=True)
    expected = []
    for query in test_x:
        similarity = unit @ (query / np.linalg.norm(query))
        top = np.argsort(-similarity, kind="stable")[:7]
        votes = np.zeros(4)
        for j in top:
            votes[train_y[j]] += similarity[j]
        expected.append(int(np.argmax(votes)))
    assert knn_predict(train_x, train_y, test_x, k=7, weighting="similarity").tolist() == expected
    with pytest.raises(ValueError, match="k must be"):
        knn_accuracy(train_x, train_y, test_x, test_y, k=0)
    with pytest.raises(ValueError, match="test_labels"):
        knn_accuracy(train_x, train_y, test_x, test_y[:5])


def test_linear_probe_matches_sklearn_pipeline():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train_x, train_y = _clustered(300, 2)
    test_x, test_y = _clustered(100, 3)
    theirs = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(train_x.astype(np.float64), train_y)
    ours = linear_probe_accuracy(train_x * 1000.0 + 5.0, train_y, test_x * 1000.0 + 5.0, test_y)  # scale-free
    assert ours == pytest.approx(theirs.score(test_x.astype(np.float64), test_y))
    assert ours > 0.7


def test_train_through_the_cli_exports_the_backbone_only(tmp_path):
    run = tmp_path / "run"
    code = main(
        [
            "train",
            str(RECIPE),
            f"output_dir={run}",
            "train.max_steps=2",
            "train.batch_size=16",
            "train.num_workers=1",
            "train.save_steps=0",
            "train.eval_steps=0",
            "train.progress_bar=false",
            "data.limit=64",
            "eval.limit=100",
            "eval.random_init=true",
        ]
    )
    assert code == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["global_step"] == 2
    assert {"probe/knn_top1", "probe/linear_probe_top1", "random_init/knn_top1"} <= set(summary["metrics"])
    model_dir = run / "model"
    with safe_open(model_dir / "model.safetensors", framework="pt") as weights:
        keys = list(weights.keys())
    assert keys and not any(key.startswith("head") for key in keys)  # the projection head is dropped
    card = (model_dir / "README.md").read_text()
    assert "library_name: mmcontrast" in card and "pipeline_tag: image-feature-extraction" in card
    assert "knn_top1" in card and "ImageEncoder.from_pretrained" in card
    encoder = ImageEncoder.from_pretrained(model_dir)
    from mmcontrast.recipe import load_recipe
    from mmcontrast.recipes.simclr import probe

    recipe = load_recipe(RECIPE, ["eval.limit=100"])
    again = probe(recipe)(type("Trained", (), {"image_encoder": encoder})())  # the probes of the exported model
    assert again["knn_top1"] == pytest.approx(summary["metrics"]["probe/knn_top1"], abs=1e-6)


@pytest.mark.slow
def test_simclr_beats_random_init_on_held_out_digits(tmp_path):
    """Acceptance: the full recipe; kNN accuracy on held-out digits >= random init + 15 points."""
    start = time.perf_counter()
    assert main(["train", str(RECIPE), f"output_dir={tmp_path}", "train.progress_bar=false"]) == 0
    minutes = (time.perf_counter() - start) / 60
    metrics = json.loads((tmp_path / "summary.json").read_text())["metrics"]
    print(
        f"\nSimCLR ({minutes:.1f} min incl. probes): "
        f"kNN {metrics['probe/knn_top1']:.4f} linear {metrics['probe/linear_probe_top1']:.4f} | random init: "
        f"kNN {metrics['random_init/knn_top1']:.4f} linear {metrics['random_init/linear_probe_top1']:.4f}"
    )
    assert metrics["probe/knn_top1"] >= metrics["random_init/knn_top1"] + 0.15
