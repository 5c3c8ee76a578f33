// The Rules view: VM-VM rules (affinity, anti-affinity), dependency rules (depends-on), VM-host
// rules with their host groups (GET /api/v1/rules, /hostgroups), and what cannot be kept
// (GET /rules/conflicts: rules that contradict each other, that today's hosts cannot keep,
// VMs running against one). A rule a conflict line names is marked. An operator creates and
// deletes rules and host groups here (POST/DELETE /rules, /hostgroups).
import { ApiError, del, get, post, seg } from "./api.js";
import { $, h, replace } from "./dom.js";

const EVERY_MS = 2000;
const KINDS = ["affinity", "anti-affinity", "depends-on", "must-run-on", "should-run-on", "must-not-run-on",
  "should-not-run-on"];
const HOST_KINDS = new Set(KINDS.slice(3));
const GROUP = { affinity: "VM-VM", "anti-affinity": "VM-VM", "depends-on": "dependency" };

let last = 0;
let built = false;
let groupNames = "";

const names = (text) => text.split(",").map((x) => x.trim()).filter(Boolean);
const escaped = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** The conflict lines that name ``rule`` (as a whole word). */
export function conflictsOf(rule, lines) {
  const word = new RegExp(`(^|[^A-Za-z0-9_.-])${escaped(rule)}($|[^A-Za-z0-9_.-])`);
  return lines.filter((l) => word.test(l));
}

function ruleRow(r, lines, ctx) {
  const mine = conflictsOf(r.name, lines);
  const target = HOST_KINDS.has(r.kind) ? `hosts of ${r.group}` : r.kind === "depends-on" ? r.on.join(", ") : "";
  return h("tr", { testid: `rule-${r.name}`, dataset: { kind: r.kind, conflict: mine.length > 0 } },
    h("th", {}, r.name), h("td.small", {}, GROUP[r.kind] || "VM-host"), h("td", {}, r.kind),
    h("td.small", {}, r.vms.join(", ")), h("td.small", {}, target || h("span.muted", {}, "-")),
    h("td", { title: mine.join("\n") }, mine.length
      ? h("span.badge.s-failed", { testid: `rule-state-${r.name}` }, "conflict")
      : h("span.badge.s-ok", { testid: `rule-state-${r.name}` }, "kept")),
    h("td.act-col", {}, ctx.canWrite ? h("button.small.danger", { testid: `rule-delete-${r.name}`, onclick: (e) => {
      if (!window.confirm(`Delete rule ${r.name}?`)) return;
      ctx.act(e.target, `delete rule ${r.name}`, () => del(`/rules/${seg(r.name)}`)).then(() => refreshRules(ctx, true));
    } }, "Delete") : null));
}

function groupRow(g, ctx) {
  return h("tr", { testid: `hostgroup-${g.name}` }, h("th", {}, g.name), h("td.small", {}, g.hosts.join(", ")),
    h("td.act-col", {}, ctx.canWrite ? h("button.small.danger", { testid: `hostgroup-delete-${g.name}`, onclick: (e) =>
      ctx.act(e.target, `delete host group ${g.name}`, () => del(`/hostgroups/${seg(g.name)}`))
        .then(() => refreshRules(ctx, true)) }, "Delete") : null));
}

/** The create forms, built once and for writers only (an auditor's page has no button;
 * what is being typed survives refreshes). */
function buildForms(ctx) {
  if (!ctx.canWrite && built) {  // another user logged in on this page
    replace($("rule-create"), []);
    replace($("hostgroup-create"), []);
    built = false;
    groupNames = "";
  }
  if (built || !ctx.canWrite) return;
  built = true;
  const rf = h("form.filters.create", { id: "rule-form", testid: "rule-form", onsubmit: (e) => {
    e.preventDefault();
    const f = e.target;
    const body = { name: f.elements.name.value.trim(), kind: f.elements.kind.value, vms: names(f.elements.vms.value) };
    if (body.kind === "depends-on") body.on = names(f.elements.on.value);
    if (HOST_KINDS.has(body.kind)) body.group = f.elements.group.value;
    ctx.act(f.querySelector("button"), `create rule ${body.name}`, () => post("/rules", body))
      .then(() => refreshRules(ctx, true));
  } },
  h("input", { name: "name", placeholder: "rule name", required: true, testid: "rule-name" }),
  h("select", { name: "kind", testid: "rule-kind" }, KINDS.map((k) => h("option", { value: k }, k))),
  h("input", { name: "vms", placeholder: "VMs (a, b)", required: true, testid: "rule-vms" }),
  h("input", { name: "on", placeholder: "depends on (VMs)", testid: "rule-on" }),
  h("select", { name: "group", testid: "rule-group" }, h("option", { value: "" }, "host group…")),
  h("button.small", { type: "submit", testid: "rule-create" }, "Create rule"));
  replace($("rule-create"), [rf]);
  const gf = h("form.filters.create", { testid: "hostgroup-form", onsubmit: (e) => {
    e.preventDefault();
    const f = e.target;
    const body = { name: f.elements.name.value.trim(), hosts: names(f.elements.hosts.value) };
    ctx.act(f.querySelector("button"), `create host group ${body.name}`, () => post("/hostgroups", body))
      .then(() => refreshRules(ctx, true));
  } },
  h("input", { name: "name", placeholder: "group name", required: true, testid: "hostgroup-name" }),
  h("input", { name: "hosts", placeholder: "hosts (h1, h2)", required: true, testid: "hostgroup-hosts" }),
  h("button.small", { type: "submit", testid: "hostgroup-create" }, "Create host group"));
  replace($("hostgroup-create"), [gf]);
}

function fillGroups(groups) {
  const key = groups.map((g) => g.name).join(",");
  if (key === groupNames) return;
  groupNames = key;
  const select = $("rule-form").elements.group;
  const chosen = select.value;
  replace(select, [h("option", { value: "" }, "host group…"), ...groups.map((g) => h("option", { value: g.name }, g.name))]);
  select.value = groups.some((g) => g.name === chosen) ? chosen : "";
}

/** Read the rules, host groups and conflicts (at most every EVERY_MS unless ``force``). */
export async function refreshRules(ctx, force = false) {
  const now = Date.now();
  if (!force && now - last < EVERY_MS) return;
  last = now;
  let rules, groups, lines;
  try {
    [rules, groups, lines] = await Promise.all([get("/rules"), get("/hostgroups"), get("/rules/conflicts")]);
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 401)) ctx.report(`rules: ${e.detail}`);
    return;
  }
  buildForms(ctx);
  const order = (r) => KINDS.indexOf(r.kind);
  rules.sort((a, b) => order(a) - order(b) || a.name.localeCompare(b.name));
  replace($("rules"), rules.length ? rules.map((r) => ruleRow(r, lines, ctx))
    : [h("tr", {}, h("td.empty", { colspan: 7 }, "No rules."))]);
  replace($("hostgroups"), groups.length ? groups.map((g) => groupRow(g, ctx))
    : [h("tr", {}, h("td.empty", { colspan: 3 }, "No host groups."))]);
  replace($("rule-conflicts"), lines.length ? lines.map((l) => h("li.error", {}, l))
    : [h("li.muted", {}, "Every rule can be kept.")]);
  $("rule-conflicts").dataset.count = String(lines.length);
  if (ctx.canWrite) fillGroups(groups);
}
