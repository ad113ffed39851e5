// The visitor panel: who is chatting, from which page, custom attributes, earlier chats.
import { api } from "../lib/api.js";
import { h, replace, timeOf } from "../lib/dom.js";

const cache = new Map();

export function visitorRecord(id) {
  if (!cache.has(id)) cache.set(id, api(`/v1/visitors/${encodeURIComponent(id)}`).catch(() => null));
  return cache.get(id);
}

export async function showVisitor(panel, conversation, onOpen) {
  cache.delete(conversation.visitor_id);
  const [visitor, history] = await Promise.all([
    visitorRecord(conversation.visitor_id),
    api(`/console/visitors/${encodeURIComponent(conversation.visitor_id)}/conversations.json`).catch(() => ({ conversations: [] })),
  ]);
  if (!visitor) {
    replace(panel, h("p", { class: "muted" }, "Visitor details unavailable."));
    return;
  }
  const attrs = visitor.attributes || {};
  const rows = [
    ["Name", visitor.name || "—"],
    ["E-mail", visitor.email || attrs.email || "—"],
    ["Page", visitor.page || "—"],
    ["Referrer", visitor.referrer || "—"],
    ["Location", attrs.location || attrs.city || attrs.country || "unknown"],
    ["Browser", visitor.user_agent || "—"],
    ["First seen", new Date(visitor.created_at * 1000).toLocaleString()],
    ["Last seen", new Date(visitor.last_seen_at * 1000).toLocaleString()],
  ];
  const custom = Object.entries(attrs).filter(([k]) => !["email", "location", "city", "country"].includes(k));
  const earlier = history.conversations.filter((c) => c.id !== conversation.id);
  replace(panel,
    h("h2", {}, visitor.name || `Visitor ${visitor.id.slice(0, 6)}`),
    h("dl", {}, ...rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))])),
    h("h3", {}, "Custom attributes"),
    custom.length
      ? h("dl", {}, ...custom.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, typeof v === "string" ? v : JSON.stringify(v))]))
      : h("p", { class: "muted" }, "none"),
    h("h3", {}, "Previous conversations"),
    earlier.length
      ? h("ul", {}, ...earlier.map((c) => h("li", {}, h("a", { href: "#", onclick: (e) => { e.preventDefault(); onOpen(c); } },
        `${new Date(c.created_at * 1000).toLocaleDateString()} ${timeOf(c.created_at)}`), ` · ${c.state}`)))
      : h("p", { class: "muted" }, "none"));
}
