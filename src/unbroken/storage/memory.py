"""An in-memory store for unit tests and the simulator (never for a durability claim).

Values are kept encoded, as the SQLite store keeps them, so a test cannot pass by sharing mutable
objects between the state machine and the store.
"""

from __future__ import annotations

import copy
from contextlib import AbstractContextManager
from typing import Any

from unbroken.core.deployments import Deployment, decode_deployment, encode_deployment
from unbroken.core.invocation import Invocation, Status, cleanup_due_ms
from unbroken.core.journal import Entry
from unbroken.core.schema import ServiceOverride
from unbroken.core.storage import Promise, Timer, TimerKind, Transaction, transaction
from unbroken.storage.codec import (
    decode_entry,
    decode_invocation,
    decode_override,
    decode_promise,
    encode_entry,
    encode_invocation,
    encode_override,
    encode_promise,
    signal_index,
)


class MemoryStore:
    def __init__(self) -> None:
        self.invocations: dict[str, bytes] = {}
        self.journals: dict[str, list[bytes]] = {}
        self.state: dict[tuple[str, str], dict[str, bytes]] = {}
        self.locks: dict[tuple[str, str], str] = {}
        self.inboxes: dict[tuple[str, str], list[str]] = {}
        self.timer_rows: dict[int, Timer] = {}
        self.promises: dict[tuple[str, str, str], bytes] = {}
        self.signals: dict[str, set[int]] = {}  # the signal index of each journal
        self.overrides: dict[str, bytes] = {}  # service -> encoded ServiceOverride
        self.deployment_rows: dict[str, bytes] = {}  # deployment id -> encoded Deployment
        self.next_timer_id = 1
        self.committed_timers: dict[int, Timer] | None = None  # while a transaction is open

    def begin(self) -> MemoryTransaction:
        """All-or-nothing: the transaction works in place; rollback restores a snapshot taken here."""
        snapshot = copy.deepcopy(self.__dict__)
        self.committed_timers = snapshot["timer_rows"]
        return MemoryTransaction(self, snapshot)

    def transaction(self) -> AbstractContextManager[Transaction]:
        return transaction(self)

    def running_invocation_ids(self) -> list[str]:
        invs = [decode_invocation(b, i, check=False) for i, b in self.invocations.items()]
        return [inv.id for inv in invs if inv.status is Status.RUNNING]

    def service_overrides(self) -> dict[str, ServiceOverride]:
        return {name: decode_override(data) for name, data in self.overrides.items()}

    def deployments(self) -> list[Deployment]:
        return [decode_deployment(data) for data in self.deployment_rows.values()]

    def timers(self) -> list[Timer]:
        return list(self.timer_rows.values())

    def timers_after(self, after: tuple[int, int] | None, limit: int) -> list[Timer]:
        committed = self.timer_rows if self.committed_timers is None else self.committed_timers
        rows = sorted(committed.values(), key=lambda t: (t.fire_at_ms, t.timer_id))
        return [t for t in rows if after is None or (t.fire_at_ms, t.timer_id) > after][:limit]

    def close(self) -> None:
        pass


class MemoryTransaction:
    """Times (``appended_at_ms``, ``pushed_at_ms``) are not kept: nothing reads them from this store."""

    def __init__(self, store: MemoryStore, snapshot: dict[str, Any] | None) -> None:
        self.s = store
        self._snapshot = snapshot

    def commit(self) -> None:
        self._snapshot = None
        self.s.committed_timers = None

    def rollback(self) -> None:
        if self._snapshot is not None:
            next_timer_id = self.s.next_timer_id  # ids are never handed out twice, not even after a rollback
            self.s.__dict__.update(self._snapshot)
            self.s.next_timer_id = next_timer_id
            self._snapshot = None
        self.s.committed_timers = None

    def get_invocation(self, invocation_id: str) -> Invocation | None:
        data = self.s.invocations.get(invocation_id)
        return None if data is None else decode_invocation(data, invocation_id)

    def put_invocation(self, inv: Invocation) -> None:
        self.s.invocations[inv.id] = encode_invocation(inv)

    def delete_invocation(self, invocation_id: str) -> None:
        self.s.invocations.pop(invocation_id, None)
        self.delete_journal(invocation_id)

    def expired_invocations(self, now_ms: int, limit: int) -> list[str]:
        out = []
        for inv_id, data in self.s.invocations.items():
            if 0 < cleanup_due_ms(decode_invocation(data, inv_id, check=False)) <= now_ms:
                out.append(inv_id)
        return out[:limit]

    def journal(self, invocation_id: str) -> list[Entry]:
        return [decode_entry(b) for b in self.s.journals.get(invocation_id, [])]

    def append_journal(self, invocation_id: str, index: int, entry: Entry, appended_at_ms: int) -> None:
        entries = self.s.journals.setdefault(invocation_id, [])
        assert len(entries) == index, f"{invocation_id}: append at {index} but journal has {len(entries)}"
        entries.append(encode_entry(entry))
        signal_idx = signal_index(entry)
        if signal_idx:
            self.s.signals.setdefault(invocation_id, set()).add(signal_idx)

    def delete_journal(self, invocation_id: str) -> None:
        self.s.journals.pop(invocation_id, None)
        self.s.signals.pop(invocation_id, None)

    def has_signal(self, invocation_id: str, signal_idx: int) -> bool:
        return signal_idx in self.s.signals.get(invocation_id, ())

    def state_all(self, service: str, key: str) -> dict[str, bytes]:
        return dict(self.s.state.get((service, key), {}))

    def state_get(self, service: str, key: str, name: str) -> bytes | None:
        return self.s.state.get((service, key), {}).get(name)

    def state_keys(self, service: str, key: str) -> list[str]:
        return sorted(self.s.state.get((service, key), {}))

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

    def inbox_push(self, service: str, key: str, invocation_id: str, pushed_at_ms: int) -> None:
        self.s.inboxes.setdefault((service, key), []).append(invocation_id)

    def inbox_pop(self, service: str, key: str) -> str | None:
        queue = self.s.inboxes.get((service, key))
        return queue.pop(0) if queue else None

    def inbox_remove(self, service: str, key: str, invocation_id: str) -> None:
        queue = self.s.inboxes.get((service, key), [])
        if invocation_id in queue:
            queue.remove(invocation_id)

    def add_timer(self, fire_at_ms: int, kind: TimerKind, invocation_id: str, completion_id: int) -> int:
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

    def get_service_override(self, service: str) -> ServiceOverride | None:
        data = self.s.overrides.get(service)
        return None if data is None else decode_override(data)

    def put_service_override(self, service: str, override: ServiceOverride) -> None:
        self.s.overrides[service] = encode_override(override)

    def get_deployment(self, deployment_id: str) -> Deployment | None:
        data = self.s.deployment_rows.get(deployment_id)
        return None if data is None else decode_deployment(data)

    def put_deployment(self, deployment: Deployment) -> None:
        self.s.deployment_rows[deployment.id] = encode_deployment(deployment)

    def delete_deployment(self, deployment_id: str) -> None:
        self.s.deployment_rows.pop(deployment_id, None)
