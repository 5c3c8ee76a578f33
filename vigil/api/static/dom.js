// Small DOM helpers: every element is built with textContent, never from HTML strings,
// so nothing a VM name or an event message holds is ever run as markup.

/** h("td.cls", {attrs}, ...children): an element; strings become text nodes. */
export function h(tag, attrs, ...children) {
  const [name, ...classes] = tag.split(".");
  const el = document.createElement(name);
  if (classes.length) el.className = classes.join(" ");
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "testid") el.dataset.testid = v;
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export const $ = (id) => document.getElementById(id);

export function replace(parent, children) {
  parent.replaceChildren(...children.flat().filter(Boolean));
}

export function mb(n) {
  if (n >= 1024 * 10) return `${(n / 1024).toFixed(0)} GiB`;
  if (n >= 1024) return `${(n / 1024).toFixed(1)} GiB`;
  return `${n} MiB`;
}

export function bytes(n) {
  if (!n) return "0 B";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function clock(t) {
  const d = new Date(t * 1000);
  return d.toLocaleTimeString([], { hour12: false });
}

export function stamp(t) {
  const d = new Date(t * 1000);
  const today = new Date().toDateString() === d.toDateString();
  return today ? clock(t) : `${d.toLocaleDateString()} ${clock(t)}`;
}

/** A bar of used over total: "used / total" with the free part in its title. */
export function usage(used, total, fmt, testid) {
  const pct = total > 0 ? Math.min(100, Math.round((100 * used) / total)) : 0;
  const level = pct >= 90 ? "high" : pct >= 70 ? "mid" : "low";
  const fill = h("span.fill." + level);
  fill.style.width = `${pct}%`;
  return h("div.usage", { title: `${fmt(used)} used, ${fmt(Math.max(0, total - used))} free`, testid,
                          dataset: { used, total } },
    h("div.meter", {}, fill),
    h("span.nums", {}, `${fmt(used)} / ${fmt(total)}`, h("span.muted", {}, ` · ${fmt(Math.max(0, total - used))} free`)));
}

export function badge(state, testid) {
  return h("span.badge.s-" + String(state || "unknown").replace(/[^a-z0-9-]/gi, ""), { testid }, state || "?");
}
