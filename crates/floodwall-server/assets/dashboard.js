// The floodwall dashboard: polls /v1/dashboard once a second while the page is visible and
// draws what it answers. Every key shown comes from clients, so text is only ever set as text.
"use strict";

const POLL_MS = 1000;
const HISTORY = 300; // seconds of chart
const history = []; // per poll, oldest first: Map of policy name to {allowed, denied, shadow}
let previous = null; // the last snapshot's totals and time
let timer = null;

const $ = (selector) => document.querySelector(selector);

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function button(parent, label, className, action) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.className = className;
  b.addEventListener("click", action);
  parent.appendChild(b);
}

function fill(table, rows, build) {
  const body = $(table + " tbody");
  const fresh = document.createElement("tbody");
  for (const row of rows) {
    const tr = document.createElement("tr");
    build(tr, row);
    fresh.appendChild(tr);
  }
  body.replaceWith(fresh);
}

function segment(text) {
  return encodeURIComponent(text);
}

function say(text) {
  $("#status").textContent = text;
}

async function act(method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  if (!response.ok) {
    let detail = text;
    try { detail = JSON.parse(text).detail || text; } catch (_) { /* not JSON */ }
    throw new Error(response.status + ": " + detail);
  }
  return text ? JSON.parse(text) : null;
}

function perSecond(policy, outcome, elapsed) {
  if (!previous || !previous.totals[policy.name]) return 0;
  const before = previous.totals[policy.name][outcome] || 0;
  const now = (policy.decisions || {})[outcome] || 0;
  return Math.max(0, now - before) / elapsed;
}

function formatRate(value) {
  return value >= 100 ? Math.round(value).toString() : value.toFixed(1);
}

function formatDuration(ms) {
  const s = Math.ceil(ms / 1000);
  if (s < 120) return s + " s";
  if (s < 7200) return Math.ceil(s / 60) + " min";
  return Math.ceil(s / 3600) + " h";
}

/** The chart's points: the chosen policy's rates, or every policy's summed. */
function series() {
  const chosen = $("#chart-policy").value;
  return history.map((rates) => {
    const point = { allowed: 0, denied: 0, shadow: 0 };
    for (const [name, rate] of rates) {
      if (chosen && name !== chosen) continue;
      point.allowed += rate.allowed;
      point.denied += rate.denied;
      point.shadow += rate.shadow;
    }
    return point;
  });
}

function drawChart() {
  const width = 600, height = 180;
  const points = series();
  const latest = points[points.length - 1] ?? { allowed: 0, denied: 0, shadow: 0 };
  $("#rate-allowed").textContent = formatRate(latest.allowed);
  $("#rate-denied").textContent = formatRate(latest.denied);
  $("#rate-shadow").textContent = formatRate(latest.shadow);
  const top = Math.max(1, ...points.map((p) => Math.max(p.allowed, p.denied, p.shadow)));
  const x = (i) => (width * (HISTORY - history.length + i)) / (HISTORY - 1);
  const y = (v) => height - 4 - ((height - 8) * v) / top;
  for (const name of ["allowed", "denied", "shadow"]) {
    const line = points.map((p, i) => x(i).toFixed(1) + "," + y(p[name]).toFixed(1));
    $("#chart polyline." + name).setAttribute("points", line.join(" "));
  }
  const grid = $("#grid");
  grid.replaceChildren();
  for (const fraction of [0.25, 0.5, 0.75]) {
    const line = document.createElementNS("http://www.w3.org/2000/svg", "line");
    line.setAttribute("x1", "0");
    line.setAttribute("x2", String(width));
    line.setAttribute("y1", String(y(top * fraction)));
    line.setAttribute("y2", String(y(top * fraction)));
    grid.appendChild(line);
  }
  $("#chart-max").textContent = "top: " + formatRate(top) + "/s";
}

function showStore(store, lists) {
  let text = store.url + " · ";
  if (store.kind === "memory") {
    text += store.keys.toLocaleString("en-US") + " of " + store.max_keys.toLocaleString("en-US") + " keys";
    if (store.evicted) text += " · " + store.evicted + " evicted";
  } else if (store.kind === "redis") {
    text += store.open_breakers
      ? store.open_breakers + " of " + store.breakers + " breakers OPEN"
      : "all " + store.breakers + " breakers closed";
    if (store.master) {
      // Behind Sentinel: the master in use, and when it last changed.
      text += " · master " + (store.master.address || "not found yet");
      if (store.master.changes > 1) {
        text += " since " + new Date(store.master.changed_at_unix_ms).toISOString();
      }
    }
  }
  const fallbacks = store.fail_open + store.fail_closed + store.local;
  text += " · " + fallbacks + " answers without the store";
  text += " · " + lists + " list entries";
  $("#store").textContent = text;
}

function render(snapshot) {
  const elapsed = previous ? Math.max(0.001, (snapshot.now_ms - previous.at) / 1000) : 1;
  const rates = new Map();
  for (const policy of snapshot.policies) {
    rates.set(policy.name, {
      allowed: perSecond(policy, "allowed", elapsed),
      denied: perSecond(policy, "denied", elapsed),
      shadow: perSecond(policy, "shadow_denied", elapsed),
    });
  }
  if (previous) {
    history.push(rates);
    if (history.length > HISTORY) history.shift();
  }
  previous = {
    at: snapshot.now_ms,
    totals: Object.fromEntries(snapshot.policies.map((p) => [p.name, p.decisions || {}])),
  };
  const chooser = $("#chart-policy");
  const known = new Set([...chooser.options].map((o) => o.value));
  for (const policy of snapshot.policies) {
    if (!known.has(policy.name)) chooser.appendChild(new Option(policy.name, policy.name));
  }
  drawChart();
  showStore(snapshot.store, snapshot.lists);

  fill("#policies", snapshot.policies, (tr, policy) => {
    const rate = rates.get(policy.name);
    const d = policy.decisions || {};
    cell(tr, policy.name);
    cell(tr, policy.algorithm);
    cell(tr, policy.limit + " / " + formatDuration(policy.period_ms));
    cell(tr, policy.mode);
    cell(tr, formatRate(rate.allowed), "number");
    cell(tr, formatRate(rate.denied), "number");
    cell(tr, formatRate(rate.shadow), "number");
    cell(tr, String((d.allowed || 0) + (d.denied || 0) + (d.shadow_denied || 0)), "number");
  });

  const offenders = [];
  for (const policy of snapshot.policies) {
    for (const offender of policy.offenders) {
      offenders.push({ policy: policy.name, key: offender.key, shown: offender.shown, denied: offender.denied });
    }
  }
  offenders.sort((a, b) => b.denied - a.denied);
  fill("#offenders", offenders, (tr, o) => {
    tr.dataset.policy = o.policy;
    tr.dataset.key = o.key;
    cell(tr, o.policy);
    cell(tr, o.shown, "key").title = o.shown;
    cell(tr, String(o.denied), "number");
    const actions = cell(tr, "");
    // Keys arrive percent-encoded, as the admin paths take them.
    const path = "/v1/limits/" + segment(o.policy) + "/" + o.key;
    button(actions, "inspect", "inspect", async () => {
      try {
        const state = await act("GET", path);
        const shown = $("#inspected");
        shown.hidden = false;
        // A key in debt (a settle charged more than was left) is denied until it is paid.
        const owes = state.debt > 0 ? "\nin debt: owes " + state.debt + " units" : "";
        shown.textContent = o.policy + " / " + o.shown + owes + "\n" + JSON.stringify(state, null, 2);
      } catch (error) { say("inspect failed: " + error.message); }
    });
    button(actions, "reset", "reset", async () => {
      try { await act("DELETE", path); say("reset " + o.shown); } catch (error) { say("reset failed: " + error.message); }
    });
    button(actions, "block", "block", async () => {
      const duration = $("#block-for").value;
      try {
        await act("PUT", "/v1/blocks/" + segment(o.policy) + "/" + o.key, { duration });
        say("blocked " + o.shown + " for " + duration);
        poll();
      } catch (error) { say("block failed: " + error.message); }
    });
  });

  fill("#blocks", snapshot.blocks, (tr, block) => {
    tr.dataset.key = block.key;
    cell(tr, block.policy);
    cell(tr, block.shown, "key").title = block.shown;
    cell(tr, formatDuration(block.remaining_ms));
    cell(tr, block.by);
    const actions = cell(tr, "");
    button(actions, "unblock", "unblock", async () => {
      try {
        await act("DELETE", "/v1/blocks/" + segment(block.policy) + "/" + block.key);
        say("unblocked " + block.shown);
        poll();
      } catch (error) { say("unblock failed: " + error.message); }
    });
  });

  fill("#routes", snapshot.routes, (tr, route) => {
    cell(tr, route.match);
    cell(tr, route.key);
    cell(tr, route.policies.join(", "));
    cell(tr, route.action);
  });
}

async function poll() {
  try {
    const response = await fetch("/v1/dashboard", { cache: "no-store" });
    if (!response.ok) throw new Error("the service answered " + response.status);
    render(await response.json());
    document.body.dataset.updated = String(Date.now());
  } catch (error) {
    say("cannot reach the service: " + error.message);
  }
}

function start() {
  if (timer === null) {
    poll();
    timer = setInterval(poll, POLL_MS);
  }
}

function stop() {
  clearInterval(timer);
  timer = null;
  // A gap in the chart, not a spike: the next rate is from the next two snapshots.
  previous = null;
}

$("#chart-policy").addEventListener("change", drawChart);

// A hidden page asks for nothing.
document.addEventListener("visibilitychange", () => (document.hidden ? stop() : start()));
if (!document.hidden) start();
