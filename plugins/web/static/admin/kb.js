// Help articles of the site, kept by the knowledge_base plugin (/v1/kb/articles): list
// (with the visitors' "did this help?" counts), create, edit, delete; the search box shows what the bot would answer (/v1/kb/search,
// whose min_score is the bot's threshold).
import { api, ApiError } from "../lib/api.js";
import { h, replace } from "../lib/dom.js";
import { ready, tr } from "../lib/tr.js";

await ready;

const rows = document.getElementById("kb-rows");
const form = document.getElementById("kb-form");
const field = form.elements; // (form.id, form.title are the form's own attributes)
const formTitle = document.getElementById("kb-form-title");
const cancel = document.getElementById("kb-cancel");
const message = document.getElementById("kb-message");
const hits = document.getElementById("kb-hits");
const LANGS = { en: tr("English"), zh: tr("Chinese") };

function say(text, error = false) {
  message.hidden = !text;
  message.textContent = text;
  message.className = error ? "error" : "muted";
}

/** An id from a Latin title ("Returns & refunds" -> "returns-refunds"), else a fresh one. */
function idFor(title) {
  const slug = title.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 48);
  return slug || `a-${Date.now().toString(36)}`;
}

function editing(article) {
  form.dataset.editing = article ? article.id : "";
  field.id.readOnly = Boolean(article);
  cancel.hidden = !article;
  formTitle.textContent = article ? tr("Edit “{title}”", { title: article.title }) : tr("New article");
  if (article) {
    field.title.value = article.title;
    field.id.value = article.id;
    field.lang.value = article.lang;
    field.body.value = article.body;
    field.title.focus();
  } else {
    form.reset();
  }
}

async function load() {
  let articles;
  try {
    articles = (await api("/v1/kb/articles")).articles;
  } catch (err) {
    const missing = err instanceof ApiError && err.status === 404;
    replace(rows, h("tr", {}, h("td", { colspan: "6", class: missing ? "muted" : "error" },
      missing ? tr("The knowledge base needs the knowledge_base plugin.") : err.message)));
    form.hidden = missing;
    return;
  }
  articles.sort((a, b) => a.title.localeCompare(b.title));
  replace(rows, ...(articles.length ? articles.map((a) => h("tr", { dataset: { id: a.id } },
    h("td", {}, a.title), h("td", {}, LANGS[a.lang] || a.lang), h("td", { translate: "no" }, h("code", {}, a.id)),
    h("td", { class: "num version" }, String(a.version)),
    h("td", { class: "num feedback" }, `${a.helped} / ${a.not_helped}`),
    h("td", {},
      h("button", { type: "button", class: "ghost edit", onclick: () => editing(a) }, tr("Edit")), " ",
      h("button", { type: "button", class: "ghost delete", onclick: () => remove(a) }, tr("Delete")))))
    : [h("tr", {}, h("td", { colspan: "6", class: "muted" }, tr("No article yet.")))]));
}

async function remove(article) {
  if (!window.confirm(tr("Delete the article “{title}”?", { title: article.title }))) return;
  try {
    await api(`/v1/kb/articles/${encodeURIComponent(article.id)}`, { method: "DELETE" });
    say(tr("Deleted “{title}”.", { title: article.title }));
    if (form.dataset.editing === article.id) editing(null);
  } catch (err) {
    say(err.message, true);
  }
  load();
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const title = field.title.value.trim();
  const id = field.id.value.trim() || idFor(title);
  try {
    await api(`/v1/kb/articles/${encodeURIComponent(id)}`, { method: "PUT",
      json: { title, body: field.body.value, lang: field.lang.value } });
    editing(null);
    say(tr("Saved “{title}”.", { title }));
  } catch (err) {
    say(err.message, true);
  }
  load();
});

cancel.addEventListener("click", () => editing(null));

document.getElementById("kb-search-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const q = document.getElementById("kb-q").value.trim();
  if (!q) return;
  let found;
  try {
    found = await api(`/v1/kb/search?${new URLSearchParams({ q, limit: "3" })}`);
  } catch (err) {
    replace(hits, h("p", { class: "error" }, err.message));
    return;
  }
  if (found.shed) {
    replace(hits, h("p", { class: "muted kb-verdict" }, tr("Article suggestions are paused while the server is busy.")));
    return;
  }
  if (!found.hits.length) {
    replace(hits, h("p", { class: "muted kb-verdict" }, tr("No article matches: the bot would use the flow's fallback.")));
    return;
  }
  const answers = found.hits[0].score >= found.min_score;
  replace(hits,
    h("p", { class: "kb-verdict" }, answers
      ? tr("The bot would answer with the first passage (score {score}, threshold {min}).", { score: found.hits[0].score.toFixed(1), min: found.min_score })
      : tr("Below the threshold ({min}): the bot would not answer from an article; the flow's fallback runs.", { min: found.min_score })),
    h("ol", { class: "kb-hits" }, found.hits.map((hit, i) => h("li", { class: i === 0 && answers ? "kb-hit answer" : "kb-hit", dataset: { article: hit.article_id } },
      h("strong", {}, hit.title), hit.heading ? ` · ${hit.heading}` : "",
      h("span", { class: "muted" }, ` (${hit.score.toFixed(1)})`),
      h("div", { class: "pre" }, hit.passage)))));
});

load();
