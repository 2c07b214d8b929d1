"""Where `students train` takes the teacher's knowledge from: a store, or the online teacher.

`SourceSettings` is one knowledge source's settings (exactly one of --store and
--teacher); the online baseline's extraction settings (`OnlineSettings`) are
`ExtractConfig`'s own fields, so they read and check exactly as `hskcache extract`'s,
and they build an `ExtractConfig` with no store: nothing is written.
"""

from __future__ import annotations

import typing
from dataclasses import MISSING, dataclass, field, fields, make_dataclass
from typing import Any

from hskcache.teacher.config import ExtractConfig
from hskcache.errors import UserError
from hskcache.kinds import kind_settings
from hskcache.options import STORE_HELP, Settings, flag_name, nested, setting

ONLINE_FIELDS = ("data", "split", "student_layers", "ltop", "teacher_layers", "token_strategy", "knowledge",
                 "limit")  # and every kind's settings (the HSK's --depth/--tokens/--width/...)
# `ExtractConfig` fields the online baseline takes from the run's own settings (`TrainConfig`, and its `Runtime`).
FROM_TRAINING = ("text_cols", "label_col", "max_length")
FROM_RUNTIME = ("device", "dtype")


def _online_field(f, cls: type = ExtractConfig) -> tuple[str, Any, Any]:
    """`ExtractConfig`'s field (or a kind's settings field, `cls`) as an online setting: None unless given
    (so a store run can refuse it), its default shown; no deprecated spellings (`--seed` is training's seed here)."""
    hint = typing.get_type_hints(cls)[f.name]
    shown = f.metadata.get("show_default", None if f.default is MISSING else f.default)
    metadata = {k: v for k, v in f.metadata.items() if k != "aliases"} | {"show_default": shown}
    return f.name, hint | None, field(default=None, metadata=metadata)


# every kind's settings field once: classes that share a field (one inherits the other's) share its online setting
KIND_FIELDS = {f.name: (f, cls) for cls in reversed(list(dict.fromkeys(kind_settings().values()))) for f in fields(cls)}
OnlineSettings = make_dataclass(
    "OnlineSettings", [_online_field(f) for f in fields(ExtractConfig) if f.name in ONLINE_FIELDS]
    + [_online_field(f, cls) for f, cls in KIND_FIELDS.values()], bases=(Settings,), frozen=True,
    namespace={"__doc__": "The online baseline's `hskcache extract` settings (None: not given)."})
OnlineSettings.__module__ = __name__


@dataclass(frozen=True)
class SourceSettings:
    """One knowledge source: a store, or the teacher itself with the extraction settings it runs under."""

    online: OnlineSettings = nested("online baseline (--teacher): the HSK computed live, with `hskcache extract`'s "
                                    "settings; --text-cols/--label-col/--max-length then apply to --data too")
    store: str | None = setting(None, STORE_HELP, metavar="STORE", aliases=("--cache",))
    teacher: str | None = setting(None, "online baseline: the teacher itself (with --data and extraction flags)")

    def __post_init__(self) -> None:
        if (self.store is None) == (self.teacher is None):
            raise UserError("pass exactly one knowledge source: --store STORE, or --teacher MODEL with --data DATA")
        given = self.online_given()
        if self.store is not None and given:
            raise UserError(f"{flag_name(next(iter(given)))} is an online-baseline setting (--teacher); "
                            "a store's settings were fixed at extraction")
        if self.teacher is not None and self.online.data is None:
            raise UserError("--teacher needs --data: the training data to run the teacher on")

    def online_given(self) -> dict[str, Any]:
        return {f.name: getattr(self.online, f.name) for f in fields(self.online)
                if getattr(self.online, f.name) is not None}

    def extraction(self, training) -> ExtractConfig:
        """What `hskcache extract` would store, with no store: the online baseline's settings."""
        from hskcache.options import make

        shared = {name: getattr(training, name) for name in FROM_TRAINING} | {
            name: getattr(training.runtime, name) for name in FROM_RUNTIME}
        return make(ExtractConfig, {**self.online_given(), **shared, "teacher": self.teacher})

    def open(self, training):
        """The `BatchSource` the trainer reads (`training`: the run's `TrainConfig`)."""
        if self.store is not None:
            from hskcache.store.reader import open_store

            return open_store(self.store)
        from students.training.online import OnlineSource

        return OnlineSource(self.extraction(training))
