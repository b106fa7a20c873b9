"""Writing result files: atomically (readers see the old or the new content) and as JSON any harness record."""

from __future__ import annotations

import os
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any


def atomic_write_text(path: Path, text: str) -> None:
    """Write `path` so that a reader (another run listing earlier runs, a browser) sees the old or the new
    content, never a partial file: a private temporary name in the same directory, then rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def record_of(value: Any) -> dict[str, Any]:
    """A measurement dataclass as the artefacts write it: its fields (nested records serialised the same way when
    written), plus the derived figures it names in JSON_DERIVED (properties or no-argument methods) — no
    hand-written to_json to drift from the fields."""
    record = {f.name: getattr(value, f.name) for f in fields(value)}
    for name in getattr(value, "JSON_DERIVED", ()):
        derived = getattr(value, name)
        record[name] = derived() if callable(derived) else derived
    return record


def json_default(value: Any) -> Any:
    """json.dumps(default=…) for harness records: to_json() if it has one, a dataclass's record_of, paths as
    strings, sets sorted, anything else as its repr (a result file is never lost to one odd value)."""
    if hasattr(value, "to_json"):
        return value.to_json()
    if is_dataclass(value) and not isinstance(value, type):
        return record_of(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return repr(value)
