"""Loopback ports for servers started by tests and benchmarks (not part of the testkit's public names).

A port the kernel picked for ``bind(0)`` is in its ephemeral range (32768-60999 on Linux) and free only until
the next outgoing connection of any process (a node's PostgreSQL pool, a forwarded request, a benchmark's
client) takes it as its source port: that made a node fail to bind its ingress in CI, and a benchmark run
abort. Ports below the range are never picked for outgoing connections; each is handed out once per process,
starting at a pid-derived offset so concurrent processes rarely meet.
"""

from __future__ import annotations

import os
import socket

PORTS_LOW, PORTS_HIGH = 20_000, 32_000  # [low, high): listening ports handed to servers under test
_next = PORTS_LOW + (os.getpid() * 7919) % (PORTS_HIGH - PORTS_LOW)


def free_port() -> int:
    """A loopback TCP port nothing listens on, outside the ephemeral range, not returned before."""
    global _next
    for _ in range(PORTS_HIGH - PORTS_LOW):
        port = _next
        _next = PORTS_LOW + (_next + 1 - PORTS_LOW) % (PORTS_HIGH - PORTS_LOW)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue  # taken (another process's server, or a service of this machine)
            return port
    raise RuntimeError(f"no free loopback port in [{PORTS_LOW}, {PORTS_HIGH})")
