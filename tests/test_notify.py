"""daemon.notify against real unix datagram sockets, as systemd would bind them."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.notify import Notifier, watchdog_interval


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket bound in tmp, and the NOTIFY_SOCKET value naming it."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2.0)
    yield sock, str(path)
    sock.close()


def _recv(sock: socket.socket) -> str:
    return sock.recv(4096).decode("utf-8")


def test_messages_reach_the_socket(listener: tuple[socket.socket, str]) -> None:
    sock, name = listener
    n = Notifier({"NOTIFY_SOCKET": name})
    assert n.enabled
    assert n.ready()
    assert _recv(sock) == "READY=1"
    assert n.watchdog()
    assert _recv(sock) == "WATCHDOG=1"
    assert n.status("scanning inbox: 3 pending")
    assert _recv(sock) == "STATUS=scanning inbox: 3 pending"
    assert n.stopping()
    assert _recv(sock) == "STOPPING=1"


def test_status_is_one_line(listener: tuple[socket.socket, str]) -> None:
    sock, name = listener
    Notifier({"NOTIFY_SOCKET": name}).status("line one\nline two")
    assert _recv(sock) == "STATUS=line one line two"


def test_reloading_carries_a_monotonic_timestamp(listener: tuple[socket.socket, str]) -> None:
    sock, name = listener
    Notifier({"NOTIFY_SOCKET": name}).reloading()
    lines = _recv(sock).split("\n")
    assert lines[0] == "RELOADING=1"
    key, _, value = lines[1].partition("=")
    assert key == "MONOTONIC_USEC" and int(value) > 0


def test_abstract_namespace_socket() -> None:
    name = f"facesetd-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2.0)
    try:
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).ready()
        assert _recv(sock) == "READY=1"
    finally:
        sock.close()


def test_unset_socket_is_a_no_op() -> None:
    n = Notifier({})
    assert not n.enabled
    assert n.ready() is False
    assert n.watchdog() is False
    assert n.status("x") is False
    assert n.stopping() is False
    assert n.reloading() is False


def test_reads_os_environ_by_default(
    monkeypatch: pytest.MonkeyPatch, listener: tuple[socket.socket, str]
) -> None:
    sock, name = listener
    monkeypatch.setenv("NOTIFY_SOCKET", name)
    Notifier().ready()
    assert _recv(sock) == "READY=1"


def test_a_missing_socket_is_swallowed(tmp_path: Path) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert n.ready() is False
    assert n.watchdog() is False  # still no exception, and logged only once


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "60000000"}) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid())}) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "42"}, pid=42) == 0.5


def test_watchdog_interval_none_when_not_for_us() -> None:
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid() + 1)}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "me"}) is None
