"""qmh-mutate's compile pre-check (harness.tools.mutate_syntax) against the host's real C compiler: the build tree's
own command, with its output and dependency options dropped, refuses what the build would refuse and accepts what
it would compile."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.analysis import mutants as mut
from harness.tools import mutate_syntax

SOURCE = """\
#include "local.h"

int count_up(int n)
{
    int total = 0;
    for (int i = 0; i < n; i++) {
        total += LOCAL_STEP;
    }
    return total;
}
""".splitlines(keepends=True)

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler (cc) on PATH")


@pytest.fixture
def build_dir(tmp_path: Path) -> Path:
    """A tree like meson's: the source under src/migration (with a header beside it, found by quote-include), the
    object's command in build/compile_commands.json behind a ccache wrapper, with -MD/-MQ/-MF/-o/-c."""
    (tmp_path / "src" / "migration").mkdir(parents=True)
    (tmp_path / "src" / "migration" / "local.h").write_text("#define LOCAL_STEP 2\n")
    (tmp_path / "src" / "migration" / "count.c").write_text("".join(SOURCE))
    build = tmp_path / "build"
    build.mkdir()
    command = ("/usr/lib/ccache/cc -Wall -Werror -std=gnu11 -MD -MQ count.o -MF count.o.d -o count.o "
               "-c ../src/migration/count.c")
    (build / "compile_commands.json").write_text(json.dumps([
        {"directory": str(build), "command": command, "file": "../src/migration/count.c",
         "output": "count.o"}]))
    return build


def mutant(line: int, replacement: str) -> mut.Mutant:
    return mut.Mutant("migration/count.c", line, "count_up", SOURCE[line - 1], replacement)


def test_the_command_is_the_trees_own_without_output_dependencies_or_wrapper(build_dir: Path) -> None:
    command = mutate_syntax.syntax_command(build_dir, "migration/count.c")
    assert command is not None
    argv, directory, path = command
    assert argv == ["cc", "-Wall", "-Werror", "-std=gnu11"]
    assert directory == build_dir and path == (build_dir.parent / "src/migration/count.c").resolve()
    assert mutate_syntax.syntax_command(build_dir, "migration/other.c") is None


def test_a_mutant_the_compiler_refuses_is_named_with_its_file_and_line(build_dir: Path) -> None:
    error = mutate_syntax.syntax_error(mutant(9, "    continue;\n    return total;\n"), SOURCE, build_dir)
    assert error is not None and error.startswith("migration/count.c:9:") and "continue" in error
    undeclared = mutate_syntax.syntax_error(mutant(7, "        totl += LOCAL_STEP;\n"), SOURCE, build_dir)
    assert undeclared is not None and "totl" in undeclared


def test_a_compilable_mutant_and_the_pristine_source_pass(build_dir: Path) -> None:
    assert mutate_syntax.syntax_error(mutant(6, "    for (int i = 0; i <= n; i++) {\n"), SOURCE, build_dir) is None
    assert mutate_syntax.syntax_error(mutant(7, SOURCE[6]), SOURCE, build_dir) is None   # the header was found


def test_no_compile_database_leaves_the_decision_to_the_build(tmp_path: Path) -> None:
    assert mutate_syntax.syntax_error(mutant(6, "garbage\n"), SOURCE, tmp_path) is None


def test_the_mutated_text_is_what_the_patch_makes() -> None:
    inserted = mutant(9, "    continue;\n    return total;\n")
    text = mutate_syntax.mutated_text(inserted, SOURCE)
    assert text.splitlines()[8:10] == ["    continue;", "    return total;"]
    assert "".join(SOURCE) != text and len(text.splitlines()) == len(SOURCE) + 1
