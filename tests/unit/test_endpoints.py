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


def test_exec_commands_stay_in_the_work_dir_and_are_quoted(tmp_path) -> None:
    handoff = Handoff("exec")
    work = tmp_path / "a dir"
    work.mkdir()
    file_uri = f"file:{work}/m.img"
    # A file: cat into it on the source, out of it on the destination, the path quoted for the shell.
    assert handoff._command(file_uri, side=1) == f"cat > '{work}/m.img'"
    assert handoff._command(file_uri, side=0) == f"cat '{work}/m.img'"
    with pytest.raises(ValueError, match="offset"):
        handoff._command(f"{file_uri},offset=4096", side=1)
    # A socket: a FIFO beside it (made by the destination's side, 0600), the source's pipe counted by wc -c.
    socket_uri = f"unix:{work}/migration.sock"
    assert handoff._command(socket_uri, side=0) == f"cat '{work}/migration.pipe'"
    assert (work / "migration.pipe").stat().st_mode & 0o777 == 0o600
    assert handoff._command(socket_uri, side=1) == (f"tee '{work}/migration.pipe' | wc -c > "
                                                    f"'{work}/migration.count'")
    (work / "migration.count").write_text("12345\n")
    assert handoff.piped_bytes(timeout=1) == 12345
    assert Handoff("exec").piped_bytes(timeout=0) is None
    with pytest.raises(ValueError):
        handoff._command("tcp:127.0.0.1:0", side=1)
