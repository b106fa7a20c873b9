"""Mutants of C sources and what became of them (qmh-mutate): pure data and decisions, no process.

A mutant is one line of one source file replaced by the mutation engine's rewrite (universalmutator's regexp
rules, run by harness.tools.mutate); here it is selected (files, functions), sampled reproducibly, turned into the
patch the QEMU builder applies, classified once built and run, and scored per file and per function.

Outcomes (one per mutant):
  killed        a covering test failed on the mutant (the test and its failing verdicts are recorded)
  timed-out     a covering test ran out of time on it: counted as killed, but listed apart (a hang is caught, yet
                the oracle that would have said why did not get to speak)
  survived      every covering test passed on it
  not-covered   no test of the selection executes its line (gcov on the pristine build): nothing could kill it
  build-failed  the mutant does not compile: dropped from the score
  equivalent    it compiles to a binary identical to the pristine one: it cannot be told apart, dropped
Score = (killed + timed-out) / (killed + timed-out + survived + not-covered).
"""

from __future__ import annotations

import difflib
import hashlib
import random
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping, Sequence

KILLED = "killed"
TIMED_OUT = "timed-out"
SURVIVED = "survived"
NOT_COVERED = "not-covered"
BUILD_FAILED = "build-failed"
EQUIVALENT = "equivalent"
# killed by a test that then failed on the pristine build too, run again at once: the kill proves nothing (a timing
# verdict on a loaded host); listed, left out of the score like build failures
UNCONFIRMED = "unconfirmed"
OUTCOMES = (KILLED, TIMED_OUT, SURVIVED, NOT_COVERED, BUILD_FAILED, EQUIVALENT, UNCONFIRMED)
SCORED = (KILLED, TIMED_OUT, SURVIVED, NOT_COVERED)     # the denominator: mutants that exist and differ


@dataclass(frozen=True)
class Mutant:
    """One single-line rewrite of `file` (path relative to the QEMU source root) at 1-based `line`."""
    file: str
    line: int
    function: str
    original: str
    replacement: str
    rule: str = ""

    @property
    def id(self) -> str:
        """Stable across runs and engine versions that produce the same rewrite: file, line and a hash of the new
        text (the same line can have many mutants)."""
        digest = hashlib.sha256(f"{self.file}:{self.line}:{self.replacement}".encode()).hexdigest()[:8]
        stem = self.file.replace("/", "_").removesuffix(".c")
        return f"{stem}-L{self.line}-{digest}"

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, **asdict(self)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Mutant":
        return cls(data["file"], int(data["line"]), data["function"], data["original"], data["replacement"],
                   data.get("rule", ""))


# -- where the functions are ---------------------------------------------------------------------------------------
_NAME_BEFORE_PAREN = re.compile(r"([A-Za-z_]\w*)\s*\(")
_NOT_FUNCTIONS = {"if", "while", "for", "switch", "return", "sizeof", "defined"}


def function_spans(lines: Sequence[str]) -> list[tuple[str, int, int]]:
    """(name, first line, last line), 1-based, of every function definition in QEMU's coding style: the body's
    opening brace alone in column 0 after the signature, its closing brace in column 0 (QEMU's checkpatch enforces
    this). The name is the last identifier before a `(` in the lines between the previous top-level item and the
    brace. A top-level `{` that follows no `(` (a struct or array initialiser) is not a function."""
    spans: list[tuple[str, int, int]] = []
    header_start = 0
    index = 0
    while index < len(lines):
        text = lines[index].rstrip("\n")
        if text.startswith("{"):
            signature = " ".join(lines[header_start:index])
            names = [n for n in _NAME_BEFORE_PAREN.findall(signature) if n not in _NOT_FUNCTIONS]
            end = index + 1
            while end < len(lines) and not lines[end].startswith("}"):
                end += 1
            if names and signature.rstrip().endswith(")"):
                # the first name followed by '(' is the function's own (later ones are parameters' macros)
                spans.append((names[0], index + 1, min(end, len(lines) - 1) + 1))
            index = end + 1
            header_start = index
            continue
        stripped = text.strip()
        if not stripped or stripped.endswith((";", "}")) or stripped.startswith(("#", "/*", "*", "//")):
            header_start = index + 1
        index += 1
    return spans


def function_at(spans: Sequence[tuple[str, int, int]], line: int) -> str:
    """The function whose body holds `line`, or "" (file scope)."""
    for name, first, last in spans:
        if first <= line <= last:
            return name
    return ""


def wanted(mutant: Mutant, functions: Iterable[str]) -> bool:
    """In a selected function (glob-free: exact names), or anywhere in a function body when none is named.
    File-scope lines (declarations, tables, macros) are never mutated: a rewrite there seldom compiles and never
    says anything about a test."""
    names = set(functions)
    return bool(mutant.function) and (not names or mutant.function in names)


def sample(mutants: Sequence[Mutant], n: int | None, seed: int) -> list[Mutant]:
    """`n` mutants drawn with `seed` (all of them when n is None or ≥ their number), in file and line order. The
    draw depends only on the mutants' ids and the seed, never on the order the engine produced them in, so the
    same N and SEED give the same sample on any host; and it is the first n of one shuffle, so a larger N with the
    same SEED extends a smaller one (a run grown from N=10 to N=80 keeps the 10 it has done)."""
    ordered = sorted(mutants, key=lambda m: m.id)
    if n is not None and n < len(ordered):
        random.Random(seed).shuffle(ordered)
        ordered = ordered[:n]
    return sorted(ordered, key=lambda m: (m.file, m.line, m.id))


def mutated_lines(mutant: Mutant, source: Sequence[str]) -> list[str]:
    """The file's lines as the mutant leaves them. A rewrite may insert a line ("x;" → "x;\n    break;"): each of
    its lines is a line of its own."""
    changed = list(source)
    changed[mutant.line - 1:mutant.line] = mutant.replacement.splitlines(keepends=True)
    return changed


def patch_text(mutant: Mutant, source: Sequence[str], header: Mapping[str, str] | None = None) -> str:
    """A `patch -p1` unified diff (a/FILE, b/FILE) that turns the pristine `source` (its lines, with their
    newlines) into the mutant, after `Key: value` header lines like a regressions/*.patch."""
    if source[mutant.line - 1] != mutant.original:
        raise ValueError(f"{mutant.id}: line {mutant.line} of {mutant.file} is not the mutant's original")
    changed = mutated_lines(mutant, source)
    lines = [f"{key}: {value}\n" for key, value in (header or {}).items()]
    lines.append(f"diff -u a/{mutant.file} b/{mutant.file}\n")
    lines += difflib.unified_diff(source, changed, f"a/{mutant.file}", f"b/{mutant.file}", n=3)
    return "".join(lines)


# -- outcomes --------------------------------------------------------------------------------------------------------
@dataclass
class Result:
    """What became of one mutant; `tests` maps each covering test that ran to passed|failed|error|timeout|…,
    `killed_by` names the first failing test and `verdicts` its failing verdicts (verdicts.json)."""
    outcome: str
    tests: dict[str, str] = field(default_factory=dict)
    killed_by: str = ""
    verdicts: list[str] = field(default_factory=list)
    build_seconds: float = 0.0
    run_seconds: float = 0.0
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Result":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def classify(test_outcomes: Mapping[str, str], timeout_marks: Iterable[str] = ()) -> tuple[str, str]:
    """(outcome, killing test) from the covering tests' outcomes on a mutant. A failure or error kills (the first
    in the order the tests were given, which is the run's order); a test in `timeout_marks` that did not pass
    makes it timed-out unless another test killed it outright; all passed → survived. A test that skipped or did
    not run proves nothing: with no failure and not every test passed, the mutant is not judged as survived but
    raises (the pristine run of the same selection passed, so a skip here is itself a difference worth a look)."""
    timeouts = set(timeout_marks)
    failing = [t for t, o in test_outcomes.items() if o in ("failed", "error") and t not in timeouts]
    if failing:
        return KILLED, failing[0]
    timed = [t for t, o in test_outcomes.items() if t in timeouts and o != "passed"]
    if timed:
        return TIMED_OUT, timed[0]
    if test_outcomes and all(o == "passed" for o in test_outcomes.values()):
        return SURVIVED, ""
    raise ValueError(f"cannot judge a mutant from {dict(test_outcomes)}: no failure and not every test passed")


def is_timeout_message(message: str) -> bool:
    """pytest-timeout's failure text ("Failed: Timeout >900.0s"), or our own outer deadline's note."""
    return "Timeout >" in message or message.startswith("timed out")


def score(mutants: Sequence[Mutant], results: Mapping[str, Result], key: str = "file") -> dict[str, dict[str, Any]]:
    """Per file (key="file") or per "file:function": each outcome's count and the score (None with nothing
    scored)."""
    table: dict[str, dict[str, Any]] = {}
    for mutant in mutants:
        result = results.get(mutant.id)
        if result is None:
            continue
        name = mutant.file if key == "file" else f"{mutant.file}:{mutant.function}"
        row = table.setdefault(name, {o: 0 for o in OUTCOMES})
        row[result.outcome] += 1
    for row in table.values():
        scored = sum(row[o] for o in SCORED)
        row["score"] = round((row[KILLED] + row[TIMED_OUT]) / scored, 3) if scored else None
    return dict(sorted(table.items()))


# -- the resumable state ---------------------------------------------------------------------------------------------
@dataclass
class State:
    """A run's plan and progress, rewritten after every mutant: a run that is interrupted and started again with
    the same selection skips what is done. `config` is what makes results comparable (files, functions, N, SEED,
    tests, engine); resuming under another config starts afresh rather than mixing two experiments."""
    config: dict[str, Any]
    mutants: list[Mutant] = field(default_factory=list)
    results: dict[str, Result] = field(default_factory=dict)
    coverage: dict[str, dict[str, list[str]]] = field(default_factory=dict)   # file → line → tests
    pristine: dict[str, str] = field(default_factory=dict)                    # test → outcome on pristine
    durations: dict[str, float] = field(default_factory=dict)                 # test → seconds on pristine

    def run_order(self) -> list[str]:
        """The tests that passed on pristine, quickest first: with -x a mutant's first failure ends its run, so a
        quick test that kills saves the slow ones."""
        passed = [t for t, o in self.pristine.items() if o == "passed"]
        return sorted(passed, key=lambda t: (self.durations.get(t, float("inf")), t))

    def pending(self) -> list[Mutant]:
        return [m for m in self.mutants if m.id not in self.results]

    def to_json(self) -> dict[str, Any]:
        return {"config": self.config, "mutants": [m.to_json() for m in self.mutants],
                "results": {k: r.to_json() for k, r in self.results.items()}, "coverage": self.coverage,
                "pristine": self.pristine, "durations": self.durations}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "State":
        return cls(dict(data["config"]), [Mutant.from_json(m) for m in data.get("mutants", [])],
                   {k: Result.from_json(r) for k, r in data.get("results", {}).items()},
                   {f: dict(lines) for f, lines in data.get("coverage", {}).items()}, dict(data.get("pristine", {})),
                   dict(data.get("durations", {})))


PLAN_KEYS = ("functions", "n", "seed")     # what only picks the mutants: changing it keeps what was measured


def resume(saved: Mapping[str, Any] | None, config: Mapping[str, Any]) -> tuple[State, str]:
    """The state to go on with and why. The same config: the saved state as it is. Only the plan differs (other
    functions, N or SEED): the pristine run, the coverage map and every mutant's result are kept (a result
    depends on the mutant and the tests, not on the sample), and the mutants are drawn again. Anything else
    (files, tests, arch, engine): a fresh state, rather than two experiments mixed."""
    if saved is None:
        return State(dict(config)), "new run"
    old = dict(saved.get("config", {}))
    if old == dict(config):
        state = State.from_json(saved)
        return state, f"resuming: {len(state.results)} of {len(state.mutants)} mutant(s) done"
    same_selection = all(old.get(k) == v for k, v in config.items() if k not in PLAN_KEYS) and set(old) == set(config)
    if not same_selection:
        return State(dict(config)), "the saved state is of another selection: starting afresh"
    state = State.from_json(saved)
    state.config, state.mutants = dict(config), []
    return state, (f"new sample over the saved selection: {len(state.results)} result(s), the pristine run and the "
                   "coverage map kept")
