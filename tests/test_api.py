"""The public API stays honest: typed options match Settings, the error tree drawn in errors.py matches the classes."""

from __future__ import annotations

import re
import typing

import bulk_assign
from bulk_assign import errors
from bulk_assign.config import Settings, SettingsOptions


def test_settings_options_name_every_settings_field_but_the_target() -> None:
    assert set(typing.get_type_hints(SettingsOptions)) == set(Settings.model_fields) - {"target"}


def test_the_error_tree_in_the_docstring_is_the_class_tree() -> None:
    doc = errors.__doc__ or ""
    drawn: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []
    for line in doc.splitlines():
        match = re.match(r"^(\s*(?:[│ ]\s*)*(?:├── |└── )?)([A-Z]\w+Error|[A-Z]\w+Locked)\b", line)
        if not match:
            continue
        depth = len(match.group(1))
        while stack and stack[-1][0] >= depth:
            stack.pop()
        drawn[match.group(2)] = stack[-1][1] if stack else None
        stack.append((depth, match.group(2)))
    actual = {
        name: (cls.__bases__[0].__name__ if cls.__bases__[0] is not Exception else None)
        for name, cls in vars(errors).items()
        if isinstance(cls, type) and issubclass(cls, errors.BulkAssignError)
    }
    assert drawn == actual


def test_every_public_error_is_exported() -> None:
    for name, cls in vars(errors).items():
        if isinstance(cls, type) and issubclass(cls, errors.BulkAssignError):
            assert name in bulk_assign.__all__, name


def test_the_protocols_bulk_assigner_accepts_are_exported() -> None:
    import inspect

    annotations = " ".join(str(p.annotation) for p in inspect.signature(bulk_assign.BulkAssigner).parameters.values())
    for protocol in ("TokenProvider", "Pacer", "ResultSink", "Verifier", "Operation", "Progress"):
        assert re.search(rf"\b{protocol}\b", annotations), protocol
        assert protocol in bulk_assign.__all__, protocol
