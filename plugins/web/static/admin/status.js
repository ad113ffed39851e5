// Live status: polls /admin/status.json every two seconds and redraws the tiles and a bar
// chart of messages per second over the last two minutes.
import { h, replace } from "../lib/dom.js";
import { ready, tr } from "../lib/tr.js";

await ready;

const HISTORY = 60;
const history = new Array(HISTORY).fill(0); // fixed slots: the newest on the right

function pick(data, path) {
  return path.split(".").reduce((value, key) => (value == null ? value : value[key]), data);
}

function draw(data) {
  for (const el of document.querySelectorAll("[data-stat]")) {
    const value = pick(data, el.dataset.stat);
    el.textContent = value == null ? "—" : String(value);
  }
  history.push(data.messages.per_second);
  if (history.length > HISTORY) history.shift();
  const top = Math.max(1, ...history);
  const bars = history.map((value) => {
    const bar = h("span", { title: tr("{n} messages/s", { n: value }) });
    bar.style.height = `${Math.max(1, (value / top) * 100)}%`; // CSSOM, allowed by the CSP
    return bar;
  });
  replace(document.getElementById("spark"), ...bars);
  const transports = Object.entries(data.connections.by_transport);
  replace(document.getElementById("transports"),
    ...(transports.length ? transports.map(([name, n]) => h("li", {}, `${name}: ${n}`)) : [h("li", { class: "muted" }, tr("none"))]));
}

async function tick() {
  try {
    const resp = await fetch("/admin/status.json", { credentials: "same-origin" });
    if (resp.ok) draw(await resp.json());
  } catch {
    /* the next tick retries */
  }
}

tick();
setInterval(tick, 2000);
