// The Datastores view: each datastore's Storage DRS cluster, the hosts that reach it, its
// space (used of size, as the agents report it) and its I/O latency (GET /api/v1/datastores),
// so that an operator sees why Storage DRS moves a disk, or why it does not.
import { ApiError, get } from "./api.js";
import { $, h, mb, replace, usage } from "./dom.js";

const EVERY_MS = 5000;
let last = 0;

function dsRow(d) {
  const space = d.size_mb ? usage(d.used_mb || 0, d.size_mb, mb, `ds-space-${d.name}`) : h("span.muted", {}, "not reported");
  const latency = d.latency_ms == null ? h("span.muted", {}, "-")
    : h("span", { testid: `ds-latency-${d.name}` }, `${d.latency_ms.toFixed(1)} ms (${(d.iops || 0).toFixed(0)} op/s)`);
  return h("tr", { testid: `ds-${d.name}` },
    h("th", {}, d.name), h("td.small", {}, d.cluster || h("span.muted", {}, "-")),
    h("td.small", {}, d.hosts.join(", ") || h("span.muted", {}, "none")), h("td", {}, space), h("td", {}, latency));
}

/** Read the datastores (at most every EVERY_MS unless ``force``). */
export async function refreshDatastores(ctx, force = false) {
  const now = Date.now();
  if (!force && now - last < EVERY_MS) return;
  last = now;
  let dss;
  try {
    dss = await get("/datastores");
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 401)) ctx.report(`datastores: ${e.detail}`);
    return;
  }
  replace($("datastores"), dss.length ? dss.map(dsRow) : [h("tr", {}, h("td.empty", { colspan: 5 }, "No datastores."))]);
}
