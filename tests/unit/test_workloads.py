"""Host-side tests of the guest workloads (guest-workloads/).

The workloads are built natively (static, as for the guest) with
`make -C guest-workloads OUT=<tmpdir>` and exercised directly on the host: no
QEMU needed.  Covers argument validation, the seqinc/seqcheck pattern
(including deliberately corrupted pattern files), dirty's rate control and
seeding, probe's statistics, and pagelife's phases and page check.
"""

import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.analysis.latency import parse_probe_raw

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "guest-workloads"

# Page layout shared with guest-workloads/seqpage.h
SEQ_PAGE = 4096
SEQ_MAGIC = 0x5345514E43504147
OFF_COUNTER, OFF_MAGIC, OFF_INDEX, OFF_TRAILER = 0, 8, 16, SEQ_PAGE - 8
U64 = "<Q" if sys.byteorder == "little" else ">Q"


@pytest.fixture(scope="session")
def bins(tmp_path_factory):
    out = tmp_path_factory.mktemp("workloads")
    r = subprocess.run(["make", "-s", "-C", str(SRC), "OUT=%s" % out],
                       capture_output=True, text=True)
    assert r.returncode == 0, "build failed:\n" + r.stdout + r.stderr
    return out


def run(bins, prog, *args, timeout=30):
    return subprocess.run([str(bins / prog), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)


def wait_for(path, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert time.monotonic() < deadline, "%s did not appear" % path
        time.sleep(0.01)


# --------------------------------------------------------------------------
# argument validation: every bad input -> exit 2 and one line naming the option
# --------------------------------------------------------------------------

BAD_ARGS = [
    ("dirty", ["--size-mib", "abc"], "--size-mib"),
    ("dirty", ["--size-mib", "-5"], "--size-mib"),
    ("dirty", ["--size-mib", "0"], "--size-mib"),
    ("dirty", ["--size-mib", "99999999999"], "--size-mib"),
    ("dirty", ["--size-mib", "999999999999999999999999"], "--size-mib"),
    ("dirty", ["--size-mib", "1e3"], "--size-mib"),
    ("dirty", ["--size-mib", " 4"], "--size-mib"),
    ("dirty", ["--size-mib", "0x10"], "--size-mib"),
    ("dirty", ["--size-mib", ""], "--size-mib"),
    ("dirty", ["--rate-mibps", "fast"], "--rate-mibps"),
    ("dirty", ["--rate-mibps", "-1"], "--rate-mibps"),
    ("dirty", ["--rate-mibps", "1e9"], "--rate-mibps"),
    ("dirty", ["--rate-mibps", "99999999"], "--rate-mibps"),
    ("dirty", ["--rate-mibps", "nan"], "--rate-mibps"),
    ("dirty", ["--duration", "x"], "--duration"),
    ("dirty", ["--duration", "-1"], "--duration"),
    ("dirty", ["--duration", "1e12"], "--duration"),
    ("dirty", ["--seed", "-1"], "--seed"),
    ("dirty", ["--seed", "1.5"], "--seed"),
    ("dirty", ["--seed", "18446744073709551616"], "--seed"),
    ("dirty", ["--order", "sideways"], "--order"),
    ("dirty", ["--status", ""], "--status"),
    ("dirty", ["--size-mib"], "--size-mib"),
    ("dirty", ["--bogus"], "--bogus"),
    ("dirty", ["stray"], "stray"),
    ("seqinc", ["--size-mib", "0"], "--size-mib"),
    ("seqinc", ["--rate-passes", "often"], "--rate-passes"),
    ("seqinc", ["--rate-passes", "-2"], "--rate-passes"),
    ("seqinc", ["--duration", "soon"], "--duration"),
    ("seqinc", ["--file", ""], "--file"),
    ("seqinc", ["--seed", "1"], "--seed"),  # seqinc has no seed
    ("seqcheck", ["--file"], "--file"),
    ("seqcheck", ["--size-mib", "4"], "--size-mib"),
    ("seqcheck", ["extra"], "extra"),
    ("probe", ["--rounds", "0"], "--rounds"),
    ("probe", ["--rounds", "many"], "--rounds"),
    ("probe", ["--rounds", "99999999999"], "--rounds"),
    ("probe", ["--duration", "1", "--rounds", "2"], "--rounds"),
    ("probe", ["--max-samples", "0"], "--max-samples"),
    ("probe", ["--size-mib", "-1"], "--size-mib"),
    ("probe", ["--seed", "abc"], "--seed"),
    ("probe", ["--raw", ""], "--raw"),
    ("pagelife", ["--chunk-kib", "3"], "--chunk-kib"),
    ("pagelife", ["--chunk-kib", "96"], "--chunk-kib"),
    ("pagelife", ["--size-mib", "1", "--chunk-kib", "2048"], "--size-mib"),
    ("pagelife", ["--status", ""], "--status"),
]


@pytest.mark.parametrize("prog,args,option", BAD_ARGS,
                         ids=["%s %s" % (p, " ".join(a)) for p, a, _ in BAD_ARGS])
def test_bad_arguments_exit_2_with_one_line(bins, prog, args, option):
    r = run(bins, prog, *args)
    assert r.returncode == 2, r.stderr
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(prog + ": ")
    assert option in lines[0]
    assert r.stdout == ""


def test_size_larger_than_ram_is_a_usage_error(bins):
    r = run(bins, "dirty", "--size-mib", "1048576", "--duration", "1")
    assert r.returncode == 2
    assert "--size-mib" in r.stderr and "memory" in r.stderr


@pytest.mark.parametrize("prog", ["dirty", "seqinc", "seqcheck", "probe", "pagelife"])
def test_help(bins, prog):
    r = run(bins, prog, "--help")
    assert r.returncode == 0
    assert r.stdout.startswith("usage: " + prog)


# --------------------------------------------------------------------------
# seqinc / seqcheck
# --------------------------------------------------------------------------

def make_pattern(npages, base, step_at, torn_at=None):
    """A valid pattern: pages [0, step_at) hold base+1, the rest base."""
    buf = bytearray(npages * SEQ_PAGE)
    for i in range(npages):
        v = base + 1 if i < step_at else base
        set_page(buf, i, v, v, index=i)
    if torn_at is not None:
        set_page(buf, torn_at, base + 1, base, index=torn_at)
    return buf


def set_page(buf, i, counter, trailer=None, index=None, magic=SEQ_MAGIC):
    o = i * SEQ_PAGE
    struct.pack_into(U64, buf, o + OFF_COUNTER, counter)
    struct.pack_into(U64, buf, o + OFF_MAGIC, magic)
    struct.pack_into(U64, buf, o + OFF_INDEX, i if index is None else index)
    struct.pack_into(U64, buf, o + OFF_TRAILER, counter if trailer is None else trailer)


def get_page(buf, i):
    return bytes(buf[i * SEQ_PAGE:(i + 1) * SEQ_PAGE])


def check(bins, tmp_path, buf):
    f = tmp_path / "pattern"
    f.write_bytes(bytes(buf))
    out = tmp_path / "verdict.json"
    r = run(bins, "seqcheck", "--file", f, "--out", out)
    lines = r.stdout.splitlines()
    assert len(lines) == 1, r.stdout
    return r.returncode, lines[0], json.loads(out.read_text())


N, BASE, STEP = 256, 41, 100


@pytest.mark.parametrize("step", [0, 1, STEP, N - 1])
def test_valid_states_pass(bins, tmp_path, step):
    rc, line, js = check(bins, tmp_path, make_pattern(N, BASE, step))
    assert rc == 0, line
    assert line == "SEQCHECK PASS pages=%d base=%d step_at=%d" % (N, BASE, step)
    assert js["result"] == "PASS" and js["bad_pages"] == 0 and js["torn_page"] is None


def test_all_pages_incremented_is_uniform(bins, tmp_path):
    rc, line, _ = check(bins, tmp_path, make_pattern(N, BASE, N))
    assert rc == 0
    assert line == "SEQCHECK PASS pages=%d base=%d step_at=0" % (N, BASE + 1)


@pytest.mark.parametrize("torn", [0, STEP])
def test_torn_page_at_the_step_passes(bins, tmp_path, torn):
    rc, line, js = check(bins, tmp_path, make_pattern(N, BASE, torn, torn_at=torn))
    assert rc == 0, line
    assert line == "SEQCHECK PASS pages=%d base=%d step_at=%d torn_page=%d" % (
        N, BASE, torn, torn)
    assert js["torn_page"] == torn


def assert_fail(rc, line, js, page, words, nbad=1):
    assert rc == 1, line
    assert line.startswith("SEQCHECK FAIL page %d: " % page), line
    for w in words:
        assert w in line, line
    assert line.endswith("(+%d more bad pages)" % (nbad - 1)), line
    assert js["result"] == "FAIL" and js["bad_pages"] == nbad
    assert js["bad"][0]["page"] == page


def test_stale_page_in_the_incremented_part_fails(bins, tmp_path):
    buf = make_pattern(N, BASE, STEP)
    set_page(buf, STEP // 2, BASE)  # missed the last pass
    rc, line, js = check(bins, tmp_path, buf)
    assert_fail(rc, line, js, STEP // 2,
                ["counter=%d" % BASE, "expected %d" % (BASE + 1), "stale by 1 pass"])
    assert js["bad"][0]["problem"] == "wrong_counter"


def test_stale_page_in_the_other_part_fails(bins, tmp_path):
    buf = make_pattern(N, BASE, STEP)
    set_page(buf, 200, BASE - 1)
    rc, line, js = check(bins, tmp_path, buf)
    assert_fail(rc, line, js, 200, ["expected %d" % BASE, "stale by 1 pass"])


def test_zeroed_page_fails(bins, tmp_path):
    buf = make_pattern(N, BASE, STEP)
    buf[37 * SEQ_PAGE:38 * SEQ_PAGE] = bytes(SEQ_PAGE)
    rc, line, js = check(bins, tmp_path, buf)
    assert_fail(rc, line, js, 37, ["zeroed page"])
    assert js["bad"][0]["problem"] == "zeroed"


def test_page_from_another_offset_fails(bins, tmp_path):
    buf = make_pattern(N, BASE, STEP)
    buf[150 * SEQ_PAGE:151 * SEQ_PAGE] = get_page(buf, 180)  # same counter, other index
    rc, line, js = check(bins, tmp_path, buf)
    assert_fail(rc, line, js, 150, ["holds the data of page 180"])
    assert js["bad"][0]["problem"] == "wrong_index"


def test_torn_page_away_from_the_step_fails(bins, tmp_path):
    buf = make_pattern(N, BASE, STEP)
    set_page(buf, 20, BASE + 1, BASE)
    rc, line, js = check(bins, tmp_path, buf)
    assert_fail(rc, line, js, 20, ["torn page", "away from the step at page %d" % STEP])
    assert js["bad"][0]["problem"] == "torn_away_from_step"


def test_second_torn_page_fails(bins, tmp_path):
    buf = make_pattern(N, BASE, STEP, torn_at=STEP)
    set_page(buf, 230, BASE, BASE - 1)
    rc, line, js = check(bins, tmp_path, buf)
    assert_fail(rc, line, js, 230, ["torn page"])


def test_two_steps_fail(bins, tmp_path):
    buf = make_pattern(N, BASE, STEP)
    for i in range(180, 190):  # a second block of incremented pages
        set_page(buf, i, BASE + 1)
    rc, line, js = check(bins, tmp_path, buf)
    assert_fail(rc, line, js, 180, ["ahead by 1 pass"], nbad=10)


def test_bad_magic_and_garbage_fail(bins, tmp_path):
    buf = make_pattern(N, BASE, STEP)
    set_page(buf, 5, BASE + 1, magic=0x1234)
    set_page(buf, 6, BASE + 1, BASE + 7)  # header/trailer mismatch
    rc, line, js = check(bins, tmp_path, buf)
    assert_fail(rc, line, js, 5, ["bad magic"], nbad=2)
    assert [b["problem"] for b in js["bad"]] == ["bad_magic", "header_trailer_mismatch"]


def test_bad_page_list_is_capped(bins, tmp_path):
    buf = make_pattern(N, BASE, STEP)
    for i in range(0, N, 2):
        buf[i * SEQ_PAGE:(i + 1) * SEQ_PAGE] = bytes(SEQ_PAGE)
    rc, line, js = check(bins, tmp_path, buf)
    assert rc == 1 and "(+127 more bad pages)" in line
    assert js["bad_pages"] == 128 and len(js["bad"]) == 64 and js["bad_list_truncated"]


def test_missing_or_odd_sized_file_fails(bins, tmp_path):
    r = run(bins, "seqcheck", "--file", tmp_path / "nope")
    assert r.returncode == 1 and r.stdout.startswith("SEQCHECK FAIL cannot open")
    odd = tmp_path / "odd"
    odd.write_bytes(b"x" * 100)
    r = run(bins, "seqcheck", "--file", odd)
    assert r.returncode == 1 and "not a positive multiple" in r.stdout


def test_seqinc_with_live_checks_then_corruption(bins, tmp_path):
    f, pid, out = tmp_path / "seq", tmp_path / "seqinc.pid", tmp_path / "seqinc.json"
    p = subprocess.Popen([str(bins / "seqinc"), "--size-mib", "8", "--file", str(f),
                          "--pidfile", str(pid), "--out", str(out)])
    try:
        wait_for(pid)
        for _ in range(5):  # the writer is SIGSTOPped during each check
            r = run(bins, "seqcheck", "--file", f, "--pidfile", pid,
                    "--out", tmp_path / "c.json")
            assert r.returncode == 0, r.stdout
            assert r.stdout.startswith("SEQCHECK PASS pages=2048 ")
            js = json.loads((tmp_path / "c.json").read_text())
            assert js["writer_stopped"] and js["writer_pid"] == p.pid
            time.sleep(0.05)
        assert p.poll() is None, "seqinc must be running again (SIGCONT)"
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 0
    res = json.loads(out.read_text())
    assert res["pages"] == 2048 and res["passes"] > 0 and res["elapsed_s"] > 0
    assert not pid.exists()

    r = run(bins, "seqcheck", "--file", f)
    assert r.returncode == 0, r.stdout
    # corrupt the real file: make one page stale by a pass
    buf = bytearray(f.read_bytes())
    c = struct.unpack_from(U64, buf, 1000 * SEQ_PAGE)[0]
    set_page(buf, 1000, c - 1 if c > 0 else c + 2)
    f.write_bytes(bytes(buf))
    r = run(bins, "seqcheck", "--file", f)
    assert r.returncode == 1 and r.stdout.startswith("SEQCHECK FAIL page 1000: ")


def test_seqinc_rate_and_duration(bins, tmp_path):
    out = tmp_path / "o.json"
    r = run(bins, "seqinc", "--size-mib", "1", "--file", tmp_path / "s", "--duration", "1",
            "--rate-passes", "20", "--out", out)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert 19 <= res["passes"] <= 21, res
    assert 0.95 <= res["elapsed_s"] <= 1.2
    r = run(bins, "seqcheck", "--file", tmp_path / "s")
    assert r.stdout.strip() == "SEQCHECK PASS pages=256 base=%d step_at=0" % res["passes"]


# --------------------------------------------------------------------------
# dirty
# --------------------------------------------------------------------------

def test_dirty_rate_within_5_percent(bins, tmp_path):
    out, status = tmp_path / "d.json", tmp_path / "d.status"
    r = run(bins, "dirty", "--size-mib", "16", "--rate-mibps", "20", "--duration", "2",
            "--seed", "3", "--out", out, "--status", status)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert abs(res["achieved_mibps"] - 20) <= 1.0, res
    assert 1.95 <= res["elapsed_s"] <= 2.2
    assert res["bytes_dirtied"] == res["pages_dirtied"] * res["page_size"]
    assert res["passes"] == res["pages_dirtied"] // res["pages"]
    assert res["requested_mibps"] == 20 and res["seed"] == 3 and res["order"] == "seq"
    st = json.loads(status.read_text())
    assert set(st) >= {"elapsed_s", "pages_dirtied", "achieved_mibps"}


def test_dirty_rate_log_records_its_own_progress_every_100ms(bins, tmp_path):
    out, log = tmp_path / "d.json", tmp_path / "d.rate"
    r = run(bins, "dirty", "--size-mib", "8", "--rate-mibps", "40", "--duration", "1",
            "--seed", "3", "--out", out, "--rate-log", log)
    assert r.returncode == 0, r.stderr
    rows = [tuple(map(int, line.split())) for line in log.read_text().splitlines()]
    assert 10 <= len(rows) <= 13, rows              # one at start, every 100 ms, one on exit
    times, pages = zip(*rows)
    assert list(times) == sorted(times) and list(pages) == sorted(pages)
    steps = [(b - a) / 1e6 for a, b in zip(times, times[1:-1])]
    assert all(90 <= step <= 140 for step in steps), steps
    res = json.loads(out.read_text())
    assert pages[-1] == res["pages_dirtied"] and pages[0] == 0
    mibps = (pages[-1] - pages[1]) * 4096 / 2**20 / ((times[-1] - times[1]) / 1e9)
    assert abs(mibps - 40) <= 4, mibps
    assert run(bins, "dirty", "--rate-log", "").returncode == 2


def dirty_first_pages(bins, tmp_path, *args):
    out = tmp_path / "fp.json"
    r = run(bins, "dirty", "--size-mib", "4", "--duration", "0.1", "--out", out, *args)
    assert r.returncode == 0, r.stderr
    return json.loads(out.read_text())


def test_dirty_order_and_seed(bins, tmp_path):
    seq = dirty_first_pages(bins, tmp_path, "--order", "seq", "--seed", "1")
    assert seq["first_pages"] == list(range(8)) and seq["order"] == "seq"
    a = dirty_first_pages(bins, tmp_path, "--order", "random", "--seed", "42")
    b = dirty_first_pages(bins, tmp_path, "--order", "random", "--seed", "42")
    c = dirty_first_pages(bins, tmp_path, "--order", "random", "--seed", "43")
    assert a["first_pages"] == b["first_pages"]
    assert a["first_pages"] != c["first_pages"]
    assert a["first_pages"] != list(range(8)) and len(set(a["first_pages"])) == 8
    assert a["order"] == "random" and a["seed"] == 42


def test_dirty_default_seed_is_printed(bins, tmp_path):
    out = tmp_path / "s.json"
    r = run(bins, "dirty", "--size-mib", "1", "--duration", "0.05", "--out", out)
    assert r.returncode == 0
    seed = json.loads(out.read_text())["seed"]
    assert ("seed=%d" % seed) in r.stderr


def test_dirty_stops_on_sigterm_and_writes_result(bins, tmp_path):
    out, pid = tmp_path / "t.json", tmp_path / "dirty.pid"
    p = subprocess.Popen([str(bins / "dirty"), "--size-mib", "8", "--rate-mibps", "max",
                          "--full-page", "--pidfile", str(pid), "--out", str(out)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    wait_for(pid)
    time.sleep(0.3)
    os.kill(int(pid.read_text()), signal.SIGTERM)
    assert p.wait(10) == 0
    res = json.loads(out.read_text())
    assert res["stopped_by"] == "signal" and res["pages_dirtied"] > 0 and res["full_page"]
    assert not pid.exists()


def read_region(pid, size, offset, length):
    """Read the dirty process's anonymous region of `size` bytes via /proc/PID/mem."""
    with open("/proc/%d/maps" % pid) as f:
        for line in f:
            fields = line.split()
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            if hi - lo == size and fields[1].startswith("rw") and len(fields) == 5:
                with open("/proc/%d/mem" % pid, "rb") as mem:
                    mem.seek(lo + offset)
                    return mem.read(length)
    raise AssertionError("region of %d bytes not found" % size)


@pytest.mark.parametrize("full_page", [False, True])
def test_dirty_writes_nonzero_changing_data(bins, tmp_path, full_page):
    pid = tmp_path / "dirty.pid"
    size = 4 << 20
    p = subprocess.Popen([str(bins / "dirty"), "--size-mib", "4", "--rate-mibps", "400",
                          "--pidfile", str(pid)] + (["--full-page"] if full_page else []),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(pid)
        time.sleep(0.1)  # 40 MiB written: every page at least once
        first = read_region(p.pid, size, 0, size)
        time.sleep(0.1)
        second = read_region(p.pid, size, 0, size)
    finally:
        p.terminate()
        p.wait(10)
    page = os.sysconf("SC_PAGE_SIZE")
    for data in (first, second):
        words = struct.unpack("=%dQ" % (size // 8), data)
        per_page = page // 8
        for pg in range(0, size // page, 97):
            w = words[pg * per_page:(pg + 1) * per_page]
            written = w if full_page else w[::per_page // 8]
            assert all(x & 1 for x in written), "page %d: zero or even word" % pg
    assert first != second  # rewritten with new values
    changed = sum(first[i:i + page] != second[i:i + page] for i in range(0, size, page))
    assert changed == size // page


# --------------------------------------------------------------------------
# probe
# --------------------------------------------------------------------------

def test_probe_percentiles_on_known_input(bins, tmp_path):
    lat = tmp_path / "lat.txt"
    lat.write_text("\n".join(str(i * 1000) for i in range(1000, 0, -1)) + "\n")
    out = tmp_path / "stats.json"
    r = run(bins, "probe", "--selftest-latencies", lat, "--out", out)
    assert r.returncode == 0, r.stderr
    s = json.loads(out.read_text())
    assert s["count"] == 1000
    assert (s["p50_us"], s["p90_us"], s["p99_us"], s["p999_us"]) == (500, 900, 990, 999)
    assert s["max_us"] == 1000 and s["min_us"] == 1 and s["mean_us"] == 500.5
    assert s["histogram"] == [[1, 1], [2, 1], [4, 2], [8, 4], [16, 8], [32, 16], [64, 32],
                              [128, 64], [256, 128], [512, 256], [1024, 488]]


def test_probe_percentiles_small_inputs(bins, tmp_path):
    lat = tmp_path / "lat.txt"
    lat.write_text("7000\n")
    r = run(bins, "probe", "--selftest-latencies", lat)
    s = json.loads(r.stdout)
    assert s["p50_us"] == s["p999_us"] == s["max_us"] == 7 and s["count"] == 1
    lat.write_text("")
    s = json.loads(run(bins, "probe", "--selftest-latencies", lat).stdout)
    assert s["count"] == 0 and s["histogram"] == []


def test_probe_percentiles_beyond_the_fine_table(bins, tmp_path):
    """Samples >= 2^20 ns take the overflow path: still exact."""
    lat = tmp_path / "lat.txt"
    lat.write_text("3000000 500 2000000 1500\n")
    s = json.loads(run(bins, "probe", "--selftest-latencies", lat).stdout)
    assert (s["p50_us"], s["p90_us"], s["max_us"], s["min_us"]) == (1.5, 3000, 3000, 0.5)
    assert s["histogram"][-1] == [4096, 1] and s["histogram"][0] == [1, 1]


def read_raw(path):
    # Through the harness's own parser: the records must be in the format it reads (little-endian on every guest,
    # s390x included), not merely in the building host's native order.
    return [(a.t_ns, a.page, a.latency_ns) for a in parse_probe_raw(path.read_bytes())]


def test_probe_rounds_raw_and_seed(bins, tmp_path):
    results = []
    for k in range(2):
        out, raw = tmp_path / ("p%d.json" % k), tmp_path / ("p%d.raw" % k)
        r = run(bins, "probe", "--size-mib", "4", "--rounds", "2", "--seed", "9",
                "--prefill", "--out", out, "--raw", raw)
        assert r.returncode == 0, r.stderr
        results.append((json.loads(out.read_text()), read_raw(raw)))
    (js, recs), (_, recs2) = results
    npages = 4 * 1024 * 1024 // js["page_size"]
    assert js["count"] == 2 * npages == len(recs)
    assert js["rounds_completed"] == 2 and js["seed"] == 9 and js["prefilled"]
    for rnd in range(2):  # every page exactly once per round
        assert sorted(r[1] for r in recs[rnd * npages:(rnd + 1) * npages]) == list(range(npages))
    assert [r[1] for r in recs] == [r[1] for r in recs2]  # same seed, same order
    assert [r[1] for r in recs[:npages]] != [r[1] for r in recs[npages:]]
    ts = [r[0] for r in recs]
    assert ts == sorted(ts) and js["started_at_ns"] <= ts[0] and ts[-1] <= js["ended_at_ns"]
    assert js["p50_us"] <= js["p90_us"] <= js["p99_us"] <= js["p999_us"] <= js["max_us"]
    assert sum(c for _, c in js["histogram"]) == js["count"]


def test_probe_raw_is_capped_but_stats_are_complete(bins, tmp_path):
    out, raw = tmp_path / "c.json", tmp_path / "c.raw"
    r = run(bins, "probe", "--size-mib", "1", "--rounds", "3", "--max-samples", "100",
            "--out", out, "--raw", raw)
    assert r.returncode == 0, r.stderr
    js = json.loads(out.read_text())
    assert js["count"] == 768 and js["raw_records"] == 100 and js["raw_truncated"]
    assert len(read_raw(raw)) == 100


def test_probe_wait_signal(bins, tmp_path):
    out, pid = tmp_path / "w.json", tmp_path / "probe.pid"
    p = subprocess.Popen([str(bins / "probe"), "--size-mib", "2", "--seed", "1",
                          "--wait-signal", "--pidfile", str(pid), "--out", str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    wait_for(pid)
    time.sleep(0.2)
    assert p.poll() is None, "probe must wait for SIGUSR1"
    t = time.monotonic_ns()
    os.kill(p.pid, signal.SIGUSR1)
    assert p.wait(10) == 0
    js = json.loads(out.read_text())
    assert js["count"] == 512 and js["prefilled"] and js["started_at_ns"] >= t
    assert "waiting for SIGUSR1" in p.stdout.read()


def test_probe_duration(bins, tmp_path):
    out = tmp_path / "d.json"
    r = run(bins, "probe", "--size-mib", "1", "--duration", "0.3", "--out", out)
    assert r.returncode == 0
    js = json.loads(out.read_text())
    assert js["stopped_by"] == "duration" and js["count"] > 0
    assert sum(c for _, c in js["histogram"]) == js["count"]
    assert 0.25 <= (js["ended_at_ns"] - js["started_at_ns"]) / 1e9 <= 1.0


# --------------------------------------------------------------------------
# pagelife: each class through its phases, checked page by page
# --------------------------------------------------------------------------

def start_pagelife(bins, tmp_path, *args):
    files = {name: tmp_path / f"pl.{name}" for name in ("pid", "json", "status")}
    p = subprocess.Popen([str(bins / "pagelife"), "--size-mib", "8", *args, "--pidfile", str(files["pid"]),
                          "--out", str(files["json"]), "--status", str(files["status"])],
                         stdout=subprocess.PIPE, text=True)
    wait_for(files["pid"])
    return p, files


def next_phase(p, files, phase):
    p.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while json.loads(files["status"].read_text())["phase"] != phase:
        assert time.monotonic() < deadline, "phase %d not reached" % phase
        time.sleep(0.01)
    return json.loads(files["status"].read_text())


@pytest.mark.parametrize("args", [[], ["--thp", "--chunk-kib", "2048", "--size-mib", "16"]], ids=["4k", "thp"])
def test_pagelife_every_phase_then_every_page_as_expected(bins, tmp_path, args):
    p, files = start_pagelife(bins, tmp_path, *args)
    for phase in (1, 2, 3):
        next_phase(p, files, phase)
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=10)
    res = json.loads(files["json"].read_text())
    assert out.startswith("PAGELIFE PASS pages=") and res["result"] == "PASS" and res["phase"] == 3
    assert res["bad_pages"] == 0 and res["listed"] == []
    classes = res["classes"]
    assert len(classes) == 8 and all(c["pages"] == res["pages"] // 8 for c in classes.values())
    assert classes["zeroed"]["expected"] == "zero" and classes["zeroed-restored"]["expected"] == "gen0"
    assert res["zeroings"] == 2 * classes["zeroed"]["pages"] and res["churned_pages"] == 3 * res["pages"] // 8


M64 = (1 << 64) - 1


def mix64(x):
    """common.h's wl_mix64 (splitmix64's finaliser)."""
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & M64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def pagelife_gen(page, gen, seed=1):
    """pagelife.c's word_of() for every word of `page`, generation `gen`."""
    words = [0x50414745464C4946 ^ gen, page]
    words += [((mix64((seed * 0x10001 + page * 4 + gen) & M64) + k) & M64) | 1 for k in range(2, 512)]
    return struct.pack(U64[0] + "512Q", *words)


def region_of(pid, size):
    """The start of pagelife's region: its own mapping (madvise split it off), `size` bytes, 2 MiB aligned."""
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        start, end = (int(x, 16) for x in line.split()[0].split("-"))
        if end - start == size and start % (2 << 20) == 0:
            return start
    raise AssertionError(f"no {size}-byte mapping in /proc/{pid}/maps")


def test_pagelife_names_each_page_that_holds_something_else(bins, tmp_path):
    p, files = start_pagelife(bins, tmp_path)
    region, chunk = region_of(p.pid, 8 << 20), 16 * 4096   # before phase 1 remaps chunks of it
    next_phase(p, files, 1)
    with open(f"/proc/{p.pid}/mem", "r+b", buffering=0) as mem:
        mem.seek(region + chunk)                  # the first zeroed page (16) holds its old content again:
        mem.write(pagelife_gen(16, 0))            # what a zero page not written on the destination leaves
        mem.seek(region + 4096)                   # a kept page (1) zeroed
        mem.write(bytes(4096))
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=10)
    res = json.loads(files["json"].read_text())
    assert res["result"] == "FAIL" and res["bad_pages"] == 2, out
    assert out.startswith("PAGELIFE FAIL 2 of 2048 pages wrong: page 1 (kept): expected gen0, found zero")
    listed = {e["page"]: e for e in res["listed"]}
    assert listed[1]["found"] == "zero" and listed[16]["class"] == "zeroed"
    assert listed[16]["expected"] == "zero" and listed[16]["found"] == "gen0"
    assert res["classes"]["kept"]["bad"] == 1 and res["classes"]["zeroed"]["bad"] == 1
