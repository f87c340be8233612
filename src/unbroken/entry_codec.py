"""``unbroken.entry_codec``: restate-sdk's journal value codec types (``restate.entry_codec``).

Unbroken does not apply codecs yet: ``app(..., journal_value_codec=...)`` and ``create_client(...,
journal_value_codec=...)`` refuse one rather than store values unencoded (see the README).
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable


class JournalValueCodec(abc.ABC):
    """Transforms journal values after serialization and before deserialization (e.g. encryption)."""

    @abc.abstractmethod
    def encode(self, buf: bytes) -> bytes: ...

    @abc.abstractmethod
    async def decode(self, buf: bytes) -> bytes: ...


JournalValueCodecProvider = Callable[[], Awaitable[JournalValueCodec]]

__all__ = ["JournalValueCodec", "JournalValueCodecProvider"]
