// The visitor panel: who is chatting, from which page, custom attributes, earlier chats.
import { api } from "../lib/api.js";
import { h, replace, timeOf } from "../lib/dom.js";
import { tr } from "../lib/tr.js";
import { prechatAnswers } from "./prechat.js";

const cache = new Map();

export function visitorRecord(id) {
  if (!cache.has(id)) cache.set(id, api(`/v1/visitors/${encodeURIComponent(id)}`).catch(() => null));
  return cache.get(id);
}

export async function showVisitor(panel, conversation, onOpen) {
  cache.delete(conversation.visitor_id);
  const [visitor, history, identity] = await Promise.all([
    visitorRecord(conversation.visitor_id),
    api(`/console/visitors/${encodeURIComponent(conversation.visitor_id)}/conversations.json`).catch(() => ({ conversations: [] })),
    // who the company's site says this is (the visitor_identity plugin); 404: not identified
    api(`/v1/visitors/${encodeURIComponent(conversation.visitor_id)}/identity`).catch(() => null),
  ]);
  if (!visitor) {
    replace(panel, h("p", { class: "muted" }, tr("Visitor details unavailable.")));
    return;
  }
  const attrs = visitor.attributes || {};
  const [answers, asked] = await prechatAnswers(visitor); // the pre-chat form's, labelled
  const rows = [
    [tr("Name"), visitor.name || "—"],
    [tr("E-mail"), visitor.email || attrs.email || "—"],
    [tr("Page"), visitor.page || "—"],
    [tr("Referrer"), visitor.referrer || "—"],
    [tr("Location"), attrs.location || attrs.city || attrs.country || tr("unknown")],
    [tr("Browser"), visitor.user_agent || "—"],
    [tr("First seen"), new Date(visitor.created_at * 1000).toLocaleString()],
    [tr("Last seen"), new Date(visitor.last_seen_at * 1000).toLocaleString()],
  ];
  const custom = Object.entries(attrs).filter(([k]) => !["email", "location", "city", "country"].includes(k) && !asked.has(k));
  const earlier = history.conversations.filter((c) => c.id !== conversation.id);
  replace(panel,
    h("h2", { translate: "no" }, visitor.name || tr("Visitor {id}", { id: visitor.id.slice(0, 6) })),
    h("dl", {}, ...rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", { translate: "no" }, String(v))])),
    identity ? h("p", { class: identity.verified ? "identity verified" : "identity unverified", dataset: { verified: String(identity.verified) } },
      identity.verified ? "✓ " : "⚠ ", tr(identity.verified ? "Verified user {id}" : "Unverified claim: {id}", { id: identity.user_id })) : null,
    answers,
    h("h3", {}, tr("Custom attributes")),
    custom.length
      ? h("dl", {}, ...custom.flatMap(([k, v]) => [h("dt", { translate: "no" }, k), h("dd", { translate: "no" }, typeof v === "string" ? v : JSON.stringify(v))]))
      : h("p", { class: "muted" }, tr("none")),
    h("h3", {}, tr("Previous conversations")),
    earlier.length
      ? h("ul", {}, ...earlier.map((c) => h("li", {}, h("a", { href: "#", onclick: (e) => { e.preventDefault(); onOpen(c); } },
        `${new Date(c.created_at * 1000).toLocaleDateString()} ${timeOf(c.created_at)}`), ` · ${tr(c.state)}`)))
      : h("p", { class: "muted" }, tr("none")),
    h("p", {}, h("a", { href: `/console/contacts#v=${encodeURIComponent(visitor.id)}`, class: "contact-link" },
      tr("Contact page: every conversation, merge"))));
}
