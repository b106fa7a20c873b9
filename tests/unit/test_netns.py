"""harness.hosts.netns's pure parts: option parsing, the ip/tc command lines (the netem path included, which this
host's kernel cannot run), owner names and reaping decisions, parsing of ping / iperf3 / ip output; the
stall-vs-RTT curves and their plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.hosts import netns
from harness.analysis.latency import LatencySummary, StallPoint, stall_curves
from harness.hosts.netns import Shaping
from harness.report.plots import plot_stalls_vs_rtt


@pytest.mark.parametrize("text, bits", [("100mbit", 100_000_000), ("1gbit", 10**9), ("500kbit", 500_000),
                                        ("2.5Mbit", 2_500_000), ("64000bit", 64000)])
def test_rates_in_tc_units(text: str, bits: int) -> None:
    assert netns.parse_rate(text) == bits


@pytest.mark.parametrize("text", ["fast", "100", "100mb", "0mbit", "-1mbit", ""])
def test_bad_rates_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a bandwidth"):
        netns.parse_rate(text)


def test_delays_and_losses() -> None:
    assert netns.parse_delay("5ms") == 5.0
    assert netns.parse_delay("250us") == 0.25
    assert netns.parse_delay("1s") == 1000.0
    assert netns.parse_delay("2.5") == 2.5      # a bare number is ms, as tc reads it
    assert netns.parse_loss("1%") == 1.0 and netns.parse_loss("0.1") == 0.1
    for bad in ("soon", "-5ms"):
        with pytest.raises(ValueError):
            netns.parse_delay(bad)
    for bad in ("100%", "lots", "-1"):
        with pytest.raises(ValueError):
            netns.parse_loss(bad)


def test_marker_values_override_the_command_line_field_by_field() -> None:
    base = netns.shaping_from(rate="100mbit", loss="1%")
    assert base == Shaping(rate_bit=10**8, loss_pct=1.0)
    assert netns.shaping_from(delay="10ms", base=base) == Shaping(rate_bit=10**8, delay_ms=10.0, loss_pct=1.0)
    assert Shaping.for_rtt(20) == Shaping(delay_ms=10.0)
    assert not Shaping(rate_bit=10**8).needs_netem and Shaping(loss_pct=0.1).needs_netem


def test_an_unshaped_link_gets_no_qdisc() -> None:
    assert netns.shaping_commands("ns", "mig0", Shaping()) == []


def test_bandwidth_alone_is_a_root_tbf_with_a_bucket_of_at_least_one_tick() -> None:
    (command,) = netns.shaping_commands("ns", "mig0", Shaping(rate_bit=10**9))
    assert command == ["tc", "-n", "ns", "qdisc", "add", "dev", "mig0", "root", "handle", "1:", "tbf", "rate",
                       "1000000000bit", "burst", str(10**9 // 8 // 100), "latency", "50ms"]
    assert netns.tbf_burst_bytes(10**6) == 32 * 1024    # never below a few packets


def test_delay_and_loss_are_netem_with_tbf_under_it_for_a_bandwidth() -> None:
    netem, tbf = netns.shaping_commands("ns", "mig0", Shaping(rate_bit=10**8, delay_ms=2.5, loss_pct=0.5))
    assert netem == ["tc", "-n", "ns", "qdisc", "add", "dev", "mig0", "root", "handle", "1:", "netem",
                     "delay", "2500us", "loss", "0.5%"]
    assert tbf[:10] == ["tc", "-n", "ns", "qdisc", "add", "dev", "mig0", "parent", "1:", "handle"]
    assert tbf[10:13] == ["2:", "tbf", "rate"]
    (delay_only,) = netns.shaping_commands("ns", "mig0", Shaping(delay_ms=10))
    assert delay_only[-3:] == ["netem", "delay", "10000us"]


def test_setup_makes_the_veth_inside_both_namespaces_and_shapes_both_ends() -> None:
    commands = netns.setup_commands("A", "B", Shaping(rate_bit=10**8))
    assert commands[0] == ["ip", "link", "add", "mig0", "netns", "A", "type", "veth", "peer", "name", "mig0",
                           "netns", "B"]
    for ns, address in (("A", "198.18.0.1/30"), ("B", "198.18.0.2/30")):
        assert ["ip", "-n", ns, "link", "set", "lo", "up"] in commands    # the SSH hostfwd binds on lo
        assert ["ip", "-n", ns, "addr", "add", address, "dev", "mig0"] in commands
        assert any(c[:3] == ["tc", "-n", ns] and "tbf" in c for c in commands)
    assert netns.link_state_command("A", up=False) == ["ip", "-n", "A", "link", "set", "dev", "mig0", "down"]


def test_names_carry_their_owner_and_only_dead_owners_are_reaped() -> None:
    name = netns.namespace_name(1234, "5678", 3, "src")
    assert name == "qmh-1234-5678-3-src" and netns.owner_of(name) == (1234, "5678")
    assert netns.owner_of("qmh-exp-a") is None and netns.owner_of("docker-1") is None
    names = ["qmh-1-10-1-src", "qmh-1-10-1-dst", "qmh-2-20-1-src", "qmh-1-99-1-probe", "someone-else"]
    alive = {(2, "20"), (1, "99")}
    assert netns.stale_namespaces(names, lambda pid, start: (pid, start) in alive) == [
        "qmh-1-10-1-src", "qmh-1-10-1-dst"]
    assert netns.parse_netns_list("qmh-1-10-1-src (id: 1)\nqmh-1-10-1-dst\n\n") == ["qmh-1-10-1-src",
                                                                                  "qmh-1-10-1-dst"]


PING = """PING 198.18.0.2 (198.18.0.2) 56(84) bytes of data.
64 bytes from 198.18.0.2: icmp_seq=1 ttl=64 time=0.061 ms
64 bytes from 198.18.0.2: icmp_seq=2 ttl=64 time=0.045 ms
64 bytes from 198.18.0.2: icmp_seq=4 ttl=64 time=0.050 ms

--- 198.18.0.2 ping statistics ---
4 packets transmitted, 3 received, 25% packet loss, time 63ms
rtt min/avg/max/mdev = 0.045/0.052/0.061/0.006 ms
"""


def test_ping_output_gives_each_rtt_and_the_loss() -> None:
    result = netns.parse_ping(PING)
    assert result.rtts_ms == (0.061, 0.045, 0.050) and (result.sent, result.received) == (4, 3)
    assert result.rtt.p50_us == 50.0
    assert result.to_json()["loss_pct"] == 25.0
    with pytest.raises(ValueError):
        netns.parse_ping("ping: connect: Network is unreachable\n")


def test_iperf3_json_gives_the_receivers_rate_or_its_error() -> None:
    assert netns.parse_iperf3(json.dumps({"end": {"sum_received": {"bits_per_second": 9.5e7}}})) == 9.5e7
    with pytest.raises(ValueError, match="Connection refused"):
        netns.parse_iperf3(json.dumps({"error": "unable to connect to server: Connection refused", "end": {}}))


def test_tx_bytes_from_ip_json() -> None:
    text = json.dumps([{"ifname": "mig0", "stats64": {"rx": {"bytes": 5}, "tx": {"bytes": 123456}}}])
    assert netns.parse_tx_bytes(text) == 123456


def summary(p50: float, p99: float) -> LatencySummary:
    return LatencySummary(100, p50, p99, p99, p99 * 2, p50, p50 * 100)


def test_stall_curves_count_in_link_round_trips_sorted_by_rtt_and_skip_unmeasured_links() -> None:
    points = [StallPoint(20, 20_000.0, True, summary(30_000, 60_000)),
              StallPoint(0, 50.0, True, summary(100, 1_000)),
              StallPoint(0, 50.0, False, summary(200, 100_000)),
              StallPoint(5, None, True, summary(1, 1))]
    curves = stall_curves(points)
    assert curves["preempt on"]["p50"] == [(0.05, 2.0), (20.0, 1.5)]
    assert curves["preempt on"]["p99"] == [(0.05, 20.0), (20.0, 3.0)]
    assert curves["preempt off"] == {"p50": [(0.05, 4.0)], "p99": [(0.05, 2000.0)]}


def test_the_stall_vs_rtt_plot_draws_synthetic_curves_and_an_empty_set(tmp_path: Path) -> None:
    curves = stall_curves([StallPoint(rtt, rtt * 1000 + 50, preempt, summary(rtt * 1000 + 80, rtt * 4000 + 900))
                           for rtt in (0, 5, 20) for preempt in (True, False)])
    plot_stalls_vs_rtt(tmp_path / "stalls-vs-rtt.png", "synthetic", curves)
    plot_stalls_vs_rtt(tmp_path / "empty.png", "nothing measured", {})
    for name in ("stalls-vs-rtt.png", "empty.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_root_or_tools_the_reason_says_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)
    assert netns.usable() == netns.HostCapability(False, "network namespaces (--topology netns, `link` tests) need "
                                                         "root")
    monkeypatch.setattr(netns.os, "geteuid", lambda: 0)
    monkeypatch.setattr(netns.shutil, "which", lambda tool: None if tool in ("tc", "iperf3") else f"/bin/{tool}")
    assert netns.usable().reason == ("network namespaces (--topology netns, `link` tests) need tc (package "
                                     "iproute2: make setup)")
    assert netns.measuring_tools_missing() == ("the link is measured with iperf3 (package iperf3), not installed "
                                               "here: run `make setup`")
    assert netns.reap_stale() == []   # where no namespace can be made, none is looked for
