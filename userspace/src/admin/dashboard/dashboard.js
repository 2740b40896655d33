// portier's dashboard: redraws a few tables from each status document (the JSON of
// /status), which arrives every second over Server-Sent Events (/events), or by polling
// /status while the stream is unavailable. Rates are computed here from consecutive counters.
// Everything is written with textContent: nothing from the node is parsed as HTML.
"use strict";

const STALE_MS = 3500; // no document for this long: "disconnected"
const POLL_AFTER_MS = 2500; // no document for this long: poll /status meanwhile

let prev = null; // the previous document, for rates
let cur = null;
let lastUpdate = 0;
let source = null;

// ---- small helpers -------------------------------------------------------------------

const $ = (id) => document.getElementById(id);

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

function str(v) {
  if (v === undefined || v === null || v === "") return "-";
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

// State name -> colour class, HAProxy's conventions where they apply.
function stateClass(s) {
  switch (String(s)) {
    case "active": case "up": case "master": case "full": case "Established": case "ok":
    case "dr": case "backup_dr": case "point-to-point":
      return "up";
    case "down": case "fault": case "Idle": case "degraded": case "admin_down":
      return "down";
    case "drained": case "maint":
      return "drain";
    case "going up": case "going down": case "ejected": case "init": case "exstart": case "exchange":
    case "loading": case "Connect": case "Active": case "OpenSent": case "OpenConfirm": case "waiting":
      return "going";
    default:
      return "none";
  }
}

function badge(s, text) {
  return el("span", "st st-" + stateClass(s), text === undefined ? str(s) : text);
}

function num(n) {
  if (n === undefined || n === null || Number.isNaN(n)) return "-";
  if (typeof n !== "number") return String(n);
  if (Math.abs(n) >= 1e9) return (n / 1e9).toFixed(2) + "G";
  if (Math.abs(n) >= 1e6) return (n / 1e6).toFixed(2) + "M";
  if (Math.abs(n) >= 1e4) return (n / 1e3).toFixed(1) + "k";
  return Number.isInteger(n) ? String(n) : n.toFixed(1);
}

function duration(secs) {
  if (secs === undefined || secs === null) return "-";
  secs = Math.floor(secs);
  const d = Math.floor(secs / 86400), h = Math.floor(secs / 3600) % 24;
  const m = Math.floor(secs / 60) % 60, s = secs % 60;
  if (d) return `${d}d ${h}h ${m}m`;
  if (h) return `${h}h ${m}m ${s}s`;
  if (m) return `${m}m ${s}s`;
  return `${s}s`;
}

function clock(ms) {
  return ms ? new Date(ms).toLocaleTimeString([], { hour12: false }) : "-";
}

// Per-second rate of a counter between the previous and the current document.
function rate(getter) {
  if (!prev || !cur || !prev.node || !cur.node) return null;
  const a = getter(prev), b = getter(cur);
  const dt = (cur.node.now_ms - prev.node.now_ms) / 1000;
  if (typeof a !== "number" || typeof b !== "number" || dt <= 0 || b < a) return null;
  return (b - a) / dt;
}

// Fills `table` with a header row and rows; a cell is a value, a Node, or
// {v, cls} (a value with a cell class). `rowAttrs(i)` gives a row's class and data-*.
function fill(table, headers, rows, rowAttrs) {
  const thead = el("thead"), tr = el("tr");
  for (const h of headers) {
    const [name, cls] = Array.isArray(h) ? h : [h, ""];
    tr.appendChild(el("th", cls, name));
  }
  thead.appendChild(tr);
  const tbody = el("tbody");
  if (rows.length === 0) {
    const r = el("tr"), td = el("td", "empty", "none");
    td.colSpan = headers.length;
    r.appendChild(td);
    tbody.appendChild(r);
  }
  rows.forEach((cells, i) => {
    const r = el("tr");
    const attrs = rowAttrs ? rowAttrs(i) : null;
    if (attrs) {
      if (attrs.cls) r.className = attrs.cls;
      for (const [k, v] of Object.entries(attrs.data || {})) r.dataset[k] = v;
    }
    cells.forEach((c, j) => {
      const h = headers[j];
      const td = el("td", Array.isArray(h) ? h[1] : "");
      if (c instanceof Node) td.appendChild(c);
      else if (c && typeof c === "object" && "v" in c) {
        td.textContent = str(c.v);
        if (c.cls) td.className += " " + c.cls;
      } else td.textContent = str(c);
      r.appendChild(td);
    });
    tbody.appendChild(r);
  });
  table.replaceChildren(thead, tbody);
}

function show(id, on) {
  $(id).hidden = !on;
}

// ---- sections ------------------------------------------------------------------------

function renderNode(d) {
  const n = d.node || {};
  $("node-name").textContent = n.name || "portier";
  document.title = (n.name || "portier") + " · portier";
  const h = $("node-health");
  h.textContent = n.health || "…";
  h.className = "st st-" + stateClass(n.health);
  $("node-version").textContent = str(n.version);
  $("node-uptime").textContent = duration(n.uptime_secs);
  const problems = $("problems");
  problems.replaceChildren(...(n.problems || []).map((p) => el("li", "", p)));
}

function vrrpStateFor(d, vip) {
  const i = ((d.vrrp || {}).instances || []).find((i) => (i.vips || []).includes(vip));
  return i ? i.state : null;
}

function announcedBy(d, vip) {
  const by = [];
  if (d.ospf && d.ospf.announced && vip in d.ospf.announced) by.push("OSPF");
  if (d.bgp && (d.bgp.announced || []).some((p) => p.split("/")[0] === vip)) by.push("BGP");
  return by.length ? by.join(", ") : "no";
}

function renderVips(d) {
  const rows = [], attrs = [];
  const services = (d.l4 || {}).services || [];
  services.forEach((s, i) => {
    const backends = s.backends || [];
    const healthy = backends.filter((b) => b.state === "active").length;
    const vrrp = vrrpStateFor(d, s.vip);
    const pps = rate((x) => (((x.l4 || {}).services || [])[i] || {}).packets);
    const bps = rate((x) => (((x.l4 || {}).services || [])[i] || {}).bytes);
    rows.push([
      s.vip, !s.port ? "any" : s.port, s.protocol,
      "L4 " + str(s.forwarding), s.name, announcedBy(d, s.vip),
      vrrp ? badge(vrrp) : "-",
      badge(healthy === 0 ? "down" : healthy < backends.length ? "going down" : "up",
        `${healthy}/${backends.length}`),
      { v: num(pps), cls: "num" }, { v: pps === null ? "-" : num(bps * 8), cls: "num" },
    ]);
    attrs.push({ data: { vip: s.vip, service: s.name } });
  });
  const listeners = ((d.l7 || {}).listeners) || {};
  for (const [name, l] of Object.entries(listeners)) {
    const addr = str(l.address);
    const cut = addr.lastIndexOf(":");
    const ip = addr.slice(0, cut).replace(/^\[|\]$/g, "");
    const pools = Object.values((d.l7 || {}).pools || {});
    const servers = pools.flatMap((p) => p.servers || []);
    const up = servers.filter((s) => s.state === "active").length;
    const rps = rate((x) => ((((x.l7 || {}).listeners || {})[name]) || {}).requests);
    rows.push([
      ip, addr.slice(cut + 1), "tcp", "L7 " + (l.tls ? "https" : "http"), name,
      announcedBy(d, ip), vrrpStateFor(d, ip) ? badge(vrrpStateFor(d, ip)) : "-",
      badge(up === 0 ? "down" : up < servers.length ? "going down" : "up", `${up}/${servers.length}`),
      { v: rps === null ? "-" : num(rps) + " req", cls: "num" }, { v: "-", cls: "num" },
    ]);
    attrs.push({ data: { vip: ip, listener: name } });
  }
  fill($("vips"), ["VIP", "port", "proto", "layer", "service", "announced", "VRRP",
    "healthy", ["pkt/s", "num"], ["bit/s", "num"]], rows, (i) => attrs[i]);
}

function check(b) {
  const c = b.check;
  if (!c) return "-";
  return badge(c.ok ? "up" : "down", `${c.ok ? "ok" : "failed"} ${c.latency_ms} ms`);
}

// A backend whose last checks contradict its state is HAProxy's "going down" / "going up".
function l4State(b) {
  if (b.check && b.check.streak > 0) {
    if (b.state === "active") return "going down";
    if (b.state === "down") return "going up";
  }
  return b.state;
}

function renderL4(d) {
  const l4 = d.l4;
  show("sec-l4", !!l4);
  if (!l4) return;
  const hosts = {};
  (l4.backends || []).forEach((h, i) => { hosts[h.address] = i; });
  const rows = [], attrs = [];
  for (const s of l4.services || []) {
    const total = (s.backends || []).reduce((a, b) => a + (b.share || 0), 0);
    for (const b of s.backends || []) {
      const state = l4State(b);
      const hi = hosts[b.address];
      const pps = hi === undefined ? null : rate((x) => (((x.l4 || {}).backends || [])[hi] || {}).packets);
      let share = "-";
      if (typeof b.share === "number" && total > 0) {
        const pct = (100 * b.share) / total;
        const wrap = el("span");
        const bar = el("span", "bar");
        bar.style.width = Math.round(pct * 0.6) + "px";
        wrap.append(bar, pct.toFixed(1) + "%");
        share = wrap;
      }
      rows.push([
        s.name, b.address, badge(stateClass(state), state),
        `${str(b.weight)}/${str(b.configured_weight)}`, share,
        check(b),
        { v: str(b.reason), cls: "wrap" },
        { v: num(pps), cls: "num" },
      ]);
      attrs.push({ cls: "row-" + stateClass(state), data: { backend: `${s.name} ${b.address}`, state } });
    }
  }
  fill($("l4-backends"), ["service", "backend", "state", "weight", "Maglev share", "last check", "down because",
    ["pkt/s (host)", "num"]], rows, (i) => attrs[i]);
}

function renderL7(d) {
  const l7 = d.l7;
  show("sec-l7", !!l7);
  if (!l7) return;
  const listeners = Object.entries(l7.listeners || {});
  fill($("l7-listeners"), ["listener", "address", ["req/s", "num"], ["open conns", "num"], ["requests", "num"]],
    listeners.map(([name, l]) => [name, l.address,
      { v: num(rate((x) => ((((x.l7 || {}).listeners || {})[name]) || {}).requests)), cls: "num" },
      { v: num(l.connections_active), cls: "num" }, { v: num(l.requests), cls: "num" }]));
  const routes = l7.routes || [];
  fill($("l7-routes"), ["host", "path", "pool", ["req/s", "num"]],
    routes.map((r, i) => [r.host, r.path || "/", r.pool,
      { v: num(rate((x) => ((((x.l7 || {}).routes || [])[i]) || {}).requests)), cls: "num" }]));
  const pools = Object.entries(l7.pools || {}).sort(([a], [b]) => a.localeCompare(b));
  const cls = (p, k) => ((p.responses || {})[k]);
  fill($("l7-pools"), ["pool", "servers up", ["req/s", "num"], ["2xx/s", "num"], ["4xx/s", "num"], ["5xx/s", "num"], ["p99", "num"]],
    pools.map(([name, p]) => {
      const up = (p.servers || []).filter((s) => s.state === "active").length;
      const r = (k) => rate((x) => { const q = (((x.l7 || {}).pools || {})[name]) || {}; return k ? cls(q, k) : q.requests; });
      return [name, badge(up === 0 ? "down" : up < (p.servers || []).length ? "going down" : "up", `${up}/${(p.servers || []).length}`),
        { v: num(r(null)), cls: "num" }, { v: num(r("2xx")), cls: "num" }, { v: num(r("4xx")), cls: "num" },
        { v: num(r("5xx")), cls: "num" }, { v: p.p99_ms === undefined ? "-" : p.p99_ms + " ms", cls: "num" }];
    }));
  const rows = [], attrs = [];
  for (const [name, p] of pools) {
    for (const s of p.servers || []) {
      rows.push([name, s.address, badge(s.state), `${str(s.weight)}/${str(s.configured_weight)}`,
        { v: num(s.outstanding), cls: "num" }]);
      attrs.push({ cls: "row-" + stateClass(s.state), data: { server: `${name} ${s.address}`, state: s.state } });
    }
  }
  fill($("l7-servers"), ["pool", "server", "state", "weight", ["outstanding", "num"]], rows, (i) => attrs[i]);
}

function renderVrrp(d) {
  const v = d.vrrp;
  show("sec-vrrp", !!v);
  if (!v) return;
  const list = v.instances || [];
  fill($("vrrp"), ["instance", "interface", "VRID", "state", "priority", "master", "VIPs", "last transition", "at"],
    list.map((i) => [i.name, i.interface, i.vrid, badge(i.state),
      `${str(i.effective_priority)}/${str(i.priority)}`,
      i.state === "master" ? "this node" : str(i.master),
      (i.vips || []).join(", "),
      { v: i.last_transition ? `${i.last_transition.from} → ${i.last_transition.to}: ${i.last_transition.reason}` : "-", cls: "wrap" },
      clock(i.last_transition && i.last_transition.at_ms)]),
    (k) => ({ cls: "row-" + stateClass(list[k].state), data: { vrrp: list[k].name, state: list[k].state } }));
}

function renderOspf(d) {
  const o = d.ospf;
  show("sec-ospf", !!o);
  if (!o) return;
  const lsdb = o.lsdb || {};
  const types = Object.entries(lsdb.by_type || {}).map(([t, n]) => `${t} ${n}`).join(", ");
  $("ospf-summary").textContent = `router ID ${str(o.router_id)} · LSDB ${str(lsdb.total)} LSAs (${types || "none"})` +
    ((o.limits_reached || []).length ? ` · limits reached: ${o.limits_reached.join(", ")}` : "");
  const ifs = o.interfaces || [];
  fill($("ospf-interfaces"), ["interface", "address", "state", "DR", "BDR", ["neighbours", "num"]],
    ifs.map((i) => [i.name, i.address, badge(i.state), i.dr, i.bdr, { v: (i.neighbors || []).length, cls: "num" }]));
  const nbrs = ifs.flatMap((i) => (i.neighbors || []).map((n) => [i, n]));
  fill($("ospf-neighbors"), ["router ID", "address", "interface", "state", "priority", ["dead in", "num"], "DR", "BDR", "since", ["retransmit", "num"]],
    nbrs.map(([i, n]) => [n.router_id, n.address, i.name,
      badge(n.state === "2-way" ? "none" : n.state, n.state), n.priority,
      { v: n.dead_in_ms === undefined ? "-" : (n.dead_in_ms / 1000).toFixed(1) + " s", cls: "num" },
      n.dr, n.bdr, duration(n.since_secs), { v: n.retransmit_list, cls: "num" }]),
    (k) => ({ data: { neighbor: nbrs[k][1].router_id, state: nbrs[k][1].state } }));
  fill($("ospf-announced"), ["VIP", "as"],
    Object.entries(o.announced || {}).map(([vip, a]) => [vip,
      a.as === "external" ? `external type ${a.type2 ? 2 : 1}, metric ${a.metric}` : a.as ? `${a.as} /32, metric ${a.metric}` : str(a)]));
}

function renderBfd(d) {
  const b = d.bfd;
  show("sec-bfd", !!b);
  if (!b) return;
  const list = b.sessions || [];
  fill($("bfd"), ["peer", "interface", "state", "remote", "diag", ["tx ms", "num"], ["detect ms", "num"], "up for", "for"],
    list.map((s) => {
      const x = s.session || {};
      return [s.peer, s.interface, badge(x.state), str(x.remote_state), str(x.diag),
        { v: x.tx_interval_ms, cls: "num" }, { v: x.detect_time_ms, cls: "num" },
        x.up_for_ms === null || x.up_for_ms === undefined ? "-" : duration(x.up_for_ms / 1000),
        (s.clients || []).join(", ")];
    }),
    (k) => ({ data: { bfd: list[k].peer, state: (list[k].session || {}).state } }));
}

function renderBgp(d) {
  const b = d.bgp;
  show("sec-bgp", !!b);
  if (!b) return;
  $("bgp-summary").textContent = `AS ${str(b.asn)} · router ID ${str(b.router_id)} · announcing ${(b.announced || []).join(", ") || "nothing"}` +
    (b.drained ? " · drained" : "");
  const list = b.peers || [];
  fill($("bgp"), ["peer", "remote AS", "state", "up", ["prefixes sent", "num"], "last error"],
    list.map((p) => [p.address, p.remote_as, badge(p.state), duration(p.uptime_secs),
      { v: p.prefixes_advertised, cls: "num" }, { v: str(p.last_error), cls: "wrap" }]),
    (k) => ({ data: { bgp: list[k].address, state: list[k].state } }));
}

function renderLog(d) {
  const log = (d.node || {}).transitions || [];
  fill($("transitions"), ["time", "part", "object", "from", "to", "reason"],
    log.map((t) => [clock(t.at_ms), t.part, t.object, t.from ? badge(t.from) : "(new)",
      t.to ? badge(t.to) : "(removed)", { v: str(t.reason), cls: "wrap" }]));
}

function render(d) {
  renderNode(d);
  renderVips(d);
  renderL4(d);
  renderL7(d);
  renderVrrp(d);
  renderOspf(d);
  renderBfd(d);
  renderBgp(d);
  renderLog(d);
}

// ---- liveness --------------------------------------------------------------------------

function update(doc) {
  if (cur && cur.node && doc.node && doc.node.now_ms === cur.node.now_ms) return;
  prev = cur;
  cur = doc;
  lastUpdate = Date.now();
  $("updated").textContent = clock((doc.node && doc.node.now_ms) || lastUpdate);
  render(doc);
  connection();
}

function connection() {
  const c = $("conn");
  const stale = !lastUpdate || Date.now() - lastUpdate > STALE_MS;
  if (!lastUpdate) {
    c.textContent = "connecting";
    c.className = "conn conn-wait";
  } else if (stale) {
    c.textContent = "disconnected";
    c.className = "conn conn-lost";
  } else {
    c.textContent = source && source.readyState === EventSource.OPEN ? "live" : "live (polling)";
    c.className = "conn conn-live";
  }
  document.body.classList.toggle("disconnected", !!lastUpdate && stale);
}

function stream() {
  source = new EventSource("events");
  source.onmessage = (e) => {
    try { update(JSON.parse(e.data)); } catch (err) { /* a torn document: the next one comes */ }
  };
  source.onerror = () => {
    // EventSource retries by itself after a network error; a refusal (503) closes it.
    if (source.readyState === EventSource.CLOSED) setTimeout(stream, 5000);
  };
}

async function poll() {
  try {
    const r = await fetch("status", { cache: "no-store" });
    if (r.ok) update(await r.json());
  } catch (err) { /* the node is away: connection() says so */ }
}

function theme() {
  const modes = ["auto", "dark", "light"];
  let mode = localStorage.getItem("portier-theme") || "auto";
  const apply = () => {
    if (mode === "auto") delete document.documentElement.dataset.theme;
    else document.documentElement.dataset.theme = mode;
    $("theme").textContent = "theme: " + mode;
  };
  $("theme").addEventListener("click", () => {
    mode = modes[(modes.indexOf(mode) + 1) % modes.length];
    localStorage.setItem("portier-theme", mode);
    apply();
  });
  apply();
}

theme();
stream();
setInterval(() => {
  if (Date.now() - lastUpdate > POLL_AFTER_MS) poll();
  connection();
}, 1000);
