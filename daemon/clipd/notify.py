"""The systemd readiness protocol (sd_notify) in pure Python: one datagram per message.

Without $NOTIFY_SOCKET (not started by systemd with Type=notify) every call does nothing.
Sending never raises: a lost status line must not take the daemon down.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger(__name__)

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"


class Notifier:
    """Sends `KEY=value` lines to the service manager."""

    def __init__(self, address: str | None) -> None:
        self._address = _socket_address(address) if address else None
        self._failed = False

    @classmethod
    def from_environment(cls) -> Notifier:
        return cls(os.environ.get(NOTIFY_SOCKET_ENV))

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def reloading(self) -> None:
        # MONOTONIC_USEC lets systemd tell this reload from an earlier one (Type=notify-reload).
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")

    def send(self, *lines: str) -> None:
        """Send one message made of `lines`; logs (once) and carries on if that fails."""
        if self._address is None:
            return
        message = "\n".join(lines).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self._address)
                sock.sendall(message)
        except OSError as exc:
            if not self._failed:  # the manager went away: say so once, not every second
                self._failed = True
                log.warning("cannot notify the service manager at %s: %s", self._address, exc)


def _socket_address(address: str) -> str:
    """A leading '@' names a Linux abstract socket, whose real name starts with a NUL byte."""
    return "\0" + address[1:] if address.startswith("@") else address
