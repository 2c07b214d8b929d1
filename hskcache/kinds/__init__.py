"""Kinds of knowledge: one module per kind, one registry, `KINDS`, of everything a store holds per example.

`base` holds the interface (`Kind`) and the registry; every other module of
this package is imported here and registers its kind(s) (`base.register`), so
adding a kind is adding one module. `inputs` (the examples themselves),
`logits` and `hsk` are always stored; the relation kinds (`relation.RelationKind`:
`att` and `val`, MiniLM's attention and value relation; `qq` and `kk`,
MiniLMv2's query and key relations) are stored when `--knowledge` names them
and share their query rows (`rel_positions`, `RelationSpec`).
"""
from __future__ import annotations

import importlib
import pkgutil

from hskcache.kinds.base import (KINDS, WHOLE, Cut, Kind, Read, Student, TeacherForward, TeacherInfo, chosen,
                   kind_settings, knowledge_names, opt_in_settings, parse_knowledge, read_settings, refuse_unstored,
                   refuse_unused, register, resolve_reads, stored_kinds)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["KINDS", "WHOLE", "Cut", "Kind", "Read", "Student", "TeacherForward", "TeacherInfo", "chosen", "kind_settings",
           "knowledge_names", "opt_in_settings", "parse_knowledge", "read_settings", "refuse_unstored",
           "refuse_unused", "register", "resolve_reads", "stored_kinds"]
