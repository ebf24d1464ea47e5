"""Load tabular training and evaluation data into a ``datasets.Dataset`` and check its text and score columns.

Sources: csv / tsv (with a header row), json (a list of records, or one record per line) / jsonl, parquet, a folder
that ``datasets`` understands, a hub dataset name (a subset and split of either), or the STS Benchmark's own
headerless TSV layout (``format: stsb``).

Local csv / tsv / json / jsonl files are read here rather than by ``datasets``, so that every error names the file,
the line (counted from 1, as a text editor counts) and what to do. A table read from a local file keeps the line of
each of its rows, so that :func:`check_columns` names the line of a bad row as well. Parquet files, folders and hub
datasets are read by ``datasets.load_dataset``, whose errors are re-raised naming the source.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import math
import re
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import datasets
from datasets.exceptions import DatasetGenerationError

TableFormat = Literal["auto", "csv", "tsv", "json", "parquet", "stsb", "hub"]
RecordFormat = Literal["csv", "tsv", "json", "jsonl"]

RECORD_SUFFIXES: dict[str, RecordFormat] = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "jsonl"}
"""The suffixes of the small local tables that list files (audio, image, video paths), and their formats."""
_SUFFIX_FORMATS = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
_LAYOUTS = {
    "csv": "a header line naming the columns, then one comma-separated row per line",
    "tsv": "a header line naming the columns, then one tab-separated row per line",
    "json": 'a list of records, [{"column": value, ...}, ...], or one record per line',
    "jsonl": 'one record per line, {"column": value, ...}',
}
_DELIMITERS = {",": "a comma", "\t": "a tab"}
_INTEGER = re.compile(r"[+-]?[0-9]+")
_NUMBER = re.compile(r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:e[+-]?[0-9]+)?|inf|infinity|nan)", re.IGNORECASE)
_JSON_SEPARATORS = re.compile(r"[ \t\r\n,]*")
# The line each row of a table read from a local file starts on, kept beside the table for error messages.
_ROW_LINES: weakref.WeakKeyDictionary[datasets.Dataset, list[int]] = weakref.WeakKeyDictionary()


@dataclass
class Records:
    """The records of a local table file and the line each starts on (counted from 1).

    Attributes:
        rows: one dict per record; csv / tsv values are the cells' text as written.
        lines: the line each record starts on.
    """

    rows: list[dict[str, Any]]
    lines: list[int]


def label_rows(rows: list[dict[str, Any]], label_column: str | None) -> tuple[list[dict[str, Any]], list[str]]:
    """Map a label column (when every row has it) to class indices under ``label``, its text under ``label_name``.

    Classes are sorted by name, as numbers when every name is an integer ("10" after "9"). Returns the new rows
    and the class names (``[]`` and the rows unchanged when the column is missing from some row).
    """
    if not label_column or not rows or not all(label_column in row for row in rows):
        return rows, []
    names = {str(row[label_column]) for row in rows}
    numeric = all(name.lstrip("-").isdigit() for name in names)
    classes = sorted(names, key=lambda name: (int(name), name) if numeric else (0, name))
    index = {name: i for i, name in enumerate(classes)}
    out = []
    for row in rows:
        row = dict(row)
        row["label_name"] = str(row.pop(label_column) if label_column != "label" else row["label"])
        row["label"] = index[row["label_name"]]
        out.append(row)
    return out, classes


def read_records(path: Path, format: RecordFormat) -> Records:
    """Read the records of a local csv / tsv (a header line, then one row per line), json (a list of objects, or one
    object per line) or jsonl (one object per line) file, as UTF-8 text.

    Raises:
        ValueError: naming the file, the line and what to do, for an empty file, a header without rows, text that
            is not UTF-8, a row with more or fewer fields than the header, invalid JSON, or a record that is not a
            JSON object.
    """
    text = _read_text(path)
    if not text.strip():
        raise ValueError(f"{path} is empty; a {format} table holds {_LAYOUTS[format]}")
    if format == "csv":
        return _csv_records(path, text, ",")
    if format == "tsv":
        return _csv_records(path, text, "\t")
    if format == "json":
        return _json_records(path, text)
    return _json_lines_records(path, text)


def _read_text(path: Path) -> str:
    """The file's text as UTF-8 (a byte-order mark is allowed); a byte that is not UTF-8 is named by its line."""
    data = path.read_bytes()
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ValueError(
            f"{path}, line {line}: not UTF-8 text (byte 0x{data[error.start]:02x}); tables are read as UTF-8: save "
            "the file with UTF-8 encoding (e.g. `iconv -f latin1 -t utf-8 OLD > NEW`)"
        ) from None


def _csv_records(path: Path, text: str, delimiter: str) -> Records:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header: list[str] = []
    header_line = 0
    records = Records([], [])
    last = 0  # the last line read so far; a row with a quoted line break spans several
    try:
        for fields in reader:
            first, last = last + 1, reader.line_num
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue  # a blank line
            if not header:
                header, header_line = _csv_header(path, fields, first), first
            elif len(fields) != len(header):
                raise ValueError(
                    f"{path}, line {first}: {len(fields)} fields, but the header (line {header_line}) names "
                    f"{len(header)} columns ({', '.join(header)}); give each row one value per column, and put a "
                    f"value that holds {_DELIMITERS[delimiter]}, a quote or a line break in double quotes"
                )
            else:
                records.rows.append(dict(zip(header, fields, strict=True)))
                records.lines.append(first)
    except csv.Error as error:
        raise ValueError(f"{path}, line {reader.line_num}: {error}; fix the quoting of that row") from None
    if not records.rows:
        raise ValueError(
            f"{path}, line {header_line}: a header ({', '.join(header)}) and no rows; add one row per line under it"
        )
    return records


def _csv_header(path: Path, fields: list[str], line: int) -> list[str]:
    """Column names; an unnamed column (such as a pandas index) is called ``Unnamed: i`` as pandas does."""
    names = [name or f"Unnamed: {i}" for i, name in enumerate(fields)]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"{path}, line {line}: the header names {repeated} more than once; name each column once")
    return names


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "list", dict: "object"}[type(value)]


def _json_records(path: Path, text: str) -> Records:
    """A .json file: a list of objects or, as ``datasets`` also reads it, one object per line."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        if error.msg == "Extra data" and text.lstrip().startswith("{"):
            return _json_lines_records(path, text)
        raise ValueError(
            f"{path}, line {error.lineno}: not valid JSON ({error.msg}, column {error.colno}); "
            f"a json table holds {_LAYOUTS['json']}"
        ) from None
    first_line = text[: len(text) - len(text.lstrip())].count("\n") + 1
    if not isinstance(document, list):
        raise ValueError(
            f"{path}, line {first_line}: the file holds a JSON {_json_kind(document)}, not a list of records; "
            f"write {_LAYOUTS['json']} (or one record per line in a .jsonl file)"
        )
    records = Records([], [])
    decoder = json.JSONDecoder()
    position, line = text.index("[") + 1, 1
    counted = 0  # text[:counted] holds line - 1 line breaks
    while True:
        position = _JSON_SEPARATORS.match(text, position).end()  # type: ignore[union-attr]
        if text[position] == "]":
            break
        line, counted = line + text.count("\n", counted, position), position
        record, position = decoder.raw_decode(text, position)
        if not isinstance(record, dict):
            raise ValueError(
                f"{path}, line {line}: record {len(records.rows) + 1} of the list is a JSON {_json_kind(record)}, "
                f'not an object; each record is {{"column": value, ...}}'
            )
        records.rows.append(record)
        records.lines.append(line)
    if not records.rows:
        raise ValueError(f"{path}, line {first_line}: an empty list, no records; a json table holds {_LAYOUTS['json']}")
    return records


def _json_lines_records(path: Path, text: str) -> Records:
    records = Records([], [])
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"{path}, line {number}: not valid JSON ({error.msg}, column {error.colno}); a JSON-lines file "
                f"holds {_LAYOUTS['jsonl']}"
            ) from None
        if not isinstance(record, dict):
            raise ValueError(
                f"{path}, line {number}: a JSON {_json_kind(record)}, not an object; a JSON-lines file holds "
                f"{_LAYOUTS['jsonl']}"
            )
        records.rows.append(record)
        records.lines.append(number)
    return records


def _csv_column(cells: list[str]) -> list[Any]:
    """A csv column: empty cells are missing (None); a column whose other cells are all numbers holds numbers."""
    values: list[Any] = [cell if cell != "" else None for cell in cells]
    present = [value for value in values if value is not None]
    if present and all(_INTEGER.fullmatch(value.strip()) for value in present):
        return [None if value is None else int(value) for value in values]
    if present and all(_NUMBER.fullmatch(value.strip()) for value in present):
        return [None if value is None else float(value) for value in values]
    return values


def _json_column(path: Path, name: str, values: list[Any], lines: list[int]) -> list[Any]:
    """A json column as it is, except that numbers among strings become strings (so that :func:`check_columns`
    can name the row of a score that is not a number); other mixes of types are an error naming the line."""
    first_line: dict[str, int] = {}
    for value, line in zip(values, lines, strict=True):
        if value is not None:
            first_line.setdefault(_json_kind(value), line)
    if len(first_line) <= 1:
        return values
    if first_line.keys() == {"number", "string"}:
        return [str(value) if _json_kind(value) == "number" else value for value in values]
    (kind, line), (other, other_line) = sorted(first_line.items(), key=lambda item: item[1])[:2]
    raise ValueError(
        f"{path}, line {other_line}: '{name}' holds a {other}, but on line {line} a {kind}; give '{name}' values of "
        "one type in every record"
    )


def _local_table(path: Path, format: str) -> datasets.Dataset:
    """A csv / tsv / json / jsonl file as a table that remembers the line of each row."""
    jsonl = format == "json" and path.suffix.lower() == ".jsonl"
    records = read_records(path, "jsonl" if jsonl else format)  # type: ignore[arg-type]
    names = list(dict.fromkeys(name for row in records.rows for name in row))
    if format in ("csv", "tsv"):
        columns = {name: _csv_column([row[name] for row in records.rows]) for name in names}
    else:
        columns = {
            name: _json_column(path, name, [row.get(name) for row in records.rows], records.lines) for name in names
        }
    try:
        table = datasets.Dataset.from_dict(columns)
    except (TypeError, ValueError) as error:  # pyarrow's ArrowTypeError / ArrowInvalid
        raise ValueError(
            f"{path}: the values cannot be stored as table columns ({error}); give each column values of one type"
        ) from None
    _ROW_LINES[table] = records.lines
    return table


def _read_stsb(path: Path) -> datasets.Dataset:
    """STS Benchmark TSV: no header; columns genre, file, year, id, score, sentence1, sentence2 (+ extras)."""
    columns: dict[str, list] = {"sentence1": [], "sentence2": [], "score": []}
    lines = []
    rows = csv.reader(io.StringIO(_read_text(path), newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
    for line_number, fields in enumerate(rows, 1):
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
        lines.append(line_number)
    if not lines:
        raise ValueError(f"{path} is empty; an STS Benchmark file holds one tab-separated scored pair per line")
    table = datasets.Dataset.from_dict(columns)
    _ROW_LINES[table] = lines
    return table


def _root_cause(error: BaseException) -> str:
    while error.__cause__ is not None:
        error = error.__cause__
    return str(error) or type(error).__name__


def _load_dataset(source: str, path: Path, format: str, split: str, subset: str | None, key: str) -> datasets.Dataset:
    """A parquet file, a folder or a hub dataset, read by ``datasets``; its errors re-raised naming the source."""
    if format == "parquet":
        what, advice = f"parquet file '{source}'", "check that it is a complete parquet file"
    else:
        chosen = f"subset '{subset}', split '{split}'" if subset else f"split '{split}'"
        what = f"dataset '{source}' ({chosen})"
        advice = "check the folder or hub name and the split; offline, only datasets already in the cache load"
    try:
        if format == "parquet":
            table = datasets.load_dataset("parquet", data_files=str(path), split="train")
        else:
            # datasets keys its cache of a local folder by the folder's layout, not its files' contents: a changed
            # file would be read from the stale cache (datasets 5.2), so a local folder is read afresh each time
            fresh = "force_redownload" if path.is_dir() else None
            table = datasets.load_dataset(source, name=subset, split=split, download_mode=fresh)
    except FileNotFoundError as error:  # datasets' DatasetNotFoundError too
        raise FileNotFoundError(f"{what} not found: {_root_cause(error)}; {advice}") from error
    except (DatasetGenerationError, ValueError, OSError) as error:
        choice = _choice_problem(source, subset, split, key) if format != "parquet" else None
        if choice:
            raise ValueError(f"{what}: {choice}") from error
        raise ValueError(f"{what} could not be read: {_root_cause(error)}; {advice}") from error
    if len(table) == 0:
        raise ValueError(f"{what} has no rows")
    return table


def _choice_problem(source: str, subset: str | None, split: str, key: str) -> str | None:
    """Why ``subset`` / ``split`` of a dataset folder or hub name was refused, listing the ones it has (``None``
    when the subsets and splits cannot be listed, or the ones asked for exist)."""
    try:
        subsets = datasets.get_dataset_config_names(source)
    except Exception:  # the listing only makes a better message; the caller reports the first error
        return None
    named = [name for name in subsets if name != "default"]
    if subset is None and len(named) > 1:
        return f"it has several subsets ({', '.join(named)}): choose one with {key}.subset"
    if subset is not None and subset not in subsets:
        listed = f"its subsets are {', '.join(named)}" if named else "it has no named subsets"
        return f"no subset '{subset}'; {listed}: set {key}.subset to one of them" + ("" if named else " or to null")
    try:
        splits = datasets.get_dataset_split_names(source, subset)
    except Exception:  # as above
        return None
    if split not in splits:
        return f"no split '{split}'; its splits are {', '.join(splits)}: set {key}.split to one of them"
    return None


def _select(table: datasets.Dataset, rows: Sequence[int]) -> datasets.Dataset:
    """``table.select(rows)``, keeping the line of each row."""
    selected = table.select(rows)
    lines = _ROW_LINES.get(table)
    if lines is not None:
        _ROW_LINES[selected] = [lines[row] for row in rows]
    return selected


def _where(table: datasets.Dataset, row: int) -> str:
    """``line L, row R`` for a table read from a local file, else ``row R`` (rows counted from 0)."""
    lines = _ROW_LINES.get(table)
    return f"line {lines[row]}, row {row}" if lines is not None else f"row {row}"


def as_number(value: Any) -> float | None:
    """A score as a float: a number, or text that spells one; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def load_table(
    source: str,
    *,
    format: TableFormat = "auto",
    split: str = "train",
    subset: str | None = None,
    limit: int | None = None,
    min_score: float | None = None,
    score_column: str = "score",
    key: str = "data",
) -> datasets.Dataset:
    """Load ``source`` as a ``datasets.Dataset``.

    ``subset`` and ``split`` choose the part of a folder or hub dataset to read (``datasets.load_dataset(source,
    name=subset, split=split)``; a subset is what the hub calls a dataset's configuration, such as the ``pair`` and
    ``triplet`` subsets of ``sentence-transformers/all-nli``). A subset or split the dataset does not have is an
    error listing the ones it has and naming ``KEY.subset`` / ``KEY.split``; they are ignored for single files.

    In a local csv / tsv file an empty cell is a missing value, and a column whose cells are all numbers holds
    numbers. ``min_score`` keeps rows whose ``score_column`` is at least that (rows without a score are left out);
    ``limit`` then keeps the first rows.

    Raises:
        FileNotFoundError: the file, folder or hub dataset does not exist.
        ValueError: the table cannot be read; the message names the file, the line and what to do.
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
    if format != "hub" and not path.is_file():
        kind = "STS Benchmark" if format == "stsb" else "data"
        raise FileNotFoundError(f"{kind} file '{source}' does not exist")
    if format == "stsb":
        table = _read_stsb(path)
    elif format in ("csv", "tsv", "json"):
        table = _local_table(path, format)
    else:
        table = _load_dataset(str(source), path, format, split, subset, key)
    if min_score is not None:
        table = _scoring_at_least(table, min_score, score_column, source)
    if limit is not None:
        table = _select(table, range(min(limit, len(table))))
    return table


def _scoring_at_least(table: datasets.Dataset, min_score: float, score_column: str, source: str) -> datasets.Dataset:
    if score_column not in table.column_names:
        raise ValueError(f"{source}: min_score needs a '{score_column}' column; found {table.column_names}")
    keep = []
    for row, value in enumerate(table[score_column]):
        if value is None:
            continue
        number = as_number(value)
        if number is None:
            raise ValueError(
                f"{source}: {_where(table, row)}: score column '{score_column}' holds {value!r}, not a number; "
                "min_score needs a number (or nothing) in every row"
            )
        if number >= min_score:
            keep.append(row)
    return _select(table, keep)


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
    score_max: float | None = None,
    source: str = "data",
) -> BadRows:
    """Find rows whose text is missing or empty, or whose score is not a finite number or (with ``score_max``)
    lies outside ``[0, score_max]``. Text that spells a number counts as that number.

    A missing column is an error at once; bad rows are returned so the caller can raise or skip them. Each reason
    names the row (counted from 0) and, for a table read from a local file, its line.
    """
    if score_max is not None and not score_max > 0:
        raise ValueError(f"{source}: score_max must be > 0, got {score_max}; set data.score_max to the top score")
    wanted = [*text_columns, *([score_column] if score_column else [])]
    for column in wanted:
        if column not in table.column_names:
            raise ValueError(
                f"{source}: column '{column}' not found; the data has columns {table.column_names}. "
                "Set data.columns (and data.score_column) to the names in your data."
            )
    bad = BadRows([], [])
    columns = {column: table[column] for column in wanted}
    for row in range(len(table)):
        values = {column: cells[row] for column, cells in columns.items()}
        reason = row_problem(values, text_columns, score_column=score_column, score_max=score_max)
        if reason:
            bad.indices.append(row)
            if len(bad.reasons) < 5:
                bad.reasons.append(f"{_where(table, row)}: {reason}")
    return bad


def row_problem(
    row: dict[str, Any],
    text_columns: Sequence[str],
    *,
    score_column: str | None = None,
    score_max: float | None = None,
) -> str | None:
    """Why a row cannot be trained on (a text missing, not text or empty; a score that is no finite number, or
    outside ``[0, score_max]``), or None for a good row."""
    for column in text_columns:
        value = row.get(column)
        if value is None:
            return f"text column '{column}' is missing (null)"
        if not isinstance(value, str):
            return f"text column '{column}' holds {type(value).__name__} {value!r}, not text"
        if not value.strip():
            return f"text column '{column}' is empty"
    if score_column is not None:
        return _score_problem(row.get(score_column), score_column, score_max)
    return None


def _score_problem(value: Any, column: str, score_max: float | None) -> str | None:
    number = as_number(value)
    if number is None:
        return f"score column '{column}' holds {value!r}, not a number"
    if not math.isfinite(number):
        return f"score column '{column}' holds {number:g}, not a finite number"
    if score_max is not None and not 0 <= number <= score_max:
        return (
            f"score column '{column}' holds {number:g}, outside the allowed range [0, {score_max:g}] "
            "(set data.score_max to the top of the data's score scale)"
        )
    return None


def clean_table(
    table: datasets.Dataset,
    text_columns: Sequence[str],
    *,
    score_column: str | None = None,
    score_max: float | None = None,
    source: str = "data",
    skip_bad_rows: bool = False,
) -> tuple[datasets.Dataset, int]:
    """Check the columns (see :func:`check_columns`); raise naming the first bad row, or (``skip_bad_rows``) drop
    and count them. A score column of text that spells numbers comes back as numbers."""
    bad = check_columns(table, text_columns, score_column=score_column, score_max=score_max, source=source)
    if bad.indices and not skip_bad_rows:
        more = f" ({len(bad.indices)} bad rows in all)" if len(bad.indices) > 1 else ""
        raise ValueError(
            f"{source}: {bad.reasons[0]}{more}. Fix the data, or set data.skip_bad_rows=true to skip such rows."
        )
    if bad.indices:
        drop = set(bad.indices)
        table = _select(table, [i for i in range(len(table)) if i not in drop])
    if score_column is not None and getattr(table.features[score_column], "dtype", None) in ("string", "large_string"):
        numbers = [as_number(value) for value in table[score_column]]
        converted = table.remove_columns(score_column).add_column(score_column, numbers)
        converted = converted.select_columns(table.column_names)
        if table in _ROW_LINES:
            _ROW_LINES[converted] = _ROW_LINES[table]
        table = converted
    return table, len(bad.indices)
