// Bot flows of the site, from the bot_intents plugin's admin API (/v1/bot/flows): versions
// with their sha256, activation and rollback, the refused files with their file:line
// errors, and a version's YAML source.
import { api, ApiError } from "../lib/api.js";
import { h, replace } from "../lib/dom.js";
import { ready, tr } from "../lib/tr.js";

await ready;

const flowsBox = document.getElementById("bot-flows");
const rejectedBox = document.getElementById("bot-rejected");
const message = document.getElementById("bot-message");
const source = document.getElementById("bot-source");

const short = (sha) => (sha ? sha.slice(0, 12) : tr("none"));
const when = (seconds) => (seconds ? new Date(seconds * 1000).toLocaleString() : "");

function say(text, error = false) {
  message.hidden = !text;
  message.textContent = text || "";
  message.className = error ? "error" : "muted";
}

async function run(action, done) {
  try {
    await action();
    say(done);
  } catch (err) {
    say(err.message, true);
  }
  load();
}

function flowPath(flow) {
  return `/v1/bot/flows/${encodeURIComponent(flow.id)}`;
}

function versionRow(flow, v) {
  const origin = `${v.source}${v.activated_by ? ` (${tr("activated by {who}", { who: v.activated_by })})` : ""}`;
  return h("tr", { dataset: { sha: v.sha256 }, class: v.active ? "active" : "" },
    h("td", {}, h("code", { title: v.sha256 }, short(v.sha256))),
    h("td", {}, when(v.created_at)),
    h("td", {}, v.active ? h("span", { class: "pill online" }, tr("active")) : ""),
    h("td", { class: "pre" }, origin),
    h("td", {}, `${v.states} / ${v.intents}`),
    h("td", {},
      h("button", { type: "button", class: "ghost view", onclick: () => view(flow, v) }, tr("View")), " ",
      v.active ? null : h("button", { type: "button", class: "activate",
        onclick: () => run(() => api(`${flowPath(flow)}/versions/${v.sha256}/activate`, { method: "POST" }),
          tr("Version {sha} of {flow} is active.", { sha: short(v.sha256), flow: flow.id })) }, tr("Activate"))));
}

function flowSection(flow) {
  return h("section", { class: "bot-flow", dataset: { flow: flow.id } },
    h("h2", {}, flow.id, " ", h("span", { class: "muted" }, `${tr("active")}: `),
      h("code", { class: "active-sha", title: flow.active || "" }, short(flow.active))),
    h("p", { class: "muted" }, tr("Sites: {sites}. {n} kept version(s).", { sites: (flow.sites || ["*"]).join(", "), n: flow.versions.length }),
      " ", h("button", { type: "button", class: "ghost rollback",
        onclick: () => run(() => api(`${flowPath(flow)}/rollback`, { method: "POST" }), tr("Rolled {flow} back.", { flow: flow.id })) },
      tr("Roll back"))),
    h("table", { class: "grid" },
      h("thead", {}, h("tr", {}, ...["Version", "Created", "", "Source", "States / intents", ""].map((t) => h("th", {}, t && tr(t))))),
      h("tbody", {}, flow.versions.map((v) => versionRow(flow, v)))));
}

function rejectedList(data) {
  const files = Object.keys(data.errors || {}).sort();
  const counts = data.rejections || {};
  const summary = h("p", { class: "muted" }, tr("{n} refusal(s) since start-up.", { n: data.rejected }));
  if (!files.length) return [summary, h("p", { class: "muted" }, tr("No file is refused at the moment."))];
  return [summary, h("ul", { class: "bot-errors" }, files.map((file) => h("li", { dataset: { file } },
    h("strong", {}, file), ` ${tr("refused {n} time(s); the last time:", { n: counts[file] || 1 })}`,
    h("pre", { class: "error" }, data.errors[file]))))];
}

async function view(flow, v) {
  try {
    const found = await api(`${flowPath(flow)}/versions/${v.sha256}`);
    document.getElementById("bot-source-name").textContent = `${flow.id}@${short(v.sha256)}`;
    document.getElementById("bot-source-origin").textContent = `${found.source} · sha256 ${found.sha256}`;
    document.getElementById("bot-source-text").textContent = found.text;
    source.hidden = false;
    source.scrollIntoView({ block: "nearest" });
  } catch (err) {
    say(err.message, true);
  }
}

async function load() {
  let data;
  try {
    data = await api("/v1/bot/flows");
  } catch (err) {
    const missing = err instanceof ApiError && (err.status === 404 || err.status === 503);
    const text = missing ? tr("Bot flows need the bot_intents plugin with [bot] flows configured.") : err.message;
    replace(flowsBox, h("p", { class: missing ? "muted" : "error" }, text));
    replace(rejectedBox);
    return;
  }
  replace(flowsBox, ...(data.flows.length ? data.flows.map(flowSection)
    : [h("p", { class: "muted" }, tr("No flow serves this site."))]));
  replace(rejectedBox, ...rejectedList(data));
}

document.getElementById("bot-refresh").addEventListener("click", () => { say(""); load(); });
load();
