# make test   — set up this host (root), build the guest image, run the whole behaviour suite (slow ones too)
#               against the installed QEMU (KVM when a probe guest runs under it, else TCG).
# make check  — the project's own tests: unit tests + the behaviour suite on TCG, without the `slow` matrices,
#               then the `smoke` tests on the s390x guest when ARCH is x86_64 (SMOKE_ARCHES).
# Both draw only the migrations of tests that did not pass (PLOTS=failed, pytest's --plots; ~0.4 s a plot, 210 in
# make test): the series JSON are always kept, and python -m harness.report.plots DIR draws the rest. PLOTS=all draws
# every one.
# Point at another QEMU: make test PYTEST_ARGS='--qemu-binary /path/to/qemu/build'
# Another guest arch: make test ARCH=s390x (its image in build/images/s390x, its QEMU qemu-system-s390x).

HOST_ARCH   := $(shell uname -m)
ARCH        ?= $(HOST_ARCH)
VENV        ?= .venv
PY          := $(VENV)/bin/python
IMAGE_DIR   := build/images/$(ARCH)
PYTEST_ARGS ?=
PLOTS       ?= failed
# Guest arches whose smoke (boot, precopy and postcopy with integrity) `make check` runs after ARCH's suite, each
# in its own pytest session with SMOKE_PYTEST_ARGS, not PYTEST_ARGS: those may name ARCH's QEMU (--qemu-binary) or
# the first session's --junitxml. s390x only: with ARCH=s390x there is none (the x86_64 guest is what a plain
# `make check` runs, and an s390x host cannot build it: Debian 12 has no x86_64 cross gcc there).
SMOKE_ARCHES      ?= $(filter-out $(ARCH),s390x)
SMOKE_PYTEST_ARGS ?=
SMOKE_RUN = for arch in $(SMOKE_ARCHES); do \
	$(PY) -m pytest tests/behaviour -m smoke --accel tcg --arch $$arch $(SMOKE_PYTEST_ARGS) || exit $$?; done

.PHONY: all setup qemu-build-deps image smoke-images check-images workloads test check smoke unit bench validate flake matrix matrix-cell mutate qemu-variants bisect-demo \
	clean distclean

all: check

setup: build/.setup.stamp
build/.setup.stamp: scripts/setup.sh pyproject.toml
	bash scripts/setup.sh   # it writes $@ itself, then hands what it made to the checkout's owner

# QEMU's build dependencies, for a user's `make validate`, `make qemu-variants`, `make mutate` (root, once): the
# build's Debian packages and apt's deb-src entry for the source (qemu-build/build.sh --deps-only). It creates
# nothing in the checkout. A user's build that misses one says which in one line; it never calls apt-get.
qemu-build-deps:
	bash qemu-build/build.sh --arch $(ARCH) --deps-only

image: setup
	bash images/build.sh $(ARCH) $(IMAGE_DIR)

smoke-images: setup
	for arch in $(SMOKE_ARCHES); do bash images/build.sh $$arch build/images/$$arch || exit 1; done

workloads:
	$(MAKE) -C guest-workloads OUT=$(CURDIR)/build/workloads/host

test: setup image
	$(PY) -m pytest tests/behaviour --accel auto --arch $(ARCH) --plots $(PLOTS) $(PYTEST_ARGS)

check: check-images
	$(PY) -m pytest tests -m "not slow" --accel tcg --arch $(ARCH) --plots $(PLOTS) $(PYTEST_ARGS)
	$(SMOKE_RUN)

# make check's guest images, ARCH's and the smoke arches', built at once: each build is one busy process (downloads,
# then unpacking and packing the initramfs) and holds its own arch's lock, so two of them use both cores of a 2-core
# host (a fresh clone here: 25 s for both, downloads included; one after the other 30 s + 35 s in session 11). The
# images need the host's packages, not the venv: `make setup` makes the venv meanwhile (session 15: ~19 s of a fresh
# clone's set-up that no longer waits). The first failure's status wins.
check-images:
	@$(MAKE) --no-print-directory -q build/.setup.stamp || bash scripts/setup.sh --packages-only
	@pids=""; $(MAKE) --no-print-directory setup & pids="$$pids $$!"; \
	for arch in $(ARCH) $(SMOKE_ARCHES); do bash images/build.sh $$arch build/images/$$arch & pids="$$pids $$!"; done; \
	status=0; for pid in $$pids; do wait $$pid || { s=$$?; [ $$status -ne 0 ] || status=$$s; }; done; exit $$status

# The other arches' smoke alone (the last step of `make check`).
smoke: setup smoke-images
	$(SMOKE_RUN)

unit: setup
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

# Boot-to-SSH, a test's guest ready cold vs from a warm boot, harness overhead, sampler rate and cost, workload rate
# accuracy vs targets, the parallel efficiency of a small selection run serially and with -n 2 (~5 min on TCG
# here), and where the last make check's time went (artefacts/junit.xml + each test's records; BENCH_ARGS=
# '--durations LOG' adds the setup/call/teardown split from a --durations=0 log):
# a table on stdout, JSON in artefacts/bench.json. BENCH_ARGS='--accel tcg --only boot' narrows it.
# ARCH=s390x also times the host arch's guest boot in the same run, for the ratio (its image is built too).
BENCH_ARGS ?=
bench: setup image
	$(if $(filter-out $(HOST_ARCH),$(ARCH)),bash images/build.sh $(HOST_ARCH) build/images/$(HOST_ARCH))
	$(PY) -m harness.tools.bench --arch $(ARCH) $(BENCH_ARGS)

# Self-validation: build QEMU 10.0.2 (Debian source package) and one variant per regressions/*.patch, run each
# patch's guarding tests (its `Tests:` header) against its variant and all of them against the unmodified build.
# VALIDATE_ARGS='--only B0 --no-build -- -x' narrows it. ARCH=s390x builds qemu-system-s390x (build/qemu/variants-s390x)
# and boots the s390x guest: make validate ARCH=s390x VALIDATE_ARGS='--only B0,B4'.
VALIDATE_ARGS ?=
validate: setup image
	$(PY) -m harness.tools.validate --arch $(ARCH) $(VALIDATE_ARGS)

# Flakiness: run TESTS N times (separate pytest runs, artefacts/flake/run-K each) and print per test how often it
# passed and the distinct failure reasons with counts (also artefacts/flake.json). A run pytest could not run is
# reported as such and counts for nothing. make flake N=20 TESTS='tests/behaviour/test_basics.py -k multifd'
# FLAKE_ARGS='--lock FILE': each run holds a flock on FILE (runs interleave with other jobs on a shared host).
N     ?= 20
TESTS ?=
flake: setup image
	@test -n "$(TESTS)" || { echo "make flake: set TESTS='<pytest selection>' (and N=runs)" >&2; exit 2; }
	$(PY) -m harness.tools.flake --runs $(N) $(FLAKE_ARGS) -- $(TESTS) --accel tcg --arch $(ARCH) $(PYTEST_ARGS)

# Cross-version: every behaviour file (not slow) over 7.2→10.0, 10.0→7.2 and 10.0→10.0, as a pair × test table
# with per-pair counts at the end (also artefacts/matrix/matrix.json and index.html). 7.2 is Debian 12's own package,
# unpacked under build/qemu/ (scripts/fetch-debian-qemu.sh; the installed QEMU stays). MATRIX_OLD=/path/to/qemu-or-
# build-tree replaces it; MATRIX_ARGS='--lock FILE -- tests/behaviour/test_basics.py' narrows. Exit 0 / 1 (a cell
# failed or errored) / 4 (a pair could not run).
MATRIX_OLD  ?=
MATRIX_ARGS ?=
MATRIX_OLD_BINARY = "$(or $(MATRIX_OLD),$$(bash scripts/fetch-debian-qemu.sh))"
matrix: setup image
	$(PY) -m harness.tools.matrix --old $(MATRIX_OLD_BINARY) $(MATRIX_ARGS)

# The cross-version cell CI runs (.ci/run): the upgrade pair only (old → new: the old binary is the source, so a
# known bug's workaround is exercised), three representative tests — precopy over a namespace link (RAM identical),
# postcopy with the old QEMU on a remote host (test_remote's sshd), and multifd zlib, whose QEMU byte count is a known
# bug's expected verdict failure on the old source (the rest judged). (#35: the plain precopy and the cancel it also
# ran are in `make matrix`.)
MATRIX_CELL_TESTS = \
	tests/behaviour/test_link.py::test_precopy_over_the_link_keeps_ram_identical \
	'tests/behaviour/test_remote.py::test_postcopy_with_a_remote_side_keeps_the_guest_intact[source]' \
	'tests/behaviour/test_multifd_compression.py::test_multifd_compression_sends_less_and_keeps_ram_identical[zlib]'
# MATRIX_CELL_ARGS='--lock FILE' takes a lock around it.
MATRIX_CELL_ARGS ?=
matrix-cell: setup image
	$(PY) -m harness.tools.matrix --old $(MATRIX_OLD_BINARY) --pairs upgrade --artefacts artefacts/matrix-cell \
		$(MATRIX_CELL_ARGS) -- $(MATRIX_CELL_TESTS)

# Mutation score of QEMU 10.0.2's migration code (harness.tools.mutate, README "Mutation score"): N mutants drawn
# with SEED from universalmutator's C rules over MUTATE_FILES (globs; default ram.c, migration.c, multifd*.c,
# postcopy-ram.c, savevm.c), each built as a variant (ccache, one object) and run against only the tests whose gcov
# coverage (a pristine --enable-gcov build, once) holds its line. Resumes from artefacts/mutate/state.json; record
# in artefacts/mutate/mutate.json, page artefacts/mutate/index.html. MUTATE_ARGS='--exhaustive', '--functions F…',
# "--tests 'tests/behaviour/test_basics.py'", '--lock /tmp/qmh-cpu.lock', '-- -n 2'.
SEED  ?= 1
MUTATE_ARGS ?=
mutate: setup image
	@$(PY) -c 'import universalmutator' 2>/dev/null || $(PY) -m pip install -q -c constraints.txt -e ".[dev,mutate]"
	$(PY) -m harness.tools.mutate --arch $(ARCH) -n $(N) --seed $(SEED) $(MUTATE_ARGS)

qemu-variants: setup
	bash qemu-build/build.sh --arch $(ARCH) --pristine $(addprefix --patch ,$(wildcard regressions/*.patch))

# `git bisect run` over a synthetic QEMU history with one planted regression (see scripts/bisect-demo.sh).
bisect-demo: setup image
	bash scripts/bisect-demo.sh $(BISECT_DEMO_ARGS)

clean:
	rm -rf artefacts build/cache

distclean: clean
	rm -rf build $(VENV)
