"""How a QEMU ended and whether that was expected: ExitInfo, ExitExpectation, and QemuExited — the error that ends a
test at once with the exit status and the output tail (harness.vm.machine raises it)."""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Callable


class MachineError(RuntimeError):
    """A QEMU (Machine) could not do what was asked of it."""


# What a crashing QEMU dies of. Never "expected", whatever a test declared: a deliberate kill sends SIGKILL/SIGTERM.
CRASH_SIGNALS = frozenset({signal.SIGABRT, signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE,
                           signal.SIGTRAP, signal.SIGSYS})


@dataclass(frozen=True)
class ExitInfo:
    """How a QEMU process ended (Popen.returncode: negative = killed by that signal)."""
    returncode: int
    t: float               # time.monotonic() when the harness saw it

    @property
    def signal(self) -> signal.Signals | None:
        if self.returncode >= 0:
            return None
        try:
            return signal.Signals(-self.returncode)
        except ValueError:
            return None

    def describe(self) -> str:
        if self.returncode >= 0:
            return f"exit status {self.returncode}"
        sig = self.signal
        return f"killed by {sig.name if sig else f'signal {-self.returncode}'}"


@dataclass(frozen=True)
class ExitExpectation:
    """A test's (or the harness's) declaration that this QEMU may end now, and how it may end."""
    reason: str
    codes: frozenset[int] = frozenset({0})
    signals: frozenset[int] = frozenset()

    def allows(self, info: ExitInfo) -> bool:
        if info.returncode >= 0:
            return info.returncode in self.codes
        return -info.returncode in self.signals and -info.returncode not in CRASH_SIGNALS


class QemuExited(MachineError):
    """A QEMU process ended. `side` is the role it had where that was noticed (source/destination), else None."""

    def __init__(self, name: str, info: ExitInfo, output_tail: str, console_tail: str = "",
                 side: str | None = None, when: str = "", expected: str | None = None, report: str = "") -> None:
        self.name, self.info, self.side, self.output_tail, self.console_tail = name, info, side, output_tail, console_tail
        self.expected, self.when, self.report = expected, when, report
        who = f"{side} QEMU ({name})" if side and side != name else f"{name} QEMU"
        text = f"{who} {info.describe()}" + (f" {when}" if when else "")
        if expected:
            text += f" (expected: {expected})"
        if report:
            text += f"\nmigration state:{report}"
        text += f"\nQEMU output tail:\n{output_tail}"
        if console_tail:
            text += f"\nguest console tail:\n{console_tail}"
        super().__init__(text)

    @property
    def returncode(self) -> int:
        return self.info.returncode

    @property
    def signal_name(self) -> str | None:
        return self.info.signal.name if self.info.signal else None

    def with_report(self, report: str) -> "QemuExited":
        """The same exit, with the migration's state (both sides' last samples) added to the message."""
        return QemuExited(self.name, self.info, self.output_tail, self.console_tail, self.side, self.when,
                          self.expected, report)


class ExpectedExit:
    """Returned by Machine.expect_exit: usable bare (the declaration stands) or as a context manager (withdrawn at
    the end of the block, if QEMU has not exited by then)."""

    def __init__(self, expectation: ExitExpectation, withdraw: Callable[[ExitExpectation], None]) -> None:
        self.expectation, self._withdraw = expectation, withdraw

    def __enter__(self) -> ExitExpectation:
        return self.expectation

    def __exit__(self, *exc: object) -> None:
        self._withdraw(self.expectation)
