"""sd_notify without a dependency: readiness, status, watchdog and stop messages to systemd.

This is the standalone protocol that sd_notify(3) documents ("it is also possible to reimplement the
simple readiness notification protocol without external dependencies"): one datagram per message,
sent to the AF_UNIX socket named by $NOTIFY_SOCKET, where a leading '@' means the Linux abstract
namespace. Outside systemd (NOTIFY_SOCKET unset) every method is a no-op, so the daemon loop can call
them unconditionally.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Mapping

import structlog

log = structlog.get_logger("facesetd.notify")


class Notifier:
    """Sends sd_notify messages to the socket named by NOTIFY_SOCKET (read once, at construction).

    The socket is opened per message, as in systemd's self-contained example: messages are rare
    (ready, a status line now and then, a watchdog ping every WatchdogSec/2), and a fresh socket
    cannot be left in a broken state by a restarted service manager.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        self._address: str | None = _socket_address(raw)
        # Errors are logged once: a broken socket would otherwise log on every watchdog ping.
        self._error_logged = False
        # The watchdog pinger and the main loop may both send; keep error bookkeeping consistent.
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """True when running under a service manager that asked for notifications."""
        return self._address is not None

    def notify(self, message: str) -> bool:
        """Send one raw message ("KEY=value" lines). Returns True if it was sent; never raises.

        sd_notify(3) recommends ignoring the result; it is returned only for tests and logging.
        """
        if self._address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self._address)
                sock.sendall(message.encode("utf-8"))
            return True
        except OSError as e:
            with self._lock:
                if not self._error_logged:
                    self._error_logged = True
                    log.debug("sd_notify failed", socket=self._address.replace("\0", "@"), error=str(e))
            return False

    def ready(self) -> bool:
        """Start-up is finished (Type=notify units leave 'activating' on this)."""
        return self.notify("READY=1")

    def stopping(self) -> bool:
        """Shutdown has begun; systemd then waits up to TimeoutStopSec= for the process to exit."""
        return self.notify("STOPPING=1")

    def watchdog(self) -> bool:
        """The keep-alive ping WatchdogSec= expects."""
        return self.notify("WATCHDOG=1")

    def status(self, text: str) -> bool:
        """A one-line status shown by `systemctl status`; newlines are flattened (STATUS= is single-line)."""
        line = " ".join(text.splitlines())
        return self.notify(f"STATUS={line}")

    def reloading(self) -> bool:
        """A reload has begun; send ready() when it is done.

        MONOTONIC_USEC lets systemd tell this reload apart from an earlier one (sd_notify(3)).
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify(f"RELOADING=1\nMONOTONIC_USEC={usec}")


def _socket_address(raw: str) -> str | None:
    """NOTIFY_SOCKET -> an AF_UNIX address, or None when unset or of a kind we do not speak.

    '/' is a file-system socket and '@' the abstract namespace (a leading NUL byte). Newer systemd
    versions can name other socket kinds (e.g. vsock, for VMs); a daemon on a host is not given those.
    """
    if not raw:
        return None
    if raw[0] == "@":
        return "\0" + raw[1:]
    if raw[0] == "/":
        return raw
    log.debug("NOTIFY_SOCKET not understood, notifications off", notify_socket=raw)
    return None


def watchdog_interval(environ: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings, or None when systemd expects none from this process.

    sd_watchdog_enabled(3): the watchdog applies when WATCHDOG_USEC is set and WATCHDOG_PID is unset or
    our pid, and "a daemon sends a keep-alive notification message ... every half of the time".
    """
    env = os.environ if environ is None else environ
    raw_usec = env.get("WATCHDOG_USEC", "")
    if not raw_usec:
        return None
    try:
        usec = int(raw_usec)
    except ValueError:
        return None
    if usec <= 0:
        return None
    raw_pid = env.get("WATCHDOG_PID", "")
    if raw_pid:
        try:
            if int(raw_pid) != (os.getpid() if pid is None else pid):
                return None
        except ValueError:
            return None
    return usec / 1_000_000 / 2
