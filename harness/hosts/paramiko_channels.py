"""A paramiko race that costs a whole SSH connection to an OpenSSH server: data sent on a channel after its CLOSE.

paramiko (3.5.1 here) builds a channel's CHANNEL_DATA (Channel._send) and CHANNEL_WINDOW_ADJUST (Channel.recv) under
the channel's lock but sends them after releasing it ("we can deadlock during re-keying" otherwise). When the far
end of a direct-tcpip channel closes — a guest's SSH forward that accepted and dropped the connection (QEMU's
hostfwd while the guest's sshd is not up yet), a QMP port being torn down — the transport thread answers the
server's CLOSE with ours in that gap, and the message built before goes out after it. OpenSSH's sshd frees a channel
once both CLOSEs have crossed, and a packet for a freed channel makes it end the connection: every QMP bridge, guest
session and the remote QEMU's command channel with it (the remote QEMU is then killed by its watcher). Seen in the
stand-in remote's sshd log of a failed run (session 11, test_remote postcopy with a remote source):

    connect_to 127.0.0.1 port 31171: failed.            (x8: QMP not listening yet, refused: harmless)
    channel_by_id: 3: bad id: channel free
    Disconnecting user root 198.18.0.2 port 59766: data packet referred to nonexistent channel 3

The fix: the message is sent under the transport's clear_to_send_lock only if the channel is still open then.
Every CLOSE paramiko sends goes through that lock after the channel is marked closed (Channel._close_internal), so
checking under it orders the two: data before our CLOSE goes out, data after is dropped (the sender sees a closed
socket, as if the close had come first). Installed by harness.hosts.ssh.Connection (idempotent); re-keying is as
safe as before — the lock is taken exactly as Transport._send_user_message takes it. Tests: the race made
deterministic (tests/unit/test_paramiko_channels.py) and, against a real sshd with the gap widened,
tests/behaviour/test_remote.py (stock paramiko: "data packet referred to nonexistent channel 0", connection gone).
"""

from __future__ import annotations

import socket
import time
from typing import Any

import paramiko
from paramiko.common import cMSG_CHANNEL_WINDOW_ADJUST
from paramiko.message import Message
from paramiko.buffered_pipe import PipeTimeout

_installed = False


def send_while_open(channel: paramiko.Channel, message: Message) -> bool:
    """Send `message` for `channel` as Transport._send_user_message does, unless the channel is closed by the time
    the transport is ours; False when it was (nothing sent). A dead transport drops the message, as paramiko does."""
    transport = channel.transport
    start = time.time()
    while True:
        transport.clear_to_send.wait(0.1)
        if not transport.active:
            return True
        transport.clear_to_send_lock.acquire()
        if transport.clear_to_send.is_set():
            break
        transport.clear_to_send_lock.release()
        if time.time() > start + transport.clear_to_send_timeout:
            raise paramiko.SSHException("Key-exchange timed out waiting for key negotiation")
    try:
        if channel.closed:
            return False
        transport._send_message(message)
        return True
    finally:
        transport.clear_to_send_lock.release()


def _send(self: paramiko.Channel, s: bytes, m: Message) -> int:
    """paramiko.Channel._send, with the message sent only while the channel is open (send_while_open)."""
    with self.lock:
        if self.closed:
            raise socket.error("Socket is closed")
        size = self._wait_for_send_window(len(s))
        if size == 0:
            return 0     # EOF or similar
        m.add_string(s[:size])
    if not send_while_open(self, m):
        raise socket.error("Socket is closed")
    return int(size)


def _recv(self: paramiko.Channel, nbytes: int) -> Any:
    """paramiko.Channel.recv, with its window adjustment sent only while the channel is open."""
    try:
        out = self.in_buffer.read(nbytes, self.timeout)
    except PipeTimeout:
        raise socket.timeout()
    ack = self._check_add_window(len(out))
    if ack > 0:
        m = Message()
        m.add_byte(cMSG_CHANNEL_WINDOW_ADJUST)
        m.add_int(self.remote_chanid)
        m.add_int(ack)
        send_while_open(self, m)     # closed meanwhile: the window no longer matters
    return out


def install() -> None:
    """Patch paramiko.Channel (every channel of every transport of this process). Idempotent."""
    global _installed
    if not _installed:
        paramiko.Channel._send = _send          # type: ignore[method-assign]
        paramiko.Channel.recv = _recv           # type: ignore[method-assign]
        _installed = True
