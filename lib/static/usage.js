// The owner's usage page: reads GET /api/usage with an admin key and draws it with uPlot
// (vendored beside this file). The key stays in this tab (sessionStorage); every request goes
// to this origin only. What each chart draws is kept in window.promptgateUsage, so the
// browser tests can hold the pictures to the API's numbers.
"use strict";

(function () {
  const KEY_STORAGE = "promptgate.adminKey";
  const DAY_S = 86400;
  const HOUR_S = 3600;
  const PALETTE = ["#2f5bd3", "#d3542f", "#2fa36b", "#a33fd3", "#d3a52f", "#2fb6d3", "#d32f7a", "#6b7a8f"];
  const form = document.getElementById("query");
  const keyInput = document.getElementById("admin-key");
  const fromInput = document.getElementById("from");
  const toInput = document.getElementById("to");
  const keySelect = document.getElementById("key");
  const message = document.getElementById("message");
  const status = document.getElementById("status");
  const report = document.getElementById("report");
  const charts = {};
  const drawn = (window.promptgateUsage = {});

  const today = new Date();
  toInput.value = isoDay(today);
  fromInput.value = isoDay(new Date(today.getTime() - 6 * DAY_S * 1000));
  keyInput.value = sessionStorage.getItem(KEY_STORAGE) || "";

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORAGE, keyInput.value.trim());
    load();
  });
  window.addEventListener("resize", resizeCharts);
  if (keyInput.value) load();

  function isoDay(date) {
    return date.toISOString().slice(0, 10);
  }

  async function fetchUsage(params) {
    const query = new URLSearchParams({ from: fromInput.value, to: toInput.value, ...params });
    if (keySelect.value) query.set("key", keySelect.value);
    const response = await fetch("api/usage?" + query.toString(), {
      headers: { Authorization: "Bearer " + keyInput.value.trim() },
      cache: "no-store",
    });
    let body = null;
    try {
      body = await response.json();
    } catch (ignored) {
      // an answer that is not JSON: said below by its status
    }
    if (!response.ok) throw new UsageError(response.status, body);
    return body;
  }

  function UsageError(status, body) {
    this.status = status;
    this.detail = body && body.error && body.error.message ? body.error.message : "";
  }

  function explain(error) {
    if (!(error instanceof UsageError)) return "The proxy could not be reached: " + error.message;
    const why = {
      401: "That admin key was not accepted.",
      403: "That is a client key or a token: reading usage needs an admin key (ADMIN_API_KEYS).",
      404: "This deployment has no admin keys.",
      503: "The limit store is unreachable, so usage cannot be read now.",
    }[error.status] || "The proxy answered " + error.status + ".";
    return error.detail ? why + " " + error.detail : why;
  }

  async function load() {
    message.hidden = true;
    status.textContent = "Loading…";
    try {
      const [byKey, hourly, byModel] = await Promise.all([
        fetchUsage({ group_by: "key", bucket: "day" }),
        fetchUsage({ group_by: "key", bucket: "hour" }),
        fetchUsage({ group_by: "model", bucket: "day" }),
      ]);
      const users = keySelect.value ? await fetchUsage({ group_by: "user" }) : null;
      fillKeys(byKey);
      report.hidden = false;
      showTotals(byKey.totals);
      drawTokens(byKey);
      drawRequests(hourly);
      drawLatency(byModel);
      showUsers(users);
      status.textContent = "Usage from " + byKey.from.slice(0, 10) + " to " + byKey.to.slice(0, 10) +
        " (UTC), store: " + byKey.store + ".";
    } catch (error) {
      report.hidden = true;
      status.textContent = "";
      message.textContent = explain(error);
      message.hidden = false;
    }
  }

  function fillKeys(byKey) {
    const chosen = keySelect.value;
    const names = byKey.groups.map(function (g) { return g.group; });
    if (chosen && names.indexOf(chosen) < 0) names.push(chosen);
    keySelect.replaceChildren(new Option("Every key", ""));
    names.sort().forEach(function (name) { keySelect.add(new Option(name, name)); });
    keySelect.value = chosen;
  }

  function showTotals(totals) {
    const box = document.getElementById("totals");
    const items = [
      ["Requests", totals.requests],
      ["Tokens", totals.total_tokens],
      ["Refused (4xx)", totals.refused],
      ["Limited (429)", totals.limited],
      ["Failed (5xx)", totals.failed],
      ["Mean latency", totals.latency_ms_mean === null ? "–" : totals.latency_ms_mean + " ms"],
      ["Cache hits", totals.cache_hits || 0],
      ["Tokens saved", totals.tokens_saved || 0],
    ];
    box.replaceChildren();
    items.forEach(function (item) {
      const cell = document.createElement("div");
      const value = document.createElement("strong");
      value.textContent = typeof item[1] === "number" ? item[1].toLocaleString("en") : item[1];
      cell.append(item[0], value);
      cell.dataset.total = item[0];
      box.append(cell);
    });
    drawn.totals = totals;
  }

  // Every bucket start from the report's `from` to its `to`, empty ones included.
  function starts(body, step) {
    const first = Date.parse(body.from) / 1000;
    const end = Date.parse(body.to) / 1000;
    const xs = [];
    for (let t = first; t < end; t += step) xs.push(t);
    return xs;
  }

  function column(body, xs, field) {
    const index = new Map(xs.map(function (x, i) { return [x, i]; }));
    const byGroup = new Map();
    body.series.forEach(function (point) {
      const name = point.group === null ? "(no model)" : point.group;
      if (!byGroup.has(name)) byGroup.set(name, xs.map(function () { return 0; }));
      const i = index.get(Date.parse(point.start) / 1000);
      if (i !== undefined) byGroup.get(name)[i] += point[field] || 0;
    });
    return byGroup;
  }

  function drawTokens(body) {
    const xs = starts(body, DAY_S);
    const byKey = column(body, xs, "total_tokens");
    const names = Array.from(byKey.keys()).sort();
    drawn.tokens = { days: xs, keys: Object.fromEntries(byKey) };
    // Stacked: each key's band drawn as its running total, the tallest first.
    const running = [];
    let sum = xs.map(function () { return 0; });
    names.forEach(function (name) {
      sum = sum.map(function (v, i) { return v + byKey.get(name)[i]; });
      running.push(sum);
    });
    const series = [{}];
    const data = [xs];
    for (let i = names.length - 1; i >= 0; i--) {
      const raw = byKey.get(names[i]);
      series.push({
        label: names[i],
        fill: PALETTE[i % PALETTE.length],
        stroke: PALETTE[i % PALETTE.length],
        paths: uPlot.paths.bars({ size: [0.7, 64] }),
        value: function (u, v, s, idx) { return idx === null ? "–" : raw[idx].toLocaleString("en"); },
      });
      data.push(running[i]);
    }
    draw("chart-tokens", series, data, "day");
  }

  function drawRequests(body) {
    const xs = starts(body, HOUR_S);
    const requests = xs.map(function () { return 0; });
    const errors = xs.map(function () { return 0; });
    const index = new Map(xs.map(function (x, i) { return [x, i]; }));
    body.series.forEach(function (point) {
      const i = index.get(Date.parse(point.start) / 1000);
      if (i === undefined) return;
      requests[i] += point.requests;
      errors[i] += point.refused + point.limited + point.failed;
    });
    drawn.requests = { hours: xs, requests: requests, errors: errors };
    draw(
      "chart-requests",
      [
        {},
        { label: "Requests", stroke: PALETTE[0], width: 2 },
        { label: "Errors", stroke: PALETTE[1], width: 2 },
      ],
      [xs, requests, errors],
      "hour",
    );
  }

  function drawLatency(body) {
    const xs = starts(body, DAY_S);
    const index = new Map(xs.map(function (x, i) { return [x, i]; }));
    const byModel = new Map();
    body.series.forEach(function (point) {
      const name = point.group === null ? "(no model)" : point.group;
      if (!byModel.has(name)) byModel.set(name, xs.map(function () { return null; }));
      const i = index.get(Date.parse(point.start) / 1000);
      if (i !== undefined) byModel.get(name)[i] = point.latency_ms_mean;
    });
    const names = Array.from(byModel.keys()).sort();
    drawn.latency = { days: xs, models: Object.fromEntries(byModel) };
    const series = [{}].concat(names.map(function (name, i) {
      return { label: name, stroke: PALETTE[i % PALETTE.length], width: 2, spanGaps: true,
        points: { show: true } };
    }));
    draw("chart-latency", series, [xs].concat(names.map(function (n) { return byModel.get(n); })), "day");
  }

  function showUsers(body) {
    const table = document.getElementById("users");
    const hint = document.getElementById("users-hint");
    const rows = table.querySelector("tbody");
    rows.replaceChildren();
    drawn.users = body ? body.groups.slice(0, 20) : null;
    table.hidden = !body || body.groups.length === 0;
    document.getElementById("users-title").textContent = body ? "Top users of " + body.key : "Top users";
    hint.textContent = body ? (body.groups.length ? "" : "No users of this key's tokens in this range.") :
      "Pick a key to see its users.";
    hint.hidden = Boolean(body && body.groups.length);
    if (!body) return;
    const most = Math.max(1, ...drawn.users.map(function (g) { return g.total_tokens; }));
    drawn.users.forEach(function (group) {
      const row = document.createElement("tr");
      const name = document.createElement("td");
      name.textContent = group.other ? "other (beyond the daily cap)" : group.group;
      const tokens = document.createElement("td");
      tokens.textContent = group.total_tokens.toLocaleString("en");
      const requests = document.createElement("td");
      requests.textContent = group.requests.toLocaleString("en");
      const share = document.createElement("td");
      const bar = document.createElement("div");
      bar.className = "bar";
      bar.style.width = Math.round((100 * group.total_tokens) / most) + "%";
      share.append(bar);
      row.append(name, tokens, requests, share);
      rows.append(row);
    });
  }

  function draw(id, series, data, step) {
    const target = document.getElementById(id);
    if (charts[id]) charts[id].destroy();
    const options = {
      width: Math.max(target.clientWidth, 240),
      height: 240,
      series: series,
      // Half a bucket of room at each end, so the first and last bars show whole.
      scales: {
        x: {
          time: true,
          range: function (u, min, max) {
            const half = (step === "day" ? DAY_S : HOUR_S) / 2;
            return [min - half, max + half];
          },
        },
      },
      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"); },
      axes: [{ space: step === "day" ? 60 : 80 }, { size: 60 }],
      cursor: { points: { show: false } },
    };
    charts[id] = new uPlot(options, data, target);
  }

  function resizeCharts() {
    Object.keys(charts).forEach(function (id) {
      const width = Math.max(document.getElementById(id).clientWidth, 240);
      charts[id].setSize({ width: width, height: 240 });
    });
  }
})();
