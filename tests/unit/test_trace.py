from pathlib import Path

from harness.analysis.trace import parse_file, parse_lines

LOG = """\
4242@1795433486.860580:savevm_section_start ram, section_id 2
4242@1795433486.860700:savevm_section_end ram, section_id 2 -> 0
4242@1795433486.861000:savevm_section_start dirty-bitmap, section_id 5
qemu-system-x86_64: warning: something unrelated
4242@1795433486.862000:savevm_section_end dirty-bitmap, section_id 5 -> 1
4242@1795433486.863000:migrate_pending_exact exact pending size 1048576 (pre = 0 post=1048576)
migrate_pending_estimate estimate pending size 4096 (pre = 4096 post=0)
4242@1795433486.864000:savevm_section_end ram, section_id
4242@1795433486.8650"""


def test_parses_timestamps_pids_and_known_argument_layouts() -> None:
    log = parse_lines(LOG.splitlines())
    names = [r.name for r in log.records]
    assert names == ["savevm_section_start", "savevm_section_end", "savevm_section_start", "savevm_section_end",
                     "migrate_pending_exact", "migrate_pending_estimate"]
    first = log.records[0]
    assert first.pid == 4242 and first.t == 1795433486.86058 and first.fields == {"id": "ram", "section_id": "2"}
    assert log.records[3].fields["ret"] == "1"
    assert log.records[4].fields == {"size": "1048576", "pre": "0", "post": "1048576"}
    assert log.records[5].t is None and log.records[5].fields["pre"] == "4096"
    # the warning, the truncated section_end and the torn last line
    assert log.skipped == 3
    assert log.count("savevm_section_start") == 2


def test_known_events_filter_and_missing_file(tmp_path: Path) -> None:
    log = parse_lines(["4242@1.5:not_an_event x", "4242@1.6:savevm_section_start ram, section_id 1"],
                      known_events=frozenset({"savevm_section_start"}))
    assert [r.name for r in log.records] == ["savevm_section_start"] and log.skipped == 1
    assert parse_file(tmp_path / "absent.log").records == []


def test_multifd_channel_setup_names_its_channel_type_in_10_0_and_7_2_layouts() -> None:
    log = parse_lines([
        "1@1.0:multifd_set_outgoing_channel ioc=0x1 ioctype=qio-channel-socket hostname=127.0.0.1",
        "1@1.1:multifd_set_outgoing_channel ioc=0x2 ioctype=qio-channel-tls hostname=127.0.0.1",
        "1@1.2:multifd_set_outgoing_channel ioc=0x3 ioctype=qio-channel-tls hostname=127.0.0.1 err=(nil)",
    ])
    assert [r.fields["ioctype"] for r in log.records] == ["qio-channel-socket", "qio-channel-tls", "qio-channel-tls"]
