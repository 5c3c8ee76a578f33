// The cluster's policies, one line under admission control's: DRS (mode, imbalance, the
// moves it recommends), VM monitoring, restart orchestration. Read at most every 5 s (they
// change rarely; each render of the cluster would otherwise read them again).
import { get } from "./api.js";
import { $, h, replace } from "./dom.js";

const EVERY_MS = 5000;
let last = 0;

function drsText(d) {
  if (d.mode === "off" || d.imbalance == null) return `off`;
  const n = (d.moves || []).length + (d.disk_moves || []).length;
  return `${d.mode}, imbalance ${d.imbalance.toFixed(3)} (tolerated ${d.tolerated.toFixed(3)})` +
    (n ? `, ${n} move(s) recommended` : "");
}

function orchestrationText(o) {
  const e = o.effective || {};
  return `ready when ${e.ready || "allocated"}` + (e.delay_s ? ` + ${e.delay_s} s` : "") +
    (e.timeout_s ? `, next tier after ${e.timeout_s} s at most` : "");
}

/** Read and show the policies; a failed read leaves the last line. */
export async function refreshPolicies() {
  const now = Date.now();
  if (now - last < EVERY_MS) return;
  last = now;
  let drs, mon, orch;
  try {
    [drs, mon, orch] = await Promise.all([get("/drs/recommendations"), get("/cluster/monitoring"),
      get("/cluster/orchestration")]);
  } catch {
    return;
  }
  replace($("policies"), [
    h("span.muted", {}, "DRS"), h("b", { testid: "policy-drs", dataset: { mode: drs.mode } }, drsText(drs)),
    h("span.muted", {}, "VM monitoring"), h("b", { testid: "policy-monitoring", dataset: { preset: mon.preset },
      title: mon.summary }, mon.enabled ? mon.preset : "off"),
    h("span.muted", {}, "restart orchestration"), h("b", { testid: "policy-orchestration" }, orchestrationText(orch)),
  ]);
}
