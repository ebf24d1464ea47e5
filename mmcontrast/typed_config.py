"""Typed configuration: nested dataclasses built from YAML dicts, with errors that name the key.

A recipe is a YAML file whose sections map onto dataclasses. Every key is checked: an unknown key or a
value of the wrong type raises :class:`ConfigError` naming the dotted key (and a close spelling when there
is one). Command-line overrides are ``dotted.key=value`` strings whose value is parsed as YAML.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A recipe or override has an unknown key or a value of the wrong type."""


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
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


def build(cls: type[T], data: dict[str, Any], *, source: str = "config", prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and wrong types by dotted name."""
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            known = ", ".join(prefix + name for name in fields)
            raise ConfigError(f"{source}: unknown key '{prefix}{key}'{hint}. Known keys here: {known}")
        kwargs[key] = _convert(value, hints[key], f"{prefix}{key}", source)
    missing = [
        name
        for name, f in fields.items()
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
    ]
    if missing:
        raise ConfigError(f"{source}: missing required key(s): {', '.join(prefix + m for m in missing)}")
    return cls(**kwargs)


def apply_overrides(data: dict[str, Any], overrides: typing.Sequence[str]) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides (value parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value (for example train.lr=1e-4)")
        dotted, raw = item.split("=", 1)
        parts = dotted.strip().split(".")
        node = data
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override '{item}': '{part}' is a value, not a section")
            node = child
        node[parts[-1]] = _yaml_floats(yaml.safe_load(raw)) if raw.strip() else ""
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
    """Read a YAML recipe into a dict, with a clear error for a missing file or a non-mapping document."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe file '{path}' does not exist")
    data = yaml.safe_load(path.read_text()) or {}
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
    hints = get_type_hints(cls)
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
    title = prefix.rstrip(".") or "top level"
    summary = (cls.__doc__ or "").strip().splitlines()[0].replace("``", "`")
    table = "\n".join(["| key | type | default | meaning |", "|---|---|---|---|", *rows])
    own = f"{heading} `{title}`\n\n{summary}\n\n{table}\n" if rows else ""
    return "\n".join([own, *sections]).strip() + "\n"
