"""Run a recipe: data -> method -> engine -> evaluation -> exported model folder with a model card."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from accelerate import PartialState
from accelerate.utils import set_seed

from mmcontrast.data.samplers import NoDuplicatesBatchSampler, ShuffledBatchSampler
from mmcontrast.data.tables import clean_table, load_table
from mmcontrast.engine.trainer import Trainer
from mmcontrast.evaluation.plots import plot_training_curve
from mmcontrast.evaluation.retrieval import RetrievalEvaluator
from mmcontrast.evaluation.sts import STSEvaluator
from mmcontrast.hub.model_card import CardInfo, write_model_card
from mmcontrast.methods.sbert import SentenceBERT
from mmcontrast.modalities.text import TextEncoder
from mmcontrast.recipe import Recipe

_SBERT_USAGE = """from sentence_transformers import SentenceTransformer

model = SentenceTransformer("{path}")
embeddings = model.encode(["A man is playing a guitar.", "Someone plays an instrument."])
print(model.similarity(embeddings, embeddings))"""


def _evaluators(recipe: Recipe) -> dict[str, Any]:
    config = recipe.eval
    evaluators: dict[str, Any] = {}
    if config.sts:
        sts = STSEvaluator.from_file(config.sts, limit=config.limit, batch_size=config.batch_size)
        evaluators["sts"] = lambda method: sts(lambda texts: method.encoder.encode(texts, config.batch_size))
    if config.retrieval:
        retrieval = RetrievalEvaluator.from_pairs(
            config.retrieval,
            columns=config.retrieval_columns,
            format=config.retrieval_format,
            min_score=config.retrieval_min_score,
            limit=config.limit,
        )
        evaluators["retrieval"] = lambda method: retrieval(
            lambda texts: method.encoder.encode(texts, config.batch_size)
        )
    return evaluators


def train_recipe(recipe: Recipe, raw: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train the recipe's method; returns a summary (steps, final metrics, model folder, skipped rows)."""
    set_seed(recipe.train.seed)
    data = recipe.data
    encoder = TextEncoder.from_pretrained(
        recipe.model.name_or_path,
        pooling=recipe.model.pooling,
        normalize=recipe.model.normalize,
        max_length=recipe.model.max_length,
    )
    method = SentenceBERT(encoder, data.columns, recipe.loss, data.score_column, data.score_max)
    table = load_table(
        data.train,
        format=data.format,
        split=data.split,
        limit=data.limit,
        min_score=data.min_score,
        score_column=data.score_column or "score",
    )
    table, skipped = clean_table(
        table,
        data.columns,
        score_column=method.score_column,
        source=f"data.train ({data.train})",
        skip_bad_rows=data.skip_bad_rows,
    )
    state = PartialState()
    no_duplicates = recipe.loss.name == "info_nce" if data.no_duplicates is None else data.no_duplicates
    common = {
        "seed": recipe.train.seed,
        "drop_last": recipe.train.drop_last,
        "num_replicas": state.num_processes,
        "rank": state.process_index,
    }
    if no_duplicates:
        keys = list(zip(*(table[c] for c in data.columns), strict=True))
        sampler = NoDuplicatesBatchSampler(keys, recipe.train.batch_size, **common)
    else:
        sampler = ShuffledBatchSampler(len(table), recipe.train.batch_size, **common)
    output_dir = Path(recipe.output_dir)
    raw = raw if raw is not None else {}
    trainer = Trainer(method, table, sampler, recipe.train, output_dir, evaluators=_evaluators(recipe), run_config=raw)
    result = trainer.train(resume_from=recipe.resume_from)
    summary = {
        "global_step": result.global_step,
        "metrics": result.final_metrics,
        "skipped_rows": skipped,
        "model_dir": str(output_dir / "model"),
    }
    if state.is_main_process:
        _export(trainer.method, recipe, raw, result.log_history, result.final_metrics, output_dir)
        (output_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    state.wait_for_everyone()
    return summary


def _export(
    method: SentenceBERT,
    recipe: Recipe,
    raw: dict[str, Any],
    log_history: list[dict[str, Any]],
    metrics: dict[str, float],
    output_dir: Path,
) -> None:
    model_dir = method.encoder.save_pretrained(output_dir / "model")
    image = None
    if any("loss" in r for r in log_history):
        plot_training_curve(log_history, model_dir / "training_curve.png")
        image = "training_curve.png"
    tasks = {"sts": "sentence-similarity", "retrieval": "retrieval"}
    sources = {"sts": recipe.eval.sts, "retrieval": recipe.eval.retrieval}
    results = []
    for name, value in metrics.items():
        evaluator, metric = name.split("/", 1)
        results.append((tasks[evaluator], Path(sources[evaluator] or evaluator).stem, metric, value))
    write_model_card(
        model_dir,
        CardInfo(
            title=f"mmcontrast {recipe.method} model ({output_dir.name})",
            description=(
                f"A sentence-transformers model trained with the Sentence-BERT method of mmcontrast, loss "
                f"`{recipe.loss.name}`, on `{recipe.data.train}`. It maps text to "
                f"{method.encoder.embedding_dim}-dimensional embeddings for semantic similarity and search."
            ),
            library_name="sentence-transformers",
            pipeline_tag="sentence-similarity",
            usage=_SBERT_USAGE.format(path=model_dir),
            recipe=yaml.safe_dump(raw, sort_keys=False),
            base_model=recipe.model.name_or_path if not Path(recipe.model.name_or_path).exists() else None,
            tags=["sentence-transformers", "sentence-similarity", "feature-extraction"],
            results=results,
            image=image,
        ),
    )
