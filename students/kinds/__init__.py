"""The student side of the knowledge kinds: one module per kind, one registry, `STUDENT_KINDS`.

A student kind names, for one kind of `hskcache.kinds.KINDS` (the store side:
its arrays, encoding and decoding), what a student forward must give to be
compared with it (`student`, from a `StudentForward`; `captures`,
`hidden_states`, `capture_layers`) and its objectives (`objectives`: the
`--objective` names, each with its loss bound as a callable and its training
stage). `base` holds the interface and the registry; every other module of
this package is imported here and registers its kind (`base.register`), so
adding a kind's student side is adding one module. `relations` is what the
relation kinds (`att`, `val`, `qq`, `kk`) share.
"""
from __future__ import annotations

import importlib
import pkgutil

from students.kinds.base import STUDENT_KINDS, Objective, StudentForward, StudentKind, register

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["STUDENT_KINDS", "Objective", "StudentForward", "StudentKind", "register"]
