// Contacts (/console/contacts): the site's contacts, searched by name, e-mail or attribute
// values (/v1/visitors), one contact's profile and every conversation (/v1/search/
// conversations?visitor=), and merging a duplicate into it (/v1/visitors/{id}/merge).
// The place is in the URL hash: /console/contacts#v=<visitor id>.
import { api } from "../lib/api.js";
import { h, replace, timeOf } from "../lib/dom.js";
import { ready, tr } from "../lib/tr.js";

const list = document.getElementById("contact-list");
const search = document.getElementById("contact-search");
const detail = document.getElementById("contact-detail");
let current = null;
let agents = new Map();

const label = (v) => v.name || v.email || tr("Visitor {id}", { id: v.id.slice(0, 6) });
const when = (ts) => `${new Date(ts * 1000).toLocaleDateString()} ${timeOf(ts)}`;

function debounce(fn, ms = 250) {
  let timer;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
}

async function contacts(q, limit = 50) {
  const params = new URLSearchParams({ limit: String(limit) });
  if (q) params.set("q", q);
  return (await api(`/v1/visitors?${params}`)).visitors;
}

async function loadList() {
  const found = await contacts(search.value.trim());
  replace(list, ...(found.length ? found.map((v) => h("li", {
    dataset: { id: v.id }, class: v.id === current ? "active" : null, onclick: () => show(v.id),
  },
  h("div", { class: "line1" }, h("strong", { translate: "no" }, label(v)), h("span", { class: "muted" }, when(v.last_seen_at))),
  h("div", { class: "preview", translate: "no" }, [v.email, v.attributes?.phone].filter(Boolean).join(" · ") || "—")))
    : [h("li", { class: "muted" }, tr("No contact found."))]));
}

function say(text, error = false) {
  const message = document.getElementById("merge-message");
  if (!message) return;
  message.hidden = !text;
  message.textContent = text;
  message.className = error ? "error" : "muted";
}

async function merge(kept, other) {
  if (!window.confirm(tr("Merge {other} into {kept}?", { other: label(other), kept: label(kept) }))) return;
  try {
    const merged = await api(`/v1/visitors/${encodeURIComponent(kept.id)}/merge`, { method: "POST", json: { merge_id: other.id } });
    await show(kept.id);
    say(tr(merged.conversations_moved === 1 ? "Merged: 1 conversation moved here." : "Merged: {n} conversations moved here.", { n: merged.conversations_moved }));
    await loadList();
  } catch (err) {
    say(err.code === "both_open" ? tr("Both contacts have an open conversation: resolve one, then merge.") : err.message, true);
  }
}

function mergeSection(kept) {
  const box = h("input", { type: "search", id: "merge-search", placeholder: tr("Find the duplicate by name, e-mail, phone…") });
  const results = h("ul", { id: "merge-results", class: "merge-results" });
  box.addEventListener("input", debounce(async () => {
    const q = box.value.trim();
    const found = q ? (await contacts(q, 10)).filter((o) => o.id !== kept.id) : [];
    replace(results, ...found.map((o) => h("li", { dataset: { id: o.id } },
      h("span", { translate: "no" }, label(o), o.email ? ` · ${o.email}` : ""),
      h("button", { type: "button", class: "ghost", onclick: () => merge(kept, o) }, tr("Merge into this contact")))));
  }));
  return h("section", { class: "merge" },
    h("h3", {}, tr("Merge a duplicate")),
    h("p", { class: "muted" }, tr("The duplicate's conversations move here, this contact's details win (the duplicate's fill what is missing), and the duplicate is removed.")),
    box, results, h("p", { id: "merge-message", role: "status", hidden: true }));
}

async function show(id) {
  current = id;
  history.replaceState(null, "", `#v=${encodeURIComponent(id)}`);
  for (const li of list.querySelectorAll("li[data-id]")) li.classList.toggle("active", li.dataset.id === id);
  let visitor, page;
  try {
    [visitor, page] = await Promise.all([
      api(`/v1/visitors/${encodeURIComponent(id)}`),
      api(`/v1/search/conversations?${new URLSearchParams({ visitor: id, limit: "100" })}`),
    ]);
  } catch (err) {
    replace(detail, h("p", { class: "error" }, err.status === 404 ? tr("This contact does not exist any more.") : err.message));
    return;
  }
  const attrs = Object.entries(visitor.attributes || {});
  const rows = [
    [tr("E-mail"), visitor.email || "—"],
    [tr("First seen"), when(visitor.created_at)],
    [tr("Last seen"), when(visitor.last_seen_at)],
  ];
  const conversations = page.conversations;
  replace(detail,
    h("h2", { id: "contact-name", translate: "no" }, label(visitor)),
    h("dl", { class: "contact-profile" },
      ...rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", { translate: "no" }, v)]),
      ...attrs.flatMap(([k, v]) => [h("dt", { translate: "no" }, k), h("dd", { translate: "no", dataset: { attribute: k } }, typeof v === "string" ? v : JSON.stringify(v))])),
    h("h3", {}, tr("Conversations ({n})", { n: conversations.length })),
    conversations.length
      ? h("ul", { id: "contact-conversations", class: "contact-conversations" }, ...conversations.map((c) => h("li", { dataset: { id: c.id } },
        h("a", { href: `/console#c=${encodeURIComponent(c.id)}` }, when(c.created_at)),
        h("span", { class: `pill ${c.state}` }, tr(c.state)),
        h("span", { class: "muted" }, tr(c.last_seq === 1 ? "1 message" : "{n} messages", { n: c.last_seq })),
        c.assignee_id ? h("span", { class: "muted", translate: "no" }, agents.get(c.assignee_id) || "") : null)))
      : h("p", { class: "muted" }, tr("none")),
    mergeSection(visitor));
}

search.addEventListener("input", debounce(loadList));

ready.then(async () => {
  agents = new Map((await api("/console/agents.json").catch(() => ({ agents: [] }))).agents.map((a) => [a.id, a.name]));
  await loadList();
  const wanted = new URLSearchParams(location.hash.slice(1)).get("v");
  if (wanted) await show(wanted);
  document.body.dataset.contactsReady = "1";  // tests wait for this marker
});
