"""The one command-line convention of `hskcache`, `students` and the tools.

A settings dataclass is the one description of a command's settings: each
field becomes one flag (`--field-name`, help from `field(metadata={"help": ...})`),
a field whose type is another settings dataclass (`nested`) brings its flags as
a group, and `--config FILE.toml` holds the same keys. Values are merged
dataclass defaults < TOML < flags, then validated once by the dataclass: the
rules a field declares (`at_least`, `above`, `at_most`, `below`, `choices`) by `Settings`, its base, whenever one is
made (flags, TOML or code), the rest by its own `__post_init__`.
A program is a table of `Command`s (name, help, settings dataclass, run
function); `program` builds its parser and `main` dispatches, turning bad input
into one line (`run_guarded`). The spellings every command shares live here
too: `--text-cols a,b`, `--store` for an HSK store, and the deprecated
spellings, each of which warns in one format (`deprecated`).
"""
from __future__ import annotations

import argparse
import errno
import functools
import operator
import os
import sys
import tomllib
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from hskcache.errors import UserError

T = TypeVar("T")

STORE_HELP = "HSK store written by `hskcache extract`: a directory or an fsspec URL (s3://bucket/store, gs://...)"


def columns(value: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """`--text-cols a,b` (also a TOML list) → ("a", "b")."""
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
    """A settings-dataclass field with its flag's help (and `parse`, `aliases`, `show_default`,
    `metavar`, `nargs`, `positional`: a deprecated positional spelling such as STORE; and the rules
    `Settings` holds the field to: `at_least`, the least value, `above`, a bound the value must exceed
    (a learning rate: above 0), `at_most` and `below` likewise from above (a fraction: above 0, at most 1),
    and `choices`, the values it takes)."""
    if {"at_least", "above"} <= more.keys() or {"at_most", "below"} <= more.keys():
        raise TypeError("a setting has one lower bound (at_least or above) and one upper (at_most or below)")
    return field(default=default, metadata={"help": help, **more})


RULES = ("at_least", "above", "at_most", "below", "choices")  # what a field's metadata may declare for `Settings`
BOUNDS = {"at_least": ("[", "at least", operator.ge), "above": ("(", "above", operator.gt),
          "at_most": ("]", "at most", operator.le), "below": (")", "below", operator.lt)}  # bracket, words, test


def bound_error(meta: Mapping[str, Any], value: Any) -> str | None:
    """What is wrong with `value` against the bounds a field declares, or None: one bound in words ("must be at
    least 1"), a lower and an upper one as an interval ("must be in (0, 1]"). Each is asked as `not test(value,
    bound)`, so nan, which compares with nothing, is refused too."""
    declared = [(rule, meta[rule]) for rule in BOUNDS if rule in meta]
    if all(BOUNDS[rule][2](value, bound) for rule, bound in declared):
        return None
    if len(declared) == 2:
        (low, lo), (high, hi) = declared
        return f"must be in {BOUNDS[low][0]}{lo}, {hi}{BOUNDS[high][0]}, got {value}"
    rule, bound = next((rule, bound) for rule, bound in declared if not BOUNDS[rule][2](value, bound))
    return f"must be {BOUNDS[rule][1]} {bound}, got {value}"


def check_fields(settings: Any) -> None:
    """The rules a settings dataclass's fields declare in their metadata (`RULES`), each one line naming
    the flag (bounds: `bound_error`); a value left out (None) has nothing to check. (argparse checks a flag's
    choices first.)"""
    for f in fields(settings):
        value, meta = getattr(settings, f.name), f.metadata
        if value is None:
            continue
        wrong = bound_error(meta, value)
        if wrong:
            raise UserError(f"{flag_name(f.name)} {wrong}")
        choices = meta.get("choices")
        if choices is not None and value not in choices:
            raise UserError(f"{flag_name(f.name)} {value!r} is unknown; use one of {', '.join(map(str, choices))}")


class Settings:
    """Base of the settings dataclasses whose fields declare rules (`setting(..., at_least=1)`, `above=0`,
    `choices=`): the rules hold however one is made (flags, TOML, code), checked once, before the class's own
    `__post_init__` (which is wrapped when the class is defined, so no subclass can forget to ask)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("__post_init__")
        if own is None or getattr(own, "checks_fields", False):
            return

        @functools.wraps(own)
        def __post_init__(self: Any) -> None:
            check_fields(self)
            own(self)

        __post_init__.checks_fields = True  # type: ignore[attr-defined]
        cls.__post_init__ = __post_init__  # type: ignore[method-assign]

    def __post_init__(self) -> None:
        check_fields(self)


def nested(group: str | None = None, default_factory: Callable[[], Any] | None = None) -> Any:
    """A field holding another settings dataclass: its fields are flags too (in an argument
    group titled `group`), and TOML keys of the same flat file; `default_factory` makes the
    settings where code builds the outer dataclass without them (a command line always gives them)."""
    return field(metadata={"nested": True, "group": group},
                 **({} if default_factory is None else {"default_factory": default_factory}))


def per_name(classes: Callable[[], dict[str, type]], group: str | None = None) -> Any:
    """A field holding one settings dataclass per name of a registry (`classes()`: name -> class,
    asked whenever flags or values are made, so an entry registered later counts): {name: settings}.
    Each class's fields are flags and TOML keys like nested ones; names that share a class share
    its flags and its one instance, and a class that inherits another's fields shares those flags."""
    return field(default_factory=dict, metadata={"nested": True, "classes": classes, "group": group})


def complete_per_name(settings: Any) -> None:
    """Fill each `per_name` field of a settings dataclass: every registry name's settings, the class's
    defaults where none were given, so one run has one value however it was configured (flags give
    every name's, a value built in code may give none); a name the registry lacks is one line."""
    for f in fields(settings):
        if "classes" not in f.metadata:
            continue
        given, known = getattr(settings, f.name), f.metadata["classes"]()
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise UserError(f"{f.name}: {', '.join(unknown)} takes no settings here; use {', '.join(known) or 'none'}")
        object.__setattr__(settings, f.name, {name: given.get(name) or cls() for name, cls in known.items()})


def _nested_classes(f: Field, hints: dict[str, Any]) -> list[type]:
    """The settings dataclass(es) whose fields a nested field's flags are."""
    classes = f.metadata.get("classes")
    return list(dict.fromkeys(classes().values())) if classes else [hints[f.name]]


def deprecated(prog: str, old: str, new: str) -> None:
    """The one warning every deprecated spelling prints (flags, positional STORE, TOML keys)."""
    print(f"{prog}: warning: {old} is deprecated; use {new}", file=sys.stderr)


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
        deprecated(parser.prog, option_string, self.new)
        setattr(namespace, self.dest, values)


def add_alias(p: argparse._ActionsContainer, old: str, new: str, dest: str, **kwargs) -> None:
    p.add_argument(old, dest=dest, action=DeprecatedAlias, new=new, default=None, **kwargs)


def _field_type(hint: Any) -> Any:
    """int | None → int; tuple[str, ...] | None → tuple."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return typing.get_origin(hint) or hint


def _default_text(f: Field) -> str:
    """` (default X)` as the flag would be written (a tuple as a,b), or nothing when there is none."""
    shown = f.metadata.get("show_default", None if f.default is MISSING or f.default is False else f.default)
    if shown is None:
        return ""
    return f" (default {','.join(map(str, shown)) if isinstance(shown, tuple) else shown})"


def _is_nested(f: Field) -> bool:
    return bool(f.metadata.get("nested"))


POSITIONAL = "positional_"  # dest prefix of a deprecated positional spelling


def add_fields(p: argparse._ActionsContainer, cls: type) -> None:
    """One flag per field of `cls`, default None so that a flag that was not given leaves
    the TOML value or the field's default; a nested settings dataclass's flags in their
    group; each older spelling as a hidden flag that warns."""
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        if _is_nested(f):
            title = f.metadata.get("group")
            top = getattr(p, "_top", p)
            group = top.add_argument_group(title) if title else p
            group._top = top
            for sub in _nested_classes(f, hints):
                add_fields(group, sub)
            continue
        if "help" not in f.metadata:
            continue
        added = getattr(p, "_top", p).__dict__.setdefault("_fields_added", set())
        if f in added:  # a field two settings classes share (one inherits it): one flag
            continue
        added.add(f)
        declared = [rule for rule in RULES if rule in f.metadata]
        if declared and not issubclass(cls, Settings):
            raise TypeError(f"{cls.__name__}.{f.name} declares {declared[0]}; make {cls.__name__} a Settings "
                            "so it is checked")
        kind = _field_type(hints[f.name])
        help_text = f.metadata["help"].replace("%", "%%") + _default_text(f)
        if kind is bool:
            p.add_argument(flag_name(f.name), action="store_true", default=None, help=help_text)
            continue
        numeric = kind in (int, float) and "parse" not in f.metadata
        p.add_argument(flag_name(f.name), type=kind if numeric else str, default=None, help=help_text,
                       metavar=f.metadata.get("metavar"), nargs=f.metadata.get("nargs"),
                       choices=f.metadata.get("choices"))
        for old in f.metadata.get("aliases", ()):
            add_alias(p, old, flag_name(f.name), f.name, type=kind if numeric else str)
        if "positional" in f.metadata:  # an older spelling: `inspect STORE`
            p.add_argument(POSITIONAL + f.name, nargs="?", metavar=f.metadata["positional"], help=argparse.SUPPRESS)


def leaves(cls: type) -> list[Field]:
    """The fields that are flags: `cls`'s own and those of its nested settings, in order."""
    hints = typing.get_type_hints(cls)
    return [leaf for f in fields(cls)
            for leaf in ([x for sub in _nested_classes(f, hints) for x in leaves(sub)] if _is_nested(f) else [f])]


def aliases(cls: type) -> dict[str, str]:
    """Older spellings of `cls`'s fields ("out" → "store"), from their `aliases` metadata."""
    return {old.lstrip("-").replace("-", "_"): f.name for f in leaves(cls) for old in f.metadata.get("aliases", ())}


def field_names(cls: type) -> set[str]:
    """Every key `cls`'s settings take, nested ones included."""
    return {f.name for f in leaves(cls)}


def load_toml(path: str, known: Iterable[str], renames: dict[str, str] | None = None,
              prog: str = "hskcache") -> dict[str, Any]:
    """Settings from a TOML file; keys are flag names with - or _ (a deprecated key in
    `renames` warns and reads as its new name)."""
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
        if name in (renames or {}):
            deprecated(prog, f"config key {key!r} in {path}", repr(renames[name]))
            name = renames[name]
        if name not in known:
            raise UserError(f"config file {path}: unknown setting {key!r}; known: {', '.join(sorted(known))}")
        out[name] = value
    return out


def merged(cls: type, flags: dict[str, Any], toml_path: str | None = None, prog: str = "hskcache") -> dict[str, Any]:
    """TOML < flags (a flag that was not given is None)."""
    renames = aliases(cls)
    out = load_toml(toml_path, field_names(cls), renames, prog) if toml_path else {}
    out.update({renames.get(k, k): v for k, v in flags.items() if v is not None})
    return out


_KIND_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _typed(name: str, value: Any, kind: Any) -> Any:
    """`value` as the field's plain type (a TOML string of digits as argparse would read the flag);
    the wrong type is a one-line error naming the setting and the type it takes."""
    if kind is tuple and isinstance(value, list):  # a TOML list, or a flag with nargs
        return tuple(value)
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
    values checked against the field's type, nested settings made from their own keys;
    a missing required field is a one-line error."""
    known = {f.name: f for f in fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = set(values) - field_names(cls)
    if unknown:
        name = sorted(unknown)[0]
        raise UserError(f"unknown setting {name!r}; known: {', '.join(sorted(field_names(cls)))}")
    out: dict[str, Any] = {}
    for name, f in known.items():
        if _is_nested(f):
            made = {sub: make(sub, {k: v for k, v in values.items() if k in field_names(sub)})
                    for sub in _nested_classes(f, hints)}
            out[name] = ({n: made[sub] for n, sub in f.metadata["classes"]().items()} if "classes" in f.metadata
                         else made[hints[name]])
            continue
        if name not in values:
            continue
        value = values[name]
        parse: Callable | None = f.metadata.get("parse")
        if parse is None:
            out[name] = _typed(name, value, _field_type(hints[name]))
            continue
        if isinstance(value, list):  # from TOML: the flag's own spelling
            value = ",".join(map(str, value))
        out[name] = parse(str(value)) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else value
    missing = [n for n, f in known.items() if f.default is MISSING and f.default_factory is MISSING and n not in out]
    if missing:
        raise UserError(f"{flag_name(missing[0])} is required (as a flag or in the --config file)")
    try:
        return cls(**out)
    except TypeError as exc:
        raise UserError(f"bad setting: {exc}") from None


def settings_from(cls: type[T], args: argparse.Namespace, prog: str) -> T:
    """A command's settings from its parsed flags: defaults < --config < flags, a deprecated
    positional spelling (`inspect STORE`) warned about and read as its flag."""
    flags = {}
    for f in leaves(cls):
        value = getattr(args, f.name, None)
        old = getattr(args, POSITIONAL + f.name, None)
        if old is not None:
            if value is not None:
                raise UserError(f"give {flag_name(f.name)} once: as {flag_name(f.name)} {f.metadata['positional']} "
                                f"or as {f.metadata['positional']}, not both")
            deprecated(prog, f"{f.metadata['positional']} as a positional argument", f"{flag_name(f.name)} "
                       f"{f.metadata['positional']}")
            value = old
        flags[f.name] = value
    return make(cls, merged(cls, flags, getattr(args, "config", None), prog=prog))


# --------------------------------------------------------------------------- programs


STORE_ARGUMENT = {"metavar": "STORE", "positional": "STORE"}  # `--store STORE`; older scripts: a positional STORE


def quiet_libraries() -> None:
    """Our own progress bars say what is happening; the libraries' would interleave."""
    import datasets
    import huggingface_hub
    import transformers

    huggingface_hub.utils.logging.set_verbosity_error()  # the hub's retry warnings: the error says it once
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()


START_AGAIN = "rerun the same command to start again"  # a command that does not resume (it writes whole or not at all)


def run_guarded(fn: Callable[[], int], prog: str, rerun: str = START_AGAIN) -> int:
    """Bad input, a full disk and interrupts become one line on stderr and a non-zero exit; `rerun` says what
    rerunning a cut run does (the command's own: only some resume). A command that can say more of a full
    disk (extract: the store; train: the checkpoint) raises its own UserError first."""
    from hskcache.distributed import Ranks

    quiet_libraries()
    try:
        return fn()
    except UserError as exc:
        if Ranks.from_env().is_main:  # under torchrun every rank refuses alike; one says so
            print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(f"{prog}: error: no space left on the device writing {exc.filename or 'the output'}; free space, "
              f"then {rerun}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if Ranks.from_env().is_main:
            print(f"{prog}: interrupted; {rerun}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `... --json | head`: the reader left, nothing to report
        sys.stdout = open(os.devnull, "w")
        return 0


@dataclass(frozen=True)
class Command:
    """One subcommand: its settings dataclass is its parser (plus `--config`), and `run` takes
    the validated settings and returns the exit code."""

    name: str
    help: str
    settings: type
    run: Callable[[Any], int]
    description: str = "Flags left out fall back to --config, then to the defaults shown."
    rerun: str = START_AGAIN  # what rerunning a cut run (Ctrl-C, a full disk) does: a resumable command says how


SUBCOMMAND = "subcommand_"


@dataclass(frozen=True)
class Group:
    """Subcommands under one name (`students build tinybert|rosita`)."""

    name: str
    help: str
    commands: tuple[Command | "Group", ...]


def add_commands(sub: argparse._SubParsersAction, commands: Iterable[Command | Group]) -> None:
    """Register each command (or group of them) as a subparser."""
    for command in commands:
        if isinstance(command, Group):
            p = sub.add_parser(command.name, help=command.help)
            add_commands(p.add_subparsers(dest=SUBCOMMAND, required=True), command.commands)
            continue
        p = sub.add_parser(command.name, help=command.help, description=command.description)
        p.add_argument("--config", metavar="FILE.toml", help="TOML file with the same settings (flags override it)")
        add_fields(p, command.settings)
        p.set_defaults(command_=command)


def program(prog: str, description: str, commands: Iterable[Command | Group]) -> OneLineParser:
    """The parser of a program whose subcommands are `commands`."""
    parser = OneLineParser(prog=prog, description=description)
    add_commands(parser.add_subparsers(dest="command", required=True), commands)
    return parser


def main(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parse, build the command's settings, run it: one dispatch for every program."""
    args = parser.parse_args(argv)
    command: Command = args.command_
    prog = " ".join(filter(None, (parser.prog, args.command, getattr(args, SUBCOMMAND, None))))
    return run_guarded(lambda: command.run(settings_from(command.settings, args, prog)), parser.prog,
                       command.rerun)
