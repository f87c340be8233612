"""What one ``apply`` call works with: the transaction, the time, the schemas, the actions it emits."""

from __future__ import annotations

from unbroken.core.actions import Action, Reply
from unbroken.core.model import Invocation, Schemas, ServiceSchema, check_invocation
from unbroken.core.txn import Transaction


class Step:
    __slots__ = ("txn", "now_ms", "schemas", "actions")

    def __init__(self, txn: Transaction, now_ms: int, schemas: Schemas) -> None:
        self.txn = txn
        self.now_ms = now_ms
        self.schemas = schemas
        self.actions: list[Action] = []

    def emit(self, action: Action) -> None:
        self.actions.append(action)

    def reply(self, request_id: int, kind: str, **fields: object) -> None:
        """Answer a waiting request; requests with id 0 have nobody waiting."""
        if request_id:
            self.actions.append(Reply(request_id, kind, **fields))  # type: ignore[arg-type]

    def load(self, invocation_id: str) -> Invocation | None:
        # Backends check the invariants as they decode a row (see Transaction.get_invocation); checking
        # again here cost 4% of the processor's time for nothing.
        return self.txn.get_invocation(invocation_id)

    def save(self, inv: Invocation) -> None:
        inv.modified_at_ms = self.now_ms
        check_invocation(inv)
        self.txn.put_invocation(inv)

    def service(self, name: str) -> ServiceSchema | None:
        return self.schemas.service(name)
