// The operator's console: every figure comes from the admin API (/v1/admin/...),
// called with the admin key the operator typed in (kept in this tab's
// sessionStorage). No build step, no inline script (the page's CSP forbids it),
// and every value is put in the page as text, never as HTML.

const KEY_ITEM = "tokenwire.adminKey";
const REFRESH_MS = 2000;
const $ = (id) => document.getElementById(id);

let timer = null;

function adminKey() { return sessionStorage.getItem(KEY_ITEM); }

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { Authorization: `Bearer ${adminKey()}`, ...(options.headers || {}) },
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(body.error ? body.error.message : `HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text === null || text === undefined ? "—" : String(text);
  if (className) td.className = className;
  return td;
}

function badge(row, text) {
  const span = document.createElement("span");
  span.className = `badge ${text}`;
  span.textContent = text;
  row.insertCell().append(span);
}

function button(row, label, onClick, testId) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.className = "danger";
  b.dataset.testid = testId;
  b.addEventListener("click", async () => {
    b.disabled = true;
    try { await onClick(); } catch (error) { setStatus(error.message, true); }
    await refresh();
  });
  row.insertCell().append(b);
}

function fill(tbodyId, items, render, emptyText, columns) {
  const tbody = $(tbodyId);
  tbody.replaceChildren();
  if (!items.length) {
    const td = tbody.insertRow().insertCell();
    td.colSpan = columns;
    td.className = "empty";
    td.textContent = emptyText;
    return;
  }
  for (const item of items) render(tbody.insertRow(), item);
}

const shortId = (id) => (id ? `${id.slice(0, 8)}…` : null);
const when = (ms) => (ms ? new Date(ms).toLocaleTimeString() : null);
const millis = (ms) => (ms === null || ms === undefined ? null
  : ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`);

function meter(row, used, limit) {
  const td = row.insertCell();
  if (limit === null || limit === undefined) { td.textContent = `${used} (no limit)`; return; }
  const bar = document.createElement("span");
  bar.className = "meter";
  const fillBar = document.createElement("span");
  const share = Math.min(used / limit, 1);
  fillBar.style.width = `${Math.round(share * 100)}%`;
  if (share >= 1) fillBar.className = "full";
  bar.append(fillBar);
  td.append(bar, document.createTextNode(`${used} / ${limit}`));
}

function renderStreams(body) {
  $("streams-total").textContent = `(${body.total})`;
  fill("streams", body.streams, (row, s) => {
    row.dataset.stream = s.id;
    cell(row, shortId(s.id), "id").title = s.id;
    badge(row, s.cancelling ? "cancelling" : s.status);
    cell(row, s.tenant);
    cell(row, s.model);
    cell(row, s.tokens, "num");
    cell(row, s.tokens_per_second, "num");
    cell(row, s.viewers, "num").dataset.testid = "viewers";
    cell(row, s.status === "queued" ? `queued ${millis(s.queued_for_ms)}` : millis(s.lag_ms), "num");
    cell(row, s.attempt, "num");
    button(row, "Cancel", () => api(`/v1/admin/streams/${s.id}/cancel`, { method: "POST" }),
      "cancel");
  }, "no stream running or queued", 10);
  fill("edges", body.edges, (row, e) => {
    cell(row, e.address).title = e.edge;
    cell(row, e.connections, "num");
    cell(row, Object.entries(e.by_protocol).map(([p, n]) => `${p} ${n}`).join(", ") || "—");
    cell(row, Object.keys(e.viewers).length, "num");
    cell(row, when(e.at_ms));
  }, "no edge has reported yet (they do within a second or two)", 5);
}

function renderJournal(body) {
  fill("journal", body.entries, (row, e) => {
    cell(row, when(e.at_ms));
    badge(row, e.kind);
    cell(row, shortId(e.stream_id), "id").title = e.stream_id;
    const { id, at_ms, kind, stream_id, ...detail } = e;
    cell(row, Object.entries(detail).filter(([, v]) => v !== "").map(([k, v]) => `${k}: ${v}`)
      .join(", "));
  }, "nothing yet", 4);
}

function renderDeadLetters(body) {
  fill("dead-letters", body.dead_letters, (row, d) => {
    row.dataset.entry = d.id;
    cell(row, when(d.at_ms));
    cell(row, shortId(d.stream_id), "id").title = d.stream_id;
    cell(row, d.reason);
    cell(row, d.tenant);
    cell(row, d.model);
    cell(row, shortId(d.replayed_as), "id").dataset.testid = "replayed-as";
    button(row, d.replayed_as ? "Replayed" : "Replay",
      () => api(`/v1/admin/dead-letters/${d.id}/replay`, { method: "POST" }), "replay");
  }, "no dead letter", 7);
}

function renderUsage(body) {
  fill("usage", body.keys, (row, k) => {
    cell(row, k.tenant);
    cell(row, k.key_id, "id");
    for (const name of ["max_running", "requests_per_minute", "tokens_per_minute",
      "max_connections"]) meter(row, k.used[name], k.limits[name]);
  }, "no API key", 6);
}

function renderQueue(body) {
  const dl = $("queue");
  dl.replaceChildren();
  const running = body.streams.filter((s) => s.status === "running").length;
  const queued = body.streams.filter((s) => s.status === "queued").length;
  for (const [label, value] of [["running", running], ["queued", queued],
    ["edges", body.edges.length]]) {
    const dt = document.createElement("dt");
    dt.textContent = label;
    const dd = document.createElement("dd");
    dd.textContent = String(value);
    dd.dataset.testid = `queue-${label}`;
    const group = document.createElement("div");
    group.append(dt, dd);
    dl.append(group);
  }
}

function setStatus(text, error = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
}

async function refresh() {
  try {
    const [streams, journal, dead, usage] = await Promise.all([
      api("/v1/admin/streams"), api("/v1/admin/journal"), api("/v1/admin/dead-letters"),
      api("/v1/admin/usage")]);
    renderStreams(streams);
    renderQueue(streams);
    renderJournal(journal);
    renderDeadLetters(dead);
    renderUsage(usage);
    setStatus(`live · refreshed ${new Date().toLocaleTimeString()}`);
  } catch (error) {
    if (error.status === 401) { signOut("the admin key was refused"); return; }
    setStatus(`cannot refresh: ${error.message}`, true);
  }
}

function signedIn() {
  $("sign-in").hidden = true;
  $("console").hidden = false;
  $("sign-out").hidden = false;
  refresh();
  clearInterval(timer);
  timer = setInterval(refresh, REFRESH_MS);
}

function signOut(reason) {
  sessionStorage.removeItem(KEY_ITEM);
  clearInterval(timer);
  $("console").hidden = true;
  $("sign-out").hidden = true;
  $("sign-in").hidden = false;
  setStatus(reason || "not signed in", Boolean(reason));
}

$("sign-in").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY_ITEM, $("admin-key").value);
  $("admin-key").value = "";
  signedIn();
});
$("sign-out").addEventListener("click", () => signOut());
if (adminKey()) signedIn();
