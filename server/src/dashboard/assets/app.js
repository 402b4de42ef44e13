// The Open-AutoGLM dashboard: one server-sent stream of views from the
// replica that served this page, read with fetch() so the token travels in
// the Authorization header (EventSource cannot set one). No framework, no
// build step: the replica embeds this file.
"use strict";

const STATES = ["waiting", "queued", "assigned", "running", "succeeded", "failed", "cancelled", "timed_out"];
const TOKEN_KEY = "autoglm-token";

const $ = (id) => document.getElementById(id);
const state = { token: null, view: null, job: null, task: null, views: 0 };
// For tests and the curious: how many views arrived, and the last one.
window.dashboard = state;

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(e.dataset, v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function svg(tag, attrs = {}) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

function showError(message) {
  $("error").hidden = !message;
  $("error").textContent = message || "";
}

function duration(ms) {
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor(s / 60) % 60).padStart(2, "0")}m`;
}

function authHeaders() {
  return { Authorization: `Bearer ${state.token}` };
}

// --- The stream of views ---------------------------------------------------

async function connect() {
  for (;;) {
    try {
      const response = await fetch("/ui/api/events", { headers: authHeaders(), cache: "no-store" });
      if (response.status === 401 || response.status === 403) {
        const body = await response.json().catch(() => ({}));
        showError(`${response.status}: ${body.error || "refused"}`);
        askForToken();
        return;
      }
      if (!response.ok) throw new Error(`events: HTTP ${response.status}`);
      showError("");
      setConnection(true);
      await readEvents(response.body.getReader());
    } catch (e) {
      showError(`${e.message}; reconnecting`);
    }
    setConnection(false);
    await new Promise((r) => setTimeout(r, 1000));
  }
}

async function readEvents(reader) {
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const raw = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of raw.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (event === "view" && data.length) render(JSON.parse(data.join("\n")));
    }
  }
}

function setConnection(ok) {
  $("connection").textContent = ok ? "live" : "reconnecting";
  $("connection").className = ok ? "good" : "bad";
}

// --- Rendering ---------------------------------------------------------------

function render(view) {
  state.view = view;
  state.views += 1;
  $("replica").textContent = view.replica;
  $("role").textContent = view.role;
  $("leader").textContent = view.leader ?? "none";
  $("term").textContent = view.term;
  $("applied").textContent = view.applied;
  $("digest").textContent = view.digest;
  renderMembers(view);
  renderNodes(view);
  renderQueue(view);
  renderJobs(view);
  renderDag(view);
  refreshTask(view);
}

// Members at the same applied index (and digest version) must have the
// same digest: a different one marks a replica whose state diverged.
function renderMembers(view) {
  const byIndex = new Map();
  for (const m of view.members) {
    if (m.digest == null) continue;
    const key = `${m.applied}/${m.digest_version}`;
    (byIndex.get(key) || byIndex.set(key, new Set()).get(key)).add(m.digest);
  }
  const body = $("members").tBodies[0];
  body.replaceChildren(...view.members.map((m) => {
    const kind = m.voter ? "voter" : "learner";
    const cells = m.error
      ? [el("td", {}, `${kind}`), el("td", { colspan: 4, class: "unreachable" }, m.error)]
      : [
          el("td", {}, `${m.role ?? kind}${m.role && !m.voter ? " (learner)" : ""}`),
          el("td", {}, m.term ?? "-"),
          el("td", {}, m.applied ?? "-"),
          el("td", {}, m.lag ?? (view.role === "leader" ? 0 : "-")),
          el("td", { class: byIndex.get(`${m.applied}/${m.digest_version}`)?.size > 1 ? "diverged" : "" },
            el("code", {}, m.digest ?? "-")),
        ];
    return el("tr", { dataset: { member: m.id } }, el("td", {}, m.id), el("td", {}, m.addr), ...cells);
  }));
}

function renderNodes(view) {
  $("live-note").hidden = view.live_readings;
  $("nodes").replaceChildren(...view.nodes.map((n) => {
    const badges = [];
    if (n.down) badges.push(el("span", { class: "badge down" }, "down"));
    if (n.drained) badges.push(el("span", { class: "badge drained" }, "drained"));
    if (n.breaker !== "closed") {
      badges.push(el("span", { class: "badge quarantined", title: "circuit breaker" }, n.breaker.replace("_", "-")));
    }
    const action = n.drained ? "undrain" : "drain";
    const gpus = n.gpus.map((g) => {
      const util = g.util == null ? null : Math.round(g.util * 100);
      const mem = g.memory_used_mb == null ? null : Math.round((100 * g.memory_used_mb) / g.memory_mb);
      return el("div", { class: "gpu" },
        el("span", {}, `GPU ${g.index}`),
        el("div", { class: "bar", title: util == null ? "no reading" : `${util}% busy` },
          el("div", { style: `width:${util ?? 0}%` })),
        el("div", { class: "bar mem", title: mem == null ? "no reading" : `${g.memory_used_mb} of ${g.memory_mb} MB` },
          el("div", { style: `width:${mem ?? 0}%` })));
    });
    if (gpus.length) {
      gpus.unshift(el("div", { class: "gpu head" }, el("span", {}), el("span", {}, "utilization"), el("span", {}, "memory")));
    }
    const labels = Object.entries(n.labels).map(([k, v]) => `${k}=${v}`).join(" ");
    return el("div", { class: "node", dataset: { node: n.name } },
      el("header", {},
        el("span", { class: "name" }, n.name), ...badges,
        el("span", { class: "labels" }, `${n.outstanding} attempt(s) ${labels}`),
        el("button", { onclick: () => nodeAction(n.name, action) }, action)),
      ...gpus);
  }));
}

function renderQueue(view) {
  $("counts").replaceChildren(...STATES.filter((s) => view.counts[s]).map((s) =>
    el("span", {}, el("span", { class: "swatch", style: `background:var(--${s})` }), `${s} ${view.counts[s]}`)));
  const bands = view.queue.map((b) => el("tr", {},
    el("td", {}, b.priority), el("td", {}, b.tasks), el("td", {}, duration(b.oldest_wait_ms))));
  if (!bands.length) bands.push(el("tr", {}, el("td", { colspan: 3, class: "note" }, "nothing queued")));
  $("queue").tBodies[0].replaceChildren(...bands);
}

function renderJobs(view) {
  if (state.job == null || !view.jobs.some((j) => j.id === state.job)) {
    state.job = view.jobs.length ? view.jobs[0].id : null;
  }
  $("jobs").replaceChildren(...view.jobs.map((j) => {
    const done = j.tasks.filter((t) => t.state === "succeeded").length;
    const li = el("li", { dataset: { job: j.id }, onclick: () => { state.job = j.id; render(state.view); } },
      `job ${j.id} · ${j.client_id} · ${done}/${j.task_count} succeeded${j.finished ? " · finished" : ""}`);
    if (j.id === state.job) li.classList.add("selected");
    return li;
  }));
}

// Tasks in columns by depth in the graph (a task right of everything it
// waits for), rows in submission order.
function renderDag(view) {
  const dag = $("dag");
  const job = view.jobs.find((j) => j.id === state.job);
  $("dag-title").textContent = job ? `Job ${job.id}` + (job.task_count > job.tasks.length ? ` (first ${job.tasks.length} of ${job.task_count} tasks)` : "") : "Job";
  dag.replaceChildren();
  if (!job) return;
  const byId = new Map(job.tasks.map((t) => [t.id, t]));
  const depth = new Map();
  const depthOf = (t) => {
    if (depth.has(t.id)) return depth.get(t.id);
    depth.set(t.id, 0);
    const d = Math.max(0, ...t.upstream.filter((u) => byId.has(u)).map((u) => depthOf(byId.get(u)) + 1));
    depth.set(t.id, d);
    return d;
  };
  const columns = [];
  for (const t of job.tasks) (columns[depthOf(t)] ||= []).push(t);
  const W = 150, H = 34, GX = 50, GY = 14, pos = new Map();
  columns.forEach((col, c) => col.forEach((t, r) => pos.set(t.id, { x: 10 + c * (W + GX), y: 10 + r * (H + GY) })));
  const rows = Math.max(1, ...columns.map((c) => c.length));
  const [width, height] = [20 + columns.length * (W + GX), 20 + rows * (H + GY)];
  dag.setAttribute("width", width);
  dag.setAttribute("height", height);
  dag.setAttribute("viewBox", `0 0 ${width} ${height}`);
  for (const t of job.tasks) {
    for (const u of t.upstream) {
      const a = pos.get(u), b = pos.get(t.id);
      if (a && b) dag.append(svg("line", { x1: a.x + W, y1: a.y + H / 2, x2: b.x, y2: b.y + H / 2 }));
    }
  }
  for (const t of job.tasks) {
    const p = pos.get(t.id);
    const g = svg("g", { class: "task" + (t.id === state.task ? " selected" : ""), "data-task": t.id, "data-state": t.state });
    g.addEventListener("click", () => { state.task = t.id; state.taskRevision = null; render(state.view); });
    g.append(svg("rect", { x: p.x, y: p.y, width: W, height: H, fill: `var(--${t.state})` }));
    const label = svg("text", { x: p.x + 8, y: p.y + 14 });
    label.textContent = t.name.length > 20 ? t.name.slice(0, 19) + "…" : t.name;
    const sub = svg("text", { x: p.x + 8, y: p.y + 28 });
    sub.textContent = `${t.state}${t.node ? " · " + t.node : ""}`;
    g.append(label, sub);
    const title = svg("title");
    title.textContent = `task ${t.id} ${t.name}: ${t.state}, attempt ${t.attempt}`;
    g.append(title);
    dag.append(g);
  }
  $("legend").replaceChildren(...STATES.map((s) => el("span", {}, el("span", { class: "swatch", style: `background:var(--${s})` }), s)));
}

// --- One task ----------------------------------------------------------------

function refreshTask(view) {
  if (state.task == null) return;
  const shown = view.jobs.flatMap((j) => j.tasks).find((t) => t.id === state.task);
  const revision = shown ? `${shown.state}/${shown.attempt}` : "gone";
  // Fetched again when its state changes, and each view while it waits.
  if (revision === state.taskRevision && shown?.state !== "queued") return;
  state.taskRevision = revision;
  loadTask(state.task);
}

async function loadTask(id) {
  const response = await fetch(`/ui/api/task/${id}`, { headers: authHeaders() });
  const body = await response.json().catch(() => ({}));
  $("task-section").hidden = false;
  if (!response.ok) {
    $("task").replaceChildren(el("p", {}, body.error || `HTTP ${response.status}`));
    return;
  }
  const t = body;
  $("task-title").textContent = `Task ${t.id} · ${t.name} · ${t.state}`;
  const rows = t.attempts.map((a) => el("tr", {},
    el("td", {}, a.attempt), el("td", {}, a.node), el("td", {}, a.gpus.join(",") || "-"),
    el("td", {}, a.result), el("td", {}, a.exit_code ?? "-"), el("td", {}, duration(a.run_ms))));
  const parts = [
    el("p", {}, `attempt ${t.attempt}${t.node ? ` on ${t.node}` : ""}${t.gpus.length ? ` (GPUs ${t.gpus.join(",")})` : ""}` +
      `${t.reason ? ` · ${t.reason}` : ""}${t.exit_code != null ? ` · exit ${t.exit_code}` : ""}`),
  ];
  if (t.waiting) parts.push(el("p", { id: "task-waiting" }, t.waiting));
  if (t.message) parts.push(el("p", {}, t.message));
  if (rows.length) {
    parts.push(el("table", {},
      el("thead", {}, el("tr", {}, ...["ATTEMPT", "NODE", "GPUS", "RESULT", "EXIT", "RUN TIME"].map((h) => el("th", {}, h)))),
      el("tbody", {}, ...rows)));
  }
  if (t.output_tail) parts.push(el("pre", {}, t.output_tail));
  if (!["succeeded", "failed", "cancelled", "timed_out"].includes(t.state)) {
    parts.push(el("button", { onclick: () => cancelTask(t.id) }, "cancel"));
  }
  const output = el("div", { id: "task-output" });
  parts.push(el("button", { onclick: () => loadOutput(t.id, output) }, "whole output"), output);
  $("task").replaceChildren(...parts);
}

// The latest attempt's kept output, relayed from its node by the leader.
async function loadOutput(id, into) {
  const response = await fetch(`/ui/api/task/${id}/output`, { headers: authHeaders() });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    into.replaceChildren(el("p", {}, body.error || `HTTP ${response.status}`));
    return;
  }
  into.replaceChildren(
    el("p", { class: "note" }, `attempt ${body.attempt} on ${body.node}` +
      (body.cut ? ` · first MiB shown; all of it: autoglm task logs ${id}` : "")),
    el("pre", {}, body.output || "(no output)"));
}

// --- Actions (the token's role decides) ----------------------------------------

async function post(path) {
  const response = await fetch(path, { method: "POST", headers: authHeaders() });
  const body = await response.json().catch(() => ({}));
  showError(response.ok ? "" : `${response.status}: ${body.error || "refused"}`);
  return response.ok;
}

function cancelTask(id) {
  post(`/ui/api/task/${id}/cancel`);
}

function nodeAction(name, action) {
  post(`/ui/api/node/${encodeURIComponent(name)}/${action}`);
}

// --- The token -----------------------------------------------------------------

function askForToken() {
  $("token-form").hidden = false;
  $("token-input").focus();
}

$("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  state.token = $("token-input").value.trim();
  sessionStorage.setItem(TOKEN_KEY, state.token);
  $("token-form").hidden = true;
  connect();
});

// A token in the fragment (never sent to the server) moves to this tab's
// session storage and out of the address bar.
const fragment = new URLSearchParams(location.hash.slice(1));
if (fragment.get("token")) {
  sessionStorage.setItem(TOKEN_KEY, fragment.get("token"));
  history.replaceState(null, "", location.pathname);
}
state.token = sessionStorage.getItem(TOKEN_KEY);
if (state.token) connect(); else askForToken();
