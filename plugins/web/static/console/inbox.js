// The inbox: conversations split by queued / mine / all open / resolved, refreshed from the
// REST API and kept live by the frames the console receives.
import { api } from "../lib/api.js";
import { h, replace, timeOf } from "../lib/dom.js";
import { tr } from "../lib/tr.js";
import { ratingText } from "./chat.js";

const TABS = {
  queued: "state=queued",
  mine: "state=assigned&assignee=me",
  open: "state=assigned",
  resolved: "state=resolved",
};

export class Inbox {
  constructor({ list, tabs, onSelect, visitors }) {
    this.list = list;
    this.tabs = tabs;
    this.onSelect = onSelect;
    this.visitors = visitors; // id -> promise of a visitor record
    this.tab = "queued";
    this.current = null;
    this.previews = new Map(); // conversation id -> last message text
    this.unread = new Set();
    this.conversations = new Map();
    this.timer = null;
    this.team = new Map();
    for (const button of tabs.querySelectorAll("[data-tab]")) {
      button.addEventListener("click", () => this.show(button.dataset.tab));
    }
  }

  setTeam(agents) {
    this.team = new Map(agents.map((a) => [a.id, a]));
  }

  show(tab) {
    this.tab = tab;
    for (const button of this.tabs.querySelectorAll("[data-tab]")) {
      button.setAttribute("aria-selected", String(button.dataset.tab === tab));
    }
    this.refresh();
  }

  /** Re-read the lists soon (several changes in a burst cost one request). */
  refreshSoon() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.refresh(), 250);
  }

  async refresh() {
    const [shown, queued, mine] = await Promise.all([
      api(`/v1/conversations?${TABS[this.tab]}&limit=100`),
      api(`/v1/conversations?${TABS.queued}&limit=100`),
      api(`/v1/conversations?${TABS.mine}&limit=100`),
    ]);
    this.count("queued", queued.conversations.length);
    this.count("mine", mine.conversations.length);
    this.mine = new Set(mine.conversations.map((c) => c.id));
    for (const c of [...shown.conversations, ...queued.conversations, ...mine.conversations]) {
      this.conversations.set(c.id, c);
    }
    this.render(shown.conversations);
    return mine.conversations;
  }

  count(tab, n) {
    const el = this.tabs.querySelector(`[data-count="${tab}"]`);
    if (el) el.textContent = n ? String(n) : "";
  }

  render(conversations) {
    const items = conversations.map((c) => {
      const name = h("strong", {}, tr("Visitor {id}", { id: c.visitor_id.slice(0, 6) }));
      const assignee = c.assignee_id && this.team.get(c.assignee_id)?.name;
      const rating = c.meta?.rating;
      this.visitors(c.visitor_id).then((v) => { if (v?.name) name.textContent = v.name; }).catch(() => {});
      const li = h("li", {
        class: [c.id === this.current ? "active" : "", this.unread.has(c.id) ? "unread" : ""].join(" "),
        dataset: { id: c.id, state: c.state },
        onclick: () => this.select(c.id),
      },
      h("div", { class: "line1" }, name, h("span", { class: `pill ${c.state}` }, tr(c.state))),
      h("div", { class: "preview" }, this.previews.get(c.id) || `${timeOf(c.updated_at)} · ${c.department || tr("general")}${assignee ? ` · ${assignee}` : ""}`),
      rating ? h("div", { class: "rating" }, ratingText(rating)) : null);
      return li;
    });
    replace(this.list, ...(items.length ? items : [h("li", { class: "muted" }, tr("Nothing here."))]));
  }

  select(id) {
    this.current = id;
    this.unread.delete(id);
    for (const li of this.list.children) {
      li.classList.toggle("active", li.dataset.id === id);
      if (li.dataset.id === id) li.classList.remove("unread");
    }
    const conversation = this.conversations.get(id);
    if (conversation) this.onSelect(conversation);
  }

  /** A message arrived for a conversation that is not on screen. */
  noteMessage(frame) {
    this.previews.set(frame.conversation_id, frame.text || frame.attachment?.name || "");
    if (frame.conversation_id !== this.current) this.unread.add(frame.conversation_id);
    this.refreshSoon();
  }

  upsert(conversation) {
    this.conversations.set(conversation.id, { ...this.conversations.get(conversation.id), ...conversation });
    this.refreshSoon();
  }
}
