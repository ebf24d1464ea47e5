"""The views recipe on text: sentences -> text views -> a text encoder (SimCSE, or any one-tower method).

Set `model.text` (the encoder, as in the sbert recipe), `data.text` (a table whose text columns give the training
sentences; duplicates are dropped, labels and scores ignored) and optionally `views.text` (word deletion, swaps,
masking; all off: the sentence twice, SimCSE's dropout views). With `method: simclr`, `model.loss: info_nce`,
`model.head.kind: none`... the recipe is unsupervised SimCSE; every other views method runs on text the same way.
`eval.sts` scores the encoder on an STS file during the run; the export is a sentence-transformers folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import yaml

from mmcontrast.data.tables import TableFormat, load_table
from mmcontrast.engine.trainer import TrainingResult
from mmcontrast.evaluation.sts import STSEvaluator
from mmcontrast.hub.model_card import CardInfo, training_curve, write_model_card
from mmcontrast.methods.views import ViewsMethod
from mmcontrast.modalities.text import TextEncoder
from mmcontrast.recipes.base import RecipeParts, batch_sampler
from mmcontrast.recipes.sbert import SENTENCE_TRANSFORMERS_USAGE
from mmcontrast.recipes.view_methods import build_method, objective
from mmcontrast.typed_config import NonNegativeInt, PositiveInt, Range
from mmcontrast.views import ViewsDataset
from mmcontrast.views.text import text_transform

Probability = Annotated[float, Range(ge=0, lt=1)]


@dataclass
class TextViewsConfig:
    """Text views (`views.text:` section; text recipes only), drawn per row from the views' seed.

    Steps in order (mmcontrast.views.text): word deletion, swaps, masking. All off: the sentence itself twice, the
    views of unsupervised SimCSE (the encoder's dropout makes the two embeddings differ).

    Attributes:
        deletion: probability of dropping each word.
        swaps: number of random word swaps.
        masking: probability of replacing each word with the mask token.
        mask_token: the mask token (default: the tokenizer's, else `[MASK]`).
    """

    deletion: Probability = 0.0
    swaps: NonNegativeInt = 0
    masking: Probability = 0.0
    mask_token: str | None = None


@dataclass
class TextSentencesConfig:
    """Training sentences of a text recipe (`data.text:` section).

    Attributes:
        train: a csv / tsv / json / jsonl / parquet file, a folder or a hub dataset; `format: stsb` reads the STS
            Benchmark TSV.
        format: how to read `train` (`auto` goes by the suffix).
        split: split of a hub dataset.
        columns: the text columns; the unique non-empty texts of all of them are the training rows (scores and
            labels are ignored).
        limit: use only the first N rows of the table.
    """

    train: str = ""
    format: TableFormat = "auto"
    split: str = "train"
    columns: list[str] = field(default_factory=lambda: ["text"])
    limit: PositiveInt | None = None


def sentences(config: TextSentencesConfig) -> list[str]:
    """The unique non-empty texts of `data.text`'s columns, in first-seen order (row by row, column by column)."""
    if not config.train:
        raise ValueError(
            "data.text.train is not set: a text recipe reads its sentences from a table (see recipes/simcse_stsb.yaml)"
        )
    table = load_table(config.train, format=config.format, split=config.split, limit=config.limit)
    missing = [column for column in config.columns if column not in table.column_names]
    if missing:
        raise ValueError(
            f"data.text.columns {missing} are not columns of '{config.train}' (it has {table.column_names})"
        )
    seen: dict[str, None] = {}
    for row in table.select_columns(config.columns):
        for column in config.columns:
            text = row[column]
            if isinstance(text, str) and text.strip():
                seen.setdefault(text.strip(), None)
    if not seen:
        raise ValueError(f"data.text.train '{config.train}': no non-empty text in columns {config.columns}")
    return list(seen)


def text_parts(recipe: Any, raw: dict[str, Any]) -> RecipeParts:
    """Text encoder, method, seeded text views of the training sentences, sampler, STS evaluation and export."""
    model, data = recipe.model.text, recipe.data.text
    assert model is not None and data is not None  # checked by the recipe's modality()
    sts = None
    if recipe.eval.sts:
        sts = STSEvaluator.from_file(recipe.eval.sts, limit=recipe.eval.limit, name="eval.sts")
    encoder = TextEncoder.from_pretrained(
        model.name_or_path, pooling=model.pooling, normalize=model.normalize, max_length=model.max_length
    )
    texts = sentences(data)
    method = build_method(recipe, encoder, "text", len(texts))
    views = recipe.views.text
    mask_token = views.mask_token or getattr(encoder.tokenizer, "mask_token", None) or "[MASK]"
    transform = text_transform(views.deletion, views.masking, views.swaps, mask_token)
    seed = recipe.train.seed if recipe.views.seed is None else recipe.views.seed
    dataset = ViewsDataset(
        [{"text": text} for text in texts], transform, seed=seed, num_views=recipe.views.num_views, key="text"
    )
    evaluators: dict[str, Any] = {}
    if sts is not None:
        evaluators["sts"] = lambda method: sts(lambda batch: method.text_encoder.encode(batch, 64))
    print(f"data.text: {len(texts)} unique sentences from {data.columns} of {data.train}")
    return RecipeParts(
        method=method,
        dataset=dataset,
        batch_sampler=batch_sampler(recipe.train, len(dataset)),
        evaluators=evaluators,
        export=lambda trained, result, output_dir, model_dir: export_text(
            trained, recipe, raw, result, output_dir, model_dir
        ),
    )


def export_text(
    method: ViewsMethod, recipe: Any, raw: dict[str, Any], result: TrainingResult, output_dir: Path, model_dir: Path
) -> Path:
    """The text encoder as a sentence-transformers folder (the head dropped), a model card and the curve."""
    encoder = method.text_encoder
    encoder.save_pretrained(model_dir)
    views = recipe.views.text
    steps = [f"{name} {value}" for name, value in vars(views).items() if name != "mask_token" and value]
    described = ", ".join(steps) if steps else "the sentence itself twice (SimCSE's dropout views)"
    results = [
        ("sentence-similarity", Path(recipe.eval.sts or "sts").stem, key.split("/", 1)[1], value)
        for key, value in result.final_metrics.items()
        if key.startswith("sts/")
    ]
    write_model_card(
        model_dir,
        CardInfo(
            title=f"mmcontrast {recipe.method} text encoder ({output_dir.name})",
            description=(
                f"A sentence-transformers model trained with the {objective(recipe)} of mmcontrast on the unique "
                f"sentences of `{recipe.data.text.train}` (columns {recipe.data.text.columns}; scores and labels "
                f"not used), views: {described}. The heads were dropped. It maps text to "
                f"{encoder.embedding_dim}-dimensional embeddings."
            ),
            library_name="sentence-transformers",
            pipeline_tag="sentence-similarity",
            usage=SENTENCE_TRANSFORMERS_USAGE.format(path=output_dir / "model"),
            recipe=yaml.safe_dump(raw, sort_keys=False),
            base_model=recipe.model.text.name_or_path,
            datasets=[recipe.data.text.train],
            tags=["sentence-transformers", "sentence-similarity", recipe.method, "self-supervised"],
            results=results,
            image=training_curve(result.log_history, model_dir),
        ),
    )
    return model_dir
