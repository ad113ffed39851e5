// Contacts (/console/contacts): the site's contacts, searched by name, e-mail or attribute
// values (/v1/visitors), one contact's profile and every conversation (/v1/search/
// conversations?visitor=), editing the profile (PATCH /v1/visitors/{id}), exporting a
// person's data, erasing it (admins; DELETE /v1/visitors/{id}), and merging a duplicate
// into it (/v1/visitors/{id}/merge). The place is in the URL hash: #v=<visitor id>.
import { api } from "../lib/api.js";
import { h, replace, timeOf } from "../lib/dom.js";
import { ready, tr } from "../lib/tr.js";
import { prechatAnswers } from "./prechat.js";

const list = document.getElementById("contact-list");
const search = document.getElementById("contact-search");
const detail = document.getElementById("contact-detail");
const isAdmin = detail.dataset.admin === "true";
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

function say(text, error = false, where = "merge-message") {
  const message = document.getElementById(where);
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

const shown = (v) => (typeof v === "string" ? v : JSON.stringify(v));

function attributeRow(key = "", value = "") {
  return h("div", { class: "attribute-row" },
    h("input", { name: "key", value: key, "aria-label": tr("Attribute"), placeholder: tr("Attribute") }),
    h("input", { name: "value", value: shown(value), "aria-label": tr("Value"), placeholder: tr("Value") }),
    h("button", { type: "button", class: "ghost", onclick: (e) => e.target.closest(".attribute-row").remove() }, "×"));
}

function editForm(visitor) {
  const attrs = { ...(visitor.attributes || {}) };
  const phone = attrs.phone ?? "";
  delete attrs.phone;
  const rows = h("div", { class: "attribute-rows" }, ...Object.entries(attrs).map(([k, v]) => attributeRow(k, v)));
  const form = h("form", { id: "contact-edit", class: "stack" },
    h("label", {}, tr("Name"), h("input", { name: "name", value: visitor.name || "", maxlength: "100" })),
    h("label", {}, tr("E-mail"), h("input", { name: "email", type: "email", value: visitor.email || "", maxlength: "254" })),
    h("label", {}, tr("Phone"), h("input", { name: "phone", value: shown(phone), maxlength: "40" })),
    h("fieldset", {}, h("legend", {}, tr("Custom attributes")), rows,
      h("button", { type: "button", class: "ghost", onclick: () => rows.append(attributeRow()) }, tr("Add an attribute"))),
    h("div", { class: "row-form" }, h("button", { type: "submit" }, tr("Save")), h("span", { id: "edit-message", role: "status", hidden: true })));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const attributes = {};
    for (const row of rows.querySelectorAll(".attribute-row")) {
      const key = row.querySelector("[name=key]").value.trim();
      const text = row.querySelector("[name=value]").value;
      // a value that was not text stays what it was unless it was changed
      if (key) attributes[key] = key in attrs && shown(attrs[key]) === text ? attrs[key] : text;
    }
    const data = new FormData(form);
    const body = { name: data.get("name"), email: data.get("email"), phone: data.get("phone"), attributes };
    try {
      await api(`/v1/visitors/${encodeURIComponent(visitor.id)}`, { method: "PATCH", json: body });
      await show(visitor.id);
      say(tr("Saved."), false, "edit-message");
      await loadList();
    } catch (err) {
      say(err.message, true, "edit-message");
    }
  });
  return form;
}

function dataRights(visitor) {
  const erase = async () => {
    if (!window.confirm(tr("Erase {name} with every conversation and message? This cannot be undone.", { name: label(visitor) }))) return;
    try {
      const erased = await api(`/v1/visitors/${encodeURIComponent(visitor.id)}`, { method: "DELETE" });
      current = null;
      history.replaceState(null, "", location.pathname);
      replace(detail, h("p", { id: "erase-message", role: "status" },
        tr("Erased: {n} messages removed.", { n: erased.messages_removed })));
      await loadList();
    } catch (err) {
      say(err.message, true, "rights-message");
    }
  };
  return h("section", { class: "data-rights" },
    h("h3", {}, tr("Personal data")),
    h("p", { class: "row-form" },
      h("a", { href: `/v1/visitors/${encodeURIComponent(visitor.id)}/export`, download: `contact-${visitor.id}.json`, id: "contact-export", class: "ghost" }, tr("Export their data (JSON)")),
      isAdmin ? h("button", { type: "button", id: "contact-erase", class: "danger", onclick: erase }, tr("Erase this contact")) : null),
    h("p", { id: "rights-message", role: "status", hidden: true }));
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
  // the pre-chat form's answers under their labels (as in the visitor panel), not their keys
  const [answers, asked] = await prechatAnswers(visitor);
  if (current !== id) return; // another contact was chosen meanwhile
  const attrs = Object.entries(visitor.attributes || {}).filter(([k]) => !asked.has(k));
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
    answers,
    h("h3", {}, tr("Conversations ({n})", { n: conversations.length })),
    conversations.length
      ? h("ul", { id: "contact-conversations", class: "contact-conversations" }, ...conversations.map((c) => h("li", { dataset: { id: c.id } },
        h("a", { href: `/console#c=${encodeURIComponent(c.id)}` }, when(c.created_at)),
        h("span", { class: `pill ${c.state}` }, tr(c.state)),
        h("span", { class: "muted" }, tr(c.last_seq === 1 ? "1 message" : "{n} messages", { n: c.last_seq })),
        c.assignee_id ? h("span", { class: "muted", translate: "no" }, agents.get(c.assignee_id) || "") : null)))
      : h("p", { class: "muted" }, tr("none")),
    h("details", { class: "contact-edit" }, h("summary", {}, tr("Edit the profile")), editForm(visitor)),
    mergeSection(visitor),
    dataRights(visitor));
}

search.addEventListener("input", debounce(loadList));

ready.then(async () => {
  agents = new Map((await api("/console/agents.json").catch(() => ({ agents: [] }))).agents.map((a) => [a.id, a.name]));
  await loadList();
  const wanted = new URLSearchParams(location.hash.slice(1)).get("v");
  if (wanted) await show(wanted);
  document.body.dataset.contactsReady = "1";  // tests wait for this marker
});
