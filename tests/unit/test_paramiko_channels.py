"""Unit tests of harness.hosts.paramiko_channels: no CHANNEL_DATA or WINDOW_ADJUST goes out after the channel's CLOSE,
which OpenSSH's sshd answers by ending the whole connection ("data packet referred to nonexistent channel 3").

The race is made deterministic: a stand-in transport (paramiko's own _send_user_message on it) hands the server's
CLOSE to the channel exactly in the gap paramiko leaves between building a message and sending it."""

from __future__ import annotations

import socket
import threading
from typing import Any, Callable

import paramiko
import pytest
from paramiko.message import Message

from harness.hosts import paramiko_channels

DATA, WINDOW_ADJUST, EOF, CLOSE = 94, 93, 96, 97
ORIGINAL_SEND = paramiko.Channel._send          # before install(), which the harness does on its first connection
ORIGINAL_RECV = paramiko.Channel.recv


class RacingTransport:
    """What Channel needs of a Transport; its first wait to send lets `gap` run, as the transport thread would."""
    _send_user_message = paramiko.Transport._send_user_message
    _sanitize_window_size = paramiko.Transport._sanitize_window_size
    _sanitize_packet_size = paramiko.Transport._sanitize_packet_size

    def __init__(self) -> None:
        self.sent: list[int] = []
        self.active = True
        self.clear_to_send = threading.Event()
        self.clear_to_send.set()
        self.clear_to_send_lock = threading.Lock()
        self.clear_to_send_timeout = 30.0
        self.gap: Callable[[], None] | None = None
        wait = self.clear_to_send.wait

        def wait_then_race(timeout: float | None = None) -> bool:
            gap, self.gap = self.gap, None
            if gap is not None:
                gap()
            return wait(timeout)
        self.clear_to_send.wait = wait_then_race    # type: ignore[method-assign]

    def get_log_channel(self) -> str:
        return "test"

    def _log(self, *args: Any) -> None:
        pass

    def _send_message(self, message: Message) -> None:
        self.sent.append(message.asbytes()[0])

    def _unlink_channel(self, chanid: int) -> None:
        pass


def open_channel() -> tuple[paramiko.Channel, RacingTransport]:
    transport = RacingTransport()
    channel = paramiko.Channel(1)
    channel._set_transport(transport)   # type: ignore[arg-type]
    channel._set_window(65536, 32768)
    channel._set_remote_channel(3, 65536, 32768)
    transport.gap = lambda: channel._handle_close(Message())   # the server's CLOSE, answered in the gap
    return channel, transport


def data_message() -> Message:
    message = Message()
    message.add_byte(bytes([DATA]))
    message.add_int(3)
    return message


def test_stock_paramiko_sends_data_after_its_close() -> None:
    """The bug, shown: what sshd disconnects on."""
    channel, transport = open_channel()
    ORIGINAL_SEND(channel, b"SSH-2.0-paramiko\r\n", data_message())
    assert transport.sent == [EOF, CLOSE, DATA]


def test_data_built_before_the_close_is_dropped_and_the_sender_sees_a_closed_socket() -> None:
    channel, transport = open_channel()
    with pytest.raises(socket.error, match="Socket is closed"):
        paramiko_channels._send(channel, b"SSH-2.0-paramiko\r\n", data_message())
    assert transport.sent == [EOF, CLOSE]


def test_data_on_an_open_channel_goes_out_as_before() -> None:
    channel, transport = open_channel()
    transport.gap = None
    assert paramiko_channels._send(channel, b"x" * 10, data_message()) == 10
    assert transport.sent == [DATA]


def test_a_window_adjustment_after_the_close_is_dropped() -> None:
    channel, transport = open_channel()
    transport.gap = None
    channel._feed(b"y" * 40000)                  # past half the window: reading it acknowledges
    transport.gap = lambda: channel._handle_close(Message())
    assert paramiko_channels._recv(channel, 40000) == b"y" * 40000
    assert transport.sent == [EOF, CLOSE]
    # stock paramiko: the adjustment follows the CLOSE
    channel, transport = open_channel()
    transport.gap = None
    channel._feed(b"y" * 40000)
    transport.gap = lambda: channel._handle_close(Message())
    ORIGINAL_RECV(channel, 40000)
    assert transport.sent == [EOF, CLOSE, WINDOW_ADJUST]
