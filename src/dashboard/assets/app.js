// The call-router dashboard. Plain JavaScript, no framework, no build step.
// Everything the server sends is inserted as text (textContent, attributes),
// never as markup.
"use strict";

const OUTCOMES = [
  "connected", "location_voicemail", "location_busy", "location_no_answer", "after_hours",
  "caller_hung_up", "queue_timeout", "dial_failed", "not_in_service", "missed",
  "no_choice", "closed_while_waiting", "callback_connected", "callback_no_answer", "callback_canceled",
];
const OUTCOME_LABELS = {
  pending: "under way",
  connected: "connected",
  location_voicemail: "answering machine",
  location_busy: "busy",
  location_no_answer: "no answer",
  after_hours: "after hours",
  caller_hung_up: "caller hung up",
  queue_timeout: "queue timeout",
  dial_failed: "dial failed",
  not_in_service: "not in service",
  missed: "missed",
  no_choice: "no menu choice",
  closed_while_waiting: "closed while waiting",
  callback_connected: "called back",
  callback_no_answer: "callback unanswered",
  callback_canceled: "callback canceled",
};

const $ = (id) => document.getElementById(id);

// el("td", {class: "x", data: {sid: "…"}}, "text", child…)
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined) continue;
    if (k === "class") e.className = v;
    else if (k === "data") for (const [dk, dv] of Object.entries(v)) e.dataset[dk] = String(dv);
    else e.setAttribute(k, String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = String(text);
  return e;
}

function label(outcome) {
  return OUTCOME_LABELS[outcome] || String(outcome).replaceAll("_", " ");
}

function clock(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

function duration(secs) {
  if (secs === null || secs === undefined) return "–";
  const s = Math.max(0, Math.round(Number(secs)));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${String(s % 60).padStart(2, "0")} s`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, "0")} min`;
}

// ---- the live board ------------------------------------------------------

let board = null;
let boardAt = 0;

function renderBoard() {
  const root = $("board");
  const locations = (board && board.locations) || [];
  if (locations.length === 0) {
    root.replaceChildren(el("p", { class: "empty" }, "No locations."));
    return;
  }
  const since = Math.floor((Date.now() - boardAt) / 1000);
  root.replaceChildren(...locations.map((loc) => {
    const waiting = Number(loc.waiting) || 0;
    let longest = loc.longest_wait_secs;
    if (waiting > 0 && longest !== null && longest !== undefined) longest = Number(longest) + since;
    const today = loc.today || {};
    const open = Boolean(loc.open);
    const change = loc.next_change ? `${open ? "closes" : "opens"} ${clock(loc.next_change)}` : "";
    return el("article", { class: `loc ${open ? "open" : "closed"}${waiting > 0 ? " busy" : ""}`, data: { location: loc.name, open } },
      el("header", {},
        el("h3", {}, loc.display_name || loc.name),
        el("span", { class: "badge", data: { stat: "open" } }, open ? "open" : "closed")),
      el("p", { class: "sub" }, change),
      el("p", { class: "sub", data: { stat: "phones" } }, (Array.isArray(loc.phones) ? loc.phones : []).join(" → ")),
      el("dl", { class: "stats" },
        stat("Waiting", "waiting", waiting),
        stat("Longest wait", "longest", waiting > 0 ? duration(longest) : "–"),
        stat("Lines in use", "lines", `${Number(loc.lines_in_use) || 0} / ${Number(loc.lines) || 0}`),
        stat("Connected today", "connected", Number(today.connected) || 0)));
  }));
}

function stat(name, key, value) {
  return el("div", { class: "stat" }, el("dt", {}, name), el("dd", { data: { stat: key } }, value));
}

// ---- today's outcomes, as stacked bars ------------------------------------

function renderChart() {
  const locations = (board && board.locations) || [];
  const rows = locations.map((loc) => {
    const today = loc.today || {};
    const counts = OUTCOMES.map((o) => [o, Number(today[o]) || 0]);
    for (const [o, n] of Object.entries(today)) {
      if (!OUTCOMES.includes(o) && o !== "pending") counts.push([o, Number(n) || 0]);
    }
    return { loc, counts, total: counts.reduce((a, [, n]) => a + n, 0) };
  });
  const max = Math.max(1, ...rows.map((r) => r.total));
  const rowH = 28, labelW = 110, numW = 40, width = 600;
  const barW = width - labelW - numW;
  const chart = svg("svg", {
    viewBox: `0 0 ${width} ${Math.max(1, rows.length) * rowH}`,
    role: "img",
    "aria-label": "Today's finished calls per location, by outcome",
    preserveAspectRatio: "xMinYMin meet",
  });
  rows.forEach((r, i) => {
    const y = i * rowH;
    const g = svg("g", { "data-location": r.loc.name });
    g.append(svg("text", { x: 0, y: y + 18, class: "chart-label" }, r.loc.display_name || r.loc.name));
    let x = labelW;
    for (const [o, n] of r.counts) {
      if (n === 0) continue;
      const w = (n / max) * barW;
      const rect = svg("rect", { x, y: y + 4, width: Math.max(w, 1), height: rowH - 8, class: `seg o-${o}`, "data-outcome": o });
      rect.append(svg("title", {}, `${label(o)}: ${n}`));
      g.append(rect);
      x += w;
    }
    g.append(svg("text", { x: x + 6, y: y + 18, class: "chart-num" }, r.total));
    chart.append(g);
  });
  $("chart").replaceChildren(rows.length ? chart : el("p", { class: "empty" }, "No calls yet today."));
  const seen = new Set(rows.flatMap((r) => r.counts.filter(([, n]) => n > 0).map(([o]) => o)));
  $("legend").replaceChildren(...[...seen].map((o) =>
    el("li", {}, el("span", { class: `swatch o-${o}` }), label(o))));
}

// ---- recent calls and the drill-down --------------------------------------

function renderCalls(body) {
  const tbody = $("calls").tBodies[0];
  const calls = (body && body.calls) || [];
  if (calls.length === 0) {
    tbody.replaceChildren(el("tr", {}, el("td", { colspan: 5, class: "empty" }, "No calls yet.")));
    return;
  }
  tbody.replaceChildren(...calls.map((c) => {
    const tr = el("tr", { tabindex: 0, class: "call", data: { sid: c.call_sid, outcome: c.outcome } },
      el("td", {}, clock(c.started_at)),
      el("td", {}, c.caller || "–"),
      el("td", {}, c.location || "–"),
      el("td", {}, el("span", { class: `pill o-${c.outcome}` }, label(c.outcome)), c.has_voicemail ? " ✉" : null),
      el("td", {}, duration(c.wait_secs)));
    tr.addEventListener("click", () => openCall(c.call_sid));
    tr.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); openCall(c.call_sid); } });
    return tr;
  }));
}

async function openCall(sid) {
  const dialog = $("detail");
  $("detail-title").textContent = `Call ${sid}`;
  $("detail-facts").replaceChildren();
  $("timeline").replaceChildren(el("li", { class: "empty" }, "Loading…"));
  if (!dialog.open) dialog.showModal();
  try {
    const c = await getJson(`/api/calls/${encodeURIComponent(sid)}`);
    const facts = [
      ["Caller", c.caller], ["Dialled", c.to], ["Location", c.location], ["Outcome", label(c.outcome)],
      ["Started", clock(c.started_at)], ["Ended", clock(c.ended_at)], ["Wait", duration(c.wait_secs)],
      ["Answered by", c.answered_by], ["Task", c.task_sid],
    ];
    $("detail-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v ?? "–")]));
    const entries = c.timeline || [];
    $("timeline").replaceChildren(...(entries.length ? entries.map((t) => el("li", { data: { source: t.source } },
      el("time", { datetime: t.at }, clock(t.at)),
      el("span", { class: "source" }, t.source),
      el("strong", {}, t.kind),
      t.detail && Object.keys(t.detail).length ? el("code", {}, summary(t.detail)) : null))
      : [el("li", { class: "empty" }, "No timeline recorded.")]));
  } catch (e) {
    $("timeline").replaceChildren(el("li", { class: "error" }, `Could not load the call: ${e.message}`));
  }
}

function summary(detail) {
  const text = Object.entries(detail).map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join(" ");
  return text.length > 300 ? `${text.slice(0, 300)}…` : text;
}

// ---- voicemails -------------------------------------------------------------

// The stream's `voicemails` event carries the list; one that comes while a
// message plays waits until the player stops.
let vmWaiting = null;

function renderVoicemails(body) {
  const list = $("voicemails");
  const playing = [...list.querySelectorAll("audio")].find((a) => !a.paused);
  if (playing) {
    if (!vmWaiting) {
      const stopped = () => { const b = vmWaiting; vmWaiting = null; if (b) renderVoicemails(b); };
      playing.addEventListener("pause", stopped, { once: true });
    }
    vmWaiting = body;
    return;
  }
  const items = body.voicemails || [];
  if (items.length === 0) {
    list.replaceChildren(el("li", { class: "empty" }, "No voicemails."));
    return;
  }
  list.replaceChildren(...items.map((v) => v.kind === "callback_request" ? callbackRequest(v) : voicemailItem(v)));
}

// A callback that ended at closing time: whom to call back, waiting since
// when. "Called back" marks it done (as listening marks a voicemail).
function callbackRequest(v) {
  const li = el("li", { class: `vm callback-request${v.listened ? " listened" : ""}`, data: { recording: v.recording_sid, call: v.call_sid } },
    el("div", { class: "vm-head" },
      el("strong", {}, `Call back ${v.caller || "unknown caller"}`),
      el("span", {}, v.location ? ` for ${v.location}` : ""),
      el("span", { class: "muted" }, ` · waiting since ${clock(v.waiting_since || v.recorded_at)} · not reached before closing`),
      el("span", { class: "badge", data: { stat: "listened" } }, v.listened ? "done" : "new")));
  if (!v.listened) {
    const done = el("button", { type: "button" }, "Called back");
    done.addEventListener("click", () => markListened(v, li, "done").then(() => { if (v.listened) done.remove(); }));
    li.append(done);
  }
  li.append(timelineButton(v));
  return li;
}

function voicemailItem(v) {
  const li = el("li", { class: `vm${v.listened ? " listened" : ""}`, data: { recording: v.recording_sid, call: v.call_sid } },
    el("div", { class: "vm-head" },
      el("strong", {}, v.caller || "unknown caller"),
      el("span", {}, v.location ? ` for ${v.location}` : ""),
      el("span", { class: "muted" }, ` · ${clock(v.recorded_at)} · ${duration(v.duration_secs)}`),
      el("span", { class: "badge", data: { stat: "listened" } }, v.listened ? "listened" : "new")),
    v.transcription ? el("p", { class: "transcription" }, v.transcription) : null);
  const audio = el("audio", { controls: "", preload: "none" });
  // Only the server's own audio route: the page never sees the recording's address.
  if (typeof v.audio_url === "string" && v.audio_url.startsWith("/api/")) audio.src = v.audio_url;
  audio.addEventListener("play", () => markListened(v, li), { once: true });
  li.append(audio, timelineButton(v));
  return li;
}

function timelineButton(v) {
  const open = el("button", { type: "button", class: "quiet" }, "Call timeline");
  open.addEventListener("click", () => openCall(v.call_sid));
  return open;
}

async function markListened(v, li, word = "listened") {
  if (v.listened) return;
  const r = await fetch(`/api/voicemails/${encodeURIComponent(v.recording_sid)}/listened`, { method: "POST", credentials: "same-origin" });
  if (r.ok) {
    v.listened = true;
    li.classList.add("listened");
    const badge = li.querySelector("[data-stat=listened]");
    if (badge) badge.textContent = word;
  }
}

// ---- plumbing ---------------------------------------------------------------

async function getJson(url) {
  const r = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (r.status === 401) {
    location.reload(); // the session is gone: the server shows the login form
  }
  if (!r.ok) {
    let reason = `HTTP ${r.status}`;
    try { reason = (await r.json()).error || reason; } catch (_) { /* not JSON */ }
    const e = new Error(reason);
    e.status = r.status;
    throw e;
  }
  return r.json();
}

function setLive(state, text) {
  const live = $("live");
  live.dataset.state = state;
  live.textContent = text;
}

function connect() {
  const source = new EventSource("/api/stream");
  source.addEventListener("open", () => setLive("live", "live"));
  source.addEventListener("board", (e) => {
    board = JSON.parse(e.data);
    boardAt = Date.now();
    renderBoard();
    renderChart();
  });
  source.addEventListener("calls", (e) => renderCalls(JSON.parse(e.data)));
  source.addEventListener("voicemails", (e) => renderVoicemails(JSON.parse(e.data)));
  source.addEventListener("error", async () => {
    setLive("down", "reconnecting…");
    // EventSource retries by itself; a lost session needs the login form.
    try {
      const r = await fetch("/api/locations", { credentials: "same-origin" });
      if (r.status === 401) location.reload();
    } catch (_) { /* the server is down: keep retrying */ }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  $("detail-close").addEventListener("click", () => $("detail").close());
  connect();
  setInterval(() => { if (board) renderBoard(); }, 1000);
});
