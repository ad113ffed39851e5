// Canned replies: typing "/" then a shortcut lists the matching replies with their text;
// Enter or Tab completes the shortcut, and sending it sends the reply.
import { api } from "../lib/api.js";
import { h, replace } from "../lib/dom.js";

const RELOAD_MS = 3000;

export class CannedPicker {
  constructor(list, textarea) {
    this.list = list;
    this.textarea = textarea;
    this.replies = [];
    this.matches = [];
    this.index = 0;
    this.loadedAt = 0;
    this.load();
  }

  /** The site's and the agent's own replies, kept by the agent_tools plugin. */
  async load() {
    this.loadedAt = Date.now();
    try {
      this.replies = (await api("/v1/canned_replies")).replies || [];
    } catch {
      this.replies = []; // the plugin is disabled: "/" lists nothing
    }
  }

  update() {
    const value = this.textarea.value;
    const match = /^\/([\w-]*)$/.exec(value);
    this.matches = match ? this.replies.filter((r) => r.shortcut.startsWith(match[1].toLowerCase())) : [];
    // a shortcut being typed: read the list again (replies added in Admin since the console
    // opened), soon when nothing matches, else at most every RELOAD_MS
    const age = Date.now() - this.loadedAt;
    if (match && !this.loading && age > (this.matches.length ? RELOAD_MS : 300)) {
      this.loading = this.load().then(() => { this.loading = null; if (this.textarea.value === value) this.update(); });
    }
    this.index = 0;
    this.render();
  }

  render() {
    this.list.hidden = this.matches.length === 0;
    replace(this.list, ...this.matches.map((r, i) =>
      h("li", { class: i === this.index ? "active" : "", onmousedown: (e) => { e.preventDefault(); this.pick(i); } },
        h("strong", {}, `/${r.shortcut}`), " ", h("span", { class: "muted" }, r.text.slice(0, 80)))));
  }

  /** The composer gets the exact `/shortcut`: sent as is, the server replaces it with the
   * reply and fills in `{visitor.name}` and the other placeholders (docs/protocol.md). */
  pick(i) {
    const reply = this.matches[i];
    if (!reply) return;
    this.textarea.value = `/${reply.shortcut}`;
    this.matches = [];
    this.render();
    this.textarea.focus();
  }

  /** Keyboard navigation; true when the key was used here. */
  handleKey(event) {
    if (!this.matches.length) return false;
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      const step = event.key === "ArrowDown" ? 1 : -1;
      this.index = (this.index + step + this.matches.length) % this.matches.length;
      this.render();
    } else if (event.key === "Enter" || event.key === "Tab") {
      this.pick(this.index);
    } else if (event.key === "Escape") {
      this.matches = [];
      this.render();
    } else return false;
    event.preventDefault();
    return true;
  }
}
