"""The storage interface's former home: kept so ``from unbroken.core.txn import ...`` keeps working.

New code imports :mod:`unbroken.core.storage`.
"""

from __future__ import annotations

from unbroken.core.storage import (
    InvocationTable,
    JournalTable,
    LockInboxTable,
    Promise,
    PromiseTable,
    ServiceOverrideTable,
    StateTable,
    Store,
    Timer,
    TimerKind,
    TimerTable,
    Transaction,
    transaction,
)

__all__ = [
    "InvocationTable",
    "JournalTable",
    "LockInboxTable",
    "Promise",
    "PromiseTable",
    "ServiceOverrideTable",
    "StateTable",
    "Store",
    "Timer",
    "TimerKind",
    "TimerTable",
    "Transaction",
    "transaction",
]
