"""The Python API: docs/python-api.md runs as written, recipes built in Python are checked like recipe files, and
what a run writes (cards, model configs) holds the effective recipe with no absolute local path."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import mmcontrast
from mmcontrast.typed_config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "python-api.md"


def test_the_tutorial_runs_and_python_equals_the_cli(tmp_path, stsb_dir, minilm_path):
    """Every python block of docs/python-api.md, in order, as one script (its asserts compare the Python and the
    command-line runs parameter by parameter); run folders go to a temporary folder instead of runs/api."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 5
    script = "\n".join(blocks).replace("runs/api", str(tmp_path / "api"))
    environment = os.environ | {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "key 'train.lr' must be float" in done.stdout
    assert "before training: {'step': 0, 'sts/" in done.stdout
    assert (tmp_path / "api" / "engine" / "model" / "README.md").is_file()
    card = (tmp_path / "api" / "engine" / "model" / "README.md").read_text()
    assert "max_steps: 4" in card  # the engine path's card holds the effective training settings


def test_a_recipe_object_is_checked_like_a_recipe_file(tmp_path):
    recipe = mmcontrast.load_recipe("recipes/sbert_stsb.yaml", {"output_dir": str(tmp_path)})
    recipe.train.lr = "1e-4"
    with pytest.raises(ConfigError, match=r"SbertRecipe: key 'train.lr' must be float, got '1e-4' \(str\)"):
        mmcontrast.train(recipe)
    recipe.train.lr = 1e-4
    recipe.train.batch_size = 0
    with pytest.raises(ConfigError, match=r"SbertRecipe: key 'train.batch_size' must be >= 1, got 0"):
        mmcontrast.check_recipe(recipe)


def test_overrides_as_a_dict_or_strings_give_the_same_recipe():
    strings = mmcontrast.load_recipe("recipes/sbert_stsb.yaml", ["train.lr=3e-5", "data.columns=[a, b]"])
    values = mmcontrast.load_recipe("recipes/sbert_stsb.yaml", {"train.lr": 3e-5, "data.columns": ["a", "b"]})
    assert strings == values and values.train.lr == 3e-5
    as_dict = mmcontrast.load_recipe(dataclasses.asdict(values))
    assert as_dict == values
    with pytest.raises(ConfigError, match=r"key 'train.lrr'.*did you mean 'train.lr'"):
        mmcontrast.load_recipe("recipes/sbert_stsb.yaml", {"train.lrr": 1.0})


def test_cards_and_configs_hold_the_effective_recipe_without_absolute_paths(tmp_path, tiny_bert_path, pairs_csv):
    """A recipe whose paths are all absolute: the card's recipe has every key (defaults included) and only paths
    relative to the run folder; the mmcontrast-format model config too, and it still loads from there."""
    from mmcontrast.hub.dual_encoders import load_dual_encoder
    from mmcontrast.hub.push import hub_model_card
    from mmcontrast.recipes.base import effective_recipe

    run = tmp_path / "runs" / "sbert"
    recipe = mmcontrast.load_recipe(
        "recipes/sbert_pairs.yaml",
        {
            "model.name_or_path": tiny_bert_path,
            "data.train": str(pairs_csv),
            "data.format": "csv",
            "data.columns": ["anchor", "positive"],
            "data.min_score": None,
            "eval.sts": None,
            "eval.retrieval": None,
            "output_dir": str(run),
            "train.max_steps": 2,
            "train.progress_bar": False,
        },
    )
    summary = mmcontrast.train(recipe)
    card = (run / "model" / "README.md").read_text()
    stored = yaml.safe_load(card.split("```yaml\n", 1)[1].split("```", 1)[0])
    assert stored == effective_recipe(recipe)
    assert stored["train"]["max_steps"] == 2 and stored["train"]["weight_decay"] == 0.01  # a default, written out
    assert stored["data"]["train"] == os.path.relpath(pairs_csv, run)
    assert summary["global_step"] == 2
    assert "on `../../pairs.csv`" in card  # the description names the data relative to the run folder
    pushed = hub_model_card(card, run / "model", "alice/sbert")  # the card as `mmcontrast push` uploads it
    assert str(tmp_path) not in pushed and 'SentenceTransformer("alice/sbert")' in pushed

    clip = mmcontrast.load_recipe(
        "recipes/clip_digits.yaml",
        [
            *[f"output_dir={tmp_path / 'clip'}", "data.limit=8", "model.image.config=null", "model.text.config=null"],
            *["model.image.backbone=timm/test_resnet", f"model.text.name_or_path={tiny_bert_path}"],
            *["model.text.pooling=mean", "train.max_steps=1", "eval.zero_shot=null", "train.progress_bar=false"],
        ],
    )
    mmcontrast.train(clip)
    config = (tmp_path / "clip" / "model" / "config.json").read_text()
    assert '"format": "mmcontrast-clip"' in config and '"/' not in config  # no absolute path at all
    assert load_dual_encoder(tmp_path / "clip" / "model").encode_texts(["a seven"]).shape[0] == 1


@pytest.mark.parametrize("path", sorted((ROOT / "recipes").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_recipe_survives_the_python_check_unchanged(path):
    """check_recipe rebuilds a recipe from its plain form: every shipped recipe comes back equal (no key lost,
    no type changed), so training a recipe object trains what it says."""
    recipe = mmcontrast.load_recipe(path)
    assert mmcontrast.check_recipe(recipe) == recipe
