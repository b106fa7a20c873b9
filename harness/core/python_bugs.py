"""Work-arounds for bugs of the Python the harness runs on, installed once by the pytest plugin.

ast.parse across threads (CPython gh-106905 and its kin, seen on 3.11.7 here): the AST constructor keeps its recursion
depth in state shared by the interpreter's threads, so two threads building ASTs at once can leave it unbalanced and
one of them fails with "SystemError: AST constructor recursion depth mismatch (before=126, after=26)". The harness
meets this exactly when a test fails with a guest gone: paramiko's transport thread logs its SSH error with a
traceback (Python 3.11 calls ast.parse for the ^^^ markers) while pytest, in the main thread, ast.parses the test's
source to print the failure. pytest then stops with INTERNALERROR, which `make validate` must read as "could not
run" — a RAM-damaging patch went unjudged that way. Serializing ast.parse costs nothing measurable here.
"""

from __future__ import annotations

import ast
import threading
from typing import Any

_LOCK = threading.RLock()   # re-entrant: a signal handler formatting a traceback may interrupt a parse in progress
_original_parse = ast.parse


def _serialized_parse(*args: Any, **kwargs: Any) -> Any:
    with _LOCK:
        return _original_parse(*args, **kwargs)


def serialize_ast_parse() -> None:
    """Make every ast.parse (pytest's, traceback's, anyone's) hold one process-wide lock. Idempotent."""
    ast.parse = _serialized_parse   # type: ignore[assignment]
