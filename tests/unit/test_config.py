from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from unbroken.config import Config, ConfigError, load_config, parse_bind_address, parse_size_bytes

MIB = 1024 * 1024
DAY_MS = 86_400_000


def write_toml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "restate.toml"
    path.write_text(text)
    return str(path)


# ----------------------------------------------------------------------------- defaults


def test_defaults() -> None:
    c = load_config(env={})
    assert c == Config()
    assert c.ingress_bind == "127.0.0.1:8080"
    assert c.admin_bind == "127.0.0.1:9070"
    assert c.data_dir == "./.unbroken"
    assert c.inactivity_timeout_ms == 60_000
    assert c.abort_timeout_ms == 600_000
    assert c.request_size_limit_bytes == 32 * MIB
    assert c.idempotency_retention_ms == DAY_MS
    assert c.workflow_completion_retention_ms == DAY_MS
    assert c.journal_retention_ms == DAY_MS
    assert c.retry_initial_interval_ms == 500
    assert c.retry_exponentiation_factor == 2.0
    assert c.retry_max_interval_ms == 60_000
    assert c.retry_max_attempts == 70
    assert c.retry_on_max_attempts == "pause"
    assert c.dev is False
    assert c.log_level == "info"
    assert c.admin_token is None
    assert c.fsync is True


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().dev = True  # type: ignore[misc]


def test_host_port_helpers() -> None:
    c = Config(ingress_bind="0.0.0.0:18080", admin_bind="[::1]:19070")
    assert c.ingress_host_port == ("0.0.0.0", 18080)
    assert c.admin_host_port == ("::1", 19070)
    assert parse_bind_address("localhost:0") == ("localhost", 0)


# ----------------------------------------------------------------------------- TOML


FULL_TOML = """
base-dir = "/var/lib/unbroken"
default-idempotency-retention = "2h"
log-filter = "debug,restate_invoker=trace"
roles = ["worker", "admin"]

[ingress]
bind-address = "0.0.0.0:18080"
request-size-limit = "10 MB"
advertised-ingress-endpoint = "http://example.com:8080/"

[admin]
bind-address = "0.0.0.0:19070"
token = "s3cret"

[worker]
default-journal-retention = "PT1H"
default-workflow-completion-retention = 3000

[worker.invoker]
inactivity-timeout = "1m"
abort-timeout = "10s"
concurrent-invocations-limit = 1000

[default-retry-policy]
initial-interval = "100ms"
exponentiation-factor = 1.5
max-interval = "PT10S"
max-attempts = 5
on-max-attempts = "kill"

[storage]
fsync = false

[bifrost]
default-provider = "replicated"
"""


def test_toml_full_layout(tmp_path: Path) -> None:
    c = load_config(write_toml(tmp_path, FULL_TOML), env={})
    assert c == Config(
        ingress_bind="0.0.0.0:18080",
        admin_bind="0.0.0.0:19070",
        data_dir="/var/lib/unbroken",
        inactivity_timeout_ms=60_000,
        abort_timeout_ms=10_000,
        request_size_limit_bytes=10_000_000,
        idempotency_retention_ms=2 * 3_600_000,
        workflow_completion_retention_ms=3000,
        journal_retention_ms=3_600_000,
        retry_initial_interval_ms=100,
        retry_exponentiation_factor=1.5,
        retry_max_interval_ms=10_000,
        retry_max_attempts=5,
        retry_on_max_attempts="kill",
        dev=False,
        log_level="debug",
        admin_token="s3cret",
        fsync=False,
    )


def test_toml_data_dir_alias_and_top_level_retention(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        'data-dir = "/tmp/x"\ndefault-journal-retention = "1d"\n[worker]\ndefault-journal-retention = "1h"\n',
    )
    c = load_config(path, env={})
    assert c.data_dir == "/tmp/x"
    assert c.journal_retention_ms == DAY_MS  # top-level preferred over [worker]


def test_toml_base_dir_preferred_over_data_dir(tmp_path: Path) -> None:
    c = load_config(write_toml(tmp_path, 'base-dir = "/a"\ndata-dir = "/b"\n'), env={})
    assert c.data_dir == "/a"


def test_toml_integer_durations_are_milliseconds(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[worker.invoker]\ninactivity-timeout = 1500\n")
    assert load_config(path, env={}).inactivity_timeout_ms == 1500


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("33554432", 33554432),
        ("32MiB", 32 * MIB),
        ("32 MiB", 32 * MIB),
        ("10 MB", 10_000_000),
        ("10mb", 10_000_000),
        ("1KiB", 1024),
        ("2 kB", 2000),
        ("1.5 KiB", 1536),
        ("1GiB", 1024**3),
        ("100B", 100),
    ],
)
def test_sizes(text: str, expected: int) -> None:
    assert parse_size_bytes(text) == expected


def test_size_int_in_toml(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[ingress]\nrequest-size-limit = 1048576\n")
    assert load_config(path, env={}).request_size_limit_bytes == MIB


def test_config_file_from_env(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '[ingress]\nbind-address = "127.0.0.1:1"\n')
    assert load_config(env={"UNBROKEN_CONFIG": path}).ingress_bind == "127.0.0.1:1"
    assert load_config(env={"RESTATE_CONFIG": path}).ingress_bind == "127.0.0.1:1"


def test_config_file_prefers_unbroken_config(tmp_path: Path) -> None:
    a = tmp_path / "a.toml"
    a.write_text('[ingress]\nbind-address = "127.0.0.1:1"\n')
    b = tmp_path / "b.toml"
    b.write_text('[ingress]\nbind-address = "127.0.0.1:2"\n')
    c = load_config(env={"UNBROKEN_CONFIG": str(a), "RESTATE_CONFIG": str(b)})
    assert c.ingress_bind == "127.0.0.1:1"


def test_explicit_config_file_beats_env_config_path(tmp_path: Path) -> None:
    a = tmp_path / "a.toml"
    a.write_text('[ingress]\nbind-address = "127.0.0.1:1"\n')
    b = tmp_path / "b.toml"
    b.write_text('[ingress]\nbind-address = "127.0.0.1:2"\n')
    c = load_config(str(a), env={"UNBROKEN_CONFIG": str(b)})
    assert c.ingress_bind == "127.0.0.1:1"


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(str(tmp_path / "nope.toml"), env={})


def test_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(write_toml(tmp_path, "[ingress\n"), env={})


# ----------------------------------------------------------------------------- environment


def test_env_variables() -> None:
    env = {
        "UNBROKEN_INGRESS__BIND_ADDRESS": "0.0.0.0:8080",
        "RESTATE_ADMIN__BIND_ADDRESS": "0.0.0.0:9071",
        "UNBROKEN_WORKER__INVOKER__INACTIVITY_TIMEOUT": "10s",
        "RESTATE_DEFAULT_RETRY_POLICY__MAX_ATTEMPTS": "1",
        "UNBROKEN_DEFAULT_RETRY_POLICY__EXPONENTIATION_FACTOR": "3",
        "UNBROKEN_DEFAULT_RETRY_POLICY__ON_MAX_ATTEMPTS": "KILL",
        "UNBROKEN_BASE_DIR": "/data",
        "UNBROKEN_INGRESS__REQUEST_SIZE_LIMIT": "1MiB",
        "UNBROKEN_STORAGE__FSYNC": "false",
        "UNBROKEN_DEV": "1",
        "UNBROKEN_ADMIN__TOKEN": "tok",
        "RESTATE_LOG_FILTER": "warn",
        "UNBROKEN_DEFAULT_IDEMPOTENCY_RETENTION": "0",
        "UNBROKEN_WORKER__DEFAULT_JOURNAL_RETENTION": "2500",
        "UNRELATED": "x",
    }
    c = load_config(env=env)
    assert c.ingress_bind == "0.0.0.0:8080"
    assert c.admin_bind == "0.0.0.0:9071"
    assert c.inactivity_timeout_ms == 10_000
    assert c.retry_max_attempts == 1
    assert c.retry_exponentiation_factor == 3.0
    assert c.retry_on_max_attempts == "kill"
    assert c.data_dir == "/data"
    assert c.request_size_limit_bytes == MIB
    assert c.fsync is False
    assert c.dev is True
    assert c.admin_token == "tok"
    assert c.log_level == "warning"
    assert c.idempotency_retention_ms == 0
    assert c.journal_retention_ms == 2500  # bare number in env = milliseconds


def test_env_data_dir_alias() -> None:
    assert load_config(env={"RESTATE_DATA_DIR": "/d"}).data_dir == "/d"


def test_unbroken_prefix_wins_over_restate() -> None:
    env = {
        "RESTATE_INGRESS__BIND_ADDRESS": "127.0.0.1:1111",
        "UNBROKEN_INGRESS__BIND_ADDRESS": "127.0.0.1:2222",
        # also across aliases of the same setting
        "RESTATE_BASE_DIR": "/restate",
        "UNBROKEN_DATA_DIR": "/unbroken",
    }
    c = load_config(env=env)
    assert c.ingress_bind == "127.0.0.1:2222"
    assert c.data_dir == "/unbroken"


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNBROKEN_ADMIN__BIND_ADDRESS", "127.0.0.1:7777")
    assert load_config().admin_bind == "127.0.0.1:7777"


# ----------------------------------------------------------------------------- precedence


def test_precedence_defaults_file_env_overrides(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        """
base-dir = "/from-file"
[ingress]
bind-address = "127.0.0.1:1001"
[admin]
bind-address = "127.0.0.1:2001"
[worker.invoker]
inactivity-timeout = "5s"
""",
    )
    env = {
        "UNBROKEN_INGRESS__BIND_ADDRESS": "127.0.0.1:1002",
        "RESTATE_BASE_DIR": "/from-env",
    }
    c = load_config(path, env=env, overrides={"data_dir": "/from-flag", "admin_bind": None})
    assert c.ingress_bind == "127.0.0.1:1002"  # env beats file
    assert c.admin_bind == "127.0.0.1:2001"  # file beats default; None override ignored
    assert c.data_dir == "/from-flag"  # override beats env and file
    assert c.inactivity_timeout_ms == 5000  # file only
    assert c.abort_timeout_ms == 600_000  # default


def test_overrides_are_validated_and_coerced() -> None:
    c = load_config(env={}, overrides={"inactivity_timeout_ms": "2s", "dev": True, "log_level": "DEBUG"})
    assert c.inactivity_timeout_ms == 2000
    assert c.dev is True
    assert c.log_level == "debug"
    with pytest.raises(ConfigError, match="unknown config field"):
        load_config(env={}, overrides={"no_such_field": 1})


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("toml", "key", "fragment"),
    [
        (
            '[worker.invoker]\ninactivity-timeout = "abc"\n',
            "worker.invoker.inactivity-timeout",
            "expected a duration like '10s' or 'PT10S'",
        ),
        ("[worker.invoker]\nabort-timeout = true\n", "worker.invoker.abort-timeout", "duration"),
        ("[worker.invoker]\nabort-timeout = 0\n", "worker.invoker.abort-timeout", "duration"),
        ('[ingress]\nrequest-size-limit = "lots"\n', "ingress.request-size-limit", "size in bytes"),
        ('[ingress]\nrequest-size-limit = "10 XB"\n', "ingress.request-size-limit", "size in bytes"),
        ("[ingress]\nrequest-size-limit = -1\n", "ingress.request-size-limit", "size in bytes"),
        ('[ingress]\nbind-address = "localhost"\n', "ingress.bind-address", "HOST:PORT"),
        ('[admin]\nbind-address = "127.0.0.1:70000"\n', "admin.bind-address", "HOST:PORT"),
        ("[admin]\nbind-address = 9070\n", "admin.bind-address", "HOST:PORT"),
        ('[default-retry-policy]\nmax-attempts = "many"\n', "default-retry-policy.max-attempts", "integer"),
        ("[default-retry-policy]\nmax-attempts = 0\n", "default-retry-policy.max-attempts", "integer"),
        (
            '[default-retry-policy]\non-max-attempts = "explode"\n',
            "default-retry-policy.on-max-attempts",
            "'pause' or 'kill'",
        ),
        (
            '[default-retry-policy]\nexponentiation-factor = "fast"\n',
            "default-retry-policy.exponentiation-factor",
            "number",
        ),
        ('[storage]\nfsync = "sometimes"\n', "storage.fsync", "boolean"),
        ('log-level = "loud"\n', "log-level", "log level"),
        ('log-format = "xml"\n', "log-format", "log format (text or json)"),
        ("base-dir = 5\n", "base-dir", "directory path"),
        ('default-idempotency-retention = "forever"\n', "default-idempotency-retention", "duration"),
        ('worker = "nope"\n', "worker", "table"),
    ],
)
def test_bad_toml_values_name_the_key(tmp_path: Path, toml: str, key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write_toml(tmp_path, toml), env={})
    message = str(info.value)
    assert message.startswith(key + ":"), message
    assert fragment in message


def test_bad_duration_message_is_exact(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '[worker.invoker]\ninactivity-timeout = "abc"\n')
    with pytest.raises(
        ConfigError,
        match=r"^worker\.invoker\.inactivity-timeout: expected a duration like '10s' or 'PT10S', got 'abc'$",
    ):
        load_config(path, env={})


def test_config_error_is_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_bad_env_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"^UNBROKEN_WORKER__INVOKER__INACTIVITY_TIMEOUT: .*got 'soon'"):
        load_config(env={"UNBROKEN_WORKER__INVOKER__INACTIVITY_TIMEOUT": "soon"})
    with pytest.raises(ConfigError, match=r"^RESTATE_DEFAULT_RETRY_POLICY__MAX_ATTEMPTS: "):
        load_config(env={"RESTATE_DEFAULT_RETRY_POLICY__MAX_ATTEMPTS": "1.5"})


@pytest.mark.parametrize(
    "addr",
    [
        "localhost",
        "127.0.0.1:",
        ":8080",
        "127.0.0.1:65536",
        "127.0.0.1:http",
        "1.2.3.4:80:90",
        "",
        "::1:8080",
    ],
)
def test_bad_bind_address(addr: str) -> None:
    with pytest.raises(ConfigError, match="ingress_bind"):
        load_config(env={}, overrides={"ingress_bind": addr})
    with pytest.raises(ConfigError):
        parse_bind_address(addr)


@pytest.mark.parametrize("addr", ["0.0.0.0:8080", "localhost:1", "[::]:9070", "example.com:65535"])
def test_good_bind_address(addr: str) -> None:
    assert load_config(env={}, overrides={"admin_bind": addr}).admin_bind == addr


# ----------------------------------------------------------------------------- unknown keys, empty tokens


@pytest.mark.parametrize(
    ("toml", "unknown", "closest"),
    [
        ('[ingres]\nbind-address = "0.0.0.0:1"\n', "ingres", "ingress"),
        ('[ingress]\nbind_address = "0.0.0.0:1"\n', "ingress.bind_address", "ingress.bind-address"),
        (
            '[worker.invoker]\ninactivity_timeout = "1m"\n',
            "worker.invoker.inactivity_timeout",
            "worker.invoker.inactivity-timeout",
        ),
        (
            "[default-retry-policy]\nmax-attempt = 3\n",
            "default-retry-policy.max-attempt",
            "default-retry-policy.max-attempts",
        ),
        ('base_dir = "/tmp/x"\n', "base_dir", "base-dir"),
    ],
)
def test_unknown_keys_are_errors_naming_the_closest_known_key(
    tmp_path: Path, toml: str, unknown: str, closest: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write_toml(tmp_path, toml), env={})
    assert f"unknown key '{unknown}'" in str(info.value)
    assert f"did you mean '{closest}'?" in str(info.value)


def test_an_unknown_key_with_nothing_close_is_still_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown key 'zzzzzz'"):
        load_config(write_toml(tmp_path, "zzzzzz = 1\n"), env={})


def test_a_known_table_given_a_value_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ingress: expected a table"):
        load_config(write_toml(tmp_path, "ingress = 5\n"), env={})


def test_restate_only_settings_load_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="unbroken.config"):
        c = load_config(
            write_toml(tmp_path, 'roles = ["worker"]\n[bifrost]\ndefault-provider = "local"\n'), env={}
        )
    assert c == Config()
    assert "ignoring Restate settings unbroken does not use: roles, bifrost" in caplog.text


@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_token_is_refused(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match="admin.token: expected a non-empty token"):
        load_config(write_toml(tmp_path, f'[admin]\ntoken = "{value}"\n'), env={})
    with pytest.raises(ConfigError, match="UNBROKEN_INGRESS__TOKEN: expected a non-empty token"):
        load_config(env={"UNBROKEN_INGRESS__TOKEN": value})


def test_log_format(tmp_path: Path) -> None:
    assert load_config(env={}).log_format == "text"
    assert load_config(env={"UNBROKEN_LOG_FORMAT": "JSON"}).log_format == "json"
    assert (
        load_config(write_toml(tmp_path, 'log-format = "pretty"\n'), env={}).log_format == "text"
    )  # Restate's
    assert load_config(env={}, overrides={"log_format": "json"}).log_format == "json"


def test_the_postgresql_store_is_set_in_toml_env_or_overrides(tmp_path: Path) -> None:
    toml = 'node-name = "n1"\n[store]\nurl = "postgresql://me@db:5432/app"\npartitions = 16\n'
    c = load_config(write_toml(tmp_path, toml), env={})
    assert (c.store_url, c.store_partitions, c.node_name) == ("postgresql://me@db:5432/app", 16, "n1")
    env = {"UNBROKEN_STORE__URL": "postgresql://u@h:1/d", "UNBROKEN_NODE_NAME": "n2"}
    assert load_config(env=env).store_url == "postgresql://u@h:1/d"
    assert load_config(env=env).node_name == "n2"
    assert load_config(env=env, overrides={"store_url": "postgres://x@y/z"}).store_url == "postgres://x@y/z"
    assert Config().store_url is None and Config().store_partitions == 64  # SQLite unless asked


@pytest.mark.parametrize("value", ["mysql://me@db/app", "db:5432", ""])
def test_a_store_url_that_is_not_postgresql_is_refused(value: str) -> None:
    with pytest.raises(
        ConfigError, match="UNBROKEN_STORE__URL: expected a PostgreSQL URL like postgresql://"
    ):
        load_config(env={"UNBROKEN_STORE__URL": value})
