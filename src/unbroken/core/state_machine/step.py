"""What one ``apply`` call works with: the transaction, the time, the schemas, the actions it emits.

It is also the record's identity map of invocation rows: ``load`` reads a row once and hands out the same
object for the rest of the apply, ``save`` marks it dirty, and ``flush`` (at the end of ``apply``) checks the
invariants of every dirty row and writes it once. So a ``Call`` costs one read and one write per row it
touches (it cost 4 + 4 when each helper reloaded and rewrote the caller), and no code can change one
Python object while another, stale one of the same row gets written after it.
"""

from __future__ import annotations

from unbroken.core.actions import Action, Outcome, Reply
from unbroken.core.errors import violated
from unbroken.core.ids import partition_key_of_any
from unbroken.core.invocation import Invocation, check_invocation
from unbroken.core.records import Record
from unbroken.core.schema import Schemas, ServiceSchema
from unbroken.core.storage import Transaction

_ABSENT = None  # in the map: the row was read and does not exist (or was deleted by this apply)
_UNREAD = object()


class Step:
    __slots__ = ("txn", "now_ms", "schemas", "actions", "_rows", "_dirty")

    def __init__(self, txn: Transaction, now_ms: int, schemas: Schemas) -> None:
        self.txn = txn
        self.now_ms = now_ms
        self.schemas = schemas
        self.actions: list[Action] = []
        self._rows: dict[str, Invocation | None] = {}
        self._dirty: dict[str, Invocation] = {}  # insertion-ordered: rows are written in first-save order

    def emit(self, action: Action) -> None:
        self.actions.append(action)

    def reply(self, request_id: int, outcome: Outcome) -> None:
        """Answer a waiting request; requests with id 0 have nobody waiting."""
        if request_id:
            self.actions.append(Reply(request_id, outcome))

    def load(self, invocation_id: str) -> Invocation | None:
        """The row, read once per apply. Backends check the invariants as they decode it (see
        ``Transaction.get_invocation``); checking again here cost 4% of the processor's time for nothing."""
        inv = self._rows.get(invocation_id, _UNREAD)
        if inv is _UNREAD:  # (a sentinel, not KeyError: a raise per first read cost ~1 us per record)
            inv = self._rows[invocation_id] = self.txn.get_invocation(invocation_id)
        return inv  # type: ignore[return-value]

    def save(self, inv: Invocation) -> None:
        """Mark ``inv`` to be written at the end of the apply (it may be a new row)."""
        inv.modified_at_ms = self.now_ms
        rows = self._rows
        known = rows.get(inv.id)
        if known is not inv:
            if known is not _ABSENT:
                violated(f"{inv.id}: two objects for one row in one apply")
            rows[inv.id] = inv  # a new row
        self._dirty[inv.id] = inv

    def delete(self, invocation_id: str) -> None:
        """Delete the row (and its journal) now; a pending write of it is dropped."""
        self._dirty.pop(invocation_id, None)
        self._rows[invocation_id] = _ABSENT
        self.txn.delete_invocation(invocation_id)

    def flush(self) -> None:
        """Write every row saved during the apply, once, its invariants checked."""
        for inv in self._dirty.values():
            check_invocation(inv)
            self.txn.put_invocation(inv)
        self._dirty.clear()

    def elsewhere(self, invocation_id: str) -> int | None:
        """The partition key of ``invocation_id`` when another node leads its partition (an effect on it is
        sent to that partition's inbox: ``send``), else None. One attribute read on a store of one node."""
        txn = self.txn
        if txn.all_led:
            return None
        key = partition_key_of_any(invocation_id)
        return None if txn.is_led(key) else key

    def send(self, partition_key: int, record: Record, source_id: str) -> None:
        """Send ``record`` to the inbox of the partition of ``partition_key`` (see ``elsewhere``), on behalf
        of the invocation ``source_id``."""
        self.txn.send(partition_key, record, partition_key_of_any(source_id))

    def service(self, name: str) -> ServiceSchema | None:
        return self.schemas.service(name)
