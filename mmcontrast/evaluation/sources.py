"""Evaluation tables, read and checked with errors that name what gave the file.

The same STS and retrieval evaluators run from `mmcontrast eval` (the table is `--data`, its columns
`--columns`) and from a training recipe (`eval.sts`, `eval.retrieval`, `eval.retrieval_columns`); each error
names the option or key the user set, not another command's. Evaluation never skips rows: a bad row is an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import datasets
import datasets.exceptions

from mmcontrast.data.tables import TableFormat, check_columns, load_table


def _missing_file(source: str, format: str = "auto") -> bool:
    """True when ``source`` names a local file that does not exist (a Hub dataset name is not a file)."""
    path = Path(source).expanduser()
    if path.exists():
        return False
    return format not in ("auto", "hub") or bool(path.suffix) or source.startswith(("/", ".", "~"))


def evaluation_table(
    source: str,
    *,
    name: str,
    columns: Sequence[str],
    columns_hint: str,
    score_column: str | None = None,
    format: TableFormat = "auto",
    limit: int | None = None,
    min_score: float | None = None,
) -> datasets.Dataset:
    """Load ``source`` and check that every row has its texts (and a numeric score).

    Args:
        source: the file, folder or Hub dataset.
        name: what gave ``source`` (`--data`, `eval.sts`), named in every error.
        columns: the text columns.
        columns_hint: how to name other columns (`set --columns QUERY DOC ...`), added to a missing-column error.
        score_column: a numeric column that must be there too.
        format, limit, min_score: as :func:`mmcontrast.data.tables.load_table`.
    """
    if _missing_file(source, format):
        raise FileNotFoundError(f"{name}: file '{source}' does not exist")
    try:
        table = load_table(
            source, format=format, limit=limit, min_score=min_score, score_column=score_column or "score"
        )
    except datasets.exceptions.DatasetsError as error:  # the reader's own error is its cause
        cause = error.__cause__ or error
        raise ValueError(f"{name} '{source}': cannot be read as a table ({type(cause).__name__}: {cause})") from error
    wanted = [*columns, *([score_column] if score_column else [])]
    absent = [column for column in wanted if column not in table.column_names]
    if absent:
        raise ValueError(
            f"{name} '{source}': column {', '.join(repr(c) for c in absent)} not found; the table has columns "
            f"{table.column_names}. {columns_hint}"
        )
    bad = check_columns(table, columns, score_column=score_column, source=f"{name} '{source}'")
    if bad.indices:
        more = f" ({len(bad.indices)} bad rows in all)" if len(bad.indices) > 1 else ""
        raise ValueError(f"{name} '{source}': {bad.reasons[0]}{more}; evaluation needs every row: fix the data")
    return table
