"""Loopback networking for tests: servers the tests start listen on 127.0.0.1 only."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port nothing listens on right now (the OS picks it; a server started next can take it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
