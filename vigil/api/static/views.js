// The dashboard's tables: hosts (with totals and etcd), VMs, tasks, the event log.
// Each render takes the data as the API returned it and a context:
//   ctx.canWrite   operator or admin: action buttons are built at all only then
//   ctx.act(btn, label, fn)   run a write, report it, refresh
//   ctx.openVm(name), ctx.openMigrate(name)
import { del, post, put, seg } from "./api.js";
import { $, badge, bytes, clock, h, mb, replace, stamp, usage } from "./dom.js";

const count = (n) => String(n);
const ACTIVE = new Set(["queued", "preparing", "ready", "running", "switching"]);

export function renderCluster(c, ctx) {
  const running = c.vms.filter((v) => v.state === "running").length;
  replace($("summary"), [
    h("span", {}, "leader ", h("b", { testid: "leader" }, c.leader || "none")),
    h("span", {}, `${c.hosts.length} hosts`),
    h("span", {}, `${running}/${c.vms.length} VMs running`),
    h("span.muted", { testid: "revision", dataset: { revision: c.revision } }, `rev ${c.revision}`),
  ]);
  $("leader").textContent = c.leader ? `· leader ${c.leader}` : "· no leader";
  replace($("hosts"), c.hosts.map((host) => hostRow(host, ctx)));
  replace($("totals"), [h("tr.total", {},
    h("th", {}, "Total"), h("td", {}, `${c.hosts.filter((x) => x.state === "running").length} running`),
    h("td", {}, usage(c.memory_used_mb, c.memory_mb, mb, "total-memory")),
    h("td", {}, usage(c.vcpus_used, c.cpus, count, "total-vcpus")),
    h("td"), h("td", {}, String(c.vms.length)), h("td", { colspan: 2 }))]);
  replace($("etcd"), [h("span.muted", {}, "etcd"), ...c.etcd.map((m) =>
    h("span.member." + (m.healthy ? "ok" : "bad"), { testid: `etcd-${m.endpoint}`, dataset: { healthy: m.healthy },
      title: m.healthy ? "healthy" : "not answering" }, m.endpoint))]);
  $("vm-count").textContent = `· ${c.vms.length}`;
  replace($("vms"), c.vms.length ? c.vms.map((v) => vmRow(v, ctx))
    : [h("tr", {}, h("td.empty", { colspan: 11 }, "No VMs defined."))]);
}

function hostRow(host, ctx) {
  const cells = [
    h("th", {}, host.name, host.leader ? h("span.leader", { title: "the controller runs here", testid: `leader-${host.name}` }, "★ leader") : null,
      h("div.muted.small", {}, host.address, host.accel ? ` · ${host.accel}` : "")),
    h("td", {}, badge(host.state, `host-state-${host.name}`), host.lease ? null : h("div.muted.small", {}, "no lease")),
    h("td", {}, usage(host.memory_used_mb, host.memory_mb, mb, `mem-${host.name}`)),
    h("td", {}, usage(host.vcpus_used, host.cpus, count, `cpu-${host.name}`)),
    h("td" + (host.lease ? "" : ".stale"), host.lease ? {} : { title: "as last reported: its agent holds no lease now" },
      measured(host.load, host.cpus, host.memory_mb, "memory_used_mb", `load-${host.name}`)),
    h("td", { title: host.vms.join(", ") }, h("span", { testid: `vmcount-${host.name}` }, String(host.vms.length))),
    h("td.small", {}, host.datastores.join(", ") || "-"),
    h("td.act-col", {}, ctx.canWrite ? maintenanceButton(host, ctx) : null),
  ];
  return h("tr", { testid: `host-${host.name}`, dataset: { state: host.state, leader: host.leader } }, cells);
}

/** The load its agent measured (smoothed): CPU as a share of the cores (a VM's: of its
 * vCPUs), memory in use (a VM's: resident) of its size; "-" while none was reported. */
export function measured(load, cpus, memoryMb, memKey, testid) {
  if (!load) return h("span.muted", { testid }, "-");
  const cpuPct = cpus > 0 ? Math.round((100 * (Number(load.cpu) || 0)) / cpus) : 0;
  const used = Number(load[memKey]) || 0;
  const memPct = memoryMb > 0 ? Math.round((100 * used) / memoryMb) : 0;
  const line = (p, text, title) => {
    const fill = h("span.fill." + (p >= 90 ? "high" : p >= 70 ? "mid" : "low"));
    fill.style.width = `${Math.min(100, p)}%`;
    return h("div.usage", { title }, h("div.meter", {}, fill), h("span.nums", {}, text));
  };
  return h("div.load", { testid, dataset: { cpuPct, memoryMb: used } },
    line(cpuPct, `CPU ${cpuPct}%`, `${Number(load.cpu || 0).toFixed(2)} of ${cpus} cores`),
    line(memPct, `mem ${mb(used)}`, `${mb(used)} of ${mb(memoryMb)} in use`));
}

function maintenanceButton(host, ctx) {
  const inside = host.maintenance || host.state === "maintenance" || host.state === "entering-maintenance";
  if (inside) {
    return h("button.small", { testid: `maint-exit-${host.name}`,
      onclick: (e) => ctx.act(e.target, `${host.name}: exit maintenance`, () => del(`/hosts/${seg(host.name)}/maintenance`)) },
    "Exit");
  }
  return h("button.small", { testid: `maint-enter-${host.name}`, onclick: (e) => {
    if (!window.confirm(`Put ${host.name} in maintenance mode? Its VMs are migrated away.`)) return;
    ctx.act(e.target, `${host.name}: enter maintenance`, () => put(`/hosts/${seg(host.name)}/maintenance`));
  } }, "Enter");
}

export function vmActions(v, ctx, prefix = "") {
  if (!ctx.canWrite) return [];
  const n = seg(v.name);
  const out = [];
  if (v.power === "on") {
    out.push(h("button.small", { testid: `${prefix}stop-${v.name}`, onclick: (e) => {
      if (!window.confirm(`Shut ${v.name} down?`)) return;
      ctx.act(e.target, `${v.name}: stop`, () => post(`/vms/${n}/stop`));
    } }, "Stop"));
    out.push(h("button.small", { testid: `${prefix}migrate-${v.name}`, disabled: v.state !== "running",
      onclick: () => ctx.openMigrate(v.name) }, "Migrate…"));
  } else {
    out.push(h("button.small", { testid: `${prefix}start-${v.name}`,
      onclick: (e) => ctx.act(e.target, `${v.name}: start`, () => post(`/vms/${n}/start`)) }, "Start"));
  }
  return out;
}

export function ftLabel(ft) {
  if (!ft || ft.state === "disabled") return h("span.muted", {}, "off");
  return h("span", {}, badge(ft.state), ft.secondary ? h("span.small", {}, ` ↔ ${ft.secondary}`) : null);
}

export function diskList(v) {
  return v.disks.map((d) => h("div.disk", { title: d.path },
    h("b", {}, d.name), ` ${mb(d.size_mb)} `,
    d.copies.map((c) => h("span.copy.c-" + c.state, {
      title: c.state + (c.why ? `: ${c.why}` : "") + (c.state === "resyncing" ? ` ${bytes(c.done)} / ${bytes(c.total)}` : ""),
      testid: `copy-${v.name}-${d.name}-${c.datastore}` }, c.datastore, c.state === "in-sync" ? "" : ` (${c.state})`))));
}

function vmRow(v, ctx) {
  const where = v.host || v.owner || "";
  const moving = v.assigned && v.assigned !== where;
  return h("tr", { testid: `vm-${v.name}`, dataset: { host: where, state: v.state, power: v.power, ft: v.ft.state } },
    h("th", {}, h("button.link.vmname", { onclick: () => ctx.openVm(v.name), testid: `open-${v.name}` }, v.name),
      h("div.muted.small", {}, `${mb(v.memory_mb)} · ${v.vcpus} vCPU`)),
    h("td", { title: v.message }, badge(v.state, `vm-state-${v.name}`), v.power === "off" ? h("span.muted.small", {}, " off") : null),
    h("td", {}, where || h("span.muted", {}, "-"), moving ? h("span.muted.small", {}, ` → ${v.assigned}`) : null),
    h("td", {}, measured(v.load, v.vcpus, v.memory_mb, "memory_mb", `load-${v.name}`)),
    h("td", {}, h("span.prio.p-" + v.priority, {}, v.priority)),
    h("td.small", {}, v.isolation_response),
    h("td", {}, ftLabel(v.ft)),
    h("td", {}, badge(v.guest, `guest-${v.name}`)),
    h("td.small", {}, diskList(v)),
    h("td.small", {}, v.nics.length ? v.nics.map((n) => h("div", { title: n.mac }, n.network)) : h("span.muted", {}, "-")),
    h("td.act-col", {}, vmActions(v, ctx)));
}

export function progressOf(t) {
  if (t.state === "done") return 100;
  const p = t.progress || {};
  const total = Number(p.total) || 0;
  const done = Number(p.transferred ?? p.offset ?? 0) || 0;
  return total > 0 ? Math.max(0, Math.min(100, Math.floor((100 * done) / total))) : 0;
}

function progressBar(t, testid) {
  const pct = progressOf(t);
  const p = t.progress || {};
  const fill = h("span.fill");
  fill.style.width = `${pct}%`;
  const nums = [];
  if (p.total) nums.push(`${bytes(p.transferred ?? p.offset ?? 0)} / ${bytes(p.total)}`);
  if (p.mb_s) nums.push(`${Number(p.mb_s).toFixed(1)} MB/s`);
  if (p.downtime_ms !== undefined && p.downtime_ms !== null) nums.push(`downtime ${p.downtime_ms} ms`);
  return h("div.progress.t-" + t.state, { testid, dataset: { pct, state: t.state }, role: "progressbar",
    "aria-valuenow": pct, "aria-valuemin": 0, "aria-valuemax": 100 },
  h("div.track", {}, fill), h("span.nums", {}, `${pct}%`, nums.length ? h("span.muted", {}, ` · ${nums.join(" · ")}`) : null));
}

export function renderTasks(tasks, ctx) {
  const newest = new Map(tasks.map((t) => [t.vm, t.id]));  // oldest first: the last one wins
  const rows = [...tasks].reverse().map((t) => {
    const latest = newest.get(t.vm) === t.id;
    const where = t.kind === "migrate" ? `${t.src} → ${t.dst}${t.datastore ? ` (disks → ${t.datastore})` : ""}`
      : t.kind === "move-disk" ? `${t.disk} → ${t.datastore}` : [t.src, t.disk].filter(Boolean).join(": ");
    return h("tr", { testid: `taskrow-${t.id}`, dataset: { state: t.state, vm: t.vm, kind: t.kind } },
      h("th", { title: t.summary }, t.kind, h("div.muted.small.nowrap", {}, `${t.id.slice(0, 8)} · ${stamp(t.created)}`)),
      h("td", {}, t.vm),
      h("td.small.nowrap", {}, where, t.reason && t.reason !== "user" ? h("div.muted", {}, `for ${t.reason}`) : null),
      h("td", {}, badge(t.state), t.error ? h("div.error.small", { title: t.error }, t.error) : null),
      h("td.bar-col", {}, progressBar(t, latest ? `task-${t.vm}` : `task-${t.vm}-${t.id}`)),
      h("td.act-col", {}, ctx.canWrite && ACTIVE.has(t.state) && !t.cancel
        ? h("button.small.danger", { testid: latest ? `cancel-${t.vm}` : `cancel-${t.id}`,
          onclick: (e) => ctx.act(e.target, `cancel ${t.kind} of ${t.vm}`, () => post(`/tasks/${seg(t.id)}/cancel`)) }, "Cancel")
        : t.cancel && ACTIVE.has(t.state) ? h("span.muted.small", {}, "cancelling") : null));
  });
  replace($("tasks"), rows.length ? rows : [h("tr", {}, h("td.empty", { colspan: 6 }, "No tasks."))]);
}

export function eventItem(e, showVm = true) {
  const who = e.user ? `${e.source ? e.source + ":" : ""}${e.user}` : e.source;
  return h("li.ev.k-" + String(e.kind).split("-")[0], { dataset: { kind: e.kind, host: e.host, vm: e.vm } },
    h("time", { title: new Date(e.time * 1000).toISOString() }, clock(e.time)),
    h("span.kind", {}, e.kind),
    e.host ? h("span.tag", {}, e.host) : null,
    e.vm && showVm ? h("span.tag.vm", {}, e.vm) : null,
    h("span.text", {}, e.message),
    who ? h("span.who.muted.small", {}, ` — ${who}`) : null);
}
