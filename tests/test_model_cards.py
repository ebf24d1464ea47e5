"""Model cards of every exported kind of model folder (sentence-transformers, transformers CLIP, open_clip, the
SimCLR generic encoder), each from a tiny training run: the YAML metadata parses back with ``ModelCard.load``
with the expected library and pipeline tag, the evaluation results as model-index entries equal to the run's
metrics, a usage snippet for the loading library, the recipe and the training curve; no token in any file.
The generic encoder folder is safetensors + config.json + card, loads back with one ``from_pretrained`` call,
and loading it never unpickles or runs anything placed in the folder."""

from __future__ import annotations

import csv
import json
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import pairs_training_args, synthetic_pairs
from huggingface_hub import ModelCard
from safetensors.torch import load_file

from mmcontrast.cli import main
from mmcontrast.hub.model_card import CardInfo, hub_id, write_model_card
from mmcontrast.hub.push import hub_model_card
from mmcontrast.modalities.image import ImageEncoder

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
TOKEN = "hf_modelCardTestToken0123456789abcdef"
TINY_RUN = ["train.max_steps=2", "train.logging_steps=1", "train.save_steps=0", "train.progress_bar=false"]


@dataclass
class Kind:
    """What an export kind's card must say."""

    library_name: str
    pipeline_tag: str
    loader: str  # the call in the usage snippet
    task: str  # the model-index task type


KINDS = {
    "sbert": Kind("sentence-transformers", "sentence-similarity", "SentenceTransformer(", "retrieval"),
    "clip": Kind(
        "transformers",
        "zero-shot-image-classification",
        'pipeline("zero-shot-image-classification"',
        "zero-shot-image-classification",
    ),
    "open_clip": Kind(
        "open_clip",
        "zero-shot-image-classification",
        "open_clip.create_model_and_transforms(",
        "zero-shot-image-classification",
    ),
    "simclr": Kind("mmcontrast", "image-feature-extraction", "ImageEncoder.from_pretrained(", "image-classification"),
}


def _sbert_args(run: Path, model: str) -> list[str]:
    data = run.parent / "pairs.csv"
    with data.open("w", newline="") as handle:
        csv.writer(handle).writerows([("anchor", "positive"), *synthetic_pairs(48)])
    evaluation = [f"eval.retrieval={data}", "eval.retrieval_format=csv", "eval.retrieval_min_score=null"]
    evaluation.append("eval.retrieval_columns=[anchor, positive]")
    return [*pairs_training_args(model, data, run), *evaluation, "train.batch_size=16"]


def _image_args(recipe: str) -> list[str]:
    if recipe.startswith("simclr"):
        return ["train", str(RECIPES / recipe), "train.batch_size=16", "data.limit=64", "eval.limit=100"]
    return ["train", str(RECIPES / recipe), "train.batch_size=16", "data.limit=64", "train.eval_steps=0"]


def _expected_metrics(kind: str, run: Path) -> dict[str, float]:
    """The run's final metrics by the metric names the card uses."""
    if kind in ("clip", "open_clip"):
        return json.loads((run / "zero_shot.json").read_text())
    metrics = json.loads((run / "summary.json").read_text())["metrics"]
    return {name.split("/", 1)[1]: value for name, value in metrics.items() if not name.startswith("random_init/")}


@pytest.fixture(scope="module")
def trained(request, tmp_path_factory):
    """``trained(kind)``: the run folder of a tiny training run of that kind (trained once, with HF_TOKEN set)."""
    runs: dict[str, Path] = {}

    def run_of(kind: str) -> Path:
        if kind not in runs:
            run = tmp_path_factory.mktemp(kind) / "run"
            args = {
                "sbert": lambda: _sbert_args(run, request.getfixturevalue("tiny_bert_path")),
                "clip": lambda: _image_args("clip_digits.yaml"),
                "open_clip": lambda: _image_args("clip_open_clip_digits.yaml"),
                "simclr": lambda: _image_args("simclr_digits.yaml"),
            }[kind]()
            with pytest.MonkeyPatch.context() as patch:
                patch.setenv("HF_TOKEN", TOKEN)
                assert main([*args, *TINY_RUN, f"output_dir={run}"]) == 0
            runs[kind] = run
        return runs[kind]

    return run_of


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_card_metadata_parses_back_with_eval_results(trained, kind):
    run = trained(kind)
    expected = KINDS[kind]
    model_dir = run / "model"
    card = ModelCard.load(model_dir / "README.md")
    assert card.data.library_name == expected.library_name
    assert card.data.pipeline_tag == expected.pipeline_tag
    assert "mmcontrast" in card.data.tags and "contrastive-learning" in card.data.tags
    metadata = card.data.to_dict()
    assert metadata["model-index"][0]["results"], "no model-index entries"
    metrics = _expected_metrics(kind, run)
    assert len(card.data.eval_results) == len(metrics) > 0
    for result in card.data.eval_results:
        assert result.task_type == expected.task
        assert result.metric_value == pytest.approx(metrics[result.metric_type]), result.metric_type
    assert expected.loader in card.text and str(model_dir) in card.text  # the usage snippet loads this folder
    on_the_hub = hub_model_card(card.text, model_dir, "alice/model")  # as `mmcontrast push` uploads it
    assert str(model_dir) not in on_the_hub and expected.loader in on_the_hub
    assert '"alice/model"' in on_the_hub or (kind == "open_clip" and '"hf-hub:alice/model"' in on_the_hub)
    assert f"method: {'clip' if kind == 'open_clip' else kind}" in card.text  # the recipe
    assert "![training curve](training_curve.png)" in card.text
    assert (model_dir / "training_curve.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_no_file_of_the_run_holds_the_token(trained, kind):
    run = trained(kind)
    files = [path for path in run.rglob("*") if path.is_file()]
    assert files and all(TOKEN.encode() not in path.read_bytes() for path in files)


def test_card_metadata_keeps_hub_ids_only(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "pairs.csv").write_text("anchor,positive\n")
    info = CardInfo(
        title="t",
        description="d",
        library_name="sentence-transformers",
        pipeline_tag="sentence-similarity",
        usage="",
        recipe="",
        base_model=str(tmp_path),
        datasets=["sentence-transformers/stsb", str(tmp_path / "data" / "pairs.csv"), "sklearn:digits", "x.jsonl"],
    )
    card = ModelCard.load(write_model_card(tmp_path, info))
    assert card.data.base_model is None and card.data.datasets == ["sentence-transformers/stsb"]
    assert hub_id("sentence-transformers/all-MiniLM-L6-v2") == "sentence-transformers/all-MiniLM-L6-v2"
    assert hub_id("../shared/data/stsb/sts-train.csv") is None
    card = ModelCard.load(write_model_card(tmp_path, CardInfo(**{**info.__dict__, "base_model": "org/base"})))
    assert card.data.base_model == "org/base"


@pytest.fixture(scope="module")
def simclr_folder(trained) -> Path:
    return trained("simclr") / "model"


def test_generic_encoder_is_safetensors_config_and_card(simclr_folder):
    assert sorted(p.name for p in simclr_folder.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
        "training_curve.png",
    ]
    config = json.loads((simclr_folder / "config.json").read_text())
    assert config["format"] == "mmcontrast-image-encoder"
    encoder = ImageEncoder.from_pretrained(simclr_folder)
    weights = load_file(simclr_folder / "model.safetensors")
    state = encoder.backbone.state_dict()
    assert weights.keys() == state.keys() and all(torch.equal(weights[k], state[k]) for k in weights)
    assert encoder(torch.zeros(2, 3, encoder.image_size, encoder.image_size)).shape == (2, config["embedding_dim"])


class _Trap:
    """Unpickling this creates the file ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_loading_never_unpickles_or_runs_files_from_the_folder(simclr_folder, tmp_path, monkeypatch):
    folder = shutil.copytree(simclr_folder, tmp_path / "model")
    ran = tmp_path / "ran"
    for name in ("pytorch_model.bin", "model.pt", "random_states_0.pkl"):
        (folder / name).write_bytes(pickle.dumps(_Trap(ran)))
    for name in ("modeling.py", "__init__.py", "custom_code.py"):
        (folder / name).write_text(f"from pathlib import Path\nPath({str(ran)!r}).touch()\n")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "modeling.Model"}}))

    def refuse(*args, **kwargs):
        raise AssertionError("a pickle was loaded")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    images = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        ours = ImageEncoder.from_pretrained(folder)(images)
        reference = ImageEncoder.from_pretrained(simclr_folder)(images)
    assert torch.equal(ours, reference)
    (folder / "model.safetensors").unlink()  # no fallback to the pickles
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors"):
        ImageEncoder.from_pretrained(folder)
    assert not ran.exists()


def test_a_backbone_name_pointing_elsewhere_is_refused(simclr_folder, tmp_path):
    folder = shutil.copytree(simclr_folder, tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    other = tmp_path / "other"  # a transformers folder create() would load instead of this one's weights
    other.mkdir()
    (other / "config.json").write_text("{}")
    (folder / "config.json").write_text(json.dumps({**config, "kind": "timm", "name": str(other)}))
    with pytest.raises(ValueError, match="a timm backbone is named timm/<model>"):
        ImageEncoder.from_pretrained(folder)
