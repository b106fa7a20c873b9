"""harness.core.python_bugs: ast.parse serialized across threads, same results, installed by the plugin."""

from __future__ import annotations

import ast
import threading

from harness.core import python_bugs


def test_the_plugin_installs_the_serialized_parse() -> None:
    import harness.plugin.plugin  # noqa: F401  (the entry point installs it at import)

    assert ast.parse is python_bugs._serialized_parse
    python_bugs.serialize_ast_parse()                      # idempotent
    assert ast.parse is python_bugs._serialized_parse


def test_parses_from_many_threads_give_the_same_trees() -> None:
    source = "def f(x):\n    return [y ** 2 for y in range(x) if y % 3]\n" * 50
    expected = ast.dump(python_bugs._original_parse(source))
    results: list[str] = []
    errors: list[BaseException] = []

    def parse() -> None:
        try:
            for _ in range(20):
                results.append(ast.dump(ast.parse(source)))
        except BaseException as exc:   # noqa: BLE001 — any error fails the test below
            errors.append(exc)

    threads = [threading.Thread(target=parse) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(results) == 80 and set(results) == {expected}
