// The mail flow dashboard: a page per route (#/overview, #/trace?…, #/queue), all data
// from the JSON API under /api/. No framework, no build step. Text from the server is
// only ever set as text (textContent), never as markup.
"use strict";

let csrf = "";

const main = () => document.getElementById("main");

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

async function api(path, options) {
  const o = Object.assign({ headers: {} }, options || {});
  if (o.method && o.method !== "GET") o.headers["X-CSRF-Token"] = csrf;
  const r = await fetch(path, o);
  if (r.status === 401) {
    location.href = "/login";
    throw new Error("login required");
  }
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

function time(ms) {
  if (ms === null || ms === undefined) return "";
  return new Date(ms).toISOString().replace("T", " ").slice(0, 19) + "Z";
}

function age(secs) {
  const d = Math.floor(secs / 86400), h = Math.floor(secs / 3600) % 24, m = Math.floor(secs / 60) % 60;
  if (d > 0) return `${d}d ${h}h`;
  if (h > 0) return `${h}h ${m}m`;
  if (m > 0) return `${m}m`;
  return `${secs}s`;
}

function status(s) {
  return el("span", { class: `status ${s}` }, s);
}

function showError(e) {
  main().replaceChildren(el("p", { class: "error", role: "alert" }, String(e.message || e)));
}

// The alert banner: shown on every page while the queue alert is raised.
async function refreshAlert() {
  const banner = document.getElementById("alert");
  try {
    const o = await api("/api/overview");
    if (o.alert.active) {
      banner.textContent = `Queue alert: ${o.queue.messages} messages queued (alert at ${o.alert.threshold}); ${o.queue.over_hour} over one hour.`;
      banner.hidden = false;
    } else {
      banner.hidden = true;
    }
    return o;
  } catch (e) {
    return null;
  }
}

// ---- Overview ----

async function overview() {
  const o = await refreshAlert();
  if (!o) throw new Error("cannot read the overview");
  const card = (n, label, id) => el("div", { class: "card", id }, el("div", { class: "n" }, n), el("div", { class: "l" }, label));
  const counts = (t, prefix) => el("div", { class: "cards" },
    ["received", "delivered", "deferred", "failed", "refused"].map(k => card(t[k], k, `${prefix}-${k}`)));
  const q = o.queue;
  const parts = [
    el("h2", {}, "Queue"),
    el("div", { class: "cards" },
      card(q.messages, "queued", "queue-messages"), card(q.held, "on hold", "queue-held"),
      card(q.over_hour, "over one hour", "queue-over-hour"), card(q.in_flight, "being delivered", "queue-in-flight"),
      card(q.oldest_age_secs === null ? "–" : age(q.oldest_age_secs), "oldest", "queue-oldest"),
      card(o.alert.active ? "raised" : "clear", `alert at ${o.alert.threshold}`, "queue-alert")),
  ];
  if (q.destinations.length) {
    parts.push(table(["Destination", "Messages", "Last reply"], q.destinations.map(d => [d.domain, d.messages, d.last_error || ""])));
  }
  if (!o.trace) {
    parts.push(el("p", { class: "muted" }, "The message trace is off: no counts."));
  } else {
    parts.push(el("h2", {}, "Last hour"), counts(o.last_hour, "hour"));
    parts.push(el("h2", {}, "Last 24 hours"), counts(o.last_day, "day"));
    parts.push(chart(o.hours));
  }
  main().replaceChildren(...parts);
}

function chart(hours) {
  const kinds = ["received", "delivered", "deferred", "failed", "refused"];
  const colours = { received: "#7aa2f7", delivered: "#137333", deferred: "#b06000", failed: "#b3261e", refused: "#444" };
  const W = 960, H = 200, pad = 28, slot = (W - pad) / hours.length, bw = slot / (kinds.length + 1);
  const max = Math.max(1, ...hours.flatMap(h => kinds.map(k => h[k])));
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("id", "chart");
  svg.setAttribute("viewBox", `0 0 ${W} ${H + 20}`);
  svg.setAttribute("width", "100%");
  const add = (tag, attrs, text) => {
    const e = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    svg.append(e);
  };
  add("text", { x: 2, y: 12, "font-size": 10 }, String(max));
  hours.forEach((h, i) => {
    kinds.forEach((k, j) => {
      const v = h[k], bh = (v / max) * (H - 20);
      add("rect", { x: pad + i * slot + j * bw, y: H - bh, width: Math.max(1, bw - 1), height: bh, fill: colours[k] }, undefined);
    });
    if (i % 3 === 0) add("text", { x: pad + i * slot, y: H + 14, "font-size": 10 }, new Date(h.start).toISOString().slice(11, 16));
  });
  const legend = el("div", { class: "legend" }, kinds.map(k => el("span", {}, el("span", { class: `sw ${k}` }), k)));
  return el("div", {}, el("h2", {}, "Hour by hour (UTC)"), legend, svg);
}

function table(head, rows) {
  return el("table", {}, el("thead", {}, el("tr", {}, head.map(h => el("th", {}, h)))),
    el("tbody", {}, rows.map(r => el("tr", {}, r.map(c => el("td", {}, c))))));
}

// ---- Message trace ----

const FIELDS = ["sender", "recipient", "subject", "message_id", "queue_id", "status", "since", "until", "limit"];
const RANGES = { "1h": "Last hour", "1d": "Last day", "10d": "Last 10 days", custom: "Custom" };

async function trace(params) {
  const form = el("form", { class: "search", id: "trace-form" });
  const input = (name, label, type) => el("label", {}, label,
    el("input", { name, id: `f-${name}`, type: type || "text", value: params.get(name) || "" }));
  const range = params.get("range") || (params.get("since") ? "custom" : "1d");
  const statusSel = el("select", { name: "status", id: "f-status" }, el("option", { value: "" }, "any"),
    ["delivered", "deferred", "failed", "expired", "refused", "bounced", "held", "released", "deleted"]
      .map(s => el("option", { value: s, selected: params.get("status") === s }, s)));
  const rangeSel = el("select", { name: "range", id: "f-range" },
    Object.entries(RANGES).map(([v, l]) => el("option", { value: v, selected: v === range }, l)));
  form.append(input("sender", "Sender"), input("recipient", "Recipient"), input("subject", "Subject"),
    input("message_id", "Message-ID"), el("label", {}, "Status", statusSel), el("label", {}, "Time", rangeSel),
    input("since", "From (RFC 3339)"), input("until", "To (RFC 3339)"),
    el("label", {}, "Rows", el("input", { name: "limit", id: "f-limit", type: "number", min: 1, max: 10000, value: params.get("limit") || "1000" })),
    el("button", { type: "submit", class: "primary", id: "search" }, "Search"));
  form.addEventListener("submit", ev => {
    ev.preventDefault();
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v) q.set(k, v);
    location.hash = "#/trace?" + q.toString();
  });
  const results = el("div", { id: "results" });
  const details = el("div", { id: "details" });
  main().replaceChildren(el("h2", {}, "Message trace"), form, results, details);
  if (![...params.keys()].length) return;

  const q = new URLSearchParams();
  for (const f of FIELDS) if (params.get(f)) q.set(f, params.get(f));
  if (range !== "custom") q.set("since", range);
  const started = performance.now();
  const r = await api("/api/trace?" + q.toString());
  const took = Math.round(performance.now() - started);
  const rows = r.rows;
  const key = row => `${row.queue_id || ""}/${row.recipient || row.original_recipient || ""}`;
  const selected = new Set();
  const exportSelected = el("button", { type: "button", id: "export-selected", disabled: true, onclick: () => {
    const s = new URLSearchParams(q);
    s.set("rows", [...selected].join(","));
    location.href = "/api/trace.csv?" + s.toString();
  } }, "Export selected (CSV)");
  const toolbar = el("div", { class: "toolbar" },
    el("span", { id: "result-count" }, `${rows.length} rows${r.limited ? " (limit reached)" : ""} in ${took} ms`),
    el("a", { href: "/api/trace.csv?" + q.toString(), id: "export-all", download: "message-trace.csv" }, "Export all (CSV)"),
    exportSelected);
  const columns = [
    ["time", "Received", row => time(row.time)],
    ["status", "Status", row => status(row.status + (row.bounce ? "" : ""))],
    ["sender", "Sender", row => row.sender || "<>"],
    ["original_recipient", "Recipient", row => row.original_recipient + (row.recipient && row.recipient !== row.original_recipient ? ` → ${row.recipient}` : "")],
    ["subject", "Subject", row => row.subject || ""],
    ["queue_id", "Queue id", row => row.queue_id || ""],
  ];
  let sortBy = "time", desc = true;
  const tbody = el("tbody");
  const head = el("tr", {}, el("th", {}, ""), columns.map(([k, label]) => el("th", { "data-key": k, onclick: () => {
    desc = sortBy === k ? !desc : false;
    sortBy = k;
    draw();
  } }, label)));
  function draw() {
    const sorted = rows.slice().sort((a, b) => {
      const x = a[sortBy] ?? "", y = b[sortBy] ?? "";
      return (x < y ? -1 : x > y ? 1 : 0) * (desc ? -1 : 1);
    });
    for (const th of head.querySelectorAll("th[data-key]")) {
      th.className = th.dataset.key === sortBy ? (desc ? "sorted-desc" : "sorted-asc") : "";
    }
    tbody.replaceChildren(...sorted.map(row => {
      const box = el("input", { type: "checkbox", checked: selected.has(key(row)), onclick: ev => {
        ev.stopPropagation();
        if (ev.target.checked) selected.add(key(row)); else selected.delete(key(row));
        exportSelected.disabled = selected.size === 0;
      } });
      return el("tr", { class: "row", "data-queue-id": row.queue_id || "", onclick: () => showMessage(row, details) },
        el("td", {}, box), columns.map(([k, , f]) => el("td", { class: k === "subject" ? "" : "addr" }, f(row))));
    }));
  }
  draw();
  results.replaceChildren(toolbar, el("table", { id: "trace-table" }, el("thead", {}, head), tbody));
}

async function showMessage(row, details) {
  const id = row.queue_id || row.message_id;
  if (!id) return;
  details.replaceChildren(el("p", { class: "muted" }, "Loading…"));
  const r = await api("/api/message/" + encodeURIComponent(id));
  const byQueue = new Map();
  for (const e of r.events) {
    const k = e.queue_id || "(none)";
    if (!byQueue.has(k)) byQueue.set(k, []);
    byQueue.get(k).push(e);
  }
  const field = (name, v) => v === null || v === undefined || v === "" ? [] : [el("dt", {}, name), el("dd", {}, typeof v === "object" ? JSON.stringify(v) : v)];
  const parts = [el("h2", {}, `Message ${id}`)];
  for (const [q, events] of byQueue) {
    parts.push(el("h3", {}, q === row.queue_id ? `Queue id ${q}` : `Related (same Message-ID): ${q}`));
    for (const e of events) {
      parts.push(el("div", { class: "event" },
        el("div", {}, el("strong", {}, time(e.time)), " ", status(e.kind)),
        el("dl", {}, field("Message-ID", e.message_id), field("Subject", e.subject), field("Sender", e.sender),
          field("Left with (SRS)", e.srs_sender), field("Recipient as given", e.original_recipient),
          field("Recipient", e.recipient), field("Next hop / client", e.remote), field("Reply", e.reply),
          field("TLS", e.tls), field("Attempt", e.attempt), field("Size", e.size), field("Detail", e.detail)),
        e.advice ? el("div", { class: "advice" }, "What to do: ", e.advice) : null));
    }
  }
  details.replaceChildren(el("div", { class: "details", id: "message-details" }, parts));
  details.scrollIntoView({ behavior: "smooth", block: "start" });
}

// ---- Queue ----

async function queue() {
  refreshAlert();
  const r = await api("/api/queue");
  const now = r.now;
  const selected = new Set();
  const result = el("div", { id: "action-result", role: "status" });
  const act = (action, label, cls) => el("button", { type: "button", id: `queue-${action}`, class: cls, onclick: async () => {
    if (!selected.size) return;
    if (!confirm(`${label}: ${selected.size} message(s)?`)) return;
    try {
      const res = await api(`/api/queue/${action}`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ ids: [...selected] }) });
      await queue();
      document.getElementById("action-result").textContent = res.results.map(x => `${x.id}: ${x.outcome}${x.detail ? " (" + x.detail + ")" : ""}`).join("; ");
    } catch (e) {
      result.textContent = "Failed: " + e.message;
    }
  } }, label);
  const byDest = new Map();
  for (const e of r.entries) {
    for (const rc of e.recipients.filter(x => x.state === "pending")) {
      const d = rc.address.split("@").pop().toLowerCase();
      byDest.set(d, (byDest.get(d) || 0) + 1);
    }
  }
  const rows = r.entries.map(e => {
    const pending = e.recipients.filter(x => x.state === "pending");
    const last = pending.map(x => x.last_error).filter(Boolean)[0] || "";
    const old = now - e.arrival > 3600;
    const box = el("input", { type: "checkbox", "data-id": e.id, onclick: ev => {
      if (ev.target.checked) selected.add(e.id); else selected.delete(e.id);
    } });
    return el("tr", { class: old ? "old" : "", "data-queue-id": e.id },
      el("td", {}, box), el("td", { class: "addr" }, e.id), el("td", {}, status(e.state)),
      el("td", {}, age(Math.max(0, now - e.arrival))), el("td", { class: "addr" }, e.original_sender || "<>"),
      el("td", { class: "addr" }, e.sender || "<>"), el("td", { class: "addr" }, pending.map(x => x.address).join(", ")),
      el("td", {}, e.attempts), el("td", {}, e.state === "held" ? "on hold" : e.next_attempt <= now ? "due" : "in " + age(e.next_attempt - now)),
      el("td", {}, last));
  });
  main().replaceChildren(
    el("h2", {}, `Queue: ${r.entries.length} messages`),
    byDest.size ? table(["Destination", "Recipients pending"], [...byDest].sort((a, b) => b[1] - a[1])) : el("p", { class: "muted" }, "The queue is empty."),
    el("div", { class: "toolbar" }, act("retry", "Retry now"), act("hold", "Hold"), act("release", "Release"),
      act("delete", "Delete", "danger"), act("bounce", "Return to sender", "danger"),
      el("button", { type: "button", id: "queue-refresh", onclick: () => queue() }, "Refresh"), result),
    el("table", { id: "queue-table" },
      el("thead", {}, el("tr", {}, ["", "Queue id", "State", "Age", "Sender", "Sent as", "Pending recipients", "Attempts", "Next attempt", "Last reply"].map(h => el("th", {}, h)))),
      el("tbody", {}, rows)),
    el("p", { class: "muted" }, "Rows over one hour old are highlighted."));
}

// ---- Reports ----

async function reports(params) {
  const days = params.get("days") || "10";
  const r = await api("/api/reports?days=" + encodeURIComponent(days));
  const daySel = el("select", { id: "report-days", onchange: ev => { location.hash = "#/reports?days=" + ev.target.value; } },
    ["1", "10", "30", "90"].map(d => el("option", { value: d, selected: d === days }, `Last ${d} day${d === "1" ? "" : "s"}`)));
  const dayHead = r.days.map(d => new Date(d).toISOString().slice(5, 10));
  const sum = a => a.reduce((x, y) => x + y, 0);
  // One row per name: its count each day, then the total.
  const perDay = (id, first, series) => {
    const names = Object.keys(series);
    if (!names.length) return el("p", { class: "muted", id }, "Nothing in this period.");
    return el("table", { id }, el("thead", {}, el("tr", {}, el("th", {}, first), dayHead.map(d => el("th", {}, d)), el("th", {}, "Total"))),
      el("tbody", {}, names.map(n => el("tr", {}, el("td", { class: "addr" }, n), series[n].map(v => el("td", {}, v)), el("td", {}, sum(series[n]))))));
  };
  const fwd = r.forwarding.length
    ? el("table", { id: "report-forwarding" },
      el("thead", {}, el("tr", {}, ["Alias (recipient as given)", "Messages", "Bounces back", "Messages per day"].map(h => el("th", {}, h)))),
      el("tbody", {}, r.forwarding.map(f => el("tr", {}, el("td", { class: "addr" }, f.alias), el("td", {}, f.total),
        el("td", {}, f.bounces_total), el("td", {}, f.messages.join(" "))))))
    : el("p", { class: "muted", id: "report-forwarding" }, "Nothing in this period.");
  const srs = Object.assign({ "bounces reversed": r.srs.reversed }, Object.fromEntries(Object.entries(r.srs.refused).map(([k, v]) => [`refused: ${k.replace("_", " ")}`, v])));
  main().replaceChildren(
    el("h2", {}, "Reports"), el("div", { class: "toolbar" }, daySel),
    el("h2", {}, "Forwarding"), fwd,
    el("h2", {}, "SRS: bounces reversed and refused"), perDay("report-srs", "", srs),
    el("h2", {}, "TLS: inbound connections"), perDay("report-tls-in", "Version", r.tls.inbound_connections),
    el("h2", {}, "TLS: outbound deliveries (per recipient and attempt)"), perDay("report-tls-out", "Version", r.tls.outbound_deliveries),
    el("h2", {}, "Mail loops: messages refused, and the hosts in their Received chains"),
    perDay("report-loops", "", Object.assign({ "loops refused": r.loops.messages }, r.loops.hosts)));
}

// ---- Explain ----

function explainPage(params) {
  const input = el("input", { id: "explain-address", name: "address", type: "text", size: 80,
    placeholder: "john+SRS=…@forward.example or SRS0=…", value: params.get("address") || "" });
  const result = el("div", { id: "explain-result" });
  const form = el("form", { class: "search", id: "explain-form" }, el("label", {}, "SRS address", input),
    el("button", { type: "submit", class: "primary", id: "explain" }, "Explain"));
  form.addEventListener("submit", async ev => {
    ev.preventDefault();
    history.replaceState(null, "", "#/explain?" + new URLSearchParams({ address: input.value }).toString());
    result.replaceChildren(el("p", { class: "muted" }, "…"));
    try {
      const r = await api("/api/explain", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ address: input.value }) });
      result.replaceChildren(
        el("p", { id: "explain-verdict", class: r.accepted ? "" : "error" },
          r.accepted ? `A bounce to this address goes to ${r.goes_to}.` : `Refused: ${r.reason}`),
        el("pre", { id: "explain-text" }, r.text));
    } catch (e) {
      result.replaceChildren(el("p", { class: "error" }, e.message));
    }
  });
  main().replaceChildren(el("h2", {}, "Explain an SRS address"),
    el("p", { class: "muted" }, "What srs-relay explain says: each hop, whether its hash verifies and under which secret (by line), its age, and where a bounce goes or why it is refused."),
    form, result);
  if (input.value) form.requestSubmit();
}

// ---- Routing ----

async function route() {
  const [path, query] = (location.hash.slice(1) || "/overview").split("?");
  const page = path.replace(/^\//, "") || "overview";
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("current", a.id === `nav-${page}`);
  try {
    if (page === "trace") await trace(new URLSearchParams(query || ""));
    else if (page === "queue") await queue();
    else if (page === "reports") await reports(new URLSearchParams(query || ""));
    else if (page === "explain") explainPage(new URLSearchParams(query || ""));
    else await overview();
  } catch (e) {
    showError(e);
  }
}

async function start() {
  const s = await api("/api/session");
  csrf = s.csrf;
  document.getElementById("logout").addEventListener("click", async () => {
    await fetch("/logout", { method: "POST", headers: { "X-CSRF-Token": csrf } });
    location.href = "/login";
  });
  window.addEventListener("hashchange", route);
  await route();
  setInterval(refreshAlert, 30000);
}

start().catch(showError);
