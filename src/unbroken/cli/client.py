"""HTTP clients of the operator commands: the admin API and the ingress (httpx), failing with one-line
:class:`CliError` s (``cannot reach the admin API at URL (connection refused)``, the server's message for
an error answer)."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote

import httpx

from unbroken.cli.common import CliError, one_line

ADMIN_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
# Bearer tokens for servers started with `[admin] token` / `[ingress] token` (the server's own variables work).
ADMIN_TOKEN_VARS = ("UNBROKEN_ADMIN_TOKEN", "UNBROKEN_ADMIN__TOKEN", "RESTATE_ADMIN__TOKEN")
INGRESS_TOKEN_VARS = ("UNBROKEN_INGRESS_TOKEN", "UNBROKEN_INGRESS__TOKEN", "RESTATE_INGRESS__TOKEN")


def _reason(exc: httpx.TransportError) -> str:
    text = one_line(str(exc)) or type(exc).__name__
    low = text.lower()
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if "refused" in low:
        return "connection refused"
    if "name or service not known" in low or "nodename nor servname" in low or "name resolution" in low:
        return "unknown host"
    return text


def error_message(resp: httpx.Response) -> str:
    """The message of an error answer (Restate's ``{"message": ...}`` / ``{"code", "message"}``)."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return one_line(body["message"])
    return one_line(resp.text) or f"HTTP {resp.status_code}"


def segment(text: str) -> str:
    """One URL path segment (a key may hold '/')."""
    return quote(text, safe="")


def _token(names: tuple[str, ...]) -> str | None:
    return next((os.environ[n] for n in names if os.environ.get(n)), None)


class Api:
    def __init__(
        self, base_url: str, what: str, token_vars: tuple[str, ...], timeout: httpx.Timeout = ADMIN_TIMEOUT
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.what = what
        self.token_vars = token_vars
        token = _token(token_vars)
        headers = {"authorization": f"Bearer {token}"} if token else None
        try:
            # TLS set-up (loading the CA bundle) costs ~0.1 s per command: only for https URLs.
            verify = self.base_url.lower().startswith("https:")
            self.http = httpx.Client(base_url=self.base_url, timeout=timeout, verify=verify, headers=headers)
        except (httpx.InvalidURL, ValueError) as exc:
            raise CliError(f"invalid {what} URL '{base_url}': {one_line(str(exc))}") from None

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            resp = self.http.request(method, path, **kw)
        except (httpx.UnsupportedProtocol, httpx.InvalidURL):
            raise CliError(f"invalid {self.what} URL '{self.base_url}': expected http://HOST:PORT") from None
        except httpx.TransportError as exc:
            raise CliError(f"cannot reach the {self.what} at {self.base_url} ({_reason(exc)})") from None
        if resp.status_code == 401:
            raise CliError(f"{error_message(resp)} (set ${self.token_vars[0]})")
        return resp

    def call(self, method: str, path: str, *, not_found: str | None = None, **kw: Any) -> httpx.Response:
        """A request that must succeed (2xx); ``not_found`` replaces the server's message for a 404."""
        resp = self.request(method, path, **kw)
        if resp.status_code == 404 and not_found is not None:
            raise CliError(not_found)
        if resp.status_code >= 400:
            raise CliError(error_message(resp))
        return resp


class Admin(Api):
    def __init__(self, base_url: str) -> None:
        super().__init__(base_url, "admin API", ADMIN_TOKEN_VARS)

    def __enter__(self) -> Admin:
        return self

    def get(self, path: str, *, not_found: str | None = None) -> Any:
        return self.call("GET", path, not_found=not_found).json()

    def query_answer(self, sql: str) -> dict[str, Any]:
        """``POST /query``: ``{"rows": [...]}`` (``"truncated": true`` when cut)."""
        answer: dict[str, Any] = self.call(
            "POST", "/query", json={"query": sql}, headers={"accept": "application/json"}
        ).json()
        return answer

    def query(self, sql: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.query_answer(sql)["rows"]
        return rows

    def service(self, name: str) -> dict[str, Any]:
        meta: dict[str, Any] = self.get(f"/services/{segment(name)}", not_found=f"service '{name}' not found")
        return meta

    def explain(self, invocation_id: str) -> dict[str, Any]:
        answer: dict[str, Any] = self.get(
            f"/invocations/{invocation_id}/explain", not_found=f"invocation '{invocation_id}' not found"
        )
        return answer


class Ingress(Api):
    def __init__(self, base_url: str) -> None:
        # A call waits for its result, which may take long: no read timeout.
        super().__init__(base_url, "ingress", INGRESS_TOKEN_VARS, httpx.Timeout(None, connect=5.0))

    def __enter__(self) -> Ingress:
        return self
