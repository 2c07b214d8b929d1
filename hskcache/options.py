"""Command-line options shared by `hskcache`, `students` and the tools.

A settings dataclass is the one description of a command's settings: each
field becomes one flag (`--field-name`, help from `field(metadata={"help": ...})`),
and a `--config FILE.toml` holds the same keys. Values are merged
dataclass defaults < TOML < flags, then validated once by the dataclass.
The spellings every command shares live here too: `--text-cols a,b`,
`--store` for an HSK store, and the aliases kept for older scripts.
"""
from __future__ import annotations

import argparse
import sys
import tomllib
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import MISSING, Field, field, fields
from pathlib import Path
from typing import Any, TypeVar

from .errors import UserError

T = TypeVar("T")

STORE_HELP = "HSK store written by `hskcache extract`: a directory or an fsspec URL (s3://bucket/store, gs://...)"


def columns(value: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """`--text-cols a,b` (also a TOML list, or the older space-separated form) → ("a", "b")."""
    if value is None:
        return None
    parts = [value] if isinstance(value, str) else list(value)
    cols = tuple(c.strip() for part in parts for c in str(part).split(",") if c.strip())
    return cols or None


def integers(value: str | Sequence[int], flag: str) -> tuple[int, ...]:
    """`0,3,5` (or a TOML list) → (0, 3, 5)."""
    parts = value.split(",") if isinstance(value, str) else list(value)
    try:
        return tuple(int(str(p).strip()) for p in parts if str(p).strip())
    except ValueError:
        raise UserError(f"{flag} must be integers like 0,3,5, got {value}") from None


def setting(default: Any, help: str, **more: Any) -> Any:
    """A settings-dataclass field with its flag's help (and `parse`, `aliases`, `show_default`)."""
    return field(default=default, metadata={"help": help, **more})


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line, like every other refusal (the usage block is
    what --help prints). Subcommand parsers inherit the class."""

    def error(self, message: str) -> typing.NoReturn:
        if "expected one argument" in message:  # argparse reads `--hsk -1,3,0.5` as a flag without its value
            message += " (write a value that starts with '-' as --flag=VALUE)"
        self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n")


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


class DeprecatedAlias(argparse.Action):
    """An older spelling of a flag: still works, says which spelling to use."""

    def __init__(self, option_strings, dest, new: str, **kwargs) -> None:
        self.new = new
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"{parser.prog}: warning: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_alias(p: argparse._ActionsContainer, old: str, new: str, dest: str, **kwargs) -> None:
    p.add_argument(old, dest=dest, action=DeprecatedAlias, new=new, default=None, **kwargs)


def add_store_flag(p: argparse._ActionsContainer, help: str = STORE_HELP, required: bool = False,
                   aliases: Iterable[str] = ()) -> None:
    """`--store STORE`, the one spelling of an HSK store argument; `aliases` are older ones."""
    p.add_argument("--store", required=required, help=help)
    for old in aliases:
        add_alias(p, old, "--store", "store")


def add_store_argument(p: argparse.ArgumentParser, help: str) -> None:
    """A store as `--store STORE` or, as older scripts write it, a positional STORE."""
    p.add_argument("store_path", nargs="?", metavar="STORE", help=f"{help} (or --store STORE)")
    p.add_argument("--store", help=argparse.SUPPRESS)


def store_argument(args: argparse.Namespace) -> str | None:
    if args.store is not None and args.store_path is not None:
        raise UserError("give the store once: as --store STORE or as STORE, not both")
    return args.store if args.store is not None else args.store_path


def _field_type(hint: Any) -> Any:
    """int | None → int; tuple[str, ...] | None → tuple."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return typing.get_origin(hint) or hint


def _default_text(f: Field) -> str:
    if f.default is MISSING or f.default is None or f.default is False:
        return ""
    shown = f.metadata.get("show_default", f.default)
    return "" if shown is None else f" (default {shown})"


def add_fields(p: argparse._ActionsContainer, cls: type, names: Iterable[str] | None = None,
               skip: Iterable[str] = (), with_aliases: bool = True) -> None:
    """One flag per field of `cls` (all of them, or `names`), default None so that
    a flag that was not given leaves the TOML value or the field's default; older
    spellings too unless `with_aliases` is off (where they would mean something else)."""
    hints = typing.get_type_hints(cls)
    wanted, skipped = (None if names is None else set(names)), set(skip)
    for f in fields(cls):
        if (wanted is not None and f.name not in wanted) or f.name in skipped or "help" not in f.metadata:
            continue
        kind = _field_type(hints[f.name])
        help_text = f.metadata["help"] + _default_text(f)
        if kind is bool:
            p.add_argument(flag_name(f.name), action="store_true", default=None, help=help_text)
            continue
        numeric = kind in (int, float) and "parse" not in f.metadata
        p.add_argument(flag_name(f.name), type=kind if numeric else str, default=None, help=help_text,
                       metavar=f.metadata.get("metavar"))
        for old in f.metadata.get("aliases", ()) if with_aliases else ():
            add_alias(p, old, flag_name(f.name), f.name, type=kind if numeric else str)


def load_toml(path: str, known: Iterable[str], aliases: dict[str, str] | None = None) -> dict[str, Any]:
    """Settings from a TOML file; keys are flag names with - or _ (older spellings in `aliases`)."""
    try:
        raw = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"config file {path} not found; check the path") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"config file {path} is not valid TOML: {exc}") from None
    known = set(known)
    out = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        name = (aliases or {}).get(name, name)
        if name not in known:
            raise UserError(f"config file {path}: unknown setting {key!r}; known: {', '.join(sorted(known))}")
        out[name] = value
    return out


def aliases(cls: type) -> dict[str, str]:
    """Older spellings of `cls`'s fields ("out" → "store"), from their `aliases` metadata."""
    return {old.lstrip("-").replace("-", "_"): f.name for f in fields(cls) for old in f.metadata.get("aliases", ())}


def merged(cls: type, flags: dict[str, Any], toml_path: str | None = None,
           extra: Iterable[str] = ()) -> dict[str, Any]:
    """TOML < flags (a flag that was not given is None); `extra`: keys that are not
    fields of `cls` but that the command's TOML may hold too (e.g. the store)."""
    renames = aliases(cls)
    out = load_toml(toml_path, field_names(cls) | set(extra), renames) if toml_path else {}
    out.update({renames.get(k, k): v for k, v in flags.items() if v is not None})
    return out


_KIND_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _typed(name: str, value: Any, kind: Any) -> Any:
    """`value` as the field's plain type (a TOML string of digits as argparse would read the flag);
    the wrong type is a one-line error naming the setting and the type it takes."""
    if kind not in _KIND_NAMES or value is None:
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    if isinstance(value, str) and kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    raise UserError(f"setting {name!r} ({flag_name(name)}) must be {_KIND_NAMES[kind]}, got {value!r}")


def make(cls: type[T], values: dict[str, Any]) -> T:
    """`cls(**values)` with strings (and TOML lists) parsed by each field's `parse`, plain
    values checked against the field's type; a missing required field is a one-line error."""
    known = {f.name: f for f in fields(cls)}
    hints = typing.get_type_hints(cls)
    values = dict(values)
    for name, value in values.items():
        if name not in known:
            raise UserError(f"unknown setting {name!r}; known: {', '.join(sorted(known))}")
        parse: Callable | None = known[name].metadata.get("parse")
        if parse is None:
            values[name] = _typed(name, value, _field_type(hints[name]))
            continue
        if isinstance(value, list):  # from TOML: the flag's own spelling
            value = ",".join(map(str, value))
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            values[name] = parse(str(value))
    missing = [n for n, f in known.items() if f.default is MISSING and f.default_factory is MISSING and n not in values]
    if missing:
        raise UserError(f"{flag_name(missing[0])} is required (as a flag or in the --config file)")
    try:
        return cls(**values)
    except TypeError as exc:
        raise UserError(f"bad setting: {exc}") from None


def field_names(cls: type) -> set[str]:
    return {f.name for f in fields(cls)}
