// Unbroken's web UI: plain JavaScript over the admin API of the server that serves it (no build step, no
// CDN). Lists and journals come from POST /query (sys_invocation, sys_journal, state, sys_promise), the
// rest from the admin routes (explain, services, state, the invocation controls). Every value from the
// server is put in the page as text (textContent), never as HTML.
"use strict";

const TOKEN_KEY = "unbroken.adminToken";
const REFRESH_MS = 2000;
const LIST_LIMIT = 200;
const STATUSES = ["pending", "scheduled", "running", "suspended", "backing-off", "paused", "completed"];
const SINCE = { "": "any time", "5m": "last 5 minutes", "1h": "last hour", "24h": "last 24 hours", "7d": "last 7 days" };
const SINCE_MS = { "5m": 300e3, "1h": 3600e3, "24h": 86400e3, "7d": 604800e3 };

// ------------------------------------------------------------------------------------------ helpers
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "value") el.value = v;
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const sql = (s) => "'" + String(s).replaceAll("'", "''") + "'";
const $ = (sel) => document.querySelector(sel);
const firstLine = (s) => (s || "").split("\n", 1)[0];
const badge = (status) => h("span", { class: "badge " + status, "data-testid": "status", text: status });
const when = (ts) => (ts ? ts.replace("T", " ").replace("Z", "") : "");
const invLink = (id) => h("a", { href: "#/invocation/" + encodeURIComponent(id), class: "mono", text: id });

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(method, path, body) {
  // JSON asked for: /query answers in Arrow otherwise (what Restate's CLI reads)
  const headers = { accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.authorization = "Bearer " + token;
  if (body !== undefined) headers["content-type"] = "application/json";
  const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await resp.text();
  let data = text;
  try { data = text ? JSON.parse(text) : null; } catch (e) { /* not JSON: keep the text */ }
  if (resp.status === 401) {
    askToken(token ? "The server refused this token." : "This server's admin API requires a token.");
    throw new ApiError(401, "unauthorized: enter the admin token");
  }
  if (!resp.ok) throw new ApiError(resp.status, (data && data.message) || text || resp.statusText);
  return data;
}

async function query(statement) {
  const answer = await api("POST", "/query", { query: statement });
  return Array.isArray(answer) ? answer : (answer && answer.rows) || [];
}

let servicesCache = null;
async function services(fresh) {
  if (!servicesCache || fresh) {
    const answer = await api("GET", "/services");
    servicesCache = Array.isArray(answer) ? answer : answer.services || [];
  }
  return servicesCache;
}
const kindOf = (svc) => String(svc.ty || "").toLowerCase().replace("_", "");  // service, virtualobject, workflow

function notice(message, ok) {
  const el = $("#notice");
  el.textContent = message;
  el.className = "notice" + (ok ? " ok" : "");
  el.hidden = !message;
  if (ok) setTimeout(() => { if (el.textContent === message) el.hidden = true; }, 4000);
}

function showError(err) {
  notice(err instanceof ApiError ? `${err.status}: ${err.message}` : String(err));
}

function confirmAction(title, text) {
  const dialog = $("#confirm-dialog");
  $("#confirm-title").textContent = title;
  $("#confirm-text").textContent = text;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
  });
}

function askToken(why) {
  const dialog = $("#token-dialog");
  if (dialog.open) return;
  if (why) $("#token-why").textContent = why + " It is kept in this tab only (sessionStorage) and sent as authorization: Bearer.";
  $("#token-input").value = "";
  dialog.showModal();
}

function setupToken() {
  $("#token-button").addEventListener("click", () => askToken(""));
  $("#token-dialog").addEventListener("close", () => {
    const dialog = $("#token-dialog");
    if (dialog.returnValue === "save" && $("#token-input").value) {
      sessionStorage.setItem(TOKEN_KEY, $("#token-input").value);
      notice("");
      render();
    } else if (dialog.returnValue === "forget") {
      sessionStorage.removeItem(TOKEN_KEY);
    }
  });
}

async function checkHealth() {
  const el = $("#health");
  try {
    const resp = await fetch("/health");
    el.textContent = resp.ok ? "healthy" : `unhealthy (${resp.status})`;
    el.className = "health" + (resp.ok ? "" : " bad");
  } catch (e) {
    el.textContent = "server unreachable";
    el.className = "health bad";
  }
}

// ------------------------------------------------------------------------------------------ routing
let refreshTimer = null;
let renderSeq = 0;

function route() {
  const hash = location.hash.replace(/^#\/?/, "") || "invocations";
  const [path, qs] = hash.split("?");
  const parts = path.split("/").map(decodeURIComponent);
  return { name: parts[0], args: parts.slice(1), params: new URLSearchParams(qs || "") };
}

async function render() {
  const seq = ++renderSeq;
  clearInterval(refreshTimer);
  refreshTimer = null;
  const r = route();
  for (const a of document.querySelectorAll("[data-nav]")) {
    a.classList.toggle("active", a.dataset.nav === r.name || (r.name === "invocation" && a.dataset.nav === "invocations"));
  }
  const views = { invocations: viewInvocations, invocation: viewInvocation, services: viewServices, state: viewState, workflows: viewWorkflows };
  const view = views[r.name] || viewInvocations;
  const main = $("#main");
  try {
    const content = await view(r);
    if (seq !== renderSeq) return;  // the user went elsewhere meanwhile
    main.replaceChildren(content);
  } catch (err) {
    if (seq !== renderSeq) return;
    main.replaceChildren(h("div", { class: "card" }, h("p", { class: "muted", text: "Could not load this page." })));
    showError(err);
  }
}

// ------------------------------------------------------------------------------------- invocations
function invocationFilterSql(p) {
  const conds = [];
  if (p.get("service")) conds.push("target_service_name = " + sql(p.get("service")));
  if (p.get("handler")) conds.push("target_handler_name = " + sql(p.get("handler")));
  if (p.get("key")) conds.push("target_service_key = " + sql(p.get("key")));
  if (p.get("status")) conds.push("status = " + sql(p.get("status")));
  if (p.get("id")) conds.push("id = " + sql(p.get("id")));
  const since = SINCE_MS[p.get("since") || ""];
  if (since) conds.push("created_at >= " + sql(new Date(Date.now() - since).toISOString()));
  return conds.length ? " WHERE " + conds.join(" AND ") : "";
}

async function loadInvocationRows(p) {
  return query(
    "SELECT id, target, target_service_name, target_handler_name, target_service_key, status, created_at, " +
    "modified_at, retry_count, last_failure, invoked_by_target FROM sys_invocation" + invocationFilterSql(p) +
    ` ORDER BY created_at DESC, id LIMIT ${LIST_LIMIT}`,
  );
}

function invocationTable(rows) {
  if (!rows.length) return h("div", { class: "empty", "data-testid": "no-invocations", text: "No invocations match." });
  return h("table", { "data-testid": "invocations" },
    h("thead", {}, h("tr", {}, ["Invocation", "Target", "Status", "Created", "Modified", "Retries", "Last failure"].map((t) => h("th", { text: t })))),
    h("tbody", {}, rows.map((r) => h("tr", { "data-id": r.id },
      h("td", {}, invLink(r.id)),
      h("td", { class: "mono", text: r.target }),
      h("td", {}, badge(r.status)),
      h("td", { text: when(r.created_at) }),
      h("td", { text: when(r.modified_at) }),
      h("td", { text: r.retry_count || "" }),
      h("td", { class: "mono", text: firstLine(r.last_failure) }),
    ))),
  );
}

async function viewInvocations(r) {
  const p = r.params;
  const [svcs, rows] = await Promise.all([services(), loadInvocationRows(p)]);
  const field = (name, label, input) => h("label", {}, label, input);
  const serviceSel = h("select", { name: "service", "data-testid": "filter-service" },
    h("option", { value: "", text: "all services" }),
    svcs.map((s) => h("option", { value: s.name, text: s.name, selected: p.get("service") === s.name })));
  const handlers = [...new Set(svcs.filter((s) => !p.get("service") || s.name === p.get("service")).flatMap((s) => (s.handlers || []).map((x) => x.name)))].sort();
  const handlerSel = h("select", { name: "handler", "data-testid": "filter-handler" },
    h("option", { value: "", text: "all handlers" }),
    handlers.map((n) => h("option", { value: n, text: n, selected: p.get("handler") === n })));
  const keyIn = h("input", { name: "key", value: p.get("key") || "", placeholder: "object or workflow key", "data-testid": "filter-key" });
  const statusSel = h("select", { name: "status", "data-testid": "filter-status" },
    h("option", { value: "", text: "any status" }),
    STATUSES.map((s) => h("option", { value: s, text: s, selected: p.get("status") === s })));
  const sinceSel = h("select", { name: "since", "data-testid": "filter-since" },
    Object.entries(SINCE).map(([v, t]) => h("option", { value: v, text: t, selected: (p.get("since") || "") === v })));
  const form = h("form", { class: "filters", "data-testid": "filters" },
    field("service", "Service", serviceSel), field("handler", "Handler", handlerSel), field("key", "Key", keyIn),
    field("status", "Status", statusSel), field("since", "Created", sinceSel),
    h("button", { type: "submit", text: "Filter" }),
    h("button", { type: "button", class: "quiet", text: "Clear", onclick: () => { location.hash = "#/invocations"; } }));
  const apply = (ev) => {
    if (ev) ev.preventDefault();
    const q = new URLSearchParams();
    for (const el of form.elements) if (el.name && el.value) q.set(el.name, el.value);
    location.hash = "#/invocations" + (q.toString() ? "?" + q : "");
  };
  form.addEventListener("submit", apply);
  for (const sel of [serviceSel, handlerSel, statusSel, sinceSel]) sel.addEventListener("change", apply);

  const tableBox = h("div", {}, invocationTable(rows));
  const count = h("span", { class: "muted", "data-testid": "count", text: countText(rows) });
  const live = h("input", { type: "checkbox", checked: sessionStorage.getItem("unbroken.live") !== "off", "data-testid": "live" });
  const stamp = h("span", { text: "" });
  live.addEventListener("change", () => sessionStorage.setItem("unbroken.live", live.checked ? "on" : "off"));
  const seq = renderSeq;
  refreshTimer = setInterval(async () => {
    if (!live.checked || seq !== renderSeq || document.hidden) return;
    try {
      const fresh = await loadInvocationRows(p);
      if (seq !== renderSeq) return;
      tableBox.replaceChildren(invocationTable(fresh));
      count.textContent = countText(fresh);
      stamp.textContent = "updated " + new Date().toLocaleTimeString();
    } catch (err) { showError(err); }
  }, REFRESH_MS);
  return h("div", {},
    h("div", { class: "row" }, h("h1", { text: "Invocations" }), count, h("span", { class: "spacer" }),
      h("label", { class: "refresh" }, live, "live refresh", stamp)),
    h("div", { class: "card" }, form),
    h("div", { class: "card" }, tableBox));
}

const countText = (rows) => (rows.length >= LIST_LIMIT ? `newest ${LIST_LIMIT}` : `${rows.length} shown`);

// ------------------------------------------------------------------------------------ one invocation
const ACTIONS = [
  ["cancel", "Cancel", "The handler sees a cancellation at its next await and can run compensations; its callees are cancelled too."],
  ["kill", "Kill", "Stops the invocation at once, without running any more of its code: no compensation runs."],
  ["pause", "Pause", "Stops retrying it; Resume starts it again."],
  ["resume", "Resume", "Starts a paused invocation again (or retries a backing-off one now)."],
  ["purge", "Purge", "Deletes a completed invocation: its result, journal and idempotency key."],
];

async function viewInvocation(r) {
  const id = r.args[0] || "";
  const [rows, journal, explained] = await Promise.all([
    query("SELECT * FROM sys_invocation WHERE id = " + sql(id)),
    query('SELECT "index", entry_type, name, completed, invoked_id, invoked_target, sleep_wakeup_at, promise_name, entry_json, appended_at FROM sys_journal WHERE id = ' + sql(id) + ' ORDER BY "index"'),
    api("GET", "/invocations/" + encodeURIComponent(id) + "/explain").catch((err) => ({ error: err })),
  ]);
  const inv = rows[0];
  if (!inv) {
    return h("div", { class: "card" }, h("h1", { text: "Invocation not found" }),
      h("p", { class: "mono", text: id }), h("p", {}, h("a", { href: "#/invocations", text: "Back to the list" })));
  }
  const seq = renderSeq;
  if (inv.status !== "completed") {
    refreshTimer = setInterval(async () => {  // live: re-render while it is not done (the page keeps its place)
      if (seq === renderSeq && !document.hidden && !document.querySelector("dialog[open]")) render();
    }, REFRESH_MS * 2);
  }
  return h("div", { "data-testid": "invocation" },
    h("div", { class: "row" }, h("h1", { class: "mono", text: inv.id }), badge(inv.status)),
    explainCard(explained),
    h("div", { class: "card" }, h("h2", { text: "Actions" }), actionButtons(inv)),
    factsCard(inv, explained && !explained.error ? explained.attempts : null),
    h("div", { class: "card" }, h("h2", { text: `Journal (${journal.length} entries)` }), timeline(journal, inv)));
}

function explainCard(explained) {
  if (!explained || explained.error) {
    return h("div", { class: "card explain" }, h("p", { class: "muted", text: "explain: " + (explained && explained.error ? explained.error.message : "unavailable") }));
  }
  // the summary already says what a single reason phrases: list the reasons only when they add something
  const phrased = (explained.reasons || []).filter((r) => !(r.phrase && (explained.summary || "").includes(r.phrase)));
  const reasons = phrased.map((r) => h("li", {}, r.phrase || describeReason(r)));
  const chain = (explained.chain || []).map((c) => h("li", {}, invLink(c.invocation_id), " ", h("span", { class: "mono", text: c.target }), " ", badge(c.status), " — ", c.summary || ""));
  return h("div", { class: "card explain", "data-testid": "explain" },
    h("h2", { text: "Explain" }),
    h("div", { class: "summary", "data-testid": "explain-summary", text: explained.summary || "" }),
    reasons.length ? h("ul", {}, reasons) : null,
    chain.length ? h("div", {}, h("h3", { text: "What it waits on" }), h("ul", {}, chain)) : null);
}

function describeReason(r) {
  const extra = Object.entries(r).filter(([k]) => k !== "kind").map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`);
  return r.kind + (extra.length ? ": " + extra.join(", ") : "");
}

function actionButtons(inv) {
  const done = inv.status === "completed";
  const allowed = {
    cancel: !done, kill: !done, pause: !done && inv.status !== "paused",
    resume: inv.status === "paused" || inv.status === "backing-off", purge: done,
  };
  return h("div", { class: "actions" }, ACTIONS.map(([action, label, text]) => h("button", {
    type: "button", class: action === "resume" ? "" : "danger", disabled: !allowed[action], "data-action": action, text: label,
    onclick: async () => {
      if (!(await confirmAction(`${label} ${inv.id}?`, text))) return;
      try {
        await api("PATCH", `/invocations/${encodeURIComponent(inv.id)}/${action}`);
        notice(`${label}: done for ${inv.id}`, true);
        if (action === "purge") location.hash = "#/invocations";
        else render();
      } catch (err) { showError(err); }
    },
  })));
}

function factsCard(inv, attempts) {
  const facts = [
    ["Target", h("span", { class: "mono", "data-testid": "target", text: inv.target })],
    ["Status", badge(inv.status)],
    ["Created", when(inv.created_at)],
    ["Modified", when(inv.modified_at)],
    ["Invoked by", inv.invoked_by_id ? h("span", {}, invLink(inv.invoked_by_id), " ", inv.invoked_by_target || "") : inv.invoked_by],
    ["Attempts", attempts === null || attempts === undefined ? (inv.retry_count ? `${inv.retry_count} failed` : null) :
      `${attempts}${inv.retry_count ? ` (${inv.retry_count} failed)` : ""}`],
    ["Journal", `${inv.journal_size} entries`],
    ["Scheduled at", when(inv.scheduled_at)],
    ["Next retry", when(inv.next_retry_at)],
    ["Idempotency key", inv.idempotency_key],
    ["Completed", inv.completed_at ? `${when(inv.completed_at)} (${inv.completion_result})` : null],
  ].filter(([, v]) => v !== null && v !== undefined && v !== "");
  return h("div", { class: "card" },
    h("h2", { text: "Invocation" }),
    h("dl", { class: "grid" }, facts.flatMap(([k, v]) => [h("dt", { text: k }), h("dd", {}, v)])),
    inv.last_failure ? h("div", {}, h("h3", { text: `Last failure${inv.last_failure_error_code ? " (" + inv.last_failure_error_code + ")" : ""}` }),
      h("pre", { class: "failure-text", "data-testid": "last-failure", text: inv.last_failure })) : null,
    inv.completion_failure ? h("div", {}, h("h3", { text: "Result: failure" }), h("pre", { class: "failure-text", text: inv.completion_failure })) : null);
}

function timeline(journal, inv) {
  if (!journal.length) return h("p", { class: "muted", text: "No journal (not started yet, or purged)." });
  // a failed ctx.run fails its attempt: the invocation's retries are that step's when the last failure names it
  const failedRun = inv.retry_count ? /^ctx\.run '([^']*)'/.exec(inv.last_failure || "") : null;
  return h("ol", { class: "timeline", "data-testid": "journal" }, journal.map((e) => {
    let entry = {};
    try { entry = JSON.parse(e.entry_json || "{}"); } catch (err) { /* shown raw below */ }
    const isNotification = String(e.entry_type).startsWith("Notification");
    const failure = entry.result && entry.result.failure;
    const cls = [isNotification ? "notification" : "command", failure ? "failure" : "", !e.completed ? "pending" : ""].join(" ");
    const details = [];
    if (e.invoked_target) details.push(h("span", {}, "→ ", h("span", { class: "mono", text: e.invoked_target }), e.invoked_id ? h("span", {}, " ", invLink(e.invoked_id)) : null));
    if (e.sleep_wakeup_at) details.push(h("span", { text: "wakes at " + when(e.sleep_wakeup_at) }));
    if (e.promise_name) details.push(h("span", { text: "promise " + e.promise_name }));
    if (entry.key !== undefined && entry.key !== null && !isNotification && !e.promise_name) details.push(h("span", { class: "mono", text: "key " + entry.key }));
    if (entry.result) {
      if (failure) details.push(h("span", { class: "failure-text", text: `failed [${failure.code}] ${failure.message}` }));
      else if (entry.result.value !== null && entry.result.value !== undefined) details.push(h("span", { class: "mono", text: "= " + entry.result.value }));
      else details.push(h("span", { class: "muted", text: "= (void)" }));
    }
    if (entry.value !== undefined && entry.value !== null && !entry.result) details.push(h("span", { class: "mono", text: "value " + entry.value }));
    if (!e.completed) details.push(h("span", { class: "badge pending", text: "waiting" }));
    if (failedRun && e.entry_type === "Command: Run" && e.name === failedRun[1]) {
      details.push(h("span", { class: "badge backing-off", "data-testid": "retries", text: `retried: ${inv.retry_count} failed attempt${inv.retry_count > 1 ? "s" : ""}` }));
    }
    return h("li", { class: cls, "data-entry-type": e.entry_type },
      h("div", { class: "head" },
        h("span", { class: "idx", text: "#" + e.index }),
        h("span", { class: "type", text: e.entry_type }),
        e.name ? h("span", { class: "mono", text: e.name }) : null,
        h("span", { class: "when", text: when(e.appended_at) })),
      details.length ? h("div", { class: "detail row" }, details) : null,
      h("details", {}, h("summary", { text: "entry" }), h("pre", { text: JSON.stringify(entry, null, 2) })));
  }));
}

// ------------------------------------------------------------------------------------------ services
const DURATIONS = [
  ["idempotency_retention", "Idempotency retention"], ["journal_retention", "Journal retention"],
  ["inactivity_timeout", "Inactivity timeout"], ["abort_timeout", "Abort timeout"],
];
const RETRY = [
  ["initial_interval", "Retry: initial interval"], ["max_interval", "Retry: max interval"],
  ["exponentiation_factor", "Retry: factor"], ["max_attempts", "Retry: max attempts"],
];

async function viewServices() {
  const svcs = await services(true);
  return h("div", {}, h("h1", { text: "Services" }),
    h("div", { class: "services" }, svcs.map(serviceCard)));
}

function serviceCard(svc) {
  const inputs = {};
  const text = (name, label, value) => {
    inputs[name] = h("input", { name, value: value === undefined || value === null ? "" : String(value), "data-setting": name });
    return h("label", {}, label, inputs[name]);
  };
  const retry = svc.retry_policy || {};
  const publicBox = h("input", { type: "checkbox", name: "public", checked: !!svc.public, "data-setting": "public" });
  const onMax = h("select", { name: "on_max_attempts", "data-setting": "on_max_attempts" },
    ["Pause", "Kill"].map((v) => h("option", { value: v, text: v, selected: String(retry.on_max_attempts || "").toLowerCase() === v.toLowerCase() })));
  const fields = [
    h("label", { class: "check" }, publicBox, "public (callable through the ingress)"),
    DURATIONS.map(([k, label]) => text(k, label, svc[k])),
    kindOf(svc) === "workflow" ? text("workflow_completion_retention", "Workflow retention", svc.workflow_completion_retention) : null,
    RETRY.map(([k, label]) => text("retry." + k, label, retry[k])),
    h("label", {}, "Retry: when attempts run out", onMax),
  ];
  const save = async (ev) => {
    ev.preventDefault();
    const body = {};
    if (publicBox.checked !== !!svc.public) body.public = publicBox.checked;
    for (const [name, input] of Object.entries(inputs)) {
      const before = name.startsWith("retry.") ? retry[name.slice(6)] : svc[name];
      const now = input.value.trim();
      if (now === String(before === undefined || before === null ? "" : before)) continue;
      if (name.startsWith("retry.")) {
        const k = name.slice(6);
        body.retry_policy = body.retry_policy || {};
        body.retry_policy[k] = k === "max_attempts" ? parseInt(now, 10) : k === "exponentiation_factor" ? parseFloat(now) : now;
      } else body[name] = now;
    }
    if (String(retry.on_max_attempts || "").toLowerCase() !== onMax.value.toLowerCase()) {
      body.retry_policy = body.retry_policy || {};
      body.retry_policy.on_max_attempts = onMax.value;
    }
    if (!Object.keys(body).length) { notice("Nothing changed", true); return; }
    try {
      await api("PATCH", "/services/" + encodeURIComponent(svc.name), body);
      notice(`${svc.name}: saved`, true);
      render();
    } catch (err) { showError(err); }
  };
  const handlers = h("table", {},
    h("thead", {}, h("tr", {}, ["Handler", "Type", "Public", "Input", "Output", "Own settings"].map((t) => h("th", { text: t })))),
    h("tbody", {}, (svc.handlers || []).map((x) => h("tr", {},
      h("td", { class: "mono" }, h("a", { href: `#/invocations?service=${encodeURIComponent(svc.name)}&handler=${encodeURIComponent(x.name)}`, text: x.name })),
      h("td", { text: x.ty || "" }),
      h("td", { text: x.public === false ? "no" : "yes" }),
      h("td", { class: "mono", text: schemaText(x.input_json_schema) }),
      h("td", { class: "mono", text: schemaText(x.output_json_schema) }),
      h("td", { class: "mono", text: handlerSettings(x) })))));
  return h("form", { class: "card", "data-service": svc.name, onsubmit: save },
    h("div", { class: "row" }, h("h2", { text: svc.name }), h("span", { class: "badge", text: svc.ty }),
      h("span", { class: "muted", text: "revision " + svc.revision })),
    handlers,
    h("div", { class: "settings" }, fields),
    h("button", { type: "submit", "data-testid": "save-service", text: "Save settings" }));
}

function schemaText(schema) {
  if (!schema || typeof schema !== "object") return "";
  if (schema.type) return schema.type;
  if (schema.title) return schema.title;
  return Object.keys(schema).length ? "schema" : "any";
}

function handlerSettings(x) {
  const out = [];
  for (const k of ["inactivity_timeout", "abort_timeout", "enable_lazy_state"]) if (x[k] !== undefined) out.push(`${k}=${x[k]}`);
  if (x.retry_policy && x.retry_policy.max_attempts !== null && x.retry_policy.max_attempts !== undefined) out.push(`max_attempts=${x.retry_policy.max_attempts}`);
  return out.join(", ");
}

// ---------------------------------------------------------------------------------------------- state
async function viewState(r) {
  const svcs = (await services()).filter((s) => kindOf(s) !== "service");
  const service = r.args[0] || (svcs[0] && svcs[0].name) || "";
  const key = r.args.length > 1 ? r.args[1] : null;
  const go = (svc, k) => { location.hash = "#/state/" + encodeURIComponent(svc) + (k !== null && k !== undefined ? "/" + encodeURIComponent(k) : ""); };
  const serviceSel = h("select", { "data-testid": "state-service", onchange: (ev) => go(ev.target.value, null) },
    svcs.map((s) => h("option", { value: s.name, text: s.name, selected: s.name === service })));
  const keyIn = h("input", { placeholder: "key", value: key || "", "data-testid": "state-key" });
  const picker = h("form", { class: "filters", onsubmit: (ev) => { ev.preventDefault(); go(service, keyIn.value); } },
    h("label", {}, "Object or workflow", serviceSel), h("label", {}, "Key", keyIn), h("button", { type: "submit", text: "Open" }));
  const keys = service ? await query("SELECT DISTINCT service_key FROM state WHERE service_name = " + sql(service) + ` ORDER BY service_key LIMIT ${LIST_LIMIT}`) : [];
  const keyList = h("div", { class: "row", "data-testid": "state-keys" },
    keys.length ? keys.map((k) => h("a", { href: "#/state/" + encodeURIComponent(service) + "/" + encodeURIComponent(k.service_key), class: "mono", text: k.service_key })) :
      h("span", { class: "muted", text: "No key of " + service + " has state." }));
  const parts = [h("h1", { text: "State" }), h("div", { class: "card" }, picker, h("h3", { text: "Keys with state" }), keyList)];
  if (key !== null && service) parts.push(await stateEditor(service, key));
  return h("div", {}, parts);
}

async function stateEditor(service, key) {
  const state = await api("GET", `/services/${encodeURIComponent(service)}/state/${encodeURIComponent(key)}`);
  const body = h("tbody", {});
  const addRow = (name, value) => {
    const tr = h("tr", { "data-state-row": "" },
      h("td", {}, h("input", { value: name, class: "mono", "data-field": "name" })),
      h("td", { class: "value" }, h("textarea", { class: "mono", "data-field": "value", text: value })),
      h("td", {}, h("button", { type: "button", class: "quiet", text: "Remove", onclick: () => tr.remove() })));
    body.append(tr);
  };
  for (const [name, value] of Object.entries(state || {})) addRow(name, value);
  const save = async () => {
    const newState = {};
    for (const tr of body.querySelectorAll("tr")) {
      const name = tr.querySelector('[data-field="name"]').value;
      if (name) newState[name] = tr.querySelector('[data-field="value"]').value;
    }
    if (!(await confirmAction(`Replace the state of ${service}/${key}?`, "The state becomes exactly what the table shows (values are stored as the UTF-8 text you typed, usually JSON)."))) return;
    try {
      await api("POST", `/services/${encodeURIComponent(service)}/state`, { object_key: key, new_state: newState });
      notice(`State of ${service}/${key} saved`, true);
      render();
    } catch (err) { showError(err); }
  };
  const clear = async () => {
    if (!(await confirmAction(`Clear the state of ${service}/${key}?`, "Every state entry of this key is deleted."))) return;
    try {
      await api("DELETE", `/services/${encodeURIComponent(service)}/state/${encodeURIComponent(key)}`);
      notice(`State of ${service}/${key} cleared`, true);
      render();
    } catch (err) { showError(err); }
  };
  return h("div", { class: "card", "data-testid": "state-editor" },
    h("div", { class: "row" }, h("h2", { class: "mono", text: `${service}/${key}` }),
      h("a", { href: `#/invocations?service=${encodeURIComponent(service)}&key=${encodeURIComponent(key)}`, text: "its invocations" })),
    h("p", { class: "muted", text: "Changing the state of a key whose handler runs is queued behind it (the key's lock): the change is applied between two invocations." }),
    h("table", { class: "state-table" }, h("thead", {}, h("tr", {}, h("th", { text: "Name" }), h("th", { text: "Value" }), h("th", {}))), body),
    h("div", { class: "actions" },
      h("button", { type: "button", class: "quiet", text: "Add entry", onclick: () => addRow("", "") }),
      h("button", { type: "button", "data-testid": "save-state", text: "Save state", onclick: save }),
      h("button", { type: "button", class: "danger", "data-testid": "clear-state", text: "Clear all", onclick: clear })));
}

// ------------------------------------------------------------------------------------------ workflows
async function viewWorkflows() {
  const workflows = (await services()).filter((s) => kindOf(s) === "workflow");
  if (!workflows.length) return h("div", {}, h("h1", { text: "Workflows" }), h("div", { class: "card empty", text: "No workflow is deployed." }));
  const cards = await Promise.all(workflows.map(async (w) => {
    const main = (w.handlers || []).find((x) => String(x.ty || "").toLowerCase() === "workflow");
    const mainName = main ? main.name : "run";
    const [runs, promises] = await Promise.all([
      query("SELECT id, target_service_key, status, created_at, completed_at, completion_result, completion_failure FROM sys_invocation WHERE target_service_name = " + sql(w.name) + " AND target_handler_name = " + sql(mainName) + ` ORDER BY created_at DESC LIMIT ${LIST_LIMIT}`),
      query("SELECT service_key, key, completed, completion_success_value_utf8, completion_failure FROM sys_promise WHERE service_name = " + sql(w.name) + ` ORDER BY service_key, key LIMIT ${LIST_LIMIT * 10}`),
    ]);
    const byKey = new Map();
    for (const p of promises) { if (!byKey.has(p.service_key)) byKey.set(p.service_key, []); byKey.get(p.service_key).push(p); }
    const rows = runs.map((run) => h("tr", { "data-workflow-key": run.target_service_key },
      h("td", { class: "mono" }, h("a", { href: "#/state/" + encodeURIComponent(w.name) + "/" + encodeURIComponent(run.target_service_key), text: run.target_service_key })),
      h("td", {}, invLink(run.id)),
      h("td", {}, badge(run.status)),
      h("td", { text: when(run.created_at) }),
      h("td", {}, (byKey.get(run.target_service_key) || []).map((p) => h("div", { "data-promise": p.key },
        h("span", { class: "mono", text: p.key }), " ",
        p.completed ? (p.completion_failure ? h("span", { class: "failure-text", text: "rejected: " + p.completion_failure }) : h("span", { class: "mono", text: "= " + (p.completion_success_value_utf8 ?? "") })) :
          h("span", { class: "badge pending", text: "not completed" })))),
    ));
    return h("div", { class: "card", "data-workflow": w.name },
      h("h2", { text: `${w.name} (main handler ${mainName})` }),
      runs.length ? h("table", {}, h("thead", {}, h("tr", {}, ["Key", "Run", "Status", "Started", "Promises"].map((t) => h("th", { text: t })))), h("tbody", {}, rows)) :
        h("p", { class: "muted", text: "No run yet." }));
  }));
  const seq = renderSeq;
  refreshTimer = setInterval(() => {  // live: runs move on, promises get completed
    if (seq === renderSeq && !document.hidden && !document.querySelector("dialog[open]")) render();
  }, REFRESH_MS * 2);
  return h("div", {}, h("h1", { text: "Workflows" }), cards);
}

// ------------------------------------------------------------------------------------------------ start
setupToken();
window.addEventListener("hashchange", () => { notice(""); render(); });
checkHealth();
setInterval(checkHealth, 10000);
render();
