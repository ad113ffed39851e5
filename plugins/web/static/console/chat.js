// The conversation view: history pages from the REST API, live frames over the connection,
// replies with canned /shortcuts, attachments, typing and read receipts.
import { api } from "../lib/api.js";
import { h, timeOf, uuid } from "../lib/dom.js";
import { attachmentBody, textBody, tombstoneBody } from "../lib/rich.js";
import { errorText } from "../lib/errors.js";
import { SeqTracker } from "../lib/seq.js";
import { tr } from "../lib/tr.js";
import { placeFor } from "../widget/view.js";
import { CannedPicker } from "./canned.js";
import { messageMenu } from "./msgmenu.js";
import { emojiPicker } from "../lib/emoji.js";

const PAGE = 50;

export class ChatView {
  constructor({ client, me, els, onSent, onHead, onSeen }) {
    this.onHead = onHead;
    this.onSeen = onSeen; // (conversation id, seq): the agent has seen it up to seq
    this.client = client;
    this.me = me;
    this.els = els;
    this.onSent = onSent;
    this.conversation = null;
    this.tracker = new SeqTracker();
    this.shown = new Set();
    this.pending = new Map();
    this.oldest = null;
    this.lastRead = 0;
    this.typingAt = 0;
    this.team = new Map(); // agent id -> {name, avatar}: who wrote a message
    this.canned = new CannedPicker(els.canned, els.text);
    const emoji = emojiPicker(els.text, { texts: { button: tr("Insert an emoji"), list: tr("Emoji") }, lang: document.documentElement.lang || "en" });
    els.text.after(emoji);
    els.composer.addEventListener("submit", (event) => {
      event.preventDefault();
      this.sendText();
    });
    els.text.addEventListener("keydown", (event) => {
      if (this.canned.handleKey(event)) return;
      if (event.key === "Enter" && !event.shiftKey) {
        event.preventDefault();
        this.sendText();
      }
    });
    els.text.addEventListener("input", () => {
      this.canned.update();
      this.typing(els.text.value.length > 0);
    });
    els.file.addEventListener("change", () => {
      if (els.file.files.length) this.upload(els.file.files[0]);
      els.file.value = "";
    });
    els.older.addEventListener("click", () => this.loadOlder());
    document.addEventListener("visibilitychange", () => this.markRead());
  }

  get id() {
    return this.conversation?.id;
  }

  async open(conversation) {
    this.conversation = conversation;
    this.tracker = new SeqTracker();
    this.shown = new Set();
    this.pending = new Map();
    this.lastRead = 0;
    this.els.empty.hidden = true;
    this.els.inner.hidden = false;
    this.els.list.replaceChildren();
    this.renderHead();
    const page = await api(`/v1/conversations/${conversation.id}/messages?limit=${PAGE}`);
    if (this.id !== conversation.id) return;
    for (const m of page.messages) this.render(fromRecord(m, this.me));
    const last = page.messages.length ? page.messages[page.messages.length - 1].seq : 0;
    this.tracker = new SeqTracker(last);
    this.oldest = page.messages.length ? page.messages[0].seq : null;
    this.els.older.hidden = !page.has_more;
    this.watch();
    this.els.text.focus();
    this.markRead();
  }

  /** (Re)subscribe and catch up from what is held: after opening and after every reconnect. */
  watch() {
    if (!this.conversation) return;
    this.client.send({ op: "watch", conversation_id: this.id });
    this.client.send({ op: "resume", conversation_id: this.id, after_seq: this.tracker.last });
  }

  async loadOlder() {
    if (!this.oldest) return;
    const id = this.id;
    const page = await api(`/v1/conversations/${id}/messages?limit=${PAGE}&before_seq=${this.oldest}`);
    if (this.id !== id) return;
    for (const m of page.messages) this.render(fromRecord(m, this.me));
    if (page.messages.length) this.oldest = page.messages[0].seq;
    this.els.older.hidden = !page.has_more;
  }

  /** The site's agents (the console's /console/agents.json): messages show their names. */
  setTeam(agents) {
    this.team = new Map(agents.map((a) => [a.id, a]));
  }

  nameOf(id) {
    return this.team.get(id)?.name;
  }

  renderHead() {
    const c = this.conversation;
    this.els.title.textContent = tr("Visitor {id}", { id: c.visitor_id.slice(0, 6) });
    this.els.state.textContent = tr(c.state);
    this.els.state.className = `pill ${c.state}`;
    const rating = c.meta?.rating;
    this.els.rating.hidden = !rating;
    this.els.rating.textContent = rating ? ratingText(rating) : "";
    // after a transfer only the new assignee (or an admin) may post: no composer for others
    const elsewhere = c.state === "assigned" && c.assignee_id && c.assignee_id !== this.me.id;
    const readOnly = c.state === "resolved" || (elsewhere && !this.me.admin);
    this.els.composer.hidden = readOnly;
    this.els.readonly.hidden = !elsewhere || c.state === "resolved";
    this.els.readonly.textContent = elsewhere
      ? tr(this.me.admin ? "Assigned to {name}; you reply as an admin." : "Assigned to {name}: only they can reply.", { name: this.nameOf(c.assignee_id) || tr("another agent") })
      : "";
    this.onHead?.(c);
  }

  update(conversation) {
    if (conversation.id !== this.id) return;
    this.conversation = { ...this.conversation, ...conversation };
    this.renderHead();
  }

  // -- incoming -----------------------------------------------------------------------------
  onMessage(frame) {
    if (frame.conversation_id !== this.id) return false;
    const own = this.pending.get(frame.cid);
    if (own) this.pending.delete(frame.cid);
    if (!this.tracker.add(frame.seq) && this.shown.has(frame.seq)) {
      if (frame.meta?.deleted) this.render(fromFrame(frame, this.me)); // a replayed tombstone
      return true;
    }
    this.render(fromFrame(frame, this.me));
    if (this.tracker.hasGap) this.client.send({ op: "resume", conversation_id: this.id, after_seq: this.tracker.last });
    if (frame.sender.kind === "visitor") this.els.typing.hidden = true;
    this.markRead();
    return true;
  }

  onAck(frame) {
    const msg = this.pending.get(frame.cid);
    if (!msg || frame.conversation_id !== this.id) return;
    this.pending.delete(frame.cid);
    this.tracker.add(frame.seq);
    this.render({ ...msg, seq: frame.seq, pending: false });
    this.markRead(); // one's own reply is read
    if (msg.type === "text" && msg.text.startsWith("/")) this.refetch(frame.seq); // a canned reply
  }

  /** Show what was stored as `seq` (a `/shortcut` is stored as the reply it stands for). */
  async refetch(seq) {
    const id = this.id;
    const page = await api(`/v1/conversations/${id}/messages?after_seq=${seq - 1}&limit=1`);
    if (this.id === id && page.messages.length) this.render(fromRecord(page.messages[0], this.me));
  }

  onResumed(frame) {
    if (frame.conversation_id !== this.id) return;
    if (frame.more) {
      this.client.send({ op: "resume", conversation_id: this.id, after_seq: this.tracker.last });
      return;
    }
    for (const msg of this.pending.values()) this.client.send(this.frameOf(msg));
  }

  /** `message_deleted`: the message shows as a tombstone, wherever it was deleted from. */
  onDeleted(frame) {
    if (frame.conversation_id !== this.id) return;
    const li = this.els.list.querySelector(`[data-seq="${Number(frame.seq)}"]`);
    const msg = li?.kefuMessage;
    if (!msg || msg.meta?.deleted) return;
    this.render({ ...msg, text: "", attachment: null, meta: { ...msg.meta, deleted: { by: frame.deleted_by?.id, at: frame.at } } });
  }

  /** `bot_draft`: the bot's answer being written (a generative provider streams it to the
   * visitor and the watchers). Shown where the answer will be, marked as not sent yet; the
   * stored message of the same cid replaces it, a dropped draft goes away. The bot sends it
   * itself: it is not a reply for the agent to send. */
  onDraft(frame) {
    if (frame.conversation_id !== this.id) return;
    const existing = this.els.list.querySelector(`[data-cid="${CSS.escape(frame.cid)}"]`);
    if (existing?.dataset.seq) return; // stored already
    if (frame.state === "dropped") { existing?.remove(); return; }
    const li = h("li", { class: "msg theirs from-bot type-text draft", dataset: { seq: "", cid: frame.cid } },
      textBody(frame.text, { translate: "no" }),
      h("span", { class: "meta" }, h("span", { class: "who" }, label("bot")), " · ", h("span", { class: "state" }, tr("Writing an answer…"))));
    const atBottom = this.els.scroller.scrollHeight - this.els.scroller.scrollTop - this.els.scroller.clientHeight < 80;
    if (existing) existing.replaceWith(li);
    else this.els.list.append(li);
    if (atBottom) this.els.scroller.scrollTop = this.els.scroller.scrollHeight;
  }

  onTyping(frame) {
    if (frame.conversation_id !== this.id || frame.from.kind !== "visitor") return;
    this.els.typing.hidden = !frame.state;
    this.els.typing.textContent = tr("Visitor is typing…");
    clearTimeout(this.typingTimer);
    if (frame.state) this.typingTimer = setTimeout(() => { this.els.typing.hidden = true; }, 6000);
  }

  onRead(frame) {
    if (frame.conversation_id !== this.id || frame.by.kind !== "visitor") return;
    for (const li of this.els.list.querySelectorAll(".msg.mine")) {
      if (Number(li.dataset.seq) && Number(li.dataset.seq) <= frame.seq) {
        li.classList.add("read");
        li.querySelector(".state").textContent = tr("Read");
      }
    }
  }

  onError(frame) {
    const msg = frame.cid && this.pending.get(frame.cid);
    if (msg) this.render({ ...msg, failed: errorText(frame) || frame.message || frame.code });
  }

  markRead() {
    const last = this.tracker.last;
    if (!this.conversation || document.hidden || last <= this.lastRead) return;
    this.lastRead = last;
    this.client.send({ op: "read", conversation_id: this.id, seq: last });
    this.onSeen?.(this.id, last);
  }

  // -- outgoing -----------------------------------------------------------------------------
  sendText() {
    const text = this.els.text.value.trim();
    if (!text || !this.conversation) return;
    this.els.text.value = "";
    this.canned.update();
    this.typing(false);
    this.queue({ type: "text", text });
  }

  queue(fields) {
    const msg = { cid: uuid(), mine: true, self: true, pending: true, kind: "agent", senderId: this.me.id, created_at: Date.now() / 1000, ...fields };
    this.pending.set(msg.cid, msg);
    this.render(msg);
    this.client.send(this.frameOf(msg));
    this.onSent?.(this.conversation);
  }

  frameOf(msg) {
    const frame = { op: "send", conversation_id: this.id, cid: msg.cid, type: msg.type, text: msg.text };
    if (msg.attachment) frame.attachment = { id: msg.attachment.id, url: msg.attachment.url };
    return frame;
  }

  typing(active) {
    if (!this.conversation) return;
    const now = Date.now();
    if (active && now - this.typingAt < 2000) return;
    this.typingAt = active ? now : 0;
    this.client.send({ op: "typing", conversation_id: this.id, state: active });
  }

  async upload(file) {
    const form = new FormData();
    form.append("file", file);
    try {
      const up = await api("/v1/uploads", { method: "POST", body: form });
      this.queue({ type: up.mime.startsWith("image/") ? "image" : "file", text: "", attachment: up });
    } catch (err) {
      alert(tr("Upload failed: {error}", { error: err.message }));
    }
  }

  // -- rendering ----------------------------------------------------------------------------
  render(msg) {
    const list = this.els.list;
    const existing = (msg.seq && list.querySelector(`[data-seq="${msg.seq}"]`)) ||
      (msg.cid && list.querySelector(`[data-cid="${CSS.escape(msg.cid)}"]`));
    const state = msg.failed ? tr("Not sent: {error}", { error: msg.failed }) : msg.pending ? tr("Sending…") : "";
    const who = msg.self ? tr("You") : (msg.kind === "agent" && this.nameOf(msg.senderId)) || label(msg.kind);
    const picture = msg.kind === "agent" && this.team.get(msg.senderId)?.avatar;
    const deleted = msg.meta?.deleted;
    const tombstone = deleted && (deleted.by === this.me.id ? tr("You deleted this message.") : tr("{name} deleted this message.", { name: this.nameOf(deleted.by) || tr("An agent") }));
    const menu = messageMenu({ me: this.me, conversation: this.conversation, msg, onDeleted: (stored) => this.render(fromRecord(stored, this.me)) });
    const li = h("li", { class: `msg ${msg.mine ? "mine" : "theirs"} ${msg.self ? "self" : ""} from-${msg.kind} type-${msg.type}${deleted ? " deleted" : ""}`, dataset: { seq: msg.seq || "", cid: msg.cid || "" } },
      body(msg, tombstone),
      h("span", { class: "meta" }, picture ? h("img", { class: "avatar", src: picture, alt: "" }) : null, h("span", { class: "who" }, who), ` · ${timeOf(msg.created_at)} `, h("span", { class: "state" }, state), menu));
    li.kefuMessage = msg; // what a later `message_deleted` redraws
    if (msg.seq) this.shown.add(msg.seq);
    const atBottom = this.els.scroller.scrollHeight - this.els.scroller.scrollTop - this.els.scroller.clientHeight < 80;
    if (existing) existing.replaceWith(li); // an ack keeps the message where it was typed
    else list.insertBefore(li, msg.seq ? placeFor(list, msg.seq) : null);
    if (atBottom || msg.mine) this.els.scroller.scrollTop = this.els.scroller.scrollHeight;
  }
}

function label(kind) {
  return tr({ visitor: "Visitor", agent: "Agent", bot: "Bot", system: "System" }[kind] || kind);
}

/** "★★★★☆ 4/5 · the comment": a visitor's rating as the console shows it. */
export function ratingText(rating) {
  const scale = rating.scale || 5;
  const score = Math.round(rating.score || 0);
  const stars = "★".repeat(score) + "☆".repeat(Math.max(0, scale - score));
  return `${stars} ${score}/${scale}${rating.comment ? ` · ${rating.comment}` : ""}`;
}

function fileUrl(attachment) {
  return new URL(attachment.url || "", location.origin).href;
}

function richTexts() {
  return {
    openImage: tr("View the image"), openFile: tr("Open in a new tab"), preview: tr("Preview the file"),
    download: tr("Download the file"), close: tr("Close"), loading: tr("Loading…"),
    previewFailed: tr("The file could not be shown."),
    truncated: tr("Only the beginning of the file is shown (64 KB); download it for the rest."),
  };
}

function body(msg, tombstone) {
  if (msg.meta?.deleted) return tombstoneBody(tombstone || tr("This message was deleted."));
  const a = msg.attachment;
  if (a) return attachmentBody(a, { url: fileUrl(a), texts: richTexts(), layer: document.body, image: msg.type === "image" });
  return textBody(msg.text, { translate: "no" });
}

function fromRecord(m, me) {
  return { seq: m.seq, cid: m.cid, kind: m.sender_kind, senderId: m.sender_id, mine: m.sender_kind === "agent", self: m.sender_id === me.id, type: m.type, text: m.text, attachment: m.attachment, meta: m.meta, created_at: m.created_at };
}

function fromFrame(f, me) {
  return { seq: f.seq, cid: f.cid, kind: f.sender.kind, senderId: f.sender.id, mine: f.sender.kind === "agent", self: f.sender.id === me.id, type: f.type, text: f.text, attachment: f.attachment, meta: f.meta, created_at: f.created_at };
}

