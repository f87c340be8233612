"""Random bytes for invocation ids and seeds, read from the OS in blocks.

``os.urandom`` is a system call that drops the GIL; once per request it showed as ~10% of the ingress thread's
samples under load. One call per ``BLOCK_BYTES`` keeps the bytes the OS's (unpredictable) ones at a fraction
of the cost. Not thread-safe: one instance per thread (the ingress uses it on the event loop only).
"""

from __future__ import annotations

import os


class RandomBytes:
    BLOCK_BYTES = 4096

    __slots__ = ("_block", "_pos")

    def __init__(self) -> None:
        self._block = b""
        self._pos = 0

    def take(self, n: int) -> bytes:
        assert 0 < n <= self.BLOCK_BYTES
        pos = self._pos
        if pos + n > len(self._block):
            self._block = os.urandom(self.BLOCK_BYTES)
            pos = 0
        self._pos = pos + n
        return self._block[pos : pos + n]
