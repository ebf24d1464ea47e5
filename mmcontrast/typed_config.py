"""Typed configuration: nested dataclasses built from YAML dicts, with errors that name the key.

A recipe is a YAML file whose sections map onto dataclasses. Every key is checked: an unknown key, a value
of the wrong type or a number out of range raises :class:`ConfigError` naming the source, the dotted key (and
a close spelling when there is one). Command-line overrides are ``dotted.key=value`` strings whose value is
parsed as YAML; a YAML syntax error names the file or the override, the line and the column.

Numeric keys declare their allowed values in the type, ``Annotated[int, Range(ge=1)]`` (or one of the aliases
below, such as :data:`PositiveInt`), so the range is part of the generated recipe reference. :func:`build`
checks the values it reads; :func:`check_ranges` checks a config built in Python. Floats must be finite.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A recipe or override has an unknown key, a value of the wrong type or out of range, or bad YAML."""


@dataclass(frozen=True)
class Range:
    """Allowed values of a numeric key, declared in its type: ``Annotated[float, Range(gt=0)]``.

    Give at most one lower bound (``ge``: >=, ``gt``: >) and at most one upper bound (``le``: <=, ``lt``: <);
    no bound at all declares "any finite number". Inside ``list[...]`` it applies to every item.
    """

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def __post_init__(self) -> None:
        if (self.ge is not None and self.gt is not None) or (self.le is not None and self.lt is not None):
            raise TypeError(f"{self!r}: give at most one lower bound (ge or gt) and one upper bound (le or lt)")

    def __contains__(self, value: float) -> bool:
        return (
            math.isfinite(value)
            and (self.ge is None or value >= self.ge)
            and (self.gt is None or value > self.gt)
            and (self.le is None or value <= self.le)
            and (self.lt is None or value < self.lt)
        )

    def __str__(self) -> str:
        """``>= 1``, ``> 0``, ``in [0, 1)``, ... or ``any finite number``."""
        low = (">=", "[", self.ge) if self.ge is not None else (">", "(", self.gt) if self.gt is not None else None
        high = ("<=", "]", self.le) if self.le is not None else ("<", ")", self.lt) if self.lt is not None else None
        if low and high:
            return f"in {low[1]}{low[2]}, {high[2]}{high[1]}"
        one = low or high
        return f"{one[0]} {one[2]}" if one else "any finite number"


PositiveInt = Annotated[int, Range(ge=1)]
"""A count or size of at least 1 (steps, rows, dimensions)."""
NonNegativeInt = Annotated[int, Range(ge=0)]
"""A count where 0 has a documented meaning (an interval of 0: never)."""
PositiveFloat = Annotated[float, Range(gt=0)]
"""A strictly positive number (learning rate, temperature, scale)."""
NonNegativeFloat = Annotated[float, Range(ge=0)]
"""A number of at least 0 (weight decay, a norm, a strength where 0 turns it off)."""
UnitFloat = Annotated[float, Range(ge=0, le=1)]
"""A fraction or probability in [0, 1]."""
FiniteFloat = Annotated[float, Range()]
"""Any finite number (a threshold on user data)."""
Seed = Annotated[int, Range(ge=0, le=2**32 - 1)]
"""A random seed (NumPy accepts 0 .. 2**32 - 1)."""


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Annotated:
        base, *extras = get_args(tp)
        ranges = [str(extra) for extra in extras if isinstance(extra, Range)]
        return f"{_type_name(base)} ({', '.join(ranges)})" if ranges else _type_name(base)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in get_args(tp))}]"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and return it converted (int -> float, dict -> dataclass)."""
    origin = get_origin(tp)

    def fail() -> ConfigError:
        return ConfigError(f"{source}: key '{key}' must be {_type_name(tp)}, got {value!r} ({type(value).__name__})")

    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise fail()
        return build(tp, value, source=source, prefix=f"{key}.")
    if origin is Annotated:
        return _convert(value, get_args(tp)[0], key, source)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise fail()
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key, source)
            except ConfigError:
                continue
        raise fail()
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise fail()
    if origin is list:
        if not isinstance(value, list):
            raise fail()
        (item_tp,) = get_args(tp)
        return [_convert(v, item_tp, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise fail()
        key_tp, val_tp = get_args(tp)
        return {_convert(k, key_tp, key, source): _convert(v, val_tp, f"{key}.{k}", source) for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise fail()
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise fail()
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise fail()
    if tp is str:
        if isinstance(value, str):
            return value
        raise fail()
    raise TypeError(f"unsupported config annotation {tp!r} for key '{key}'")


def _fits(value: Any, tp: Any) -> bool:
    """Whether an already converted ``value`` is of the (non-null) union member ``tp``."""
    origin = get_origin(tp)
    if origin is Annotated:
        return _fits(value, get_args(tp)[0])
    if origin is Literal:
        return value in get_args(tp)
    if origin in (Union, types.UnionType):
        return any(_fits(value, arg) for arg in get_args(tp))
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return tp is Any or isinstance(value, origin or tp)


def _check_ranges(value: Any, tp: Any, key: str, source: str, nullable: bool = False) -> None:
    """Check a converted value against every :class:`Range` in its annotation ``tp`` (nested dataclasses too)."""
    origin = get_origin(tp)
    if origin is Annotated:
        base, *extras = get_args(tp)
        _check_ranges(value, base, key, source, nullable)
        for extra in extras:
            if not isinstance(extra, Range) or not _fits(value, float):
                continue
            if not math.isfinite(value):
                raise ConfigError(f"{source}: key '{key}' must be a finite number, got {value!r}")
            if value not in extra:
                allowed = f"{extra} or null" if nullable else str(extra)
                raise ConfigError(f"{source}: key '{key}' must be {allowed}, got {value!r}")
    elif origin in (Union, types.UnionType):
        args = get_args(tp)
        member = next((arg for arg in args if arg is not type(None) and _fits(value, arg)), None)
        if value is not None and member is not None:
            _check_ranges(value, member, key, source, nullable=type(None) in args)
    elif origin is list and isinstance(value, (list, tuple)):
        (item_tp,) = get_args(tp)
        for i, item in enumerate(value):
            _check_ranges(item, item_tp, f"{key}[{i}]", source)
    elif origin is dict and isinstance(value, dict):
        for name, item in value.items():
            _check_ranges(item, get_args(tp)[1], f"{key}.{name}", source)
    elif dataclasses.is_dataclass(tp) and isinstance(value, tp):
        check_ranges(value, source, prefix=f"{key}.")


def check_ranges(config: Any, source: str = "config", prefix: str = "") -> None:
    """Check every numeric value of the config dataclass instance ``config`` (nested sections included) against
    the :class:`Range` declared in its type; raise :class:`ConfigError` naming ``source`` and ``prefix`` + key.

    :func:`build` applies the same checks; call this on configs made in Python (``TrainingConfig(...)``).
    """
    hints = get_type_hints(type(config), include_extras=True)
    for f in dataclasses.fields(config):
        _check_ranges(getattr(config, f.name), hints[f.name], f"{prefix}{f.name}", source)


def build(cls: type[T], data: dict[str, Any], *, source: str = "config", prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys, wrong types and numbers out of range by
    dotted name."""
    hints = get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            known = ", ".join(prefix + name for name in fields)
            raise ConfigError(f"{source}: unknown key '{prefix}{key}'{hint}. Known keys here: {known}")
        kwargs[key] = _convert(value, hints[key], f"{prefix}{key}", source)
        if not dataclasses.is_dataclass(hints[key]):  # a section was checked by its own build()
            _check_ranges(kwargs[key], hints[key], f"{prefix}{key}", source)
    missing = [
        name
        for name, f in fields.items()
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
    ]
    if missing:
        raise ConfigError(f"{source}: missing required key(s): {', '.join(prefix + m for m in missing)}")
    return cls(**kwargs)


def _yaml_problem(error: yaml.YAMLError, column_offset: int = 0) -> str:
    """Where and what a YAML syntax error is: ``at line L, column C: PROBLEM (CONTEXT at line L, column C)``.

    ``column_offset`` is added to columns on the first line (an override's value starts after ``key=``).
    """

    def where(mark: Any) -> str:
        return f"line {mark.line + 1}, column {mark.column + 1 + (column_offset if mark.line == 0 else 0)}"

    if not isinstance(error, yaml.MarkedYAMLError) or error.problem_mark is None:
        return f"({error})"  # a ReaderError (a control character) names its position itself
    text = f"at {where(error.problem_mark)}: {error.problem}"
    if error.context:
        text += f" ({error.context}" + (f" at {where(error.context_mark)})" if error.context_mark else ")")
    return text


def apply_overrides(data: dict[str, Any], overrides: typing.Sequence[str]) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides (value parsed as YAML) to a nested dict, in place; a value that is
    not valid YAML raises :class:`ConfigError` naming the override, the line and the column."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value (for example train.lr=1e-4)")
        dotted, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as error:
            problem = _yaml_problem(error, column_offset=len(dotted) + 1)
            raise ConfigError(f"override '{item}': the value is not valid YAML {problem}") from error
        set_key(data, dotted, _yaml_floats(value), what=f"override '{item}'")
    return data


def set_key(data: dict[str, Any], dotted: str, value: Any, what: str | None = None) -> dict[str, Any]:
    """Set ``data[a][b][c] = value`` for ``dotted`` = ``a.b.c``, creating sections on the way, in place; ``what``
    names the setting in errors (default: the key)."""
    parts = dotted.strip().split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{what or f'key {dotted!r}'}: '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = value
    return data


def _yaml_floats(node: Any) -> Any:
    """PyYAML reads ``2e-5`` as a string (YAML 1.1); turn such strings into floats."""
    if isinstance(node, dict):
        return {k: _yaml_floats(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_yaml_floats(v) for v in node]
    if isinstance(node, str):
        try:
            return float(node) if any(c in node for c in "eE") and node[0] in "0123456789.-+" else node
        except ValueError:
            return node
    return node


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML recipe into a dict, with a clear error for a missing file, a file that is not UTF-8 text,
    a YAML syntax error (naming the line and column) or a non-mapping document."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe file '{path}' does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: a recipe must be UTF-8 text ({error.reason} at byte {error.start})") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: YAML syntax error {_yaml_problem(error)}") from error
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping of keys to values, got {type(data).__name__}")
    return _yaml_floats(data)


def to_dict(config: Any) -> dict[str, Any]:
    """The plain-dict form of a config dataclass (for saving next to a model)."""
    return dataclasses.asdict(config)


def _attribute_docs(cls: type) -> dict[str, str]:
    """The ``Attributes:`` section of a dataclass docstring, as name -> text."""
    docs: dict[str, str] = {}
    lines = (cls.__doc__ or "").splitlines()
    inside, current = False, None
    for line in lines:
        stripped = line.strip()
        if stripped == "Attributes:":
            inside = True
            continue
        if not inside or not stripped:
            continue
        name, sep, text = stripped.partition(":")
        if sep and name.isidentifier() and line.startswith(" " * 8) and not line.startswith(" " * 12):
            current = name
            docs[name] = text.strip()
        elif current:
            docs[current] += " " + stripped
    return docs


def reference_markdown(cls: type, prefix: str = "", heading: str = "##") -> str:
    """Markdown reference of a config dataclass: one table per section, every key with type, default, meaning."""
    hints = get_type_hints(cls, include_extras=True)
    docs = {k: v for base in reversed(cls.__mro__) for k, v in _attribute_docs(base).items()}
    rows, sections = [], []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            sections.append(reference_markdown(tp, f"{prefix}{f.name}.", heading))
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = "(required)"
        one_line = yaml.safe_dump(default, default_flow_style=True, width=float("inf"))  # table cells can't wrap
        shown = "null" if default is None else one_line.strip()
        shown = shown.removesuffix("...").strip()
        type_name = _type_name(tp).replace("|", "\\|")
        meaning = docs.get(f.name, "").replace("|", "\\|").replace("``", "`")
        rows.append(f"| `{prefix}{f.name}` | {type_name} | `{shown}` | {meaning} |")
        optional = [arg for arg in typing.get_args(tp) if isinstance(arg, type) and dataclasses.is_dataclass(arg)]
        if optional:  # an optional section (null by default): its keys, once it is set
            sections.append(reference_markdown(optional[0], f"{prefix}{f.name}.", heading))
    title = prefix.rstrip(".") or "top level"
    summary = (cls.__doc__ or "").strip().splitlines()[0].replace("``", "`")
    table = "\n".join(["| key | type | default | meaning |", "|---|---|---|---|", *rows])
    own = f"{heading} `{title}`\n\n{summary}\n\n{table}\n" if rows else ""
    return "\n".join([own, *sections]).strip() + "\n"
