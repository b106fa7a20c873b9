"""pytest plugin (the pytest11 entry point): command-line options, markers, fixtures, per-test artefacts, skip reasons
from the QMP schema. One concern per module, each registered here through `pytest_plugins`:

  harness.plugin.options      the options and markers
  harness.plugin.session      the session check (binaries, accelerator, image, hosts, links) and `needs` skips
  harness.plugin.xdist_roles  controller and workers under pytest-xdist
  harness.plugin.results      per-test results, the run directory, the index at session end
  harness.plugin.progress     live progress lines of long migrations
  harness.plugin.fixtures     every fixture a test uses (testbed, guest, pair, …)

Markers
  needs(capabilities=[…], parameters=[…], fields=[…], commands=[…], migration_properties=[…], trace_events=[…],
        parameter_values={parameter: [value, …]})
      skip (with the reason) unless both the source and destination binaries have all of these (trace events:
      the source only, harness.qemu.compat.SOURCE_SIDE_NEEDS; parameter_values: values of an enum parameter such as
      multifd-compression, present only in a QEMU built with them)
  needs_userfaultfd   skip unless postcopy can run here (root or vm.unprivileged_userfaultfd=1)
  known_bug(key, …)   the test is exposed to a known QEMU bug fixed upstream (harness.qemu.known_bugs): when a
                      binary of this run predates the fix (--assume-fixed KEY: it has it), the test runs with the
                      bug's workaround if it has one, or has the one verdict the bug spoils an expected failure
                      (the rest judged) if it names one, else it is an xfail naming the bug
  guest(**overrides)  MachineConfig overrides for the `guest`/`pair` fixtures (memory_mib=…, cpus=…)
  slow                long matrices: run by `make test`, deselected by `make check`
  smoke               boot, precopy and postcopy with integrity: what `make check` also runs on the other guest arch
  link(rate=…, delay=…, loss=…)
                      run over a network-namespace link (harness.hosts.netns) whatever --topology says, shaped so (tc
                      units: rate "100mbit", one-way delay "5ms", loss "1%"; each overrides its --link-* option);
                      delay or loss skip with the reason on a kernel without netem
  cpus(n)             the host CPUs the test needs while it runs (harness.hosts.parallel's budget), instead of the count
                      derived from what it boots
  cold_boot           its guests boot cold, never restored from the session's warm boot (harness.migration.warm_boot)

Session check: once collection is done (so a run of unit tests alone never needs QEMU), the arch, the source and
destination binaries (each must be a QEMU system emulator of that arch: `-version` and QMP query-target), the guest
image (complete, private keys not readable by others) and the artefacts directory are resolved once for the whole
session. Anything wrong stops the session before any test runs, with one line and exit status 4 (pytest's usage
error): a test can then never be skipped, failed or passed because of a bad input.

Parallel runs (pytest-xdist `-n N`, `--dist load --tx …`): the controller names the run directory and hands the
name to every worker, which makes it (mkdir is race-free) and its tests' directories in it; the controller alone
points `latest` at it, writes the index and results.json (from the reports the workers send) and the JUnit file.
Every process reaps what dead runs left at its session start, except a worker on the controller's own host (the
controller already did, before starting it); live siblings are never reaped, their dirs and namespaces being owned
by live pids. Ports and host CPUs are shared through harness.hosts.parallel: each test waits for the CPUs it needs.

Reports: every test's artefacts directory gets its plots at teardown (harness.report.artefacts, drawn by
harness.report.plots); at session end the run directory gets index.html + results.json and ARTEFACTS/index.html
shows that run. A test still running when the session is interrupted (Ctrl-C, SIGTERM) is recorded as
"interrupted", and the run header says so.
A migration running longer than --progress-interval seconds prints one line per interval to the terminal.
"""

from __future__ import annotations

from harness.core.python_bugs import serialize_ast_parse

# Before any test can fail: a failure's report must not die of CPython's ast race (harness.core.python_bugs).
serialize_ast_parse()

# In import order (each after the plugin modules it imports), so pytest imports every one itself, with its assertion
# rewriting, before another module's import could load it first.
pytest_plugins = [
    "harness.plugin.xdist_roles",
    "harness.plugin.session",
    "harness.plugin.options",
    "harness.plugin.results",
    "harness.plugin.progress",
    "harness.plugin.fixtures",
]
