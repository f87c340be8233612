"""An in-memory store for unit tests and the simulator (never for a durability claim).

Values are kept encoded, as the SQLite store keeps them, so a test cannot pass by sharing mutable
objects between the state machine and the store.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import msgspec

from unbroken.core.journal import Entry, decode_entry, encode_entry
from unbroken.core.model import Invocation, Status, check_invocation, cleanup_due_ms
from unbroken.core.txn import Promise, Timer
from unbroken.storage.sqlite import decode_promise, encode_promise

_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(Invocation)


class MemoryStore:
    def __init__(self) -> None:
        self.invocations: dict[str, bytes] = {}
        self.journals: dict[str, list[bytes]] = {}
        self.state: dict[tuple[str, str], dict[str, bytes]] = {}
        self.locks: dict[tuple[str, str], str] = {}
        self.inboxes: dict[tuple[str, str], list[str]] = {}
        self.timer_rows: dict[int, Timer] = {}
        self.promises: dict[tuple[str, str, str], bytes] = {}
        self.next_timer_id = 1

    @contextmanager
    def transaction(self) -> Iterator[MemoryTransaction]:
        """All-or-nothing: the transaction works on a copy that replaces the store on success."""
        snapshot = copy.deepcopy(self.__dict__)
        try:
            yield MemoryTransaction(self)
        except BaseException:
            self.__dict__.update(snapshot)
            raise

    def running_invocation_ids(self) -> list[str]:
        invs = [_dec.decode(b) for b in self.invocations.values()]
        return [inv.id for inv in invs if inv.status is Status.RUNNING]

    def timers(self) -> list[Timer]:
        return list(self.timer_rows.values())


class MemoryTransaction:
    def __init__(self, store: MemoryStore) -> None:
        self.s = store

    def get_invocation(self, invocation_id: str) -> Invocation | None:
        data = self.s.invocations.get(invocation_id)
        if data is None:
            return None
        inv = _dec.decode(data)
        check_invocation(inv)
        return inv

    def put_invocation(self, inv: Invocation) -> None:
        self.s.invocations[inv.id] = _enc.encode(inv)

    def delete_invocation(self, invocation_id: str) -> None:
        self.s.invocations.pop(invocation_id, None)

    def expired_invocations(self, now_ms: int, limit: int) -> list[str]:
        out = []
        for inv_id, data in self.s.invocations.items():
            inv = _dec.decode(data)
            if 0 < cleanup_due_ms(inv) <= now_ms:
                out.append(inv_id)
        return out[:limit]

    def journal(self, invocation_id: str) -> list[Entry]:
        return [decode_entry(b) for b in self.s.journals.get(invocation_id, [])]

    def append_journal(self, invocation_id: str, index: int, entry: Entry) -> None:
        entries = self.s.journals.setdefault(invocation_id, [])
        assert len(entries) == index, f"{invocation_id}: append at {index} but journal has {len(entries)}"
        entries.append(encode_entry(entry))

    def delete_journal(self, invocation_id: str) -> None:
        self.s.journals.pop(invocation_id, None)

    def state_all(self, service: str, key: str) -> dict[str, bytes]:
        return dict(self.s.state.get((service, key), {}))

    def state_set(self, service: str, key: str, name: str, value: bytes) -> None:
        self.s.state.setdefault((service, key), {})[name] = value

    def state_clear(self, service: str, key: str, name: str) -> None:
        self.s.state.get((service, key), {}).pop(name, None)

    def state_clear_all(self, service: str, key: str) -> None:
        self.s.state.pop((service, key), None)

    def lock_holder(self, service: str, key: str) -> str | None:
        return self.s.locks.get((service, key))

    def set_lock_holder(self, service: str, key: str, invocation_id: str | None) -> None:
        if invocation_id is None:
            self.s.locks.pop((service, key), None)
        else:
            self.s.locks[(service, key)] = invocation_id

    def inbox_push(self, service: str, key: str, invocation_id: str) -> None:
        self.s.inboxes.setdefault((service, key), []).append(invocation_id)

    def inbox_pop(self, service: str, key: str) -> str | None:
        queue = self.s.inboxes.get((service, key))
        return queue.pop(0) if queue else None

    def inbox_remove(self, service: str, key: str, invocation_id: str) -> None:
        queue = self.s.inboxes.get((service, key), [])
        if invocation_id in queue:
            queue.remove(invocation_id)

    def add_timer(self, fire_at_ms: int, kind: str, invocation_id: str, completion_id: int) -> int:
        timer_id = self.s.next_timer_id
        self.s.next_timer_id += 1
        self.s.timer_rows[timer_id] = Timer(timer_id, fire_at_ms, kind, invocation_id, completion_id)
        return timer_id

    def get_timer(self, timer_id: int) -> Timer | None:
        return self.s.timer_rows.get(timer_id)

    def delete_timer(self, timer_id: int) -> None:
        self.s.timer_rows.pop(timer_id, None)

    def get_promise(self, service: str, key: str, name: str) -> Promise | None:
        data = self.s.promises.get((service, key, name))
        return None if data is None else decode_promise(data)

    def put_promise(self, service: str, key: str, name: str, promise: Promise) -> None:
        self.s.promises[(service, key, name)] = encode_promise(promise)

    def clear_promises(self, service: str, key: str) -> None:
        for k in [k for k in self.s.promises if k[:2] == (service, key)]:
            del self.s.promises[k]
