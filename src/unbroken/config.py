"""Configuration loading for the unbroken server.

Sources, lowest to highest precedence::

    defaults < TOML file < environment < overrides (CLI flags)

The TOML layout follows Restate's (kebab-case keys, ``[ingress]``, ``[admin]``,
``[worker.invoker]``, ``[default-retry-policy]``, ...).  An unknown key raises
:class:`ConfigError` naming it and the closest known key (a typo such as ``[ingres]``
or ``bind_address`` must not be ignored silently); Restate settings unbroken has no
use for (``roles``, ``[bifrost]``, ...) are accepted with a warning, so a real
``restate.toml`` loads.  A known key with a value of the wrong type or format raises
:class:`ConfigError` naming the key and the expected format.

Environment variables use the prefix ``UNBROKEN_`` or ``RESTATE_`` followed by the
key path in upper case, with ``__`` between sections and ``_`` for ``-``::

    UNBROKEN_INGRESS__BIND_ADDRESS=0.0.0.0:8080
    RESTATE_WORKER__INVOKER__INACTIVITY_TIMEOUT=10s
    UNBROKEN_BASE_DIR=/var/lib/unbroken

When both prefixes set the same setting, ``UNBROKEN_`` wins.  The config file path
may be given as an argument or via ``UNBROKEN_CONFIG`` / ``RESTATE_CONFIG``.

This module is imported by the CLI at start-up, so it only uses the standard
library at import time.
"""

from __future__ import annotations

import difflib
import logging
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

__all__ = [
    "Config",
    "ConfigError",
    "load_config",
    "parse_bind_address",
    "parse_size_bytes",
]

_MIB = 1024 * 1024
_DAY_MS = 24 * 60 * 60 * 1000


class ConfigError(ValueError):
    """A configuration source holds an invalid value (or cannot be read)."""


@dataclass(frozen=True)
class Config:
    ingress_bind: str = "127.0.0.1:8080"
    admin_bind: str = "127.0.0.1:9070"
    data_dir: str = "./.unbroken"
    inactivity_timeout_ms: int = 60_000
    abort_timeout_ms: int = 600_000
    request_size_limit_bytes: int = 32 * _MIB
    idempotency_retention_ms: int = _DAY_MS
    workflow_completion_retention_ms: int = _DAY_MS
    journal_retention_ms: int = _DAY_MS
    cleanup_interval_ms: int = 60_000
    retry_initial_interval_ms: int = 500
    retry_exponentiation_factor: float = 2.0
    retry_max_interval_ms: int = 60_000
    retry_max_attempts: int = 70
    retry_on_max_attempts: str = "pause"
    dev: bool = False
    log_level: str = "info"
    log_format: str = "text"  # or "json": one JSON object a line
    admin_token: str | None = None
    ingress_token: str | None = None
    fsync: bool = True
    # PostgreSQL instead of the SQLite file in data_dir (``postgresql://USER@HOST:PORT/DB[?schema=NAME]``)
    store_url: str | None = None
    store_partitions: int = 64  # used only when the cluster is created; fixed after that
    node_name: str | None = None  # this node in the lease table (default: the host's name)
    # no longer used: a node starts with the leases that are free (nodes share the partitions); kept so
    # configurations that set it still load
    store_lease_wait_ms: int = 10_000
    # PostgreSQL: only what distributed SQL offers (serializable batches, 40001 retried, no NOTIFY)
    store_strict: bool = False
    # the partitions this node leads, pinned ("0-31,40"); None: its share of them (tests, operators)
    store_claim: tuple[int, ...] | None = None

    @property
    def ingress_host_port(self) -> tuple[str, int]:
        """``ingress_bind`` split into ``(host, port)``."""
        return parse_bind_address(self.ingress_bind)

    @property
    def admin_host_port(self) -> tuple[str, int]:
        """``admin_bind`` split into ``(host, port)``."""
        return parse_bind_address(self.admin_bind)


# --------------------------------------------------------------------------- value parsers
#
# Every parser takes the raw value (a TOML value, an environment string, or a
# Python object from overrides) and returns the typed value, or raises
# ``_BadValue(expected)``; the caller turns that into a ConfigError naming the key.


class _BadValue(Exception):
    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


_BIND_RE = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.%a-zA-Z]+\]|[^:\[\]\s]+):(?P<port>\d{1,5})$")


def parse_bind_address(value: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (IPv6 as ``[::1]:PORT``) into ``(host, port)``.

    The returned host has IPv6 brackets removed.  Raises :class:`ConfigError`.
    """
    if not isinstance(value, str):
        raise ConfigError(f"expected a bind address like '127.0.0.1:8080', got {value!r}")
    m = _BIND_RE.match(value.strip())
    if m is None:
        raise ConfigError(f"expected a bind address HOST:PORT like '127.0.0.1:8080', got {value!r}")
    port = int(m.group("port"))
    if port > 65535:
        raise ConfigError(f"port must be between 0 and 65535, got {value!r}")
    host = m.group("host")
    if host.startswith("["):
        host = host[1:-1]
    return host, port


def _p_bind(value: object) -> str:
    if not isinstance(value, str):
        raise _BadValue(f"a bind address HOST:PORT like '127.0.0.1:8080', got {value!r}")
    try:
        parse_bind_address(value)
    except ConfigError:
        raise _BadValue(
            f"a bind address HOST:PORT like '127.0.0.1:8080' (port 0-65535), got {value!r}"
        ) from None
    return value.strip()


def _p_path(value: object) -> str:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        raise _BadValue(f"a directory path, got {value!r}")
    return os.path.expanduser(value)


def _p_store_url(value: object) -> str | None:
    if value is None:
        return None
    expected = f"a PostgreSQL URL like postgresql://USER@HOST:PORT/DB, got {value!r}"
    if not isinstance(value, str) or not value.startswith(("postgresql://", "postgres://")):
        raise _BadValue(expected)
    return value


def _p_node_name(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > 200:
        raise _BadValue(f"a node name (1 to 200 characters), got {value!r}")
    return value.strip()


def _p_claim(value: object) -> tuple[int, ...] | None:
    """``"0-31,40"`` (or a list of numbers): the partitions a node leads, pinned."""
    if value is None:
        return None
    expected = f"partition numbers like '0-31,40', got {value!r}"
    if isinstance(value, list) and all(isinstance(v, int) and v >= 0 for v in value):
        return tuple(sorted(set(value)))
    if not isinstance(value, str):
        raise _BadValue(expected)
    out: set[int] = set()
    for item in filter(None, (part.strip() for part in value.split(","))):
        first, _, last = item.partition("-")
        if not first.isdigit() or not (last or first).isdigit() or int(last or first) < int(first):
            raise _BadValue(expected)
        out.update(range(int(first), int(last or first) + 1))
    return tuple(sorted(out))


def _p_token(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _BadValue(f"a string, got {value!r}")
    if not value.strip():
        # An empty token would turn authentication off without a word: refuse it.
        raise _BadValue(
            "a non-empty token (leave the setting out to run without authentication), got an empty one"
        )
    return value


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _p_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        v = value.strip().lower()
        if v in _TRUE:
            return True
        if v in _FALSE:
            return False
    raise _BadValue(f"a boolean (true/false), got {value!r}")


def _int_from(value: object) -> int | None:
    """An int from an int or a decimal-digit string; None otherwise (bools excluded)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(value)
    return None


def _p_positive_int(value: object) -> int:
    n = _int_from(value)
    if n is None or n < 1:
        raise _BadValue(f"a positive integer, got {value!r}")
    return n


def _p_factor(value: object) -> float:
    f: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        f = float(value)
    elif isinstance(value, str):
        try:
            f = float(value.strip())
        except ValueError:
            f = None
    if f is None or not math.isfinite(f) or f < 1.0:
        raise _BadValue(f"a number >= 1.0 like 2.0, got {value!r}")
    return f


def _p_on_max_attempts(value: object) -> str:
    if isinstance(value, str) and value.strip().lower() in ("pause", "kill"):
        return value.strip().lower()
    raise _BadValue(f"one of 'pause' or 'kill', got {value!r}")


_LOG_LEVELS = {
    "trace": "trace",
    "debug": "debug",
    "info": "info",
    "warn": "warning",
    "warning": "warning",
    "error": "error",
    "critical": "critical",
}


# Restate's log-format values: "pretty" and "compact" are both lines of text here.
_LOG_FORMATS = {"text": "text", "pretty": "text", "compact": "text", "json": "json"}


def _p_log_format(value: object) -> str:
    if isinstance(value, str) and value.strip().lower() in _LOG_FORMATS:
        return _LOG_FORMATS[value.strip().lower()]
    raise _BadValue(f"a log format (text or json), got {value!r}")


def _p_log_level(value: object) -> str:
    if isinstance(value, str):
        # Accept Restate's ``log-filter`` syntax ("info,restate_invoker=debug"):
        # the first bare directive is the global level.
        for part in value.split(","):
            part = part.strip().lower()
            if part and "=" not in part:
                if part in _LOG_LEVELS:
                    return _LOG_LEVELS[part]
                break
    raise _BadValue(f"a log level (trace, debug, info, warning, error, critical), got {value!r}")


def _duration_ms(value: object, *, allow_zero: bool) -> int:
    expected = f"a duration like '10s' or 'PT10S', got {value!r}"
    n = _int_from(value)  # integers (and digit strings) are milliseconds
    if n is None:
        if not isinstance(value, str) or not value.strip():
            raise _BadValue(expected)
        from unbroken.core.durations import parse_duration_ms  # lazy: keep CLI start-up light

        try:
            n = parse_duration_ms(value.strip())
        except ValueError:
            raise _BadValue(expected) from None
    if n < 0 or (n == 0 and not allow_zero):
        sign = "non-negative" if allow_zero else "positive"
        raise _BadValue(f"a {sign} duration like '10s' or 'PT10S', got {value!r}")
    return n


def _p_duration(value: object) -> int:
    return _duration_ms(value, allow_zero=False)


def _p_retention(value: object) -> int:
    return _duration_ms(value, allow_zero=True)


_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "ki": 1024,
    "kib": 1024,
    "mi": 1024**2,
    "mib": 1024**2,
    "gi": 1024**3,
    "gib": 1024**3,
    "ti": 1024**4,
    "tib": 1024**4,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


def parse_size_bytes(value: object) -> int:
    """Parse a byte size: an int, or a string like ``"32MiB"``, ``"10 MB"``, ``"4096"``.

    Decimal units (kB, MB, GB, TB) are powers of 1000, binary units (KiB, MiB,
    GiB, TiB) powers of 1024.  Raises :class:`ConfigError`.
    """
    try:
        return _p_size(value)
    except _BadValue as e:
        raise ConfigError(f"expected {e.expected}") from None


def _p_size(value: object) -> int:
    expected = f"a size in bytes like 33554432, '32MiB' or '10 MB', got {value!r}"
    if isinstance(value, bool):
        raise _BadValue(expected)
    if isinstance(value, int):
        n = value
    elif isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m is None or m.group(2).lower() not in _SIZE_UNITS:
            raise _BadValue(expected)
        n = int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])
    else:
        raise _BadValue(expected)
    if n <= 0:
        raise _BadValue(expected)
    return n


# --------------------------------------------------------------------------- key table


@dataclass(frozen=True)
class _Setting:
    field: str
    # Key paths in the TOML layout, most preferred first.  The same paths,
    # upper-cased, give the environment variable names.
    paths: tuple[tuple[str, ...], ...]
    parse: Callable[[object], Any]


def _retry(key: str) -> tuple[tuple[str, ...], ...]:
    return (
        ("default-retry-policy", key),
        ("invocation", "default-retry-policy", key),
    )


def _retention(key: str) -> tuple[tuple[str, ...], ...]:
    return ((key,), ("worker", key), ("invocation", key))


_SETTINGS: tuple[_Setting, ...] = (
    _Setting("ingress_bind", (("ingress", "bind-address"),), _p_bind),
    _Setting("admin_bind", (("admin", "bind-address"),), _p_bind),
    _Setting("data_dir", (("base-dir",), ("data-dir",)), _p_path),
    _Setting(
        "inactivity_timeout_ms",
        (("worker", "invoker", "inactivity-timeout"), ("invocation", "inactivity-timeout")),
        _p_duration,
    ),
    _Setting(
        "abort_timeout_ms",
        (("worker", "invoker", "abort-timeout"), ("invocation", "abort-timeout")),
        _p_duration,
    ),
    _Setting("request_size_limit_bytes", (("ingress", "request-size-limit"),), _p_size),
    _Setting("idempotency_retention_ms", _retention("default-idempotency-retention"), _p_retention),
    _Setting(
        "workflow_completion_retention_ms",
        _retention("default-workflow-completion-retention"),
        _p_retention,
    ),
    _Setting("journal_retention_ms", _retention("default-journal-retention"), _p_retention),
    _Setting("cleanup_interval_ms", (("worker", "cleanup-interval"),), _p_duration),
    _Setting("retry_initial_interval_ms", _retry("initial-interval"), _p_duration),
    _Setting("retry_exponentiation_factor", _retry("exponentiation-factor"), _p_factor),
    _Setting("retry_max_interval_ms", _retry("max-interval"), _p_duration),
    _Setting("retry_max_attempts", _retry("max-attempts"), _p_positive_int),
    _Setting("retry_on_max_attempts", _retry("on-max-attempts"), _p_on_max_attempts),
    _Setting("dev", (("dev",),), _p_bool),
    _Setting("log_level", (("log-level",), ("log-filter",)), _p_log_level),
    _Setting("log_format", (("log-format",),), _p_log_format),
    _Setting("admin_token", (("admin", "token"),), _p_token),
    _Setting("ingress_token", (("ingress", "token"),), _p_token),
    _Setting("fsync", (("storage", "fsync"),), _p_bool),
    _Setting("store_url", (("store", "url"),), _p_store_url),
    _Setting("store_partitions", (("store", "partitions"),), _p_positive_int),
    _Setting("node_name", (("node-name",),), _p_node_name),
    _Setting("store_lease_wait_ms", (("store", "lease-wait"),), _p_duration),
    _Setting("store_strict", (("store", "strict"),), _p_bool),
    _Setting("store_claim", (("store", "claim"),), _p_claim),
)

_FIELD_NAMES = frozenset(f.name for f in fields(Config))
_SETTING_BY_FIELD = {s.field: s for s in _SETTINGS}
assert set(_SETTING_BY_FIELD) == _FIELD_NAMES

ENV_PREFIXES = ("UNBROKEN_", "RESTATE_")


def _dotted(path: tuple[str, ...]) -> str:
    return ".".join(path)


def _env_name(path: tuple[str, ...]) -> str:
    return "__".join(p.replace("-", "_").upper() for p in path)


def _parse(setting: _Setting, key: str, value: object) -> Any:
    try:
        return setting.parse(value)
    except _BadValue as e:
        raise ConfigError(f"{key}: expected {e.expected}") from None


# --------------------------------------------------------------------------- sources

_MISSING = object()


def _lookup(table: Mapping[str, Any], path: tuple[str, ...]) -> object:
    node: object = table
    for i, part in enumerate(path):
        if not isinstance(node, Mapping):
            raise ConfigError(f"{_dotted(path[:i])}: expected a table, got {node!r}")
        if part not in node:
            return _MISSING
        node = node[part]
    return node


def _read_toml(config_file: str) -> dict[str, Any]:
    try:
        with open(config_file, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {config_file}") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {config_file}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"invalid TOML in config file {config_file}: {e}") from None


# Restate settings (sections or keys) that a restate.toml may hold and unbroken has no use for: accepted with
# a warning.  Anything else unknown is an error, as a typo would otherwise be ignored in silence.
_RESTATE_ONLY = frozenset(
    """
    roles force-node-id cluster-name allow-bootstrap auto-provision location
    advertised-address bind-address bind-ip bind-port listen-mode use-random-ports
    default-num-partitions default-replication default-partition-replication shutdown-timeout
    tracing-endpoint tracing-runtime-endpoint tracing-services-endpoint tracing-json-path tracing-filter
    tracing-headers log-format log-disable-ansi-codes disable-prometheus rocksdb-total-memory-size
    rocksdb-total-memtables-ratio rocksdb-bg-threads rocksdb-high-priority-bg-threads rocksdb-perf-level
    storage-high-priority-bg-threads storage-low-priority-bg-threads default-thread-pool-size
    metadata-update-interval initialization-timeout request-compression-threshold
    tokio-console-bind-address gossip-tick-interval bifrost metadata-server metadata-client
    metadata-store metadata-store-client networking log-server common http-keep-alive-options
    service-client tokio-runtime ingress.bind-ip ingress.bind-port ingress.advertised-address
    ingress.advertised-host ingress.listen-mode ingress.use-random-ports
    ingress.advertised-ingress-endpoint ingress.kafka-clusters ingress.concurrent-api-requests-limit
    admin.bind-ip admin.bind-port admin.advertised-address admin.advertised-host admin.listen-mode
    admin.use-random-ports admin.advertised-admin-endpoint admin.query-engine admin.heartbeat-interval
    admin.concurrent-api-requests-limit admin.disable-web-ui admin.log-trim-check-interval
    admin.disable-cluster-controller worker.storage worker.snapshots worker.internal-queue-length
    worker.num-timers-in-memory-limit worker.max-command-batch-size worker.durability-mode
    worker.experimental-partition-driven-log-trimming worker.invoker.concurrent-invocations-limit
    worker.invoker.message-size-warning worker.invoker.message-size-limit
    worker.invoker.in-memory-queue-length-limit worker.invoker.tmp-dir worker.invoker.retry-policy
    worker.invoker.disable-eager-state worker.invoker.action-throttling
    worker.invoker.invocation-throttling invocation.max-journal-retention
    """.split()
)
_log = logging.getLogger("unbroken.config")


def _known_paths() -> tuple[frozenset[str], frozenset[str]]:
    """(dotted setting keys, dotted tables that lead to one)."""
    leaves = {_dotted(path) for setting in _SETTINGS for path in setting.paths}
    tables = {
        _dotted(path[:i]) for setting in _SETTINGS for path in setting.paths for i in range(1, len(path))
    }
    return frozenset(leaves), frozenset(tables)


def _check_keys(doc: Mapping[str, Any], config_file: str) -> None:
    """Raise ConfigError for a key that is neither a setting nor a Restate-only one; warn for the latter."""
    leaves, tables = _known_paths()
    ignored: list[str] = []

    def walk(table: Mapping[str, Any], prefix: str) -> None:
        for key, value in table.items():
            dotted = f"{prefix}{key}"
            if dotted in leaves:
                continue
            if dotted in tables:
                if not isinstance(value, Mapping):
                    raise ConfigError(f"{dotted}: expected a table ([{dotted}]), got {value!r}")
                walk(value, dotted + ".")
            elif dotted in _RESTATE_ONLY:
                ignored.append(dotted)
            else:
                raise ConfigError(
                    f"unknown key {dotted!r} in config file {config_file}{_suggest(dotted, prefix)}"
                )

    walk(doc, "")
    if ignored:
        _log.warning(
            "config file %s: ignoring Restate settings unbroken does not use: %s",
            config_file,
            ", ".join(ignored),
        )


def _suggest(dotted: str, prefix: str) -> str:
    leaves, tables = _known_paths()
    # Siblings first (`bind_address` in [ingress] -> `ingress.bind-address`), then every known key.
    siblings = [k for k in sorted(leaves | tables) if k.startswith(prefix) and "." not in k[len(prefix) :]]
    for candidates in (siblings, sorted(leaves | tables)):
        close = difflib.get_close_matches(dotted, candidates, n=1, cutoff=0.6)
        if close:
            return f" (did you mean {close[0]!r}?)"
    return " (not a setting unbroken knows)"


def _from_toml(doc: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for setting in _SETTINGS:
        for path in setting.paths:
            raw = _lookup(doc, path)
            if raw is not _MISSING:
                out[setting.field] = _parse(setting, _dotted(path), raw)
                break
    return out


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for setting in _SETTINGS:
        found = False
        for prefix in ENV_PREFIXES:
            for path in setting.paths:
                name = prefix + _env_name(path)
                if name in env:
                    out[setting.field] = _parse(setting, name, env[name])
                    found = True
                    break
            if found:
                break
    return out


def _from_overrides(overrides: Mapping[str, object]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in overrides.items():
        if value is None:
            continue  # "flag not given"
        setting = _SETTING_BY_FIELD.get(name)
        if setting is None:
            raise ConfigError(f"unknown config field in overrides: {name!r}")
        out[name] = _parse(setting, name, value)
    return out


def load_config(
    config_file: str | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Config:
    """Build a :class:`Config` from defaults < TOML file < environment < overrides.

    ``env`` defaults to ``os.environ``.  ``config_file`` defaults to the value of
    ``UNBROKEN_CONFIG`` or ``RESTATE_CONFIG`` in ``env``, if set.  ``overrides``
    maps :class:`Config` field names to values (as from CLI flags); ``None`` values
    are skipped.  Raises :class:`ConfigError` on any invalid value.
    """
    if env is None:
        env = os.environ
    if config_file is None:
        for prefix in ENV_PREFIXES:
            candidate = env.get(prefix + "CONFIG")
            if candidate:
                config_file = candidate
                break

    values: dict[str, Any] = {}
    if config_file is not None:
        doc = _read_toml(os.fspath(config_file))
        _check_keys(doc, os.fspath(config_file))
        values.update(_from_toml(doc))
    values.update(_from_env(env))
    values.update(_from_overrides(overrides or {}))
    return Config(**values)
