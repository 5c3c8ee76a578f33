// Admission control's figures under the hosts table (GET /api/v1/cluster/capacity): the
// policy, slots or reserved room, and how many host failures the cluster tolerates now.
import { get } from "./api.js";
import { $, h, mb, replace } from "./dom.js";

function policyText(c) {
  const s = c.setting;
  if (s.policy === "slots") return `slots, ${s.failures} host failure(s) to tolerate`;
  if (s.policy === "percentage") return "percentage reserved";
  if (s.policy === "failover-hosts") return `failover hosts ${s.hosts.join(", ")}`;
  return "off";
}

function figures(c) {
  if (c.policy === "slots") {
    return `${c.slots_used} of ${c.slots} slots used (slot ${mb(c.slot_memory_mb)} / ${c.slot_vcpus} vCPU), ` +
      `${c.slots_reserved} reserved, ${c.slots_free} free`;
  }
  if (c.policy === "percentage" || c.policy === "failover-hosts") {
    return `${mb(c.memory_used_mb)} of ${mb(c.memory_mb)} used, ${mb(c.memory_reserved_mb)} held back`;
  }
  return `${mb(c.memory_used_mb)} of ${mb(c.memory_mb)} used`;
}

/** Read and show the capacity; a failed read leaves the last figures (the cluster read reports errors). */
export async function refreshCapacity() {
  let c;
  try {
    c = await get("/cluster/capacity");
  } catch {
    return;
  }
  replace($("capacity"), [
    h("span.muted", {}, "admission control"),
    h("b", { testid: "capacity-policy" }, policyText(c)),
    h("span", { testid: "capacity-figures" }, figures(c)),
    h("span.member." + (c.ok ? "ok" : "bad"), { testid: "capacity-tolerates", dataset: { tolerates: c.tolerates, ok: c.ok },
      title: c.detail }, `tolerates ${c.tolerates} host failure(s)${c.ok ? "" : " · below its policy"}`),
  ]);
}
