// The dashboard: log in, then keep the screen in step with etcd through the API's
// Server-Sent Events (/api/v1/stream): `change` re-reads the cluster and the tasks
// (coalesced, at most every REFRESH_MS), `event` adds to the event log.
import { API, ApiError, get, post, setCsrf } from "./api.js";
import { $, h, replace } from "./dom.js";
import { closePanel, installMigrate, openMigrate, openPanel, panelEvent, panelVm, reloadPanelEvents, renderPanel } from "./panel.js";
import { eventItem, renderCluster, renderTasks } from "./views.js";
import { refreshCapacity } from "./capacity.js";
import { refreshPolicies } from "./policies.js";
import { refreshSettings } from "./settings.js";
import { refreshRules } from "./rules.js";
import { refreshDatastores } from "./datastores.js";

const REFRESH_MS = 250;        // at most four re-reads a second
const POLL_MS = 3000;          // while the stream is down
const EVENTS_SHOWN = 300;
const WRITERS = new Set(["operator", "admin"]);

const S = { me: null, cluster: null, tasks: [], stream: null, retry: 0, eventKeys: new Set() };

const ctx = {
  canWrite: false,
  role: "",
  act,
  report: (text) => notify("error", text),
  notify: (text) => notify("ok", text),
  openVm: (name) => openPanel(name, S.cluster, ctx),
  openMigrate: (name) => openMigrate(name, ctx),
};

// -- messages -------------------------------------------------------------------------------
function notify(kind, text) {
  const box = $("messages");
  const msg = h("div.msg." + kind, { role: kind === "error" ? "alert" : "status", testid: `msg-${kind}` },
    h("span", {}, text), h("button.icon", { "aria-label": "dismiss", onclick: () => msg.remove() }, "×"));
  box.append(msg);
  while (box.children.length > 5) box.firstElementChild.remove();
  if (kind !== "error") setTimeout(() => msg.remove(), 6000);
  return msg;
}

/** Run one write from a button: report its answer or its problem, then refresh. */
async function act(button, label, fn) {
  if (button) button.disabled = true;
  try {
    const r = await fn();
    const task = r && r.kind ? `: ${r.kind} ${r.state}${r.summary ? ` (${r.summary})` : ""}` : "";
    notify("ok", (r && r.message) || `${label}${task || ": done"}`);
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return loggedOut("your session ended; log in again");
    notify("error", `${label}: ${e.detail || e.message}${e.status ? ` (${e.status})` : ""}`);
  } finally {
    if (button) button.disabled = false;
    schedule();
  }
}

// -- session --------------------------------------------------------------------------------
function showLogin(error) {
  $("dash").hidden = true;
  $("who").hidden = true;
  closePanel();
  $("login-view").hidden = false;
  const err = $("login-error");
  err.hidden = !error;
  err.textContent = error || "";
  $("login-user").focus();
}

function loggedIn(me) {
  S.me = me;
  setCsrf(me.csrf_token);
  ctx.canWrite = WRITERS.has(me.role);
  ctx.role = me.role;
  document.body.dataset.role = me.role;
  $("who-name").textContent = `${me.user} (${me.role})`;
  $("who").hidden = false;
  $("login-view").hidden = true;
  $("dash").hidden = false;
  schedule();
  reloadEvents();
  openStream();
}

function loggedOut(why) {
  S.me = null;
  setCsrf("");
  closeStream();
  setLive("off");
  showLogin(why);
}

async function login(ev) {
  ev.preventDefault();
  const f = ev.target;
  const button = f.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const me = await post("/auth/login", { user: f.user.value, password: f.password.value });
    f.password.value = "";
    loggedIn(me);
  } catch (e) {
    const why = e.status === 401 ? "Wrong user name or password." : e.status === 429 ? `Too many attempts: ${e.detail}` : e.detail;
    showLogin(why);
  } finally {
    button.disabled = false;
  }
}

async function logout() {
  try {
    await post("/auth/logout");
  } catch (e) {
    notify("error", `log out: ${e.detail}`);
  }
  loggedOut("");
}

// -- reading --------------------------------------------------------------------------------
let inflight = false;
let pending = false;
let timer = null;
let lastStart = 0;

/** Ask for a re-read; many asks within REFRESH_MS make one. */
function schedule() {
  pending = true;
  pump();
}

function pump() {
  if (inflight || !pending || timer || !S.me) return;
  const wait = lastStart + REFRESH_MS - performance.now();
  if (wait > 0) {
    timer = setTimeout(() => { timer = null; pump(); }, wait);
    return;
  }
  pending = false;
  inflight = true;
  lastStart = performance.now();
  refresh().finally(() => { inflight = false; pump(); });
}

async function refresh() {
  try {
    const [cluster, tasks] = await Promise.all([get("/cluster"), get("/tasks?all=true")]);
    S.cluster = cluster;
    S.tasks = tasks;
    renderCluster(cluster, ctx);
    refreshCapacity();
    refreshPolicies();
    refreshSettings(ctx);
    refreshRules(ctx);
    refreshDatastores(ctx);
    renderTasks(tasks, ctx);
    renderPanel(cluster, ctx);
    fillFilters(cluster);
    readOk("cluster");
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) loggedOut("your session ended; log in again");
    else {
      readFailed("cluster", `cannot read the cluster: ${e.detail}`);
      setTimeout(schedule, 2000);  // the stream may stay quiet: try again anyway
    }
  }
}

// A failed read is shown until a later read succeeds (the next change, or the poll).
const readProblems = new Map();
function readFailed(what, text) {
  let msg = readProblems.get(what);
  if (!msg || !msg.isConnected) {
    msg = notify("error", text);
    readProblems.set(what, msg);
  }
  msg.firstElementChild.textContent = text;
}

function readOk(what) {
  const msg = readProblems.get(what);
  if (msg) msg.remove();
  readProblems.delete(what);
}

// -- the event log --------------------------------------------------------------------------
function filters() {
  const f = $("event-filter");
  return { host: f.host.value, vm: f.vm.value, kind: f.kind.value.trim() };
}

const evKey = (e) => `${e.time}|${e.kind}|${e.host}|${e.vm}|${e.message}`;
const matches = (e, f) => (!f.host || e.host === f.host) && (!f.vm || e.vm === f.vm) && (!f.kind || e.kind.startsWith(f.kind));

async function reloadEvents() {
  const f = filters();
  const q = new URLSearchParams({ limit: String(EVENTS_SHOWN) });
  for (const k of ["host", "vm", "kind"]) if (f[k]) q.set(k, f[k]);
  try {
    const evs = await get(`/events?${q}`);
    S.eventKeys = new Set(evs.map(evKey));
    replace($("events"), evs.length ? evs.reverse().map((e) => eventItem(e)) : [h("li.muted.empty", {}, "No events.")]);
    const kinds = [...new Set(evs.map((e) => e.kind))].sort();
    replace($("event-kinds"), kinds.map((k) => h("option", { value: k })));
    readOk("events");
  } catch (e) {
    readFailed("events", `cannot read the events: ${e.detail}`);
  }
}

function addEvent(e) {
  panelEvent(e);
  const key = evKey(e);
  if (S.eventKeys.has(key) || !matches(e, filters())) return;
  S.eventKeys.add(key);
  const list = $("events");
  const empty = list.querySelector(".empty");
  if (empty) empty.remove();
  list.prepend(eventItem(e));
  list.firstElementChild.classList.add("new");
  while (list.children.length > EVENTS_SHOWN) list.lastElementChild.remove();
}

function fillFilters(c) {
  const f = $("event-filter");
  for (const [select, names, all] of [[f.host, c.hosts.map((x) => x.name), "all hosts"], [f.vm, c.vms.map((x) => x.name), "all VMs"]]) {
    const have = [...select.options].slice(1).map((o) => o.value);
    const chosen = select.value;
    const want = [...new Set([...names, ...(chosen ? [chosen] : [])])].sort();
    if (JSON.stringify(have) === JSON.stringify(want)) continue;
    replace(select, [h("option", { value: "" }, all), ...want.map((n) => h("option", { value: n }, n))]);
    select.value = chosen;
  }
}

// -- the live stream ------------------------------------------------------------------------
let pollTimer = null;
let reopenTimer = null;

function setLive(state) {
  const el = $("live");
  el.hidden = state === "off" && !S.me;
  el.dataset.live = state;
  el.textContent = { on: "live", off: "offline", retry: "reconnecting…" }[state];
}

function closeStream() {
  if (S.stream) S.stream.close();
  S.stream = null;
  clearInterval(pollTimer);
  clearTimeout(reopenTimer);
  pollTimer = reopenTimer = null;
}

function openStream() {
  closeStream();
  const es = new EventSource(`${API}/stream`);
  S.stream = es;
  es.addEventListener("hello", () => {
    const again = S.retry > 0;
    S.retry = 0;
    setLive("on");
    clearInterval(pollTimer);
    pollTimer = null;
    schedule();
    if (again) {  // what happened meanwhile
      reloadEvents();
      reloadPanelEvents(ctx);
    }
  });
  es.addEventListener("change", schedule);
  es.addEventListener("event", (m) => {
    try {
      addEvent(JSON.parse(m.data));
    } catch {
      /* a message this page cannot read: the next change re-reads everything */
    }
  });
  es.onerror = () => {
    if (S.stream !== es) return;
    es.close();
    S.stream = null;
    setLive("retry");
    S.retry += 1;
    if (!pollTimer) pollTimer = setInterval(schedule, POLL_MS);
    const delay = Math.min(10000, 500 * 2 ** Math.min(S.retry, 5));
    reopenTimer = setTimeout(reopen, delay);
  };
}

async function reopen() {
  reopenTimer = null;
  if (!S.me) return;
  try {
    await get("/auth/me");  // is it the session that ended, or the connection?
  } catch (e) {
    if (e.status === 401) return loggedOut("your session ended; log in again");
  }
  openStream();
}

// -- start ----------------------------------------------------------------------------------
async function boot() {
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", logout);
  $("panel-close").addEventListener("click", closePanel);
  document.addEventListener("keydown", (e) => { if (e.key === "Escape" && panelVm()) closePanel(); });
  const f = $("event-filter");
  f.addEventListener("submit", (e) => e.preventDefault());
  f.host.addEventListener("change", reloadEvents);
  f.vm.addEventListener("change", reloadEvents);
  let typing = null;
  f.kind.addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(reloadEvents, 300); });
  installMigrate(ctx);
  try {
    const me = await get("/auth/me");
    if (me.via !== "session") throw new ApiError(401, "", null);
    loggedIn(me);
  } catch {
    showLogin("");
  }
}

boot();
