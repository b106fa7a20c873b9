"""qmh-mutate's compile pre-check: a mutant the compiler's front end refuses is "build failed" without a build.

universalmutator's rules are regular expressions: most of their C mutants do not compile (a `continue` outside a
loop, an undeclared name, `break` at file scope — 12 of the first 17 of session 13's sample). A full variant build
costs ~25 s each here (the object, then the link); the same compiler with the same flags and `-fsyntax-only`
rejects such a mutant in < 1 s. The command is the build tree's own (compile_commands.json: the compiler, every
-I/-D/-W flag meson gave the object), fed the mutated source on stdin, so an error here is an error in the real
build: the pre-check never calls a compilable mutant broken. What only code generation finds (a -Werror warning
that needs optimisation) still fails, later, in the real build.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path
from typing import Sequence

from harness.analysis import mutants as mut

# what the object's rule adds around the compile itself: the output, the dependency file, the source operand
_DROPPED_WITH_VALUE = {"-o", "-MQ", "-MF", "-MT", "-c"}
_DROPPED = {"-MD", "-MMD"}


def syntax_command(build_dir: Path, file: str) -> tuple[list[str], Path, Path] | None:
    """(compiler argv without output and source, its working dir, the source's path) of FILE (relative to the QEMU
    source root) in BUILD_DIR's compile_commands.json; None when the tree has no entry for it."""
    database = build_dir / "compile_commands.json"
    if not database.exists():
        return None
    for entry in json.loads(database.read_text()):
        if not entry["file"].endswith("/" + file):
            continue
        argv = shlex.split(entry["command"]) if "command" in entry else list(entry["arguments"])
        kept: list[str] = []
        skip = False
        for arg in argv:
            if skip:
                skip = False
            elif arg in _DROPPED_WITH_VALUE:
                skip = True
            elif arg not in _DROPPED:
                kept.append(arg)
        if "ccache" in kept[0]:          # /usr/lib/ccache/cc: ccache would only pass -fsyntax-only through
            kept[0] = os.path.basename(kept[0])
        directory = Path(entry["directory"])
        return kept, directory, (directory / entry["file"]).resolve()
    return None


def mutated_text(mutant: mut.Mutant, source: Sequence[str]) -> str:
    """The whole file as the mutant's patch leaves it."""
    return "".join(mut.mutated_lines(mutant, source))


def syntax_error(mutant: mut.Mutant, source: Sequence[str], build_dir: Path) -> str | None:
    """The compiler's first error for the mutant (as `FILE:LINE:COL: error: …`), or None when its front end accepts
    it — or when there is no compile command to ask (the real build then decides)."""
    command = syntax_command(build_dir, mutant.file)
    if command is None:
        return None
    argv, directory, path = command
    # stdin has no directory: the file's own dir joins the quote-include path, as it is for the file itself
    result = subprocess.run([*argv, "-fsyntax-only", "-iquote", str(path.parent), "-x", "c", "-"],
                            input=mutated_text(mutant, source), cwd=directory, capture_output=True, text=True,
                            check=False)
    if result.returncode == 0:
        return None
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    first = errors[0] if errors else (result.stderr.strip().splitlines() or ["the compiler refused it"])[-1]
    return first.replace("<stdin>", mutant.file).strip()[:300]
