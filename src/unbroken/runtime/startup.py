"""What ``unbroken serve`` takes before it says it is serving: the data dir's lock and the listening sockets.

Both are taken before the engine starts, so that a second server on the same data dir, or a port
already in use, is refused at once with a message saying what to do, instead of two engines writing
effects over one store or a "serving" line followed by a traceback.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from typing import Any

from unbroken.core import limits

__all__ = ["LOCK_FILE", "StartupError", "bind_listeners", "lock_data_dir"]

LOCK_FILE = "unbroken.lock"


class StartupError(Exception):
    """The server cannot start; the message says why and what to do (shown on one line, no traceback)."""


def lock_data_dir(data_dir: str, ingress_bind: str, admin_bind: str) -> int:
    """Take the data dir's exclusive lock for the life of this process; return its file descriptor.

    ``flock`` is released by the kernel when the process dies, however it dies (SIGKILL included), so a
    crash never leaves a stale lock behind: the next server starts without anyone deleting anything.
    """
    try:
        os.makedirs(data_dir, exist_ok=True)
        fd = os.open(os.path.join(data_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise StartupError(f"cannot use data dir {data_dir}: {e.strerror or e}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        holder = os.pread(fd, limits.lock_holder_bytes_max, 0).decode(errors="replace").strip() or "a process"
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise StartupError(
                f"data dir {data_dir} is in use by another unbroken server ({holder}); "
                "stop that server first, or pass another --data-dir"
            ) from None
        raise StartupError(f"cannot lock data dir {data_dir}: {e.strerror or e}") from None
    # Who holds it, for the message above (a plain line, read by people).
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()}, ingress {ingress_bind}, admin {admin_bind}\n".encode(), 0)
    return fd


def bind_listeners(host: str, port: int, what: str, flag: str, backlog: int) -> list[socket.socket]:
    """Listening TCP sockets on ``host:port`` (one per address it resolves to, as asyncio binds them); a port
    in use becomes a :class:`StartupError` naming it. ``what`` names the listener ("ingress"), ``flag`` the
    option that moves it ("--ingress-bind")."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise StartupError(
            f"cannot listen on {host}:{port} ({what}): {e.strerror or e}; pass {flag} HOST:PORT"
        ) from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            if sockets:  # port 0: every address on the port the first one was given
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sockets.append(_listen(family, kind, proto, address, backlog))
    except OSError as e:
        for sock in sockets:
            sock.close()
        if e.errno == errno.EADDRINUSE:
            raise StartupError(
                f"port {port} is already in use (the {what} listener, {host}:{port}); "
                f"stop what holds it or pass {flag} {host}:PORT with a free port"
            ) from None
        raise StartupError(
            f"cannot listen on {host}:{port} ({what}): {e.strerror or e}; pass {flag} HOST:PORT"
        ) from None
    return sockets


def _listen(family: int, kind: int, proto: int, address: tuple[Any, ...], backlog: int) -> socket.socket:
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio: TIME_WAIT is no conflict
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # as asyncio
        sock.bind(address)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock
