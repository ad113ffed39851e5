// Suggestions for the open conversation (docs/ui.md, "Suggestions"): for the visitor's last
// message, the best help-article passages (knowledge_base plugin, GET /v1/kb/search) and
// the canned replies sharing the most words with it (agent_tools plugin, matched here:
// words of 3+ letters, Chinese character pairs). One click puts a passage into the
// composer (after what is typed) or a canned reply's /shortcut (the server fills in its
// placeholders when it is sent).
import { api } from "../lib/api.js";
import { h, replace } from "../lib/dom.js";
import { tr } from "../lib/tr.js";

const STOP = new Set("the and you your for are can how what does with have this that was not but from my our".split(" "));
const CANNED_SHOWN = 3;
const CANNED_RELOAD_MS = 30000;

/** Words of 3+ Latin letters and pairs of Chinese characters (one alone when it stands alone). */
export function terms(text) {
  const lower = (text || "").toLowerCase();
  const out = new Set((lower.match(/[a-z0-9]{3,}/g) || []).filter((w) => !STOP.has(w)));
  for (const run of lower.match(/[\u3400-\u9fff]+/g) || []) {
    if (run.length === 1) out.add(run);
    for (let i = 0; i + 1 < run.length; i++) out.add(run.slice(i, i + 2));
  }
  return out;
}

export class Suggestions {
  constructor({ panel, composer }) {
    this.panel = panel;
    this.composer = composer;
    this.conversationId = null;
    this.question = "";
    this.canned = [];
    this.cannedAt = 0;
  }

  /** A conversation was opened: suggest for its visitor's last text message. */
  async open(conversation) {
    this.conversationId = conversation.id;
    this.question = "";
    replace(this.panel);
    let page;
    try {
      page = await api(`/v1/conversations/${encodeURIComponent(conversation.id)}/messages?limit=20`);
    } catch {
      return;
    }
    if (this.conversationId !== conversation.id) return;
    const last = page.messages.filter((m) => m.sender_kind === "visitor" && m.text).pop();
    if (last) await this.suggest(last.text);
  }

  /** A message frame: a visitor's new text in the open conversation asks again. */
  onMessage(frame) {
    if (frame.conversation_id === this.conversationId && frame.sender?.kind === "visitor" && frame.text) {
      this.suggest(frame.text);
    }
  }

  async cannedReplies() {
    if (Date.now() - this.cannedAt > CANNED_RELOAD_MS) {
      this.cannedAt = Date.now();
      this.canned = await api("/v1/canned_replies").then((r) => r.replies || [], () => []);
    }
    return this.canned;
  }

  async suggest(question) {
    const id = this.conversationId;
    this.question = question;
    const [found, replies] = await Promise.all([
      api(`/v1/kb/search?${new URLSearchParams({ q: question.slice(0, 200), limit: "3" })}`).catch(() => null),
      this.cannedReplies(),
    ]);
    if (id !== this.conversationId || question !== this.question) return; // a newer one is asked
    const wanted = terms(question);
    const canned = replies
      .map((r) => {
        const own = terms(`${r.shortcut.replace(/[-_]/g, " ")} ${r.text}`);
        const shared = [...own].filter((t) => wanted.has(t)).length;
        return { reply: r, score: shared / Math.sqrt(own.size || 1) };
      })
      .filter((c) => c.score > 0)
      .sort((a, b) => b.score - a.score)
      .slice(0, CANNED_SHOWN);
    const hits = found?.hits || [];
    if (found?.shed) { // the server sheds load: articles are not searched for now
      replace(this.panel, h("h3", {}, tr("Suggestions")),
        h("p", { class: "muted suggest-shed" }, tr("Article suggestions are paused while the server is busy.")));
      return;
    }
    replace(this.panel,
      h("h3", {}, tr("Suggestions")),
      h("p", { class: "muted suggest-for" }, tr("For: “{text}”", { text: question.slice(0, 80) })),
      hits.length || canned.length ? null : h("p", { class: "muted" }, tr("No article or canned reply matches.")),
      hits.length ? h("ul", { class: "suggest-list" }, hits.map((hit) => h("li", {},
        h("button", { type: "button", class: "suggest kb", dataset: { article: hit.article_id },
          title: tr("Insert into the reply"), onclick: () => this.insert(hit.passage) },
          h("strong", {}, hit.title), hit.heading ? ` · ${hit.heading}` : "",
          h("span", { class: "suggest-text" }, hit.passage.slice(0, 160)))))) : null,
      canned.length ? h("ul", { class: "suggest-list" }, canned.map(({ reply }) => h("li", {},
        h("button", { type: "button", class: "suggest canned-reply", dataset: { shortcut: reply.shortcut },
          title: tr("Insert into the reply"), onclick: () => this.useCanned(reply) },
          h("strong", {}, `/${reply.shortcut}`), h("span", { class: "suggest-text" }, reply.text.slice(0, 120)))))) : null);
  }

  insert(text) {
    const box = this.composer;
    const before = box.value && !box.value.startsWith("/") ? `${box.value.replace(/\s+$/, "")}\n` : "";
    box.value = before + text;
    box.focus();
    box.dispatchEvent(new Event("input", { bubbles: true }));
  }

  useCanned(reply) {
    this.composer.value = `/${reply.shortcut}`; // (no input event: the "/" picker stays shut)
    this.composer.focus();
  }
}
