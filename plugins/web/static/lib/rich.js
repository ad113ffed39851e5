// Message bodies, shared by the widget and the console (docs/ui.md, "Messages"): text with
// its http(s) links and e-mail addresses made links, image attachments that open in a
// lightbox, file cards, and the tombstone of a deleted message. Everything is built as DOM
// nodes: a message's text only ever becomes text nodes and href attributes that passed
// linkHref(); nothing is parsed as HTML.
import { h, humanSize } from "./dom.js";

// A candidate: an http(s) URL, or an e-mail address. Anything else (javascript:, data:,
// ftp:, a bare www.) stays text. Schemes are matched case-insensitively and checked again
// by the URL parser.
const CANDIDATE = /\bhttps?:\/\/[^\s<>"'`]+|[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}/gi;
const TRAILING = /[.,;:!?'"»」』）。，；：！？]+$/u;
const PAIRS = { ")": "(", "]": "[", "}": "{" };
const LINK_REL = "noopener noreferrer nofollow";

/** The text a URL candidate ends with: no trailing punctuation, no unbalanced closer. */
function trimCandidate(text) {
  let out = text.replace(TRAILING, "");
  for (;;) {
    const last = out.slice(-1);
    const open = PAIRS[last];
    if (!open) break;
    const opened = out.split(open).length - 1;
    const closed = out.split(last).length - 1;
    if (closed <= opened) break;
    out = out.slice(0, -1).replace(TRAILING, "");
  }
  return out;
}

/** The href of a link candidate, or null: http(s) URLs with a host, mailto: addresses. */
export function linkHref(candidate) {
  if (/^https?:\/\//i.test(candidate)) {
    try {
      const url = new URL(candidate);
      return (url.protocol === "http:" || url.protocol === "https:") && url.hostname ? url.href : null;
    } catch {
      return null;
    }
  }
  if (/^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$/.test(candidate)) return `mailto:${candidate}`;
  return null;
}

/** The text as a list of strings and <a> elements (links open in a new tab, no referrer). */
export function linkify(text) {
  const parts = [];
  let at = 0;
  for (const match of String(text ?? "").matchAll(CANDIDATE)) {
    const found = trimCandidate(match[0]);
    const href = found && linkHref(found);
    if (!href) continue;
    if (match.index > at) parts.push(text.slice(at, match.index));
    const a = h("a", { class: "link", target: "_blank", rel: LINK_REL });
    a.setAttribute("href", href); // checked by linkHref: http(s) or mailto only
    a.textContent = found;
    parts.push(a);
    at = match.index + found.length;
  }
  if (at < String(text ?? "").length) parts.push(String(text).slice(at));
  return parts;
}

/** A message's text paragraph with its links. */
export function textBody(text, attrs = {}) {
  return h("p", { class: "text", ...attrs }, linkify(text));
}

const OPENS_IN_TAB = new Set(["application/pdf", "text/plain"]);

function fileIcon(mime, name) {
  if (mime === "application/pdf") return "PDF";
  if (mime === "text/plain") return "TXT";
  const ext = /\.([A-Za-z0-9]{1,4})$/.exec(name || "");
  return ext ? ext[1].toUpperCase() : "FILE";
}

/**
 * The body of an attachment message. `url` is the file's address (the widget adds its
 * token); `texts`: {openImage, openFile, download, close} in the page's language; `layer`:
 * where the lightbox goes (the widget's shadow root, the console's body).
 */
export function attachmentBody(attachment, { url, texts, layer, image = false }) {
  const name = attachment.name || (image ? "image" : "file");
  if (image) {
    const link = h("a", { class: "image-link", href: url, target: "_blank", rel: LINK_REL, title: texts.openImage, "aria-label": `${texts.openImage}: ${name}` },
      h("img", { src: url, alt: name, class: "image", loading: "lazy" }));
    link.addEventListener("click", (event) => {
      if (event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return; // a tab on purpose
      event.preventDefault();
      openLightbox(layer, { url, name, texts, opener: link });
    });
    return link;
  }
  const mime = attachment.mime || "";
  const inTab = OPENS_IN_TAB.has(mime) || /\.(pdf|txt)$/i.test(name);
  const card = h("a", {
    class: "file-card", href: url, target: "_blank", rel: LINK_REL, download: inTab ? null : name,
    title: inTab ? texts.openFile : texts.download, dataset: { mime },
  },
  h("span", { class: "file-icon", "aria-hidden": "true" }, fileIcon(mime, name)),
  h("span", { class: "file-info" },
    h("span", { class: "file-name" }, name),
    h("span", { class: "file-size" }, humanSize(attachment.size || 0))));
  return card;
}

/** Full-size image over the page: Esc, a click anywhere or the close button closes it, and
 * the focus goes back to the image that opened it. */
export function openLightbox(layer, { url, name, texts, opener }) {
  layer.querySelector(":scope > .lightbox")?.remove();
  const close = h("button", { type: "button", class: "lightbox-close", "aria-label": texts.close }, "×");
  const box = h("div", { class: "lightbox", role: "dialog", "aria-modal": "true", "aria-label": name, tabindex: "-1" },
    h("img", { src: url, alt: name, class: "lightbox-image" }),
    h("span", { class: "lightbox-name" }, name),
    close);
  const done = () => {
    box.remove();
    document.removeEventListener("keydown", onKey, true);
    opener?.focus();
  };
  const onKey = (event) => {
    if (event.key === "Escape") { event.preventDefault(); event.stopPropagation(); done(); }
    if (event.key === "Tab") { event.preventDefault(); close.focus(); } // the focus stays inside
  };
  box.addEventListener("click", done);
  document.addEventListener("keydown", onKey, true);
  layer.append(box);
  close.focus();
  return box;
}

/** What a deleted message shows instead of its text: "Message deleted (by Ann, 14:02)". */
export function tombstoneBody(label) {
  return h("p", { class: "text tombstone" }, label);
}
