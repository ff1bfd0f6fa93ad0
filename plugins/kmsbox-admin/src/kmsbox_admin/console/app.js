// kmsbox admin console. Plain script, no dependencies, loaded from this origin only
// (the Content-Security-Policy allows nothing else). Text from the server is always
// put in with textContent, never parsed as HTML.
"use strict";

const API = "/v1/admin";
const state = { csrf: null, role: null, namespace: null, auditCursor: null, secretsCursor: null, events: null };

const $ = (id) => document.getElementById(id);

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  // The session cookie alone is not enough for a change: the CSRF token proves this page sent it.
  if (method !== "GET" && state.csrf) headers["X-CSRF-Token"] = state.csrf;
  const response = await fetch(API + path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try {
    data = await response.json();
  } catch (_) {
    data = null;
  }
  if (!response.ok) {
    const error = (data && data.error) || { code: "http_" + response.status, message: response.statusText };
    if (response.status === 401 && path !== "/session") showLogin("Your session ended: log in again.");
    throw new ApiError(response.status, error.code, error.message);
  }
  return data;
}

function when(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  return new Date(seconds * 1000).toISOString().replace("T", " ").slice(0, 19);
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined || text === "" ? "-" : String(text);
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function fillTable(id, items, columns, append) {
  const body = $(id).querySelector("tbody");
  if (!append) body.replaceChildren();
  for (const item of items) {
    const row = document.createElement("tr");
    for (const column of columns) {
      const value = column(item);
      if (Array.isArray(value)) cell(row, value[0], value[1]);
      else cell(row, value);
    }
    body.appendChild(row);
  }
}

function showLogin(message) {
  state.csrf = null;
  if (state.events) state.events.close();
  $("app").hidden = true;
  $("who").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("token").focus();
}

function showApp(who) {
  state.csrf = who.csrf_token || null;
  state.role = who.role;
  $("who-actor").textContent = who.actor;
  $("who-role").textContent = who.role;
  $("who").hidden = false;
  $("login").hidden = true;
  $("app").hidden = false;
  for (const el of document.querySelectorAll(".admin-only")) el.hidden = who.role !== "admin";
}

async function login(event) {
  event.preventDefault();
  const token = $("token").value.trim();
  $("token").value = "";
  try {
    showApp(await api("POST", "/session", { token }));
    await loadAll();
  } catch (error) {
    $("login-error").textContent = error.message;
  }
}

async function logout() {
  try {
    await api("DELETE", "/session");
  } finally {
    showLogin("Logged out.");
  }
}

// --- namespace overview, key history, secrets ----------------------------------------------

async function loadNamespaces() {
  const data = await api("GET", "/namespaces?limit=1000");
  const select = $("namespace");
  const chosen = state.namespace;
  select.replaceChildren();
  for (const name of data.namespaces) {
    const option = document.createElement("option");
    option.value = name;
    option.textContent = name;
    select.appendChild(option);
  }
  if (chosen && data.namespaces.includes(chosen)) select.value = chosen;
  state.namespace = select.value || null;
  $("rotate-button").disabled = !state.namespace;
}

let overviewLoads = 0;

async function loadOverview() {
  if (!state.namespace) return;
  // Loads overlap (a refresh while a job runs, then its end): only the latest one may paint.
  const load = ++overviewLoads;
  const ns = encodeURIComponent(state.namespace);
  const [overview, history] = await Promise.all([api("GET", `/namespaces/${ns}`), api("GET", `/namespaces/${ns}/keys`)]);
  if (load !== overviewLoads) return;
  $("card-active").textContent = overview.active_version === null ? "none" : "v" + overview.active_version;
  $("card-secrets").textContent = overview.secret_versions;
  $("card-legacy").textContent = overview.legacy_secret_versions;
  $("card-pending").textContent = overview.pending.length ? overview.pending.length + " items" : "none";
  const notes = $("pending-list");
  notes.replaceChildren();
  for (const line of overview.pending) {
    const li = document.createElement("li");
    li.textContent = line;
    notes.appendChild(li);
  }
  fillTable("keys-table", history.keys.slice().reverse(), [
    (k) => "v" + k.version,
    (k) => [k.status, "state-" + k.status],
    (k) => k.secret_versions,
    (k) => k.wraps.map((w) => `${w.kek_uri}#${w.kek_version}`).join(", "),
    (k) => when(k.created_at),
    (k) => when(k.updated_at),
  ]);
  await loadSecrets(false);
}

async function loadSecrets(more) {
  const ns = encodeURIComponent(state.namespace);
  const cursor = more && state.secretsCursor ? `&cursor=${encodeURIComponent(state.secretsCursor)}` : "";
  const page = await api("GET", `/namespaces/${ns}/secrets?limit=20${cursor}`);
  fillTable(
    "secrets-table",
    page.items,
    [(s) => s.name, (s) => "v" + s.version, (s) => s.status, (s) => s.category, (s) => when(s.updated_at), (s) => when(s.expires_at)],
    more,
  );
  state.secretsCursor = page.next_cursor;
  $("secrets-more").hidden = !page.next_cursor;
}

// --- rotation with live progress ------------------------------------------------------------

function askRotate() {
  $("rotate-namespace").textContent = state.namespace;
  $("rotate-dialog").showModal();
}

async function rotateConfirmed() {
  if ($("rotate-dialog").returnValue !== "rotate") return;
  const bar = $("rotate-progress");
  const status = $("rotate-status");
  status.className = "status";
  $("rotate-button").disabled = true;
  try {
    const job = await api("POST", "/encryption/rotate", { namespace: state.namespace });
    bar.hidden = false;
    bar.removeAttribute("value"); // indeterminate until the first batch reports
    status.textContent = `job ${job.id}: ${job.state}`;
    followJob(job.id, bar, status);
  } catch (error) {
    status.textContent = error.message;
    status.className = "error";
    $("rotate-button").disabled = false;
  }
}

function followJob(id, bar, status) {
  const source = new EventSource(`${API}/jobs/${encodeURIComponent(id)}/events`);
  state.events = source;
  const show = (job) => {
    if (job.total) {
      bar.max = job.total;
      bar.value = job.done;
    }
    status.textContent = `job ${job.id}: ${job.state}` + (job.total ? ` (${job.done} / ${job.total})` : "");
  };
  let refreshed = Date.now();
  source.addEventListener("progress", (event) => {
    show(JSON.parse(event.data));
    // The cards (new active version, rows still under older keys) follow the job, at most every 2 s.
    if (Date.now() - refreshed > 2000) {
      refreshed = Date.now();
      loadOverview().catch(() => {});
    }
  });
  source.addEventListener("end", async (event) => {
    source.close();
    const job = JSON.parse(event.data);
    bar.max = 1;
    bar.value = 1;
    if (job.state === "succeeded") {
      const rewrapped = job.result && job.result.rewrap ? job.result.rewrap.processed : job.done;
      status.textContent = `rotated to v${job.result.new_version}; ${rewrapped} DEKs rewrapped`;
      status.className = "ok";
    } else {
      status.textContent = `job ${job.state}: ${job.error ? job.error.message : ""}`;
      status.className = "error";
    }
    $("rotate-button").disabled = false;
    await Promise.all([loadOverview(), loadJobs()]);
  });
  source.onerror = () => {
    // The browser reconnects by itself; if the job is gone, polling tells.
    if (source.readyState === EventSource.CLOSED) status.textContent = "lost the event stream; refresh";
  };
}

// --- jobs ---------------------------------------------------------------------------------------

async function loadJobs() {
  const data = await api("GET", "/jobs");
  fillTable("jobs-table", data.jobs, [
    (j) => j.id,
    (j) => j.kind + (j.params.dry_run ? " (dry run)" : ""),
    (j) => j.namespace || "(store)",
    (j) => j.actor,
    (j) => [j.state, "state-" + j.state],
    (j) => (j.total ? `${j.done} / ${j.total}` : String(j.done)),
    (j) => (j.error ? j.error.message : j.result && j.result.new_version ? "new version v" + j.result.new_version : ""),
  ]);
}

// --- audit --------------------------------------------------------------------------------------

function auditQuery() {
  const params = new URLSearchParams();
  for (const key of ["namespace", "name", "action", "result", "since", "until"]) {
    const value = $("audit-" + key).value.trim();
    if (value) params.set(key, value);
  }
  params.set("limit", "50");
  return params;
}

async function loadAudit(more) {
  const params = auditQuery();
  if (more && state.auditCursor) params.set("cursor", state.auditCursor);
  $("audit-error").textContent = "";
  try {
    const page = await api("GET", "/audit?" + params.toString());
    fillTable(
      "audit-table",
      page.events,
      [
        (e) => `${e.chain}:${e.seq}`,
        (e) => when(e.time),
        (e) => e.namespace,
        (e) => e.name,
        (e) => e.action,
        (e) => [e.result, e.result === "success" ? "state-succeeded" : "state-failed"],
        (e) => e.actor,
        (e) => (Object.keys(e.detail).length ? JSON.stringify(e.detail) : ""),
      ],
      more,
    );
    state.auditCursor = page.next_cursor;
    $("audit-more").hidden = !page.next_cursor;
  } catch (error) {
    $("audit-error").textContent = error.message;
  }
}

async function verify() {
  const out = $("verify-result");
  const text = $("verify-checkpoint").value.trim();
  let body = {};
  if (text) {
    try {
      body = { checkpoint: JSON.parse(text) };
    } catch (_) {
      out.textContent = "The checkpoint is not JSON.";
      out.className = "result error";
      return;
    }
  }
  try {
    const report = await api("POST", "/audit/verify", body);
    out.textContent = report.ok
      ? `Audit log intact: ${report.events_checked} events in ${report.chains} chains; ` +
        `${report.secrets_checked} secrets and ${report.namespaces_checked} namespaces match their last recorded change.`
      : `Audit log BROKEN:\n- ${report.problems.join("\n- ")}`;
    out.className = report.ok ? "result ok" : "result error";
  } catch (error) {
    out.textContent = error.message;
    out.className = "result error";
  }
}

async function showCheckpoint() {
  const checkpoint = await api("GET", "/audit/checkpoint");
  $("verify-result").textContent = "Keep this outside the database:\n" + JSON.stringify(checkpoint);
  $("verify-result").className = "result";
}

// --- diagnosis ----------------------------------------------------------------------------------

async function diagnose() {
  const summary = $("diagnosis-summary");
  summary.textContent = "checking…";
  try {
    const report = await api("POST", "/diagnose", { namespace: state.namespace });
    const count = report.issues.length;
    const notes = count ? `; ${count} note${count === 1 ? "" : "s"} below` : "";
    summary.textContent = report.ok
      ? `No problems (${report.secret_versions_checked} secret versions checked)${notes}.`
      : `${report.issues.length} issues found.`;
    fillTable("diagnosis-table", report.issues, [
      (i) => [i.severity, "sev-" + i.severity],
      (i) => i.code,
      (i) => i.message,
      (i) => i.action,
    ]);
  } catch (error) {
    summary.textContent = error.message;
  }
}

async function repairPlan() {
  const list = $("repair-plan");
  list.replaceChildren();
  try {
    const plan = await api("POST", "/repair", { namespace: state.namespace, dry_run: true });
    const lines = plan.planned.map((p) => "would: " + p).concat(plan.needs_confirmation.map((p) => "needs confirmation: " + p));
    if (!lines.length) lines.push("nothing to repair");
    for (const line of lines) {
      const li = document.createElement("li");
      li.textContent = line;
      list.appendChild(li);
    }
  } catch (error) {
    $("diagnosis-summary").textContent = error.message;
  }
}

// --- start-up -----------------------------------------------------------------------------------

async function loadAll() {
  await loadNamespaces();
  await Promise.all([loadOverview(), loadJobs(), loadAudit(false)]);
}

async function fillActions() {
  // The action filter's choices come from the API description, so they match the server's.
  const spec = await (await fetch(API + "/openapi.json")).json();
  const parameter = spec.paths[API + "/audit"].get.parameters.find((p) => p.name === "action");
  for (const action of parameter.schema.enum || []) {
    const option = document.createElement("option");
    option.textContent = action;
    $("audit-action").appendChild(option);
  }
}

async function start() {
  $("login-form").addEventListener("submit", login);
  $("logout-button").addEventListener("click", logout);
  $("namespace").addEventListener("change", () => {
    state.namespace = $("namespace").value;
    $("rotate-status").textContent = "";
    $("rotate-progress").hidden = true;
    loadOverview();
  });
  $("refresh-button").addEventListener("click", loadAll);
  $("rotate-button").addEventListener("click", askRotate);
  $("rotate-dialog").addEventListener("close", rotateConfirmed);
  $("secrets-more").addEventListener("click", () => loadSecrets(true));
  $("audit-form").addEventListener("submit", (event) => {
    event.preventDefault();
    loadAudit(false);
  });
  $("audit-more").addEventListener("click", () => loadAudit(true));
  $("verify-button").addEventListener("click", verify);
  $("checkpoint-button").addEventListener("click", showCheckpoint);
  $("diagnose-button").addEventListener("click", diagnose);
  $("repair-plan-button").addEventListener("click", repairPlan);
  fillActions().catch(() => {});
  try {
    showApp(await api("GET", "/session"));
    await loadAll();
  } catch (error) {
    showLogin(error.status === 401 ? "" : error.message);
  }
}

document.addEventListener("DOMContentLoaded", start);
