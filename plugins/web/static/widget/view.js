// The widget's DOM, inside a shadow root: launcher with unread badge, chat panel, offline
// form and satisfaction rating. Every user-supplied string is set as text, never as HTML.
import { h, replace, timeOf } from "../lib/dom.js";
import { emojiPicker } from "../lib/emoji.js";
import { attachmentBody, textBody, tombstoneBody } from "../lib/rich.js";

/** Where a stored message goes: before the first later one, else before unsent ones. */
export function placeFor(list, seq) {
  for (const li of list.children) {
    if (li.classList.contains("notice")) continue;
    if (!li.dataset.seq || Number(li.dataset.seq) > seq) return li;
  }
  return null;
}

export function createView(root, t, actions, { stylesheet, richStylesheet, title, greeting, busy = false, lang = "en" }) {
  const badge = h("span", { class: "badge", hidden: true });
  const launcher = h("button", { class: "launcher", type: "button", "aria-label": t("launcher") },
    h("span", { class: "launcher-icon", "aria-hidden": "true" }), h("span", { class: "launcher-text" }, t("launcher")), badge);
  const status = h("div", { class: "status", hidden: true, role: "status" });
  const queue = h("div", { class: "queue", hidden: true, role: "status" });
  const list = h("ol", { class: "messages", "aria-live": "polite" });
  const typing = h("div", { class: "typing", hidden: true });
  const input = h("textarea", { rows: "1", placeholder: t("placeholder"), "aria-label": t("placeholder") });
  const file = h("input", { type: "file", class: "file", accept: "image/*,application/pdf,text/plain" });
  const composer = h("form", { class: "composer" },
    h("label", { class: "attach", title: t("attach") }, h("span", { "aria-hidden": "true" }, "+"), file),
    emojiPicker(input, { texts: { button: t("emoji"), list: t("emojiList") }, lang }),
    input, h("button", { type: "submit", class: "send" }, t("send")));
  const ended = h("div", { class: "ended", hidden: true });
  const gate = h("div", { class: "gate", hidden: true }); // the pre-chat form (prechat.js)
  const offline = h("form", { class: "offline", hidden: true },
    h("h3", {}, t(busy ? "busyTitle" : "offlineTitle")), h("p", {}, t(busy ? "busyText" : "offlineText")),
    h("input", { name: "name", placeholder: t("name"), required: true, maxlength: "100" }),
    h("input", { name: "email", type: "email", placeholder: t("email"), required: true, maxlength: "200" }),
    h("textarea", { name: "message", rows: "4", placeholder: t("message"), required: true, maxlength: "4000" }),
    h("button", { type: "submit" }, t("leave")));
  const langButton = h("button", { type: "button", class: "lang" }, t("language"));
  const endButton = h("button", { type: "button", class: "end", hidden: true }, t("endChat"));
  const panel = h("section", { class: "panel", hidden: true, role: "dialog", "aria-label": title || t("title") },
    h("header", {}, h("strong", {}, title || t("title")), h("span", { class: "spacer" }), endButton, langButton,
      h("button", { type: "button", class: "close", "aria-label": t("close") }, "×")),
    status, queue,
    h("div", { class: "scroll" }, h("p", { class: "greeting" }, greeting || t("greeting")), gate, list, typing, ended),
    offline, composer);
  const layer = h("div", { class: "kefu" }, panel, launcher);
  replace(root, h("link", { rel: "stylesheet", href: stylesheet }),
    richStylesheet ? h("link", { rel: "stylesheet", href: richStylesheet }) : null, layer);

  launcher.addEventListener("click", () => actions.toggle());
  panel.querySelector(".close").addEventListener("click", () => actions.toggle(false));
  langButton.addEventListener("click", () => actions.switchLanguage());
  endButton.addEventListener("click", () => actions.endChat());
  composer.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    input.value = "";
    actions.send(text);
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      composer.requestSubmit();
    }
  });
  input.addEventListener("input", () => actions.typing(input.value.length > 0));
  input.addEventListener("blur", () => actions.typing(false));
  file.addEventListener("change", () => {
    if (file.files.length) actions.upload(file.files[0]);
    file.value = "";
  });
  offline.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(offline);
    actions.leaveMessage(Object.fromEntries(data.entries()));
  });

  const scroller = panel.querySelector(".scroll");
  const scrollDown = () => { scroller.scrollTop = scroller.scrollHeight; };

  const richTexts = Object.fromEntries(
    ["openImage", "openFile", "preview", "download", "close", "loading", "previewFailed", "truncated"].map((k) => [k, t(k)]));
  function body(msg) {
    if (msg.meta?.deleted) return tombstoneBody(t("deleted"));
    const a = msg.attachment;
    if (a) return attachmentBody(a, { url: actions.fileUrl(a), texts: richTexts, layer, image: msg.type === "image" });
    return textBody(msg.text);
  }

  function render(msg) {
    const state = msg.failed ? t("failed") : msg.pending ? t("sending") : "";
    return h("li", {
      class: `msg ${msg.mine ? "mine" : "theirs"} ${msg.senderKind || ""}`,
      dataset: { seq: msg.seq || "", cid: msg.cid || "" },
    },
    msg.mine || msg.senderKind === "system" ? null : h("span", { class: "who" },
      msg.avatar ? h("img", { class: "avatar", src: msg.avatar, alt: "" }) : null, msg.name || t("agent")),
    body(msg),
    choices(msg),
    h("span", { class: "meta" }, timeOf(msg.created_at), h("span", { class: "state" }, state)));
  }

  // A bot's clarifying question offers its candidates (meta.choices) as quick replies:
  // a click sends the choice's text like a typed message.
  function choices(msg) {
    const offered = msg.mine ? null : msg.meta?.choices;
    if (!Array.isArray(offered) || !offered.length) return null;
    return h("div", { class: "choices" }, offered.slice(0, 8).map((choice) => h("button", {
      type: "button", class: "choice", onclick: () => actions.send(String(choice)) }, String(choice))));
  }

  /** Quick replies only on the newest message: an answered question loses its buttons. */
  function pruneChoices() {
    const last = list.lastElementChild;
    for (const box of list.querySelectorAll(".choices")) if (box.parentElement !== last) box.remove();
  }

  return {
    setOpen(open) {
      panel.hidden = !open;
      launcher.classList.toggle("open", open);
      if (open) { scrollDown(); if (!input.disabled) input.focus(); }
    },
    setBadge(count) {
      badge.hidden = count <= 0;
      badge.textContent = count > 99 ? "99+" : String(count);
    },
    setStatus(text) { status.hidden = !text; status.textContent = text || ""; },
    setQueue(text) { queue.hidden = !text; queue.textContent = text || ""; },
    showOffline(show, { reset = false } = {}) {
      offline.hidden = !show;
      gate.hidden = show || !gate.firstChild;
      composer.hidden = show || !ended.hidden || !!gate.firstChild;
      if (reset) offline.reset(); // a sent message does not stay filled in
    },
    upsert(msg) {
      const selector = msg.seq ? `[data-seq="${msg.seq}"]` : null;
      const existing = (selector && list.querySelector(selector)) ||
        (msg.cid && list.querySelector(`[data-cid="${CSS.escape(msg.cid)}"]`));
      const el = render(msg);
      el.kefuMessage = msg; // what a later `message_deleted` redraws
      if (existing) existing.replaceWith(el); // an ack keeps the message where it was typed
      else list.insertBefore(el, msg.seq ? placeFor(list, msg.seq) : null);
      pruneChoices();
      scrollDown();
    },
    /** A bot answer being written (bot_draft): the stored message with its cid replaces it. */
    draft(msg) {
      const existing = list.querySelector(`[data-cid="${CSS.escape(msg.cid)}"]`);
      if (existing?.dataset.seq) return; // stored already
      if (msg.dropped) { existing?.remove(); return; }
      const el = render(msg);
      el.classList.add("draft");
      if (existing) existing.replaceWith(el);
      else list.append(el);
      scrollDown();
    },
    /** An agent deleted message `seq`: its tombstone replaces it where it is. */
    markDeleted(seq, deleted) {
      const msg = list.querySelector(`[data-seq="${Number(seq)}"]`)?.kefuMessage;
      if (msg && !msg.meta?.deleted) this.upsert({ ...msg, text: "", attachment: null, meta: { ...msg.meta, deleted } });
    },
    markRead(seq) {
      for (const li of list.querySelectorAll(".msg.mine")) {
        if (li.dataset.seq && Number(li.dataset.seq) <= seq) {
          li.classList.add("read");
          li.querySelector(".state").textContent = t("read");
        }
      }
    },
    setTyping(name) { typing.hidden = !name; typing.textContent = name ? t("typing", { name }) : ""; if (name) scrollDown(); },
    canEnd(show) { endButton.hidden = !show; },
    setEnded(show, { rate } = {}) {
      ended.hidden = !show;
      if (show) endButton.hidden = true;
      composer.hidden = show;
      if (!show) { ended.replaceChildren(); return; }
      const again = h("button", { type: "button", class: "again", onclick: () => actions.newChat() }, t("newChat"));
      if (!rate) { replace(ended, h("p", {}, t("resolved")), again); return; }
      const stars = h("div", { class: "stars", role: "radiogroup", "aria-label": t("rateTitle") });
      let score = 0;
      for (let n = 1; n <= 5; n += 1) {
        stars.append(h("button", { type: "button", class: "star", "aria-label": String(n), dataset: { score: n },
          onclick: () => { score = n; stars.querySelectorAll(".star").forEach((s) => s.classList.toggle("on", Number(s.dataset.score) <= n)); } }, "★"));
      }
      const comment = h("textarea", { rows: "2", placeholder: t("rateComment"), maxlength: "1000" });
      const submit = h("button", { type: "button", class: "rate", onclick: () => score && actions.rate(score, comment.value.trim()) }, t("rateSend"));
      replace(ended, h("p", {}, t("resolved")), h("p", { class: "rate-title" }, t("rateTitle")), stars, comment, submit, again);
    },
    showRated() { replace(ended, h("p", { class: "thanks" }, t("rated")), h("button", { type: "button", class: "again", onclick: () => actions.newChat() }, t("newChat"))); },
    notice(text) {
      list.append(h("li", { class: "msg theirs system notice", dataset: { seq: "", cid: "" } }, h("p", { class: "text" }, text)));
      scrollDown();
    },
    clear() { list.replaceChildren(); },
    /** A form in front of the composer until `setGate(null)` (the offline form wins). */
    setGate(el) {
      gate.replaceChildren(...(el ? [el] : []));
      gate.hidden = !el || !offline.hidden;
      composer.hidden = !!el || !offline.hidden || !ended.hidden;
      if (!el && !composer.hidden && !panel.hidden) input.focus();
    },
  };
}
