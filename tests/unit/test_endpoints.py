"""harness.migration.endpoints' pure part: a URI said as the QAPI `channels` argument, a file URI's offset, the
fdset form (no QEMU)."""

from __future__ import annotations

import pytest

from harness.migration.endpoints import Handoff, channels_for, fdset_uri, split_file_uri


def test_channels_say_what_the_uri_says() -> None:
    assert channels_for("unix:/run/x.sock") == [
        {"channel-type": "main", "addr": {"transport": "socket", "type": "unix", "path": "/run/x.sock"}}]
    assert channels_for("tcp:127.0.0.1:4444")[0]["addr"] == {
        "transport": "socket", "type": "inet", "host": "127.0.0.1", "port": "4444"}
    assert channels_for("file:/w/m.img,offset=4096")[0]["addr"] == {
        "transport": "file", "filename": "/w/m.img", "offset": 4096}
    assert channels_for("file:/w/m.img")[0]["addr"]["offset"] == 0
    with pytest.raises(ValueError):
        channels_for("exec:cat")


def test_file_uri_offset_and_fdset_form() -> None:
    assert split_file_uri("file:/w/m.img,offset=0x1000") == ("/w/m.img", 4096)
    assert fdset_uri("file:/w/m.img,offset=4096") == "file:/dev/fdset/1,offset=4096"
    assert fdset_uri("file:/w/m.img") == "file:/dev/fdset/1"
    with pytest.raises(ValueError):
        split_file_uri("file:/w/m.img,size=1")


def test_an_unknown_address_is_refused_up_front() -> None:
    with pytest.raises(ValueError, match="unknown migration address"):
        Handoff("rdma")
