// The VM panel (details, actions, its events) and the migration host picker.
import { del, get, post, put, seg } from "./api.js";
import { $, badge, bytes, h, mb, replace, stamp } from "./dom.js";
import { diskList, eventItem, ftLabel, measured, vmActions } from "./views.js";

let openName = null;
let actionsKey = "";
let datastores = [];

export const panelVm = () => openName;

export function closePanel() {
  openName = null;
  actionsKey = "";
  $("panel").hidden = true;
}

/** Open the panel on ``name`` and load its events; renderPanel fills in the rest. */
export async function openPanel(name, cluster, ctx) {
  openName = name;
  actionsKey = "";
  $("panel").hidden = false;
  $("panel-title").textContent = name;
  replace($("panel-events"), [h("li.muted", {}, "loading…")]);
  renderPanel(cluster, ctx);
  try {
    datastores = await get("/datastores");
    actionsKey = "";
    renderPanel(cluster, ctx);
  } catch (e) {
    ctx.report(`datastores: ${e.detail}`);
  }
  await reloadPanelEvents(ctx);
}

export async function reloadPanelEvents(ctx) {
  const name = openName;
  if (!name) return;
  try {
    const evs = await get(`/vms/${seg(name)}/events?limit=100`);
    if (name === openName) replace($("panel-events"), evs.reverse().map((e) => eventItem(e, false)));
  } catch (e) {
    ctx.report(`events of ${name}: ${e.detail}`);
  }
}

export function panelEvent(ev) {
  if (!openName || ev.vm !== openName) return;
  const list = $("panel-events");
  if (list.firstElementChild && list.firstElementChild.classList.contains("muted")) list.replaceChildren();
  list.prepend(eventItem(ev, false));
}

function row(label, ...value) {
  return [h("dt", {}, label), h("dd", {}, ...value)];
}

export function renderPanel(cluster, ctx) {
  if (!openName || !cluster) return;
  const v = cluster.vms.find((x) => x.name === openName);
  if (!v) {
    replace($("panel-body"), [h("p.muted", {}, "This VM no longer exists.")]);
    replace($("panel-actions"), []);
    return;
  }
  const ft = v.ft || {};
  const ftRows = ft.state && ft.state !== "disabled" ? [
    ...row("FT secondary", ft.secondary || "none yet"),
    ...(ft.checkpoints !== undefined ? row("FT checkpoints", `${ft.checkpoints} (${ft.failures || 0} failed)`) : []),
    ...(ft.lag_ms !== undefined ? row("FT lag", `${ft.lag_ms} ms, pause ${ft.pause_ms ?? "?"} ms, ${bytes(ft.bytes || 0)}`) : []),
    ...(ft.last_error ? row("FT error", h("span.error", {}, ft.last_error)) : []),
  ] : [];
  replace($("panel-body"), [h("dl.facts", { testid: "vm-facts", dataset: { host: v.host || "", state: v.state } },
    ...row("State", badge(v.state), v.message ? h("div.small.muted", {}, v.message) : null),
    ...row("Power", v.power),
    ...row("Host", v.host || "-", v.assigned && v.assigned !== v.host ? ` (assigned ${v.assigned}, gen ${v.gen})` : ""),
    ...row("Owner", v.owner || "-"),
    ...row("Since", v.since ? stamp(v.since) : "-"),
    ...row("Size", `${mb(v.memory_mb)}, ${v.vcpus} vCPU`),
    ...row("Load", measured(v.load, v.vcpus, v.memory_mb, "memory_mb", "panel-load")),
    ...row("Restart priority", v.priority),
    ...row("Isolation response", v.isolation_response),
    ...row("Guest heartbeat", badge(v.guest), v.acked >= 0 ? h("span.small.muted", {}, ` acked ${v.acked}`) : null),
    ...row("Fault Tolerance", ftLabel(ft)),
    ...ftRows,
    ...row("Disks", ...diskList(v)),
    ...row("NICs", ...(v.nics.length ? v.nics.map((n) => h("div", {}, `${n.network} `, h("code", {}, n.mac))) : ["-"])),
  )]);
  renderActions(v, ctx);
}

function renderActions(v, ctx) {
  if (!ctx.canWrite) {
    replace($("panel-actions"), []);
    return;
  }
  // Rebuilt only when what it offers changes, so a choice being made survives a refresh.
  const key = JSON.stringify([v.power, v.state, v.ft.state, v.disks.map((d) => [d.name, d.datastore]), datastores.map((d) => d.name)]);
  if (key === actionsKey) return;
  actionsKey = key;
  const n = seg(v.name);
  const ftOn = v.ft.state !== "disabled";
  const ftButton = ftOn
    ? h("button.small", { testid: `ft-off-${v.name}`, onclick: (e) => ctx.act(e.target, `${v.name}: FT off`, () => del(`/vms/${n}/ft`)) }, "FT off")
    : h("button.small", { testid: `ft-on-${v.name}`, onclick: (e) => ctx.act(e.target, `${v.name}: FT on`, () => put(`/vms/${n}/ft`)) }, "FT on");
  const moves = v.disks.map((d) => {
    const others = datastores.filter((ds) => ds.name !== d.datastore);
    if (!others.length) return h("div.move.muted", {}, `${d.name} (on ${d.datastore}): no other datastore to move it to`);
    const select = h("select.small", { testid: `move-to-${v.name}-${d.name}`, "aria-label": `datastore for ${d.name}` },
      others.map((ds) => h("option", { value: ds.name }, ds.name)));
    return h("div.move", {}, `${d.name} (on ${d.datastore}) → `, select,
      h("button.small", { testid: `move-disk-${v.name}-${d.name}`, onclick: (e) =>
        ctx.act(e.target, `${v.name}: move ${d.name}`, () => post(`/vms/${n}/move-disk`, { disk: d.name, to: select.value })) },
      "Move disk"));
  });
  replace($("panel-actions"), [h("h3", {}, "Actions"),
    h("div.buttons.left", {}, vmActions(v, ctx, "panel-"), ftButton), ...moves]);
}

// -- the migration host picker -------------------------------------------------------------
let migrating = null;

export async function openMigrate(name, ctx) {
  const dlg = $("migrate-dialog");
  migrating = name;
  dlg.returnValue = "";  // closing with Escape keeps the last value: never a stale "go"
  $("migrate-title").textContent = `Migrate ${name}`;
  $("migrate-go").disabled = true;
  replace($("migrate-targets"), [h("p.muted", {}, "asking which hosts can take it…")]);
  if (!dlg.open) dlg.showModal();
  let targets;
  try {
    targets = await get(`/vms/${seg(name)}/migration-targets`);
  } catch (e) {
    replace($("migrate-targets"), [h("p.error", {}, e.detail)]);
    return;
  }
  if (migrating !== name) return;
  const choices = targets.map((t) => h("label.target" + (t.ok ? "" : ".no"), { testid: `target-${t.host}`,
    dataset: { ok: t.ok }, title: t.why },
  h("input", { type: "radio", name: "to", value: t.host, disabled: !t.ok, testid: `target-input-${t.host}`,
    onchange: () => { $("migrate-go").disabled = false; } }),
  h("span.host", {}, t.host), t.ok ? h("span.muted.small", {}, "ready") : h("span.why.small", {}, t.why)));
  replace($("migrate-targets"), choices.length ? choices : [h("p.muted", {}, "No hosts.")]);
}

export function installMigrate(ctx) {
  const dlg = $("migrate-dialog");
  dlg.addEventListener("close", () => {
    const name = migrating;
    migrating = null;
    if (dlg.returnValue !== "go" || !name) return;
    const picked = dlg.querySelector("input[name=to]:checked");
    if (!picked) return;
    ctx.act(null, `${name}: migrate to ${picked.value}`,
      () => post(`/vms/${seg(name)}/migrate`, { to: picked.value }));
  });
}
