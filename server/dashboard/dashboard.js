// Beacon's dashboard: every number comes from the query API (POST /api/v2/query).
// The view lives in the URL (site_id, period, from, to, compare, filters), so that any
// view can be bookmarked and shared. A key, when this Beacon asks for one, is kept in
// sessionStorage: for this tab only.
"use strict";

const KEY_STORE = "beacon.key";
const REALTIME_EVERY_MS = 30000;
// The query API's date_range names; the buttons offer the common ones.
const PERIODS = ["day", "7d", "28d", "30d", "91d", "month", "6mo", "12mo", "year", "all", "custom"];
const CARDS = ["visitors", "visits", "pageviews", "bounce_rate", "visit_duration"];

// Each table: its tabs, and for each tab the dimension and metrics it shows.
const TABLES = [
  { title: "Pages", tabs: [
    { name: "Top pages", dimension: "event:page", metrics: ["visitors", "pageviews"] },
    { name: "Entry pages", dimension: "visit:entry_page", metrics: ["visitors", "visits"] },
    { name: "Exit pages", dimension: "visit:exit_page", metrics: ["visitors", "visits"] },
  ] },
  { title: "Sources", tabs: [
    { name: "Sources", dimension: "visit:source", metrics: ["visitors", "visits"] },
    { name: "Referrers", dimension: "visit:referrer", metrics: ["visitors", "visits"] },
    { name: "Channels", dimension: "visit:channel", metrics: ["visitors", "visits"] },
  ] },
  { title: "Campaigns", tabs: [
    { name: "UTM campaigns", dimension: "visit:utm_campaign", metrics: ["visitors", "visits"] },
    { name: "UTM sources", dimension: "visit:utm_source", metrics: ["visitors", "visits"] },
    { name: "UTM mediums", dimension: "visit:utm_medium", metrics: ["visitors", "visits"] },
  ] },
  { title: "Countries", tabs: [
    { name: "Countries", dimension: "visit:country", metrics: ["visitors", "visits"] },
  ] },
  { title: "Browsers", tabs: [
    { name: "Browsers", dimension: "visit:browser", metrics: ["visitors", "visits"] },
  ] },
  { title: "Operating systems", tabs: [
    { name: "Operating systems", dimension: "visit:os", metrics: ["visitors", "visits"] },
  ] },
  { title: "Devices", tabs: [
    { name: "Devices", dimension: "visit:device", metrics: ["visitors", "visits"] },
  ] },
  { title: "Custom events", tabs: [
    // Page views are left out here rather than by a filter, which rollups cannot answer.
    { name: "Custom events", dimension: "event:name", metrics: ["visitors", "events"], hide: "page_view" },
  ] },
];

const NAMES = {
  "event:page": "Page", "visit:entry_page": "Entry page", "visit:exit_page": "Exit page",
  "visit:source": "Source", "visit:referrer": "Referrer", "visit:channel": "Channel",
  "visit:utm_campaign": "UTM campaign", "visit:utm_source": "UTM source",
  "visit:utm_medium": "UTM medium", "visit:country": "Country", "visit:browser": "Browser",
  "visit:os": "Operating system", "visit:device": "Device", "event:name": "Event",
};
const COLUMN = { visitors: "Visitors", visits: "Visits", pageviews: "Views", events: "Events" };

const $ = (selector) => document.querySelector(selector);
const el = (tag, props = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props);
  for (const child of children) node.append(child);
  return node;
};

let key = sessionStorage.getItem(KEY_STORE);
let access = "open";
let view = readView();
let selectedTabs = {};
let generation = 0;
// The chart's last answers, to redraw it at a new width without asking again.
let lastChart = null;

// ---- the URL -------------------------------------------------------------------------

function readView() {
  const params = new URLSearchParams(location.search);
  let filters = [];
  try {
    const parsed = JSON.parse(params.get("filters") || "[]");
    if (Array.isArray(parsed)) filters = parsed.filter((f) => Array.isArray(f) && f.length === 3);
  } catch (_) { /* a hand-edited URL: no filters */ }
  const period = PERIODS.includes(params.get("period")) ? params.get("period") : "30d";
  return {
    site: params.get("site_id") || "",
    period,
    from: params.get("from") || "",
    to: params.get("to") || "",
    compare: params.get("compare") === "previous",
    filters,
  };
}

function writeView() {
  const params = new URLSearchParams();
  if (view.site) params.set("site_id", view.site);
  params.set("period", view.period);
  if (view.period === "custom") { params.set("from", view.from); params.set("to", view.to); }
  if (view.compare) params.set("compare", "previous");
  if (view.filters.length) params.set("filters", JSON.stringify(view.filters));
  const url = `${location.pathname}?${params}`;
  if (url !== location.pathname + location.search) history.pushState(null, "", url);
}

// ---- the API -------------------------------------------------------------------------

class NeedsKey extends Error {}

async function api(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  if (key) headers.Authorization = `Bearer ${key}`;
  const response = await fetch(path, { method, headers, body: body && JSON.stringify(body) });
  if (response.status === 401) throw new NeedsKey();
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(answer.message || `${path} answered ${response.status}`);
  return answer;
}

function query(body) {
  return api("POST", "/api/v2/query", { site_id: view.site, ...body });
}

function dateRange() {
  if (view.period === "custom" && view.from && view.to) return [view.from, view.to];
  return view.period === "custom" ? "30d" : view.period;
}

// The time buckets for the chart, from the range's length.
function grain() {
  const days = view.period === "custom" && view.from && view.to
    ? (Date.parse(view.to) - Date.parse(view.from)) / 864e5 + 1
    : { day: 1, "7d": 7, "28d": 28, "30d": 30, "91d": 91, month: 31, "6mo": 183, "12mo": 366, year: 366, all: 9999 }[view.period];
  if (days <= 2) return "time:hour";
  if (days <= 62) return "time:day";
  if (days <= 200) return "time:week";
  return "time:month";
}

// ---- numbers as people read them ----------------------------------------------------

const number = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });
const whole = new Intl.NumberFormat();

function show(metric, value) {
  if (value === null || value === undefined) return "–";
  if (metric === "bounce_rate") return `${Math.round(value)}%`;
  if (metric === "visit_duration") {
    const s = Math.round(value);
    return s >= 60 ? `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s` : `${s}s`;
  }
  return value >= 10000 ? number.format(value) : whole.format(value);
}

function change(metric, now, before) {
  if (before === undefined || before === null) return ["", ""];
  if (metric === "bounce_rate") {
    const points = Math.round(now - before);
    // Fewer bounces are better.
    return [`${points > 0 ? "↑" : points < 0 ? "↓" : ""} ${Math.abs(points)} pts vs period before`,
      points < 0 ? "up" : points > 0 ? "down" : ""];
  }
  if (before === 0) return [now > 0 ? "new this period" : "no change", ""];
  const percent = Math.round(((now - before) / before) * 100);
  return [`${percent > 0 ? "↑" : percent < 0 ? "↓" : ""} ${Math.abs(percent)}% vs period before`,
    percent > 0 ? "up" : percent < 0 ? "down" : ""];
}

// ---- rendering -----------------------------------------------------------------------

function showOnly(id) {
  for (const section of ["signin", "empty", "report"]) $(`#${section}`).hidden = section !== id;
  $("#loading").hidden = true;
}

function showError(message) {
  const box = $("#error");
  box.textContent = message;
  box.hidden = !message;
}

function renderControls() {
  for (const button of document.querySelectorAll("[data-period]")) {
    button.setAttribute("aria-pressed", String(button.dataset.period === view.period));
  }
  $("#custom").hidden = view.period !== "custom";
  $("#from").value = view.from;
  $("#to").value = view.to;
  $("#compare").checked = view.compare;
  $("#site").value = view.site;
  const chips = $("#chips");
  chips.replaceChildren(...view.filters.map((filter, index) => {
    const [, dimension, values] = filter;
    const remove = el("button", { type: "button", textContent: "×", title: "Remove this filter" });
    remove.setAttribute("aria-label", `Remove the filter ${NAMES[dimension] || dimension} is ${values.join(", ")}`);
    remove.addEventListener("click", () => {
      view.filters.splice(index, 1);
      navigate();
    });
    return el("span", { className: "chip" },
      el("span", { textContent: `${NAMES[dimension] || dimension} is ${values.join(", ")}` }), remove);
  }));
}

function renderCards(now, before) {
  for (const [i, metric] of CARDS.entries()) {
    const node = document.querySelector(`[data-metric="${metric}"]`);
    node.textContent = show(metric, now[i]);
    node.title = now[i] === undefined ? "" : whole.format(now[i]);
    const [text, direction] = before ? change(metric, now[i], before[i]) : ["", ""];
    const changeNode = document.querySelector(`[data-change="${metric}"]`);
    changeNode.textContent = text;
    changeNode.className = `change ${direction}`;
  }
}

function renderTable(table, index, answer) {
  const tab = table.tabs[selectedTabs[index] || 0];
  const card = document.getElementById(`table-${index}`);
  const rows = answer.results;
  const top = Math.max(1, ...rows.map((r) => r.metrics[0]));
  const list = el("ul", { className: "rows" }, ...rows.map((row) => {
    const value = row.dimensions[0];
    const button = el("button", { type: "button", className: "row" },
      el("span", { className: "label", textContent: value, title: value }),
      ...row.metrics.map((m) => el("span", { textContent: show("visitors", m) })));
    button.dataset.dimension = tab.dimension;
    button.dataset.value = value;
    button.style.setProperty("--share", `${(row.metrics[0] / top) * 100}%`);
    button.setAttribute("aria-label", `${value}: ${row.metrics.map((m, i) => `${whole.format(m)} ${COLUMN[tab.metrics[i]].toLowerCase()}`).join(", ")}. Filter by it.`);
    button.addEventListener("click", () => addFilter(tab.dimension, value));
    return el("li", {}, button);
  }));
  const body = card.querySelector(".body");
  body.replaceChildren(
    el("div", { className: "columns" }, el("span", { textContent: NAMES[tab.dimension] }),
      ...tab.metrics.map((m) => el("span", { textContent: COLUMN[m] }))),
    rows.length ? list : el("p", { className: "none", textContent: "Nothing in this range." }),
  );
}

function buildTables() {
  const container = $("#tables");
  container.replaceChildren(...TABLES.map((table, index) => {
    const tabs = el("div", { className: "tabs", role: "tablist" }, ...(table.tabs.length > 1 ? table.tabs.map((tab, t) => {
      const button = el("button", { type: "button", role: "tab", textContent: tab.name });
      button.setAttribute("aria-selected", String((selectedTabs[index] || 0) === t));
      button.addEventListener("click", () => {
        selectedTabs[index] = t;
        for (const b of tabs.children) b.setAttribute("aria-selected", String(b === button));
        loadTable(index, generation);
      });
      return button;
    }) : []));
    return el("section", { className: "table", id: `table-${index}` },
      el("header", {}, el("h2", { textContent: table.title }), tabs),
      el("div", { className: "body" }, el("p", { className: "none", textContent: "Loading…" })));
  }));
}

async function loadTable(index, run) {
  const table = TABLES[index];
  const tab = table.tabs[selectedTabs[index] || 0];
  const answer = await query({
    metrics: tab.metrics,
    date_range: dateRange(),
    dimensions: [tab.dimension],
    filters: view.filters,
    pagination: { limit: tab.hide ? 11 : 10 },
  });
  answer.results = answer.results.filter((r) => r.dimensions[0] !== tab.hide).slice(0, 10);
  if (run === generation) renderTable(table, index, answer);
}

// ---- the chart: an SVG drawn here, no library ----------------------------------------

function drawChart(labels, visitors, pageviews, previous) {
  const box = $("#chart");
  const width = box.clientWidth || 800;
  const height = box.clientHeight || 260;
  const pad = { left: 44, right: 12, top: 12, bottom: 26 };
  const top = Math.max(1, ...visitors, ...pageviews, ...(previous || []));
  const step = niceStep(top / 4);
  const yMax = Math.ceil(top / step) * step;
  const x = (i) => pad.left + (labels.length <= 1 ? 0 : (i * (width - pad.left - pad.right)) / (labels.length - 1));
  const y = (v) => height - pad.bottom - (v / yMax) * (height - pad.top - pad.bottom);
  const path = (values) => values.map((v, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`).join("");
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `Visitors and page views by ${grain().slice(5)}`);
  const add = (tag, attrs, text) => {
    const node = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    svg.append(node);
    return node;
  };
  for (let v = 0; v <= yMax; v += step) {
    add("line", { class: "grid", x1: pad.left, x2: width - pad.right, y1: y(v), y2: y(v) });
    add("text", { class: "axis", x: pad.left - 6, y: y(v) + 4, "text-anchor": "end" }, number.format(v));
  }
  const every = Math.max(1, Math.ceil(labels.length / Math.max(2, Math.floor(width / 90))));
  labels.forEach((label, i) => {
    if (i % every === 0) add("text", { class: "axis", x: x(i), y: height - 8, "text-anchor": "middle" }, shortLabel(label));
  });
  if (labels.length) {
    add("path", { class: "area-visitors", d: `${path(visitors)}L${x(labels.length - 1)},${y(0)}L${x(0)},${y(0)}Z` });
    if (previous) add("path", { class: "line-previous", d: path(previous) });
    add("path", { class: "line-pageviews", d: path(pageviews) });
    add("path", { class: "line-visitors", d: path(visitors) });
  }
  const cursor = add("line", { class: "cursor", y1: pad.top, y2: height - pad.bottom, visibility: "hidden" });
  const tip = el("div", { className: "tooltip", hidden: true });
  tip.setAttribute("role", "status");
  const point = (i) => {
    cursor.setAttribute("x1", x(i));
    cursor.setAttribute("x2", x(i));
    cursor.setAttribute("visibility", "visible");
    tip.replaceChildren(el("strong", { textContent: labels[i] }),
      el("span", { textContent: `${whole.format(visitors[i])} visitors · ${whole.format(pageviews[i])} page views` }),
      ...(previous ? [el("div", { textContent: `${whole.format(previous[i] || 0)} visitors the period before` })] : []));
    tip.hidden = false;
    const left = (x(i) / width) * box.clientWidth;
    tip.style.left = `${Math.min(Math.max(0, left - 90), box.clientWidth - 200)}px`;
  };
  svg.addEventListener("mousemove", (e) => {
    const rect = svg.getBoundingClientRect();
    const at = ((e.clientX - rect.left) / rect.width) * width;
    const i = Math.round(((at - pad.left) / (width - pad.left - pad.right)) * (labels.length - 1));
    if (labels.length) point(Math.min(labels.length - 1, Math.max(0, i)));
  });
  svg.addEventListener("mouseleave", () => { cursor.setAttribute("visibility", "hidden"); tip.hidden = true; });
  // Keyboard: focus the chart, then arrows move through the buckets.
  svg.setAttribute("tabindex", "0");
  let focused = labels.length - 1;
  svg.addEventListener("keydown", (e) => {
    if (!labels.length || (e.key !== "ArrowLeft" && e.key !== "ArrowRight")) return;
    focused = Math.min(labels.length - 1, Math.max(0, focused + (e.key === "ArrowRight" ? 1 : -1)));
    point(focused);
    e.preventDefault();
  });
  svg.addEventListener("blur", () => { cursor.setAttribute("visibility", "hidden"); tip.hidden = true; });
  box.replaceChildren(svg, tip);
}

function niceStep(raw) {
  const power = 10 ** Math.floor(Math.log10(Math.max(raw, 1)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * power >= raw) return m * power;
  return 10 * power;
}

function shortLabel(label) {
  // "2024-01-31 13:00:00" → "13:00"; "2024-01-31" → "31 Jan".
  if (label.length > 10) return label.slice(11, 16);
  const d = new Date(`${label}T00:00:00`);
  return grain() === "time:month"
    ? d.toLocaleDateString(undefined, { month: "short", year: "2-digit" })
    : d.toLocaleDateString(undefined, { day: "numeric", month: "short" });
}

// ---- loading a view ------------------------------------------------------------------

async function load() {
  const run = ++generation;
  renderControls();
  showError("");
  // Dimmed while the numbers on show are not yet the view's (a slow filtered query).
  $("#report").setAttribute("aria-busy", "true");
  const filters = view.filters;
  const range = dateRange();
  const totals = query({ metrics: CARDS, date_range: range, filters });
  const series = query({
    metrics: ["visitors", "pageviews"], date_range: range, dimensions: [grain()], filters,
    include: { time_labels: true },
  });
  const tables = TABLES.map((_, index) => loadTable(index, run));
  const now = await totals;
  if (run !== generation) return;
  const [from, to] = now.query.date_range.map((t) => Date.parse(t));
  const span = to - from + 1;
  const before = [new Date(from - span).toISOString(), new Date(from - 1).toISOString()];
  const previousTotals = query({ metrics: CARDS, date_range: before, filters });
  const previousSeries = view.compare
    ? query({ metrics: ["visitors"], date_range: before, dimensions: [grain()], filters, include: { time_labels: true } })
    : null;
  const values = now.results[0] ? now.results[0].metrics : CARDS.map(() => 0);
  if (!filters.length && range !== "day" && values[0] === 0 && !(await siteHasEvents())) {
    if (run === generation) {
      showEmpty();
      document.body.dataset.loaded = String(run);
    }
    return;
  }
  showOnly("report");
  renderCards(values, null);
  const chart = await series;
  const previous = previousSeries ? await previousSeries : null;
  if (run !== generation) return;
  renderChart(chart, previous);
  const then = await previousTotals;
  if (run !== generation) return;
  renderCards(values, then.results[0] ? then.results[0].metrics : CARDS.map(() => 0));
  await Promise.all(tables);
  if (run !== generation) return;
  $("#report").removeAttribute("aria-busy");
  document.body.dataset.loaded = String(run);
  // The first full render's time since navigation began, for benchmarks and the curious.
  if (!document.body.dataset.renderMs) document.body.dataset.renderMs = String(Math.round(performance.now()));
}

function renderChart(chart, previous) {
  lastChart = [chart, previous];
  const labels = chart.meta.time_labels || [];
  const byLabel = new Map(chart.results.map((r) => [r.dimensions[0], r.metrics]));
  const visitors = labels.map((l) => (byLabel.get(l) || [0, 0])[0]);
  const pageviews = labels.map((l) => (byLabel.get(l) || [0, 0])[1]);
  let before = null;
  if (previous) {
    const prior = new Map(previous.results.map((r) => [r.dimensions[0], r.metrics[0]]));
    before = (previous.meta.time_labels || []).map((l) => prior.get(l) || 0).slice(0, labels.length);
  }
  for (const node of document.querySelectorAll(".key.previous, .previous-label")) node.hidden = !before;
  drawChart(labels, visitors, pageviews, before);
  $("#chart").dataset.labels = String(labels.length);
}

async function siteHasEvents(site = view.site) {
  const all = await api("POST", "/api/v2/query", { site_id: site, metrics: ["events"], date_range: "all" });
  return Boolean(all.results[0] && all.results[0].metrics[0] > 0);
}

// The site to open when the URL names none: the first of the first few with events.
async function firstWithEvents(sites) {
  for (const site of sites.slice(0, 10)) {
    if (await siteHasEvents(site)) return site;
  }
  return sites[0];
}

function showEmpty() {
  const site = view.site || "your-site";
  $("#snippet").textContent =
    `<script defer src="${location.origin}/sdk/beacon.js" data-site-id="${site}"></script>`;
  showOnly("empty");
}

async function realtime() {
  if (!view.site || $("#report").hidden) return;
  const now = Date.now();
  try {
    const answer = await query({
      metrics: ["visitors"],
      date_range: [new Date(now - 5 * 60000).toISOString(), new Date(now).toISOString()],
    });
    const visitors = answer.results[0] ? answer.results[0].metrics[0] : 0;
    document.querySelector('[data-metric="realtime_visitors"]').textContent = whole.format(visitors);
  } catch (_) { /* the next tick tries again */ }
}

function addFilter(dimension, value) {
  if (!view.filters.some((f) => f[1] === dimension && f[2].includes(value))) {
    view.filters.push(["is", dimension, [value]]);
  }
  navigate();
}

function navigate() {
  writeView();
  load().catch(failed);
}

function failed(error) {
  if (error instanceof NeedsKey) {
    key = null;
    sessionStorage.removeItem(KEY_STORE);
    showOnly("signin");
    $("#key").focus();
    return;
  }
  $("#loading").hidden = true;
  $("#report").removeAttribute("aria-busy");
  showError(`Could not load the numbers: ${error.message}`);
}

// ---- start ---------------------------------------------------------------------------

async function start() {
  // A shared link carries its read key in the fragment, which is never sent to servers.
  const shared = new URLSearchParams(location.hash.slice(1)).get("key");
  if (shared) {
    key = shared;
    sessionStorage.setItem(KEY_STORE, key);
    history.replaceState(null, "", location.pathname + location.search);
  }
  const list = await api("GET", "/api/v2/sites");
  access = list.access;
  $("#signout").hidden = access === "open";
  $("#share").hidden = access !== "admin";
  const picker = $("#site");
  const sites = list.sites.includes(view.site) || !view.site ? list.sites : [view.site, ...list.sites];
  picker.replaceChildren(...sites.map((s) => el("option", { value: s, textContent: s })));
  if (!view.site) {
    if (!sites.length) { showEmpty(); return; }
    view.site = await firstWithEvents(sites);
    history.replaceState(null, "", `${location.pathname}?site_id=${encodeURIComponent(view.site)}&period=${view.period}`);
  }
  buildTables();
  await load();
  realtime();
}

function wire() {
  for (const button of document.querySelectorAll("[data-period]")) {
    button.addEventListener("click", () => {
      view.period = button.dataset.period;
      if (view.period === "custom") {
        const today = new Date().toISOString().slice(0, 10);
        view.from = view.from || new Date(Date.now() - 29 * 864e5).toISOString().slice(0, 10);
        view.to = view.to || today;
      }
      navigate();
    });
  }
  $("#custom").addEventListener("submit", (e) => {
    e.preventDefault();
    view.from = $("#from").value;
    view.to = $("#to").value;
    if (view.from && view.to && view.from <= view.to) navigate();
  });
  $("#compare").addEventListener("change", () => { view.compare = $("#compare").checked; navigate(); });
  $("#site").addEventListener("change", () => {
    view.site = $("#site").value;
    view.filters = [];
    navigate();
  });
  $("#signin-form").addEventListener("submit", (e) => {
    e.preventDefault();
    key = $("#key").value.trim();
    sessionStorage.setItem(KEY_STORE, key);
    $("#key").value = "";
    start().catch((error) => {
      failed(error);
      if (error instanceof NeedsKey) {
        $("#signin-error").textContent = "That key is not known here.";
        $("#signin-error").hidden = false;
      }
    });
  });
  $("#signout").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORE);
    key = null;
    location.reload();
  });
  $("#copy").addEventListener("click", () => navigator.clipboard.writeText($("#snippet").textContent));
  $("#share").addEventListener("click", async () => {
    try {
      const made = await api("POST", `/api/sites/${encodeURIComponent(view.site)}/keys`);
      const link = `${location.origin}/dashboard?site_id=${encodeURIComponent(view.site)}&period=${view.period}#key=${encodeURIComponent(made.key)}`;
      $("#share-link").value = link;
      $("#share-dialog").showModal();
      $("#share-link").select();
    } catch (error) {
      showError(`Could not make a link: ${error.message} (register the site first: POST /api/sites)`);
    }
  });
  $("#share-copy").addEventListener("click", () => navigator.clipboard.writeText($("#share-link").value));
  window.addEventListener("popstate", () => { view = readView(); load().catch(failed); });
  let resized;
  window.addEventListener("resize", () => {
    clearTimeout(resized);
    resized = setTimeout(() => { if (lastChart && !$("#report").hidden) renderChart(...lastChart); }, 250);
  });
  setInterval(() => { if (!document.hidden) realtime(); }, REALTIME_EVERY_MS);
}

wire();
start().catch(failed);
