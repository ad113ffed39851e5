// Private notes and tags of the open conversation (the agent_tools plugin's `note` and `tag`
// ops, GET /v1/conversations/{id}/notes). Notes are for agents only: the visitor never sees
// them. Without that plugin the section says so.
import { api, ApiError } from "../lib/api.js";
import { h, replace, timeOf } from "../lib/dom.js";
import { errorText } from "../lib/errors.js";
import { tr } from "../lib/tr.js";

export class Annotations {
  constructor({ client, panel }) {
    this.client = client;
    this.panel = panel;
    this.conversation = null;
    this.notes = [];
    this.tags = [];
    client.on("note", (f) => this.addNote(f.conversation_id, f.note));
    client.on("note_ok", (f) => this.addNote(f.conversation_id, f.note));
    client.on("tags", (f) => this.setTags(f.conversation_id, f.tags));
    client.on("tag_ok", (f) => this.setTags(f.conversation_id, f.tags));
    client.on("error", (f) => {
      if (typeof f.ref === "string" && f.ref.startsWith("annot-")) this.say(errorText(f) || `${f.code}: ${f.message}`);
    });
  }

  async open(conversation) {
    this.conversation = conversation;
    this.tags = [...(conversation.tags || [])];
    this.notes = [];
    this.available = true;
    try {
      this.notes = (await api(`/v1/conversations/${encodeURIComponent(conversation.id)}/notes`)).notes;
    } catch (err) {
      this.available = !(err instanceof ApiError && err.status === 404);
    }
    if (this.conversation?.id === conversation.id) this.render();
  }

  say(text) {
    const line = this.panel.querySelector(".annot-error");
    if (line) { line.hidden = !text; line.textContent = text; }
  }

  addNote(conversationId, note) {
    if (conversationId !== this.conversation?.id || !note) return;
    if (this.notes.some((n) => n.id === note.id)) return;
    this.notes.push(note);
    this.render();
  }

  setTags(conversationId, tags) {
    if (conversationId !== this.conversation?.id) return;
    this.tags = tags;
    this.render();
  }

  send(op, fields) {
    this.say("");
    this.client.send({ op, ref: `annot-${op}`, conversation_id: this.conversation.id, ...fields });
  }

  render() {
    if (!this.available) {
      replace(this.panel, h("p", { class: "muted" }, tr("Notes and tags need the agent_tools plugin.")));
      return;
    }
    const tagInput = h("input", { placeholder: tr("add a tag"), maxlength: "32", "aria-label": tr("New tag") });
    const tagForm = h("form", { class: "tag-form" }, tagInput, h("button", { type: "submit", class: "ghost" }, tr("Add")));
    tagForm.addEventListener("submit", (e) => {
      e.preventDefault();
      const tag = tagInput.value.trim().toLowerCase();
      if (tag) this.send("tag", { add: [tag] });
    });
    const noteText = h("textarea", { rows: "2", maxlength: "4000", placeholder: tr("A private note for agents"), "aria-label": tr("New note") });
    const noteForm = h("form", { class: "note-form" }, noteText, h("button", { type: "submit" }, tr("Add note")));
    noteForm.addEventListener("submit", (e) => {
      e.preventDefault();
      const text = noteText.value.trim();
      if (text) this.send("note", { text });
    });
    replace(this.panel,
      h("h3", {}, tr("Tags")),
      h("div", { class: "tags" }, ...this.tags.map((t) => h("span", { class: "pill tag" }, t,
        h("button", { type: "button", class: "untag", "aria-label": tr("remove {tag}", { tag: t }), onclick: () => this.send("tag", { remove: [t] }) }, "×")))),
      tagForm,
      h("h3", {}, tr("Private notes")),
      h("ul", { class: "notes" }, ...this.notes.map((n) => h("li", { class: `note ${n.source || ""}` },
        h("p", {}, n.text), h("span", { class: "muted" }, `${n.source === "transfer" ? `${tr("transfer note")} · ` : ""}${timeOf(n.created_at)}`)))),
      noteForm,
      h("p", { class: "error annot-error", hidden: true }));
  }
}
