"""The OpenAPI 3.1 document of Unbroken's admin API (served at ``GET /openapi``).

It describes exactly the routes in ``routes.py`` (a test checks both directions). Shapes follow Restate's
admin API where Unbroken implements the same endpoint; differences are stated in the descriptions.
"""

from __future__ import annotations

from typing import Any

_REF = "#/components/schemas/"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("ErrorDescriptionResponse"), description)


def _empty(description: str) -> dict[str, Any]:
    return {"description": description}


def _param(name: str, description: str, where: str = "path", **schema: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "description": description,
        "schema": {"type": "string", **schema},
    }


def _op(
    op_id: str,
    summary: str,
    responses: dict[str, Any],
    *,
    params: list[dict[str, Any]] | None = None,
    body: str | None = None,
    tag: str = "invocation",
    description: str = "",
) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": op_id, "summary": summary, "tags": [tag], "responses": responses}
    if description:
        op["description"] = description
    if params:
        op["parameters"] = params
    if body:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(body)}}}
    return op


_SERVICE = _param("service", "Fully qualified service name.")
_INVOCATION = _param("invocation_id", "Invocation identifier (inv_1…).")
_INVOCATION_ERRORS = {
    "400": _error("Malformed invocation id."),
    "404": _error("Unknown invocation."),
}


def _control(op_id: str, summary: str, ok: str, extra: dict[str, Any], **kw: Any) -> dict[str, Any]:
    responses = {"200": _empty(ok), **_INVOCATION_ERRORS, **extra}
    return {"patch": _op(op_id, summary, responses, params=[_INVOCATION, *kw.pop("params", [])], **kw)}


def _paths() -> dict[str, Any]:
    not_completed = {"409": _error("The invocation is not completed yet.")}
    completed = {"409": _error("The invocation was already completed.")}
    return {
        "/health": {
            "get": _op("health", "Health check", {"200": _empty("The admin API is up.")}, tag="health")
        },
        "/version": {
            "get": _op(
                "version",
                "Version information",
                {"200": _json(_ref("VersionInformation"), "Versions.")},
                tag="version",
            )
        },
        "/openapi": {
            "get": _op(
                "openapi_spec",
                "This OpenAPI document",
                {"200": _json({"type": "object"}, "OpenAPI 3.1 document.")},
                tag="openapi",
            )
        },
        "/query": {
            "post": _op(
                "query",
                "Read-only SQL over the engine's state",
                {
                    "200": {
                        "description": (
                            "The rows: an Arrow IPC stream (one schema, one record batch; header "
                            "`x-unbroken-truncated: true` when cut), or JSON for `accept: application/json`."
                        ),
                        "content": {
                            "application/vnd.apache.arrow.stream": {
                                "schema": {"type": "string", "format": "binary"}
                            },
                            "application/json": {"schema": _ref("QueryResponse")},
                        },
                    },
                    "400": _error(
                        "Invalid SQL, a statement that is not read-only, or a time or size limit was hit."
                    ),
                    "429": _error("Too many queries at once: retry later."),
                },
                body="QueryRequest",
                tag="introspection",
                description=(
                    "Runs one read-only statement in Restate's SQL dialect (DataFusion's: `information_schema."
                    "columns`, `x::BIGINT`, `CAST(x AS STRING)`, `first_value(x ORDER BY y)`), run by SQLite. "
                    "Restate's tables: sys_invocation, sys_invocation_status, sys_journal, state, sys_inbox, "
                    "sys_keyed_service_status, sys_promise, sys_service, sys_deployment, sys_idempotency, "
                    "information_schema.columns and .tables. Answers an Arrow IPC stream unless the request "
                    "says `accept: application/json` (as Restate). Timestamps are RFC 3339 strings, BLOB "
                    "columns lowercase hex. Writes, ATTACH, "
                    "transactions, pragma changes and fts3_tokenizer are refused (400); the introspection pragmas "
                    "table_info, table_xinfo, table_list, index_list, index_info and index_xinfo are allowed, also "
                    "as table-valued functions (`SELECT name FROM pragma_table_info('state')`). Queries stop at "
                    "the time limit (default 10s, `timeout` may lower it), at most 10000 rows are returned "
                    "(`truncated: true` when more matched) and an answer larger than 128 MiB as JSON is refused "
                    "(400)."
                ),
            )
        },
        "/deployments": {
            "get": _op(
                "list_deployments",
                "List deployments",
                {
                    "200": _json(
                        _ref("ListDeploymentsResponse"), "The in-process deployment and the remote ones."
                    )
                },
                tag="deployment",
            ),
            "post": _op(
                "create_deployment",
                "Register a deployment",
                {
                    "201": _json(_ref("RegisterDeploymentResponse"), "Registered."),
                    "200": _json(_ref("RegisterDeploymentResponse"), "Already registered (or forced again)."),
                    "400": _error("Bad request, or discovery failed (unreachable endpoint, bad manifest)."),
                    "409": _error("A service of the deployment is served in-process."),
                },
                body="RegisterDeploymentRequest",
                tag="deployment",
                description=(
                    "Discovers the services served at `uri` (GET {uri}/discover, endpoint manifest v1-v4, "
                    "HTTP/2 with prior knowledge, or HTTP/1.1 with `use_http_11`) and serves them over "
                    "Restate's service protocol (v5/v6; bidirectional streams over HTTP/2, request/response "
                    "over HTTP/1.1). The registration is stored: it survives restarts."
                ),
            ),
        },
        "/deployments/{deployment}": {
            "get": _op(
                "get_deployment",
                "Get a deployment",
                {
                    "200": _json(_ref("DetailedDeploymentResponse"), "The deployment."),
                    "404": _error("Unknown deployment."),
                },
                params=[_param("deployment", "Deployment id (dp_1…).")],
                tag="deployment",
            ),
            "delete": _op(
                "delete_deployment",
                "Remove a deployment",
                {
                    "202": _empty("Removed: its services are no longer served."),
                    "404": _error("Unknown deployment."),
                    "409": _error("The in-process deployment cannot be removed."),
                },
                params=[_param("deployment", "Deployment id (dp_1…).")],
                tag="deployment",
            ),
        },
        "/services": {
            "get": _op(
                "list_services",
                "List services",
                {"200": _json(_ref("ListServicesResponse"), "All services.")},
                tag="service",
            )
        },
        "/services/{service}": {
            "get": _op(
                "get_service",
                "Get a service",
                {"200": _json(_ref("ServiceMetadata"), "The service."), "404": _error("Unknown service.")},
                params=[_SERVICE],
                tag="service",
            ),
            "patch": _op(
                "modify_service",
                "Modify a service's configuration",
                {
                    "200": _json(_ref("ServiceMetadata"), "The updated service."),
                    "400": _error("A field is invalid (the message names it)."),
                    "404": _error("Unknown service."),
                },
                params=[_SERVICE],
                body="ModifyServiceRequest",
                tag="service",
                description="Changes are persisted in the data dir and survive restarts; they override the options declared in code.",
            ),
        },
        "/services/{service}/handlers": {
            "get": _op(
                "list_service_handlers",
                "List a service's handlers",
                {
                    "200": _json(_ref("ListServiceHandlersResponse"), "The handlers."),
                    "404": _error("Unknown service."),
                },
                params=[_SERVICE],
                tag="service",
            )
        },
        "/services/{service}/handlers/{handler}": {
            "get": _op(
                "get_service_handler",
                "Get a handler",
                {
                    "200": _json(_ref("HandlerMetadata"), "The handler."),
                    "404": _error("Unknown service or handler."),
                },
                params=[_SERVICE, _param("handler", "Handler name.")],
                tag="service",
            )
        },
        "/services/{service}/state": {
            "post": _op(
                "modify_service_state",
                "Replace the state of one virtual object or workflow key",
                {
                    "202": _empty("Accepted; the state is replaced."),
                    "400": _error("Invalid body, or the service has no state."),
                    "404": _error("Unknown service."),
                    "409": _error("The state changed since the version the change was made from."),
                },
                params=[_SERVICE],
                body="ModifyServiceStateRequest",
                tag="service",
            )
        },
        "/services/{service}/state/{key}": {
            "get": _op(
                "get_service_state",
                "Read the state of one key (Unbroken extension)",
                {
                    "200": _json(_ref("StateResponse"), "State name → value."),
                    "400": _error("The service has no state."),
                    "404": _error("Unknown service."),
                },
                params=[_SERVICE, _param("key", "Object or workflow key.")],
                tag="service",
            ),
            "delete": _op(
                "clear_service_state",
                "Clear the state of one key (Unbroken extension)",
                {
                    "202": _empty("Accepted; the state is cleared."),
                    "400": _error("The service has no state."),
                    "404": _error("Unknown service."),
                },
                params=[_SERVICE, _param("key", "Object or workflow key.")],
                tag="service",
            ),
        },
        "/invocations/{invocation_id}": {
            "delete": _op(
                "delete_invocation",
                "Cancel, kill or purge an invocation (deprecated)",
                {
                    "202": _empty("Accepted."),
                    **_INVOCATION_ERRORS,
                    "409": _error("Kill of a completed / purge of a running invocation."),
                },
                params=[
                    _INVOCATION,
                    _param(
                        "mode", "Cancel (default), Kill or Purge.", "query", enum=["Cancel", "Kill", "Purge"]
                    ),
                ],
            )
        },
        "/invocations/{invocation_id}/cancel": {
            "patch": _op(
                "cancel_invocation",
                "Cancel an invocation (compensations run)",
                {
                    "200": _empty("Done (it had not started)."),
                    "202": _empty("Accepted; the handler sees the cancellation."),
                    **_INVOCATION_ERRORS,
                    **completed,
                },
                params=[_INVOCATION],
            )
        },
        "/invocations/{invocation_id}/kill": _control(
            "kill_invocation", "Kill an invocation (no compensations)", "Killed.", completed
        ),
        "/invocations/{invocation_id}/purge": _control(
            "purge_invocation", "Forget a completed invocation", "Purged.", not_completed
        ),
        "/invocations/{invocation_id}/purge-journal": _control(
            "purge_journal",
            "Drop a completed invocation's journal, keep its result",
            "Journal purged.",
            not_completed,
        ),
        "/invocations/{invocation_id}/pause": _control(
            "pause_invocation", "Pause an invocation", "Paused.", completed
        ),
        "/invocations/{invocation_id}/resume": _control(
            "resume_invocation",
            "Resume a paused, backing-off or suspended invocation",
            "Resumed.",
            {**completed, "425": _error("The invocation has not started yet (inboxed or scheduled).")},
            params=[
                _param("deployment", "Keep, Latest or the deployment id (there is one deployment).", "query")
            ],
        ),
        "/invocations/{invocation_id}/explain": {
            "get": _op(
                "explain_invocation",
                "Why an invocation is (not) progressing (Unbroken extension)",
                {"200": _json(_ref("ExplainResponse"), "The explanation."), **_INVOCATION_ERRORS},
                params=[_INVOCATION],
                tag="introspection",
                description=(
                    "One answer computed from what the engine stores: queued behind the key's lock holder, "
                    "sleeping, awaiting an awakeable or a durable promise, waiting on a call (followed through "
                    "`chain`, recursively), backing off, paused, suspended, scheduled or completed."
                ),
            )
        },
    }


_DURATION = {
    "type": "string",
    "description": "Friendly duration ('2s', '1h 30m', '1d') or ISO-8601 ('PT2S').",
}
_RETRY = {
    "type": "object",
    "properties": {
        "initial_interval": _DURATION,
        "exponentiation_factor": {"type": "number", "minimum": 1},
        "max_interval": _DURATION,
        "max_attempts": {"type": ["integer", "null"], "minimum": 1},
        "on_max_attempts": {"type": "string", "enum": ["Pause", "Kill"]},
    },
}
_SERVICE_FIELDS = {
    "public": {"type": "boolean"},
    "idempotency_retention": _DURATION,
    "workflow_completion_retention": {**_DURATION, "description": "Workflows only."},
    "journal_retention": _DURATION,
    "inactivity_timeout": _DURATION,
    "abort_timeout": _DURATION,
}


def _obj(properties: dict[str, Any], required: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties, **extra}
    if required:
        schema["required"] = required
    return schema


def _schemas() -> dict[str, Any]:
    deployment = {
        "id": {"type": "string"},
        "uri": {"type": "string", "description": "local://in-process"},
        "protocol_type": {"type": "string"},
        "http_version": {"type": "string"},
        "additional_headers": {"type": "object"},
        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
        "created_at": {"type": "string", "format": "date-time"},
        "min_protocol_version": {"type": "integer"},
        "max_protocol_version": {"type": "integer"},
        "sdk_version": {"type": "string"},
    }
    return {
        "ErrorDescriptionResponse": _obj(
            {"message": {"type": "string"}, "restate_code": {"type": ["string", "null"]}}, ["message"]
        ),
        "VersionInformation": _obj(
            {
                "version": {"type": "string"},
                "min_admin_api_version": {"type": "integer"},
                "max_admin_api_version": {"type": "integer"},
                "ingress_endpoint": {"type": "string"},
                "features": {"type": "object", "additionalProperties": {"type": "boolean"}},
                "unbroken_version": {"type": "string"},
            },
            ["version", "min_admin_api_version", "max_admin_api_version", "features"],
        ),
        "QueryRequest": _obj(
            {
                "query": {"type": "string", "description": "One SQLite SELECT statement."},
                "timeout": {
                    **_DURATION,
                    "description": "Lower time limit for this query (Unbroken extension).",
                },
            },
            ["query"],
        ),
        "QueryResponse": _obj(
            {"rows": {"type": "array", "items": {"type": "object"}}, "truncated": {"type": "boolean"}},
            ["rows"],
        ),
        "RetryPolicy": _RETRY,
        "HandlerMetadata": _obj(
            {
                "name": {"type": "string"},
                "ty": {"type": "string", "enum": ["Exclusive", "Shared", "Workflow"]},
                "public": {"type": "boolean"},
                "input_description": {"type": "string"},
                "output_description": {"type": "string"},
                "input_json_schema": {},
                "output_json_schema": {},
                "inactivity_timeout": _DURATION,
                "retry_policy": _ref("RetryPolicy"),
                "enable_lazy_state": {"type": "boolean"},
            },
            ["name", "public", "input_description", "output_description"],
        ),
        "ServiceMetadata": _obj(
            {
                "name": {"type": "string"},
                "ty": {"type": "string", "enum": ["Service", "VirtualObject", "Workflow"]},
                "handlers": {"type": "array", "items": _ref("HandlerMetadata")},
                "deployment_id": {"type": "string"},
                "revision": {"type": "integer"},
                **_SERVICE_FIELDS,
                "enable_lazy_state": {"type": "boolean"},
                "retry_policy": _ref("RetryPolicy"),
            },
            ["name", "ty", "handlers", "deployment_id", "revision", "public"],
        ),
        "ModifyServiceRequest": _obj(  # null leaves a field unchanged (Restate's CLI sends every field)
            {
                name: {"anyOf": [schema, {"type": "null"}]}
                for name, schema in {**_SERVICE_FIELDS, "retry_policy": _ref("RetryPolicy")}.items()
            },
            additionalProperties=False,
        ),
        "ListServicesResponse": _obj(
            {"services": {"type": "array", "items": _ref("ServiceMetadata")}}, ["services"]
        ),
        "ListServiceHandlersResponse": _obj(
            {"handlers": {"type": "array", "items": _ref("HandlerMetadata")}}, ["handlers"]
        ),
        "DeploymentResponse": _obj(
            {
                **deployment,
                "services": {
                    "type": "array",
                    "items": _obj({"name": {"type": "string"}, "revision": {"type": "integer"}}),
                },
            },
            ["id", "uri"],
        ),
        "DetailedDeploymentResponse": _obj(
            {**deployment, "services": {"type": "array", "items": _ref("ServiceMetadata")}}, ["id", "uri"]
        ),
        "RegisterDeploymentRequest": _obj(
            {
                "uri": {"type": "string"},
                "force": {"type": ["boolean", "null"]},
                "additional_headers": {"type": "object", "additionalProperties": {"type": "string"}},
                "use_http_11": {"type": "boolean"},
                "dry_run": {"type": "boolean"},
                "breaking": {"type": "boolean"},
                "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
            },
            ["uri"],
        ),
        "RegisterDeploymentResponse": _obj(
            {
                "id": {"type": "string"},
                "services": {"type": "array", "items": _ref("ServiceMetadata")},
                "min_protocol_version": {"type": "integer"},
                "max_protocol_version": {"type": "integer"},
                "sdk_version": {"type": ["string", "null"]},
            },
            ["id", "services"],
        ),
        "ListDeploymentsResponse": _obj(
            {"deployments": {"type": "array", "items": _ref("DeploymentResponse")}}, ["deployments"]
        ),
        "ModifyServiceStateRequest": _obj(
            {
                "object_key": {"type": "string"},
                "new_state": {
                    "type": "object",
                    "additionalProperties": {
                        "oneOf": [
                            {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 255}},
                            {"type": "string", "description": "UTF-8 text (Unbroken extension)"},
                        ]
                    },
                },
                "version": {
                    "type": "string",
                    "description": "The version of the state the change was made from (Restate's, as its "
                    "CLI computes it): applied only if the state is still that version, else 409.",
                },
            },
            ["object_key", "new_state"],
        ),
        "ExplainResponse": _obj(
            {
                "invocation_id": {"type": "string"},
                "target": {"type": "string"},
                "status": {"type": "string"},
                "summary": {"type": "string", "description": "One sentence."},
                "reasons": {
                    "type": "array",
                    "items": {"type": "object", "properties": {"kind": {"type": "string"}}},
                },
                "chain": {
                    "type": "array",
                    "description": "What it waits on, depth first (depth, waited_on_by).",
                    "items": {"type": "object"},
                },
            },
            ["invocation_id", "status", "summary", "reasons", "chain"],
        ),
        "StateResponse": {
            "type": "object",
            "additionalProperties": {
                "type": "string",
                "description": "The value as UTF-8 text, or base64 when it is not valid UTF-8.",
            },
        },
    }


def openapi_document(version: str) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Unbroken admin API",
            "version": version,
            "description": (
                "Restate-compatible admin API of Unbroken. Every path is also served under the /v2, /v3 and "
                '/v4 prefixes. Errors are {"message": ..., "restate_code": null}.'
            ),
        },
        "paths": _paths(),
        "components": {"schemas": _schemas()},
    }
