"""Many nodes on one store: who leads which partition (``directory.py``), requests proxied to the leader
(``forward.py``), and the schema changes another node applied, picked up here (``schemas.py``).

Above ``core``, ``http`` and ``runtime``'s interfaces, below the composition root: the ingress and the admin
API take a :class:`Forwarder` when the store is shared (PostgreSQL), ``None`` on a node's own store (SQLite:
nothing here runs, and the single-node path pays nothing)."""
