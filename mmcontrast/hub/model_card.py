"""Model cards written through huggingface_hub's ``ModelCard`` / ``ModelCardData``.

The YAML header carries library, pipeline tag, tags, base model, datasets and the evaluation results as
model-index entries (which the Hub and ``ModelCard.load`` parse back); the body has a usage snippet for the
library that loads the folder, the evaluation table, and the recipe that produced the model. Local paths in the
description and the recipe are relative to the run folder (:mod:`mmcontrast.hub.portable_paths`); the usage snippet
names the local folder until ``mmcontrast push`` replaces it with the repo id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from mmcontrast.hub.portable_paths import portable_text

_DATA_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".parquet", ".txt", ".arrow")

_TEMPLATE = """---
{{ card_data }}
---

# {{ title }}

{{ description }}

## Usage

```python
{{ usage }}
```

## Evaluation

{{ results_table }}
{% if image %}
![training curve]({{ image }})
{% endif %}
## Training

Trained with [mmcontrast](https://github.com/mmcontrast/mmcontrast) using this recipe:

```yaml
{{ recipe }}
```
"""


@dataclass
class CardInfo:
    """What a model card says about a model.

    Attributes:
        title: heading of the card.
        description: one paragraph on what the model is.
        library_name: the library that loads the folder (``sentence-transformers``, ``transformers``...).
        pipeline_tag: the Hub task (``sentence-similarity``, ``zero-shot-image-classification``...).
        usage: a runnable snippet loading the model.
        recipe: the recipe (YAML text) that produced the model.
        base_model: the model it was fine-tuned from, if any (kept in the metadata only if it is a Hub id).
        datasets: what it was trained on (kept in the metadata only if they are Hub dataset ids, not local files).
        tags: extra Hub tags.
        results: evaluation results: (task type, dataset name, metric name, value).
        image: a file inside the model folder to show (training curve).
    """

    title: str
    description: str
    library_name: str
    pipeline_tag: str
    usage: str
    recipe: str
    base_model: str | None = None
    datasets: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    results: list[tuple[str, str, str, float]] = field(default_factory=list)
    image: str | None = None


def write_model_card(directory: str | Path, info: CardInfo) -> Path:
    """Write ``README.md`` with YAML metadata into ``directory`` and return its path."""
    eval_results = [
        EvalResult(task_type=task, dataset_type=dataset, dataset_name=dataset, metric_type=metric, metric_value=value)
        for task, dataset, metric, value in info.results
    ]
    data = ModelCardData(
        library_name=info.library_name,
        pipeline_tag=info.pipeline_tag,
        tags=["mmcontrast", "contrastive-learning", *info.tags],
        base_model=hub_id(info.base_model),
        datasets=[name for name in info.datasets if hub_id(name)] or None,
        eval_results=eval_results or None,
        model_name=info.title,
    )
    rows = ["| task | dataset | metric | value |", "|---|---|---|---|"]
    rows += [f"| {t} | {d} | {m} | {v:.4f} |" for t, d, m, v in info.results]
    card = ModelCard.from_template(
        data,
        template_str=_TEMPLATE,
        title=info.title,
        description=portable_text(info.description, Path(directory).resolve().parent),  # in its run folder
        usage=info.usage,
        results_table="\n".join(rows) if info.results else "No evaluation was run.",
        recipe=info.recipe.strip(),
        image=info.image,
    )
    path = Path(directory) / "README.md"
    card.save(path)
    return path


def hub_id(name: str | None) -> str | None:
    """``name`` if it can be a Hub repo id (not a local path, not a data file, not ``sklearn:digits``), else None."""
    if not name or Path(name).exists() or name.lower().endswith(_DATA_SUFFIXES):
        return None
    try:
        validate_repo_id(name)
    except HFValidationError:
        return None
    return name


def training_curve(log_history: Sequence[dict[str, Any]], model_dir: Path) -> str | None:
    """Plot the run's training curve as ``training_curve.png`` in the model folder; the file name for
    :attr:`CardInfo.image`, or None when no training loss was logged."""
    from mmcontrast.evaluation.plots import plot_training_curve

    if not any("loss" in record for record in log_history):
        return None
    return plot_training_curve(log_history, model_dir / "training_curve.png").name


PROBE_TASKS = {
    "audio": "audio-classification",
    "image": "image-classification",
    "text": "text-classification",
    "video": "video-classification",
}
"""The Hub task of a probe's model-index entry, by the encoder's modality."""
_NEW_CARD_PIPELINES = {
    "audio": "feature-extraction",
    "image": "image-feature-extraction",
    "text": "feature-extraction",
    "video": "feature-extraction",
}
_PROBE_BLOCK = ("<!-- mmcontrast probe results -->", "<!-- end mmcontrast probe results -->")


def update_card_results(
    directory: str | Path,
    results: Sequence[tuple[str, str, str, float]],
    *,
    modality: str,
    metric_type: str = "accuracy",
    dataset_split: str = "test",
) -> Path:
    """Add ``results`` (task type, dataset name, metric name, value) to the model card of ``directory`` as
    model-index entries, replacing any entry of the same task, dataset and metric name; the rest of the card is kept.

    The YAML header is read and written by huggingface_hub (``ModelCard.load`` / ``save``); the body gets a
    "Probe results" table between HTML comment markers, rewritten in place on later runs. A folder without a
    ``README.md`` gets a minimal card (library ``mmcontrast``, the pipeline tag of its ``modality``).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"--update-card: '{directory}' is not a local model folder; the card is its README.md")
    path = directory / "README.md"
    if path.is_file():
        try:
            card = ModelCard.load(path)
        except Exception as error:  # huggingface_hub raises ValueError / YAMLError for a broken header
            raise ValueError(
                f"--update-card: the model card '{path}' has a YAML header huggingface_hub cannot read ({error}); "
                "fix or remove its front matter"
            ) from error
    else:
        data = ModelCardData(
            library_name="mmcontrast",
            pipeline_tag=_NEW_CARD_PIPELINES.get(modality, "feature-extraction"),
            tags=["mmcontrast", "contrastive-learning", modality],
        )
        card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n# {directory.resolve().name}\n")
    new = [
        EvalResult(
            task_type=task,
            dataset_type=dataset,
            dataset_name=dataset,
            dataset_split=dataset_split,
            metric_type=metric_type,
            metric_name=metric,
            metric_value=float(value),
        )
        for task, dataset, metric, value in results
    ]
    replaced = {(item.task_type, item.dataset_name, item.metric_name) for item in new}
    kept = [
        item
        for item in card.data.eval_results or []
        if (item.task_type, item.dataset_name, item.metric_name) not in replaced
    ]
    card.data.eval_results = kept + new
    card.data.model_name = card.data.model_name or directory.resolve().name
    if not card.data.pipeline_tag:
        card.data.pipeline_tag = _NEW_CARD_PIPELINES.get(modality, "feature-extraction")
    card.text = _with_probe_table(
        card.text, [(i.task_type, i.dataset_name, i.metric_name, i.metric_value) for i in new]
    )
    card.save(path)
    return path


def _with_probe_table(text: str, results: Sequence[tuple[str, str, str, float]]) -> str:
    """``text`` with its probe-results block holding ``results`` merged into the rows it already has (same task,
    dataset and metric: replaced); the block goes before ``## Training`` when it is new, else at the end."""
    start, end = _PROBE_BLOCK
    rows: dict[tuple[str, str, str], str] = {}
    before, after = text, ""
    if start in text and end in text.split(start, 1)[1]:
        before, rest = text.split(start, 1)
        block, after = rest.split(end, 1)
        for line in block.splitlines():
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if len(cells) == 4 and cells[0] not in ("task", "") and not set(cells[0]) <= {"-"}:
                rows[(cells[0], cells[1], cells[2])] = cells[3]
    for task, dataset, metric, value in results:
        rows[(task, dataset, metric)] = f"{value:.4f}"
    table = ["| task | dataset | metric | value |", "|---|---|---|---|"]
    table += [f"| {task} | {dataset} | {metric} | {value} |" for (task, dataset, metric), value in rows.items()]
    block = (
        f"{start}\n## Probe results\n\nFrozen-feature probes (`mmcontrast eval probe`), scored on held-out data.\n\n"
        + "\n".join(table)
        + f"\n{end}"
    )
    if start in text:
        return before + block + after
    if "\n## Training" in text:
        head, tail = text.split("\n## Training", 1)
        return f"{head.rstrip()}\n\n{block}\n\n## Training{tail}"
    return f"{text.rstrip()}\n\n{block}\n"
