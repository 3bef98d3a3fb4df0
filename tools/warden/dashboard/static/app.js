// The Warden dashboard's page: polls the server's JSON and draws the fleet, a device, a rollout.
// Every value from the server is user data (thing names, tags, reasons): it goes into the page
// as text (textContent, attribute values), never as markup. Charts are SVG drawn here.
"use strict";

const POLL_MS = 1500;
const SVG = "http://www.w3.org/2000/svg";
const STATES = ["waiting", "sending", "soaking", "succeeded", "failed", "skipped", "restored"];

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== null && v !== undefined) e.setAttribute(k, String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function link(href, text) { return el("a", { href }, text); }
function stateCell(word, extra) {
  return el("td", { class: "state state-" + String(word).replace(/[^a-z]/g, "") + (extra ? " " + extra : "") }, word);
}
function when(iso) { return iso ? iso.replace("T", " ").replace("+00:00", "Z") : "-"; }
function num(v) { return v === null || v === undefined ? "-" : (typeof v === "number" ? String(Math.round(v * 100) / 100) : String(v)); }

function table(headers, rows, attrs) {
  return el("table", attrs || {}, el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", {}, h)))),
            el("tbody", {}, ...rows));
}

function sparkline(points) {
  // points: [[ts, value], ...] oldest first -> an SVG polyline scaled to 200 x 40
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 200 40");
  svg.setAttribute("preserveAspectRatio", "none");
  if (points.length < 1) return svg;
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
  const sx = (x) => (x1 > x0 ? ((x - x0) / (x1 - x0)) * 198 + 1 : 100);
  const sy = (y) => (y1 > y0 ? 39 - ((y - y0) / (y1 - y0)) * 38 : 20);
  const line = document.createElementNS(SVG, "polyline");
  line.setAttribute("points", points.map((p) => sx(p[0]).toFixed(1) + "," + sy(p[1]).toFixed(1)).join(" "));
  svg.append(line);
  return svg;
}

function chart(series) {
  const pts = series.points;
  const last = pts.length ? pts[pts.length - 1][1] : null;
  return el("div", { class: "chart", "data-series": series.key },
            el("div", { class: "label" }, el("span", {}, series.name), el("span", {}, num(last))),
            sparkline(pts));
}

function bar(counts, total) {
  const b = el("div", { class: "bar", title: STATES.filter((s) => counts[s]).map((s) => s + " " + counts[s]).join(", ") });
  for (const s of STATES) {
    if (!counts[s]) continue;
    const seg = el("span", { class: "seg-" + s });
    seg.style.width = ((counts[s] / total) * 100).toFixed(1) + "%";   // CSSOM, allowed by the CSP
    b.append(seg);
  }
  return b;
}

function countCells(counts, prefix) {
  return STATES.map((s) => el("td", { class: "num " + prefix + s }, counts[s] || 0));
}

// ---- views ----------------------------------------------------------------------------------

function fleetView(snap) {
  const rows = snap.fleet.map((d) => {
    const v = d.vitals || {};
    const r = d.last_reading;
    return el("tr", { "data-thing": d.thing },
      el("td", {}, link("#/device/" + encodeURIComponent(d.thing), d.thing)),
      el("td", {}, ...Object.entries(d.tags).map(([k, val]) => el("span", { class: "tag" }, k + "=" + val))),
      stateCell(d.connection, "conn"),
      el("td", { class: "since" }, when(d.since)),
      el("td", {}, d.version || "-"),
      el("td", {}, r ? (when(r.time) + (r.seq !== undefined && r.seq !== null ? " #" + r.seq : "")) : "-"),
      el("td", { class: "num" }, num(v.hf)),
      el("td", { class: "num" }, num(v.up)),
      el("td", { class: "num" }, num(v.msg_rate)),
      el("td", { class: "num" }, num(v.rssi)),
      el("td", { class: "alerts" + (d.alerts.length ? " alert" : "") },
         d.alerts.length ? d.alerts.map((a) => a.rule).join(", ") : "-"),
      el("td", {}, d.rollout ? link("#/rollout/" + encodeURIComponent(d.rollout), d.rollout) : "-"));
  });
  const ro = snap.rollouts.map((r) => el("tr", { "data-rollout": r.name },
    el("td", {}, link("#/rollout/" + encodeURIComponent(r.name), r.name)),
    stateCell(r.state, "rstate"),
    el("td", {}, r.version),
    el("td", {}, bar(r.counts, Math.max(r.devices, 1))),
    el("td", { class: "num" }, r.devices),
    ...countCells(r.counts, "count-"),
    el("td", { class: "muted" }, r.reason || "")));
  return [
    el("h2", {}, "Fleet (" + snap.fleet.length + " devices)"),
    table(["device", "tags", "connection", "since", "version", "last reading", "heap free", "uptime s",
           "msgs/min", "RSSI", "open alerts", "rollout"], rows, { id: "fleet" }),
    el("h2", {}, "Rollouts"),
    snap.rollouts.length
      ? table(["rollout", "state", "version", "progress", "devices", ...STATES, "reason"], ro, { id: "rollouts" })
      : el("p", { class: "muted" }, "No rollouts."),
  ];
}

function deviceView(d) {
  const row = d.device;
  const alerts = d.alerts.map((a) => el("tr", {},
    el("td", {}, a.rule), stateCell(a.state === "open" ? "open" : "cleared", a.state === "open" ? "alert" : ""),
    el("td", {}, when(a.raised)), el("td", {}, when(a.cleared)), el("td", {}, a.detail)));
  const places = d.rollouts.map((p) => el("tr", {},
    el("td", {}, link("#/rollout/" + encodeURIComponent(p.rollout), p.rollout)), el("td", {}, p.stage),
    stateCell(p.state), el("td", {}, p.reason || "")));
  return [
    el("h2", {}, "Device ", el("span", { id: "device-name" }, row.thing)),
    el("p", {}, "connection: ", el("span", { class: "state state-" + String(row.connection).replace(/[^a-z]/g, ""), id: "device-conn" }, row.connection),
       " since " + when(row.since) + (row.reason ? " (" + row.reason + ")" : "") + " · version " + (row.version || "-")),
    el("h2", {}, "Vitals"),
    d.vitals.length ? el("div", { class: "charts", id: "vitals" }, ...d.vitals.map(chart)) : el("p", { class: "muted" }, "No metrics reports kept yet (the monitor keeps them)."),
    el("h2", {}, "Readings"),
    d.readings.length ? el("div", { class: "charts", id: "readings" }, ...d.readings.map(chart)) : el("p", { class: "muted" }, "No readings kept."),
    el("h2", {}, "Alerts"),
    alerts.length ? table(["rule", "state", "raised", "cleared", "detail"], alerts, { id: "alerts" }) : el("p", { class: "muted" }, "No alerts."),
    el("h2", {}, "Rollouts"),
    places.length ? table(["rollout", "stage", "state", "reason"], places) : el("p", { class: "muted" }, "In no rollout."),
  ];
}

function rolloutView(r) {
  const stages = Object.entries(r.stages).map(([stage, counts]) => el("tr", { "data-stage": stage },
    el("td", {}, stage), el("td", {}, bar(counts, Object.values(counts).reduce((a, b) => a + b, 0))),
    ...countCells(counts, "count-")));
  const members = r.members.map((m) => el("tr", { "data-thing": m.thing },
    el("td", {}, link("#/device/" + encodeURIComponent(m.thing), m.thing)), el("td", {}, m.stage),
    stateCell(m.state), el("td", {}, m.old_version || "-"), el("td", {}, when(m.started && new Date(m.started * 1000).toISOString())),
    el("td", { class: "reason" }, m.reason || "")));
  const events = r.events.slice().reverse().map((e) => el("tr", {},
    el("td", {}, when(e.time)), el("td", {}, e.thing || "-"), el("td", {}, e.event), el("td", {}, e.detail || "")));
  const p = r.plan;
  return [
    el("h2", {}, "Rollout ", el("span", { id: "rollout-name" }, r.name), " ", el("span", { class: "state state-" + r.state, id: "rollout-state" }, r.state)),
    el("p", {}, r.kind + " " + r.version + " · " + r.devices + " devices · canary " + p.canary + " · " + p.rate + "/min · soak " + p.soak_s + " s · abort at " + p.abort_percent + "% after " + p.abort_min),
    r.reason ? el("p", { class: "alert" }, r.reason) : null,
    el("h2", {}, "Stages"),
    table(["stage", "progress", ...STATES], stages, { id: "stages" }),
    el("h2", {}, "Devices"),
    table(["device", "stage", "state", "from version", "started", "reason"], members, { id: "members" }),
    el("h2", {}, "Events"),
    table(["time", "device", "event", "detail"], events),
  ];
}

// ---- routing and polling ----------------------------------------------------------------------

function route() {
  const h = location.hash.replace(/^#\/?/, "");
  const [kind, ...rest] = h.split("/");
  const name = decodeURIComponent(rest.join("/"));
  if (kind === "device" && name) return { url: "/api/device/" + encodeURIComponent(name), draw: deviceView };
  if (kind === "rollout" && name) return { url: "/api/rollout/" + encodeURIComponent(name), draw: rolloutView };
  return { url: "/api/snapshot", draw: fleetView };
}

let timer = null, generation = 0;

async function refresh() {
  const mine = ++generation;
  const r = route();
  const live = document.getElementById("live");
  try {
    const resp = await fetch(r.url, { cache: "no-store", credentials: "same-origin" });
    if (mine !== generation) return;
    const main = document.getElementById("main");
    if (resp.status === 404) {
      main.replaceChildren(el("p", { class: "alert" }, "Not found: " + decodeURIComponent(location.hash.slice(2))));
    } else if (!resp.ok) {
      throw new Error("HTTP " + resp.status);
    } else {
      const body = await resp.json();
      if (mine !== generation) return;
      if (body.app) document.getElementById("app").textContent = body.app;
      main.replaceChildren(...r.draw(body).filter((x) => x));
    }
    live.textContent = "live · " + new Date().toLocaleTimeString();
    live.classList.remove("stale");
  } catch (e) {
    live.textContent = "no answer from the server (" + e.message + ")";
    live.classList.add("stale");
  }
}

let loops = 0;
function schedule() {
  // One polling loop at a time: a navigation starts a new one, and the old one's pending turn ends it.
  const loop = ++loops;
  clearTimeout(timer);
  refresh().finally(() => { if (loop === loops) timer = setTimeout(schedule, POLL_MS); });
}

window.addEventListener("hashchange", schedule);
document.addEventListener("DOMContentLoaded", schedule);
