"""Load tabular training and evaluation data into a ``datasets.Dataset`` and check its text columns.

Sources: csv / tsv (with a header row), json / jsonl, parquet, a folder that ``datasets`` understands, a hub
dataset name, or the STS Benchmark's own headerless TSV layout (``format: stsb``).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import datasets

TableFormat = Literal["auto", "csv", "tsv", "json", "parquet", "stsb", "hub"]

_SUFFIX_FORMATS = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def _read_stsb(path: Path) -> datasets.Dataset:
    """STS Benchmark TSV: no header; columns genre, file, year, id, score, sentence1, sentence2 (+ extras)."""
    columns: dict[str, list] = {"sentence1": [], "sentence2": [], "score": []}
    with path.open(encoding="utf-8") as handle:
        for line_number, fields in enumerate(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE), 1):
            if len(fields) < 7:
                raise ValueError(
                    f"{path}, line {line_number}: expected at least 7 tab-separated fields "
                    f"(genre, file, year, id, score, sentence1, sentence2), found {len(fields)}"
                )
            try:
                score = float(fields[4])
            except ValueError:
                raise ValueError(f"{path}, line {line_number}: score '{fields[4]}' is not a number") from None
            columns["score"].append(score)
            columns["sentence1"].append(fields[5])
            columns["sentence2"].append(fields[6])
    return datasets.Dataset.from_dict(columns)


def load_table(
    source: str,
    *,
    format: TableFormat = "auto",
    split: str = "train",
    limit: int | None = None,
    min_score: float | None = None,
    score_column: str = "score",
) -> datasets.Dataset:
    """Load ``source`` as a ``datasets.Dataset``.

    ``min_score`` keeps rows whose ``score_column`` is at least that; ``limit`` then keeps the first rows.
    """
    path = Path(source).expanduser()
    if format == "auto":
        if path.is_file():
            format = _SUFFIX_FORMATS.get(path.suffix.lower(), "csv")  # type: ignore[assignment]
        elif path.is_dir():
            format = "hub"
        elif path.suffix or str(source).startswith(("/", ".", "~")):
            raise FileNotFoundError(f"data file '{source}' does not exist")
        else:
            format = "hub"
    if format == "stsb":
        if not path.is_file():
            raise FileNotFoundError(f"STS Benchmark file '{source}' does not exist")
        table = _read_stsb(path)
    elif format == "hub":
        table = datasets.load_dataset(str(source), split=split)
    else:
        if not path.is_file():
            raise FileNotFoundError(f"data file '{source}' does not exist")
        builder = "csv" if format == "tsv" else format
        extra = {"delimiter": "\t"} if format == "tsv" else {}
        table = datasets.load_dataset(builder, data_files=str(path), split="train", **extra)
    if min_score is not None:
        if score_column not in table.column_names:
            raise ValueError(f"{source}: min_score needs a '{score_column}' column; found {table.column_names}")
        table = table.filter(lambda row: row[score_column] is not None and row[score_column] >= min_score)
    if limit is not None:
        table = table.select(range(min(limit, len(table))))
    return table


@dataclass
class BadRows:
    """Rows rejected by :func:`check_columns`: their indices and the reason for the first few."""

    indices: list[int]
    reasons: list[str]


def check_columns(
    table: datasets.Dataset,
    text_columns: Sequence[str],
    *,
    score_column: str | None = None,
    source: str = "data",
) -> BadRows:
    """Find rows whose text is missing or empty, or whose score is not a number.

    A missing column is an error at once; bad rows are returned so the caller can raise or skip them.
    """
    wanted = [*text_columns, *([score_column] if score_column else [])]
    for column in wanted:
        if column not in table.column_names:
            raise ValueError(
                f"{source}: column '{column}' not found; the data has columns {table.column_names}. "
                "Set data.columns (and data.score_column) to the names in your data."
            )
    bad = BadRows([], [])
    texts = {column: table[column] for column in text_columns}
    scores = table[score_column] if score_column else None
    for row in range(len(table)):
        reason = None
        for column in text_columns:
            value = texts[column][row]
            if value is None:
                reason = f"row {row}: text column '{column}' is missing (null)"
            elif not isinstance(value, str):
                reason = f"row {row}: text column '{column}' holds {type(value).__name__} {value!r}, not text"
            elif not value.strip():
                reason = f"row {row}: text column '{column}' is empty"
            if reason:
                break
        if reason is None and scores is not None:
            value = scores[row]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
                reason = f"row {row}: score column '{score_column}' holds {value!r}, not a number"
        if reason:
            bad.indices.append(row)
            if len(bad.reasons) < 5:
                bad.reasons.append(reason)
    return bad


def clean_table(
    table: datasets.Dataset,
    text_columns: Sequence[str],
    *,
    score_column: str | None = None,
    source: str = "data",
    skip_bad_rows: bool = False,
) -> tuple[datasets.Dataset, int]:
    """Check the columns; raise naming the first bad row, or (``skip_bad_rows``) drop and count them."""
    bad = check_columns(table, text_columns, score_column=score_column, source=source)
    if not bad.indices:
        return table, 0
    if not skip_bad_rows:
        more = f" ({len(bad.indices)} bad rows in all)" if len(bad.indices) > 1 else ""
        raise ValueError(
            f"{source}: {bad.reasons[0]}{more}. Fix the data, or set data.skip_bad_rows=true to skip such rows."
        )
    drop = set(bad.indices)
    keep = [i for i in range(len(table)) if i not in drop]
    return table.select(keep), len(drop)
