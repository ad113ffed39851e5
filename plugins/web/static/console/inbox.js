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
  constructor({ list, tabs, onSelect, visitors, me }) {
    this.me = me; // the agent's id: badges count in their own conversations
    this.list = list;
    this.tabs = tabs;
    this.onSelect = onSelect;
    this.visitors = visitors; // id -> promise of a visitor record
    this.tab = "queued";
    this.current = null;
    this.previews = new Map(); // conversation id -> { seq, text } of its last message (or search hit)
    // read marks written from this page (conversation id -> seq); the server's are each
    // conversation's `read_seq` (plugins/rest_api/reads.py), so a reload or another device
    // shows the same badges (issue 14)
    this.marks = new Map();
    this.marking = new Map(); // conversation id -> the seq to write once the current write ends
    this.found = null; // the finder's results, shown instead of the tab's list
    this.shown = [];
    this.onUnread = null; // (total) => ..., the page title
    this.onTab = null;
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
    this.onTab?.(tab);
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
      this.dropDeleted(c);
    }
    this.render(this.found || shown.conversations);
    this.onUnread?.(this.unreadTotal());
    return mine.conversations;
  }

  count(tab, n) {
    const el = this.tabs.querySelector(`[data-count="${tab}"]`);
    if (el) el.textContent = n ? String(n) : "";
  }

  /** The finder's results instead of the tab's list; null goes back to the tab. */
  showFound(conversations) {
    this.found = conversations;
    for (const c of conversations || []) {
      this.conversations.set(c.id, c);
      this.dropDeleted(c);
    }
    if (conversations) this.render(conversations);
    else this.refresh();
  }

  /** Open the next (1) or previous (-1) conversation of the list (shortcuts j / k). */
  step(delta) {
    const ids = this.shown.map((c) => c.id);
    if (!ids.length) return;
    const at = ids.indexOf(this.current);
    const next = at < 0 ? (delta > 0 ? 0 : ids.length - 1) : Math.min(Math.max(at + delta, 0), ids.length - 1);
    this.select(ids[next]);
  }

  /** Messages after the agent's read mark, in their own open conversations not on screen. */
  unreadOf(id) {
    const c = this.conversations.get(id);
    if (!c || id === this.current || c.assignee_id !== this.me || c.state === "resolved") return 0;
    const mark = Math.max(c.read_seq || 0, this.marks.get(id) || 0);
    return Math.max(0, (c.last_seq || 0) - mark);
  }

  unreadTotal() {
    let n = 0;
    for (const id of this.conversations.keys()) n += this.unreadOf(id);
    return n;
  }

  /** The agent has seen `id` up to `seq`: kept by the server for reloads and other devices
   * (one write at a time per conversation; a newer seq waits for it, older ones are dropped). */
  markRead(id, seq) {
    if (seq <= (this.marks.get(id) || 0)) return;
    this.marks.set(id, seq);
    if (this.marking.has(id)) {
      this.marking.set(id, seq);
      return;
    }
    this.marking.set(id, seq);
    const write = (value) => api(`/v1/conversations/${encodeURIComponent(id)}/read`, { method: "PUT", json: { seq: value } })
      .catch(() => {}) // the mark is also the page's; the next read writes it again
      .then(() => {
        const next = this.marking.get(id);
        if (next > value) write(next);
        else this.marking.delete(id);
      });
    write(seq);
  }

  /**
   * Show the list. Items are kept by conversation id: a refresh that changes nothing touches
   * no element, and a changed item keeps its <li>, so a click that lands while the list is
   * refreshed (frames arrive in bursts) still opens the conversation.
   */
  render(conversations) {
    this.shown = conversations;
    const kept = this.items || new Map();
    this.items = new Map();
    const items = conversations.map((c) => {
      const assignee = c.assignee_id && this.team.get(c.assignee_id)?.name;
      const rating = c.meta?.rating;
      const unread = this.unreadOf(c.id);
      const preview = this.previews.get(c.id)?.text || `${timeOf(c.updated_at)} · ${c.department || tr("general")}${assignee ? ` · ${assignee}` : ""}`;
      const signature = JSON.stringify([c.state, c.visitor_id, unread, preview, rating ? ratingText(rating) : ""]);
      let entry = kept.get(c.id);
      if (!entry) {
        const li = h("li", { dataset: { id: c.id }, onclick: () => this.select(c.id) });
        entry = { li, signature: null };
      }
      const { li } = entry;
      li.classList.toggle("active", c.id === this.current);
      li.classList.toggle("unread", unread > 0);
      li.dataset.state = c.state;
      if (entry.signature !== signature) {
        entry.signature = signature;
        const name = h("strong", {}, tr("Visitor {id}", { id: c.visitor_id.slice(0, 6) }));
        this.visitors(c.visitor_id).then((v) => { if (v?.name) name.textContent = v.name; }).catch(() => {});
        li.replaceChildren(
          h("div", { class: "line1" }, name, h("span", {},
            unread ? h("span", { class: "badge", title: tr("Unread messages") }, String(unread)) : null,
            h("span", { class: `pill ${c.state}` }, tr(c.state)))),
          h("div", { class: "preview" }, preview),
          ...(rating ? [h("div", { class: "rating" }, ratingText(rating))] : []));
      }
      this.items.set(c.id, entry);
      return li;
    });
    const now = [...this.list.children];
    const same = items.length
      ? now.length === items.length && now.every((li, i) => li === items[i])
      : now.length === 1 && now[0].classList.contains("muted");
    if (!same) replace(this.list, ...(items.length ? items : [h("li", { class: "muted" }, tr("Nothing here."))]));
  }

  select(id) {
    this.current = id;
    this.onUnread?.(this.unreadTotal());
    for (const li of this.list.children) {
      li.classList.toggle("active", li.dataset.id === id);
      if (li.dataset.id === id) {
        li.classList.remove("unread");
        li.querySelector(".badge")?.remove();
      }
    }
    const conversation = this.conversations.get(id);
    if (conversation) this.onSelect(conversation);
  }

  /** What the list shows of a message: its text (a search hit's snippet), or the tombstone. */
  setPreview(conversationId, seq, text) {
    this.previews.set(conversationId, { seq, text });
  }

  /** A message arrived for a conversation that is not on screen. */
  noteMessage(frame) {
    this.setPreview(frame.conversation_id, frame.seq, frame.meta?.deleted ? tr("This message was deleted.") : frame.text || frame.attachment?.name || "");
    const c = this.conversations.get(frame.conversation_id);
    if (c && Number(frame.seq) > (c.last_seq || 0)) {
      this.conversations.set(c.id, { ...c, last_seq: Number(frame.seq) });
      this.onUnread?.(this.unreadTotal());
    }
    this.refreshSoon();
  }

  upsert(conversation) {
    this.conversations.set(conversation.id, { ...this.conversations.get(conversation.id), ...conversation });
    this.dropDeleted(conversation);
    this.refreshSoon();
  }

  /** `message_deleted`: a preview quoting that message shows the tombstone instead. */
  noteDeleted(frame) {
    const preview = this.previews.get(frame.conversation_id);
    if (!preview || preview.seq !== Number(frame.seq)) return;
    this.setPreview(frame.conversation_id, preview.seq, tr("This message was deleted."));
    this.render(this.shown);
  }

  /** The record's tombstones (`meta.deleted_messages`): what was deleted while the frame could
   * not reach this page (offline, reconnecting) leaves the preview too. */
  dropDeleted(conversation) {
    const preview = this.previews.get(conversation.id);
    if (preview && conversation.meta?.deleted_messages?.[String(preview.seq)]) {
      this.setPreview(conversation.id, preview.seq, tr("This message was deleted."));
    }
  }
}
