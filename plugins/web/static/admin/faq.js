// FAQ mining of the site (bot_intents plugin, GET /v1/bot/faq): clusters of the visitors'
// questions with trend, the bot's failure rate, representative questions and the agents'
// most common answer; "Publish" adds a cluster as an intent with a reply to the site's
// flow (POST /v1/bot/faq/publish), which becomes a new active version.
import { api, ApiError } from "../lib/api.js";
import { h, replace } from "../lib/dom.js";
import { ready, tr } from "../lib/tr.js";

await ready;

const box = document.getElementById("faq-clusters");
const summary = document.getElementById("faq-summary");
const message = document.getElementById("faq-message");
const value = (id) => document.getElementById(id).value;

function say(text, error = false) {
  message.hidden = !text;
  message.textContent = text || "";
  message.className = error ? "error" : "muted";
}

const pct = (x) => (x === null || x === undefined ? "–" : `${Math.round(x * 100)}%`);

function trend(c) {
  if (c.trend === null) return c.recent ? tr("new") : "–";
  const t = Math.round(c.trend * 100);
  return `${t > 0 ? "+" : ""}${t}%`;
}

function publishForm(c) {
  const name = h("input", { name: "intent", value: c.suggested_intent, required: true, maxlength: 64, size: 24 });
  const reply = h("textarea", { name: "response", rows: 2, cols: 50, required: true,
    placeholder: tr("the bot's reply") }, c.agent_answer ? c.agent_answer.text : "");
  const goto = h("input", { name: "goto", placeholder: tr("then go to state (optional)"), size: 20 });
  const result = h("span", { class: "muted faq-result", role: "status" });
  const form = h("form", { class: "faq-publish", dataset: { cluster: c.id } },
    h("label", {}, tr("Intent"), " ", name), " ", h("label", {}, tr("Reply"), " ", reply), " ", goto, " ",
    h("button", { type: "submit" }, tr("Publish as intent")), " ", result);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    result.className = "muted faq-result";
    result.textContent = tr("Publishing…");
    try {
      const done = await api("/v1/bot/faq/publish", { method: "POST", json: {
        intent: name.value.trim(), examples: c.examples, response: reply.value,
        goto: goto.value.trim() || null } });
      result.textContent = tr("Published: {version} is active ({n} examples).", { version: `${done.flow_id}@${done.sha256.slice(0, 12)}`, n: done.examples }) +
        (done.file ? ` ${tr("{file} written.", { file: done.file })}` : "");
    } catch (err) {
      result.className = "error faq-result";
      result.textContent = err.message;
    }
  });
  return form;
}

function clusterRow(c, rank) {
  const reps = c.representatives.map((r) => h("li", {}, r.text, h("span", { class: "muted" }, ` ×${r.count}`)));
  const answer = c.agent_answer
    ? h("div", {}, h("span", { class: "muted" }, `${tr("Agents")} (${c.agent_answer.count}/${c.agent_answer.answered}): `),
      c.agent_answer.text)
    : h("div", { class: "muted" }, tr("No agent answer recorded."));
  return h("tr", { dataset: { cluster: c.id } },
    h("td", {}, String(rank)),
    h("td", {}, `${c.size}`, h("div", { class: "muted" }, `${(c.share * 100).toFixed(1)}%`)),
    h("td", {}, trend(c), h("div", { class: "muted" }, `${c.recent} / ${c.previous}`)),
    h("td", {}, c.bot_turns ? tr("{pct} of {n}", { pct: pct(c.failure_rate), n: c.bot_turns }) : "–"),
    h("td", {}, h("ul", { class: "faq-reps" }, reps), answer, publishForm(c)));
}

async function load() {
  say(tr("Mining…"));
  const params = new URLSearchParams({ days: value("faq-days"), top: value("faq-top"),
    threshold: value("faq-threshold"), window_days: value("faq-window") });
  let data;
  try {
    data = await api(`/v1/bot/faq?${params}`);
  } catch (err) {
    const missing = err instanceof ApiError && (err.status === 404 || err.status === 503);
    say("");
    replace(box, h("p", { class: missing ? "muted" : "error" },
      missing ? tr("FAQ mining needs the bot_intents plugin and a storage backend.") : err.message));
    return;
  }
  say("");
  summary.textContent = tr("{questions} questions ({distinct} distinct) in {conversations} conversations; {clusters} clusters, {seconds} s.", {
    questions: data.questions, distinct: data.unique_questions, conversations: data.conversations,
    clusters: data.clusters_found, seconds: data.seconds.toFixed(1) });
  if (!data.clusters.length) {
    replace(box, h("p", { class: "muted" }, tr("No cluster yet: no question was asked twice.")));
    return;
  }
  const head = ["#", tr("Questions"), tr("Trend ({n} d)", { n: data.window_days }), tr("Bot failed"), tr("Representative questions, agents' answer")];
  replace(box, h("table", { class: "grid faq" },
    h("thead", {}, h("tr", {}, ...head.map((t) => h("th", {}, t)))),
    h("tbody", {}, data.clusters.map((c, i) => clusterRow(c, i + 1)))));
}

document.getElementById("faq-form").addEventListener("submit", (event) => { event.preventDefault(); load(); });
load();
