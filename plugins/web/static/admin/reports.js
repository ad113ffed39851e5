// Admin > Reports: the figures of /v1/reports for a range of days in the browser's time
// zone, drawn as SVG bar charts (no chart library), tables per agent and per department,
// and links to the same tables as CSV (/v1/reports/{table}.csv, the session cookie signs in).
import { api } from "../lib/api.js";
import { h, replace } from "../lib/dom.js";
import { ready, tr } from "../lib/tr.js";

const SVG = "http://www.w3.org/2000/svg";
const form = document.getElementById("reports-range");
const message = document.getElementById("reports-message");
const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
  for (const child of children) el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return el;
}

function localDay(date) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
}

function setRange(days) {
  const until = new Date();
  const since = new Date(until);
  since.setDate(until.getDate() - (days - 1));
  form.since.value = localDay(since);
  form.until.value = localDay(until);
}

/** A duration people read at a glance: 45 s, 3 min 20 s, 2 h 5 min. */
export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.round(seconds);
  if (s < 60) return tr("{n} s", { n: s });
  if (s < 3600) return tr("{m} min {s} s", { m: Math.floor(s / 60), s: s % 60 });
  return tr("{h} h {m} min", { h: Math.floor(s / 3600), m: Math.floor((s % 3600) / 60) });
}

const pct = (value) => (value === null || value === undefined ? "–" : `${value} %`);

/** Bars of one or two series over labelled slots, with the values on top and a y scale. */
function barChart(slots, series, { label }) {
  const width = 900, height = 220, left = 36, bottom = 24, top = 16;
  const plotW = width - left - 8, plotH = height - top - bottom;
  const most = Math.max(1, ...slots.flatMap((slot) => series.map((s) => slot[s.key])));
  const step = plotW / slots.length, barW = Math.max(2, (step * 0.8) / series.length);
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label, class: "bars" });
  for (const tick of [0, Math.ceil(most / 2), most]) {
    const y = top + plotH - (tick / most) * plotH;
    chart.append(svg("line", { x1: left, x2: width - 8, y1: y, y2: y, class: "gridline" }),
      svg("text", { x: left - 6, y: y + 4, "text-anchor": "end", class: "tick" }, tick));
  }
  const labelEvery = Math.ceil(slots.length / 16);
  slots.forEach((slot, i) => {
    const x0 = left + i * step + step * 0.1;
    series.forEach((s, j) => {
      const value = slot[s.key];
      const barH = (value / most) * plotH;
      const x = x0 + j * barW, y = top + plotH - barH;
      const bar = svg("rect", { x, y, width: barW - 1, height: Math.max(barH, value ? 1 : 0),
        class: `bar ${s.key}`, "data-slot": slot.label, "data-series": s.key, "data-value": value },
      svg("title", {}, `${slot.label}: ${s.name} ${value}`));
      chart.append(bar);
      if (value && slots.length <= 31) {
        chart.append(svg("text", { x: x + (barW - 1) / 2, y: y - 3, "text-anchor": "middle", class: "bar-value" }, value));
      }
    });
    if (i % labelEvery === 0) {
      chart.append(svg("text", { x: x0 + (barW * series.length) / 2, y: height - 6, "text-anchor": "middle", class: "tick" }, slot.short));
    }
  });
  const legend = h("p", { class: "legend" }, ...series.map((s) => h("span", { class: `key ${s.key}` }, s.name)));
  return [chart, series.length > 1 ? legend : null];
}

function figure(name, text) {
  document.querySelector(`[data-figure="${name}"]`).textContent = text;
}

function groupRows(rows, nameOf) {
  if (!rows.length) return [h("tr", {}, h("td", { colspan: "8", class: "muted" }, tr("No conversations in this range.")))];
  return rows.map((row) => h("tr", {},
    h("td", { translate: "no", class: "name" }, nameOf(row)),
    h("td", { class: "num", dataset: { col: "conversations" } }, row.conversations),
    h("td", { class: "num", dataset: { col: "resolved" } }, row.resolved),
    h("td", { class: "num", dataset: { col: "first_response_median" } }, duration(row.first_response_median_s)),
    h("td", { class: "num", dataset: { col: "first_response_p90" } }, duration(row.first_response_p90_s)),
    h("td", { class: "num", dataset: { col: "resolution_median" } }, duration(row.resolution_median_s)),
    h("td", { class: "num", dataset: { col: "ratings" } }, row.ratings),
    h("td", { class: "num", dataset: { col: "csat" } }, pct(row.csat_pct))));
}

function draw(report) {
  const s = report.summary;
  figure("conversations", s.conversations);
  figure("resolved", tr("{n} resolved", { n: s.resolved }));
  figure("first_response", duration(s.first_response.median_s));
  figure("first_response_p90", tr("p90 {value}, {n} answered", { value: duration(s.first_response.p90_s), n: s.first_response.count }));
  figure("resolution", duration(s.resolution.median_s));
  figure("resolution_p90", tr("p90 {value}", { value: duration(s.resolution.p90_s) }));
  figure("csat", pct(s.csat.satisfied_pct));
  const rated = s.csat.ratings === 1 ? "1 rating, average {average} of 5" : "{n} ratings, average {average} of 5";
  figure("csat_detail", s.csat.ratings ? tr(rated, { n: s.csat.ratings, average: s.csat.average }) : tr("no ratings yet"));
  figure("containment", pct(s.bot.containment_pct));
  figure("containment_detail", tr("{contained} of {handled} the bot handled", { contained: s.bot.contained, handled: s.bot.handled }));
  const days = report.days.map((d) => ({ ...d, label: d.date, short: d.date.slice(5) }));
  replace(document.getElementById("chart-days"), ...barChart(days, [
    { key: "conversations", name: tr("Conversations") }, { key: "resolved", name: tr("Resolved") },
  ], { label: tr("Conversations per day") }));
  const hours = report.hours.map((x) => ({ ...x, label: `${String(x.hour).padStart(2, "0")}:00`, short: String(x.hour) }));
  replace(document.getElementById("chart-hours"), ...barChart(hours, [
    { key: "conversations", name: tr("Conversations") },
  ], { label: tr("Conversations per hour of the day") }));
  replace(document.querySelector("#reports-agents tbody"), ...groupRows(report.agents, (r) => r.name));
  replace(document.querySelector("#reports-departments tbody"),
    ...groupRows(report.departments, (r) => r.department || tr("(none)")));
  if (report.truncated) say(tr("More conversations than one report reads: the newest are left out."), true);
}

function say(text, error = false) {
  message.hidden = !text;
  message.textContent = text;
  message.className = error ? "error" : "muted";
}

async function load() {
  const query = new URLSearchParams({ since: form.since.value, until: form.until.value, tz: zone });
  for (const link of document.querySelectorAll("#reports-downloads a[data-table]")) {
    link.href = `/v1/reports/${link.dataset.table}.csv?${query}`;
  }
  say("");
  try {
    draw(await api(`/v1/reports?${query}`));
    document.body.dataset.reportReady = query.toString();  // tests wait for this marker
  } catch (err) {
    say(err.message, true);
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  load();
});
for (const button of form.querySelectorAll("button[data-days]")) {
  button.addEventListener("click", () => {
    setRange(Number(button.dataset.days));
    load();
  });
}

document.getElementById("reports-zone").textContent = zone;
setRange(7);
ready.then(load);
