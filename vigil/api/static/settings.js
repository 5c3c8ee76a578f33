// The Policies view: the five cluster policies (GET /api/v1/cluster/settings), each with its
// values in force; an admin edits one in place and saves it whole (PUT
// /cluster/settings/{name} with If-Match: the revision it was read at). A refusal (422: the
// field named; 409: changed meanwhile) is shown in the form, which stays open.
import { ApiError, get, put, seg } from "./api.js";
import { $, h } from "./dom.js";

const EVERY_MS = 2000;
const TITLES = { admission: "Admission control", retries: "Restart retries", monitoring: "VM monitoring",
  orchestration: "Restart orchestration", drs: "DRS" };
// [field, kind, choices]: kind is select | int | int? (empty: none) | num | list | nums | bool
const FIELDS = {
  admission: [["policy", "select", ["off", "slots", "percentage", "failover-hosts"]], ["failures", "int"],
    ["cpu_percent", "int?"], ["memory_percent", "int?"], ["hosts", "list"], ["slot_memory_mb", "int?"],
    ["slot_vcpus", "int?"]],
  retries: [["delays", "nums"], ["max_attempts", "int"]],
  monitoring: [["preset", "select", ["off", "high", "medium", "low", "custom"]], ["interval_s", "num"],
    ["max_resets", "int"], ["window_s", "num"], ["min_uptime_s", "num"], ["application", "bool"]],
  orchestration: [["ready", "select", ["allocated", "powered-on", "guest", "app"]], ["delay_s", "num"],
    ["timeout_s", "num"]],
  drs: [["mode", "select", ["off", "manual", "automatic"]], ["threshold", "select", [1, 2, 3, 4, 5]],
    ["interval_s", "num"], ["hold_rounds", "int"], ["cooldown_s", "num"], ["max_moves", "int"],
    ["gain_per_gib", "num"], ["space_threshold", "num"]],
};

let last = 0;
let settings = [];
const editing = new Map();  // name -> {revision, form}: kept as it is across refreshes

const label = (k) => k.replace(/_/g, " ");

function shown(v) {
  if (v === null || v === undefined || v === "") return "-";
  if (Array.isArray(v)) return v.length ? v.join(", ") : "-";
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

function input(name, [key, kind, choices], value) {
  const testid = `setting-${name}-${key}`;
  if (kind === "select") {
    // a new monitoring preset brings its own values: the numbers typed over the old one go
    const onchange = key === "preset" ? (e) => e.target.form.querySelectorAll("input[type=number]").forEach((i) => {
      i.value = "";
      i.placeholder = "the preset's";
    }) : undefined;
    return h("select", { name: key, testid, onchange }, choices.map((c) =>
      h("option", { value: c, selected: String(c) === String(value) }, String(c))));
  }
  if (kind === "bool") return h("input", { type: "checkbox", name: key, testid, checked: !!value });
  if (kind === "list" || kind === "nums") {
    return h("input", { name: key, testid, value: (value || []).join(", "), placeholder: "comma-separated" });
  }
  return h("input", { type: "number", step: "any", name: key, testid, value: value ?? "" });
}

/** The form's values as the API takes them; empty numbers are left out (their defaults). */
function body(name, form, value) {
  const out = {};
  for (const [key, kind] of FIELDS[name]) {
    const el = form.elements[key];
    const raw = el.value.trim();
    if (kind === "bool") out[key] = el.checked;
    else if (kind === "select") out[key] = typeof value[key] === "number" ? Number(raw) : raw;
    else if (kind === "list") out[key] = raw ? raw.split(",").map((x) => x.trim()).filter(Boolean) : [];
    else if (kind === "nums") out[key] = raw ? raw.split(",").map((x) => Number(x.trim())) : [];
    else if (raw !== "") out[key] = Number(raw);
    else if (kind === "int?") out[key] = null;
  }
  if (name === "orchestration" && value.tiers) out.tiers = value.tiers;  // not edited here: kept
  return out;
}

async function save(s, form, ctx) {
  const err = form.querySelector(".error");
  const button = form.querySelector("button.primary");
  button.disabled = true;
  err.hidden = true;
  try {
    const rev = editing.get(s.name).revision;
    const got = await put(`/cluster/settings/${seg(s.name)}`, body(s.name, form, s.value), { "If-Match": String(rev) });
    editing.delete(s.name);
    settings = settings.map((x) => (x.name === got.name ? got : x));
    ctx.notify(`${TITLES[s.name]}: saved (${got.summary})`);
    render(ctx);
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return ctx.report("your session ended; log in again");
    err.textContent = `${e.detail || e.message}${e.status ? ` (${e.status})` : ""}`;
    err.hidden = false;
  } finally {
    button.disabled = false;
  }
}

function editForm(s, ctx) {
  const form = h("form.setting-form", { testid: `setting-form-${s.name}`, onsubmit: (e) => {
    e.preventDefault();
    save(s, form, ctx);
  } },
  h("div.fields", {}, FIELDS[s.name].map((f) => h("label", {}, h("span.muted", {}, label(f[0])),
    input(s.name, f, s.value[f[0]])))),
  h("p.error.small", { testid: `setting-error-${s.name}`, hidden: true }),
  h("div.buttons.left", {},
    h("button.small.primary", { type: "submit", testid: `setting-save-${s.name}` }, "Save"),
    h("button.small", { type: "button", testid: `setting-cancel-${s.name}`, onclick: () => {
      editing.delete(s.name);
      render(ctx);
    } }, "Cancel")));
  return form;
}

function block(s, ctx) {
  const open = editing.get(s.name);
  const head = h("div.setting-head", {}, h("b", {}, TITLES[s.name] || s.name),
    h("span.muted.small", {}, s.revision ? ` rev ${s.revision}` : " never set"),
    ctx.role === "admin" && !open ? h("button.small", { testid: `setting-edit-${s.name}`, onclick: () => {
      editing.set(s.name, { revision: s.revision, form: null });
      render(ctx);
    } }, "Edit") : null);
  let content;
  if (open) {
    open.form = open.form || editForm(s, ctx);
    content = open.form;
  } else {
    content = h("dl.facts.small", {}, Object.entries(s.value).flatMap(([k, v]) =>
      [h("dt", {}, label(k)), h("dd", { testid: `setting-value-${s.name}-${k}` }, shown(v))]));
  }
  return h("div.setting", { testid: `setting-${s.name}`, dataset: { revision: s.revision } },
    head, h("div.small", { testid: `setting-summary-${s.name}` }, s.summary), content);
}

/** Each block rebuilt, but the one being edited: its form, focus and typing stay. */
function render(ctx) {
  const box = $("settings");
  for (const s of settings) {
    const old = box.querySelector(`[data-testid="setting-${s.name}"]`);
    const open = editing.get(s.name);
    if (old && open && open.form && old.contains(open.form)) continue;
    const el = block(s, ctx);
    if (old) old.replaceWith(el);
    else box.append(el);
  }
}

/** Read the policies (at most every EVERY_MS unless ``force``) and show them. */
export async function refreshSettings(ctx, force = false) {
  const now = Date.now();
  if (!force && now - last < EVERY_MS) return;
  last = now;
  try {
    settings = await get("/cluster/settings");
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 401)) ctx.report(`cluster settings: ${e.detail}`);
    return;
  }
  render(ctx);
}
