"""Every bad input a user can give the commands ends in one line on standard error that names the input (and the
option or recipe key that gave it), exit status 2 and no traceback; `--debug` adds the traceback. Wrong model
folders are named for what they are; unreadable images are named and counted; recipes for the user's own data
evaluate on nothing the user did not name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import torch
import transformers
from conftest import captioned_digits_folder, pairs_training_args
from PIL import Image

from mmcontrast.cli import main
from mmcontrast.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"


@pytest.fixture(autouse=True)
def _no_progress_bars():
    """Progress bars also write to standard error; the error line must be the only other thing there."""
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    yield
    datasets.enable_progress_bars()
    transformers.utils.logging.enable_progress_bar()


def _fails(capsys, argv: list[str], *named: str) -> str:
    """Run the CLI, check the one-line error contract, and return the line."""
    code = main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured.err
    assert "Traceback" not in captured.err
    assert len(lines) == 1, captured.err
    command = next(arg for arg in argv if not arg.startswith("-"))
    assert lines[0].startswith(f"mmcontrast {command}: error: "), lines[0]
    for text in named:
        assert text in lines[0], (text, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def sts_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sts") / "sts.csv"
    path.write_text("sentence1,sentence2,score\na cat sits,a cat is sitting,4.5\na dog runs,the market fell,0.2\n")
    return path


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory) -> Path:
    """An (untrained) transformers CLIPModel folder as the CLIP recipe exports it."""
    from mmcontrast.hub.transformers_clip import export_transformers_clip
    from mmcontrast.recipe import build_parts

    run = tmp_path_factory.mktemp("clip")
    torch.manual_seed(0)
    recipe = load_recipe(RECIPES / "clip_digits.yaml", [f"output_dir={run}", "data.limit=8", "eval.zero_shot=null"])
    return export_transformers_clip(build_parts(recipe).method, run / "model")


# ---- finding 8: YAML errors and a hub model that is not there offline ------------------------------------------


def test_yaml_syntax_error_in_recipe_is_one_line(tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("method: sbert\ndata:\n  train: pairs.csv\n  columns: [anchor, positive\n")
    _fails(capsys, ["train", str(recipe)], "recipe.yaml", "line")


def test_yaml_syntax_error_in_override_is_one_line(capsys):
    _fails(capsys, ["train", str(RECIPES / "sbert_stsb.yaml"), "train.lr=[1,"], "train.lr=[1,")


def test_missing_hub_model_offline_names_the_recipe_key(tiny_bert_path, pairs_csv, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = pairs_training_args(tiny_bert_path, pairs_csv, tmp_path / "run")
    line = _fails(capsys, [*args, "model.name_or_path=nosuch-org/nosuch-model"], "'nosuch-org/nosuch-model'")
    assert line.startswith("mmcontrast train: error: model.name_or_path: ")
    assert "HF_HUB_OFFLINE" in line


def test_missing_hub_model_offline_names_the_option(sts_csv, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    argv = ["eval", "sts", "--model", "nosuch-org/nosuch-model", "--data", str(sts_csv)]
    _fails(capsys, argv, "--model", "'nosuch-org/nosuch-model'", "HF_HUB_OFFLINE")


def test_missing_model_path_says_it_does_not_exist(sts_csv, tmp_path, capsys):
    _fails(capsys, ["eval", "sts", "--model", str(tmp_path / "nope"), "--data", str(sts_csv)], "does not exist")


# ---- finding 15: eval / zero-shot with a wrong folder, bad images, skipped images -----------------------------


def test_eval_empty_folder(tmp_path, sts_csv, capsys):
    (tmp_path / "empty").mkdir()
    line = _fails(capsys, ["eval", "sts", "--model", str(tmp_path / "empty"), "--data", str(sts_csv)], "--model")
    assert "is empty" in line and "sentencepiece" not in line


def test_eval_training_checkpoint_points_to_the_model_folder(tmp_path, sts_csv, capsys):
    checkpoint = tmp_path / "run" / "checkpoints" / "checkpoint-00000010"
    checkpoint.mkdir(parents=True)
    for name in ("model.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl", "trainer_state.json"):
        (checkpoint / name).write_bytes(b"x")
    (tmp_path / "run" / "model").mkdir()
    line = _fails(capsys, ["eval", "sts", "--model", str(checkpoint), "--data", str(sts_csv)], "training checkpoint")
    assert str((tmp_path / "run" / "model").resolve()) in line


def test_eval_run_folder_points_to_its_model(tmp_path, sts_csv, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "summary.json").write_text("{}")
    _fails(capsys, ["eval", "sts", "--model", str(run), "--data", str(sts_csv)], "run folder", str(run / "model"))


def test_eval_clip_folder_says_use_zero_shot(clip_folder, sts_csv, capsys):
    argv = ["eval", "sts", "--model", str(clip_folder), "--data", str(sts_csv)]
    _fails(capsys, argv, "--model", "image-text", "mmcontrast zero-shot")


def test_eval_pickle_only_folder_says_safetensors(tiny_bert_path, tmp_path, sts_csv, capsys):
    folder = tmp_path / "pickled"
    folder.mkdir()
    for path in Path(tiny_bert_path).iterdir():
        if path.suffix != ".safetensors":
            (folder / path.name).write_bytes(path.read_bytes())
    model = transformers.AutoModel.from_pretrained(tiny_bert_path)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    line = _fails(capsys, ["eval", "sts", "--model", str(folder), "--data", str(sts_csv)], "pytorch_model.bin")
    assert "pickle" in line and "safetensors only" in line and "save_pretrained" in line


def test_zero_shot_with_a_text_model_says_use_eval(tiny_bert_path, capsys):
    argv = ["zero-shot", "--model", tiny_bert_path, "--data", "sklearn:digits"]
    _fails(capsys, argv, "--model", "text model", "mmcontrast eval")


def test_zero_shot_bad_image_file_is_named(tmp_path, clip_folder, capsys):
    good, bad = tmp_path / "good.png", tmp_path / "scan.png"
    Image.new("RGB", (8, 8)).save(good)
    bad.write_bytes(b"this is not a png")
    argv = ["zero-shot", "--model", str(clip_folder), "--classes", "a", "b", "--images", str(good), str(bad)]
    _fails(capsys, argv, "--images", str(bad))


def test_zero_shot_captioned_data_is_not_labelled(tmp_path, clip_folder, capsys):
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "metadata.csv").write_text("file_name,text\na.png,a photo\n")
    argv = ["zero-shot", "--model", str(clip_folder), "--data", str(tmp_path), "--classes", "a"]
    _fails(capsys, argv, "--data", "no class labels")


def test_retrieval_counts_and_names_unreadable_images(tmp_path, clip_folder, capsys):
    folder = captioned_digits_folder(tmp_path / "captioned", "test", 12)
    (folder / "3.png").write_bytes(b"not an image")
    (folder / "5.png").unlink()
    assert main(["zero-shot", "--model", str(clip_folder), "--retrieval", str(folder)]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["retrieval_skipped_images"] == 2
    assert "3.png" in captured.err and "5.png" in captured.err and "--retrieval" in captured.err
    assert set(report["retrieval"]) == {
        f"{d}/recall@{k}" for d in ("image_to_text", "text_to_image") for k in (1, 5, 10)
    }


def test_eval_errors_name_the_commands_own_options(tmp_path, minilm_path, capsys):
    table = tmp_path / "pairs.csv"
    table.write_text("question,answer\nwhat is it,a cat\nwho is it,a dog\n")
    line = _fails(capsys, ["eval", "retrieval", "--model", minilm_path, "--data", str(table)], "--data", "--columns")
    assert "data.columns" not in line and "'anchor'" in line
    line = _fails(capsys, ["eval", "sts", "--model", minilm_path, "--data", str(table)], "--data", "sentence1")
    assert "data.columns" not in line and "score_column" not in line
    table.write_text("anchor,positive\nwhat is it,a cat\nwho is it,\n")
    line = _fails(capsys, ["eval", "retrieval", "--model", minilm_path, "--data", str(table)], "--data", "row 1")
    assert "skip_bad_rows" not in line


def test_eval_unreadable_table_names_the_file(tmp_path, minilm_path, capsys):
    table = tmp_path / "latin1.csv"
    table.write_bytes("anchor,positive\ncaf\xe9,na\xefve\n".encode("latin-1"))
    _fails(capsys, ["eval", "retrieval", "--model", minilm_path, "--data", str(table)], "latin1.csv")


# ---- finding 17: recipes for the user's own data evaluate on nothing the user did not name ----------------------


def test_missing_evaluation_file_names_the_key(tiny_bert_path, pairs_csv, tmp_path, capsys):
    args = pairs_training_args(tiny_bert_path, pairs_csv, tmp_path / "run")
    missing = tmp_path / "my-dev.csv"
    _fails(capsys, [*args, f"eval.sts={missing}"], "eval.sts", f"'{missing}'", "does not exist")
    _fails(capsys, [*args, f"eval.retrieval={missing}"], "eval.retrieval", f"'{missing}'", "does not exist")


def test_own_pairs_command_runs_anywhere_and_evaluates_nothing_unnamed(
    tiny_bert_path, pairs_csv, tmp_path, monkeypatch, capsys
):
    """The README's "your own pairs" command, run outside the repository: no shared data is read or reported."""
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    argv = ["train", str(RECIPES / "sbert_pairs.yaml"), f"data.train={pairs_csv}", "data.columns=[anchor, positive]"]
    argv += [f"model.name_or_path={tiny_bert_path}", f"output_dir={run}", "train.progress_bar=false"]
    assert main(argv) == 0, capsys.readouterr().err
    assert json.loads((run / "summary.json").read_text())["metrics"] == {}
    assert "sts-dev" not in (run / "model" / "README.md").read_text()


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_evaluate_only_on_their_training_data(path):
    recipe = load_recipe(path)
    evaluation = getattr(recipe, "eval", None)  # a recipe with no eval section (cpc) evaluates on nothing
    sources = [getattr(evaluation, key, None) for key in ("sts", "retrieval", "zero_shot", "train")]
    text = getattr(recipe.data, "text", None)  # a views recipe on text trains on data.text
    datasets = list((getattr(recipe.data, "datasets", None) or {}).values())  # a multi-dataset recipe's sources
    train = text.train if text is not None else recipe.data.train or (datasets[0].train if datasets else "")
    for source in filter(None, sources):
        if source is True or source == "held_out":  # clap: the held-out takes of data.train itself
            continue
        if ":" in source or not train:  # sklearn:digits
            assert source == train, (path.name, source)
        else:
            assert Path(source).parent == Path(train).parent, (path.name, source)


# ---- --debug, unexpected errors, a real process ---------------------------------------------------------------


@pytest.mark.parametrize("position", ["before", "after"])
def test_debug_shows_the_traceback(tmp_path, sts_csv, capsys, position):
    (tmp_path / "empty").mkdir()
    argv = ["eval", "sts", "--model", str(tmp_path / "empty"), "--data", str(sts_csv)]
    argv = ["--debug", *argv] if position == "before" else [*argv, "--debug"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "ModelFolderError" in err
    assert err.strip().splitlines()[-1].startswith("mmcontrast eval: error: --model: ")


def test_unexpected_error_is_one_line_that_mentions_debug(monkeypatch, capsys):
    def broken(output_dir):
        raise RuntimeError("something inside went wrong")

    monkeypatch.setattr("mmcontrast.demo.run_demo", broken)
    assert main(["demo"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "RuntimeError: something inside went wrong" in lines[0] and "--debug" in lines[0]


def test_real_process_prints_one_line_and_exit_2(tmp_path, sts_csv):
    (tmp_path / "empty").mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
    for model, named in ((str(tmp_path / "empty"), "is empty"), ("nosuch-org/nosuch-model", "HF_HUB_OFFLINE")):
        result = subprocess.run(
            [sys.executable, "-m", "mmcontrast.cli", "eval", "sts", "--model", model, "--data", str(sts_csv)],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
        )
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr and len(lines) == 1, result.stderr
        assert lines[0].startswith("mmcontrast eval: error: --model: ") and named in lines[0]
