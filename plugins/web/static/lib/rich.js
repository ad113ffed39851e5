// Message bodies, shared by the widget and the console (docs/ui.md, "Messages"): text with
// its http(s) links and e-mail addresses made links, image attachments that open in a
// lightbox, file cards (a PDF or a text file opens in a preview over the page), and the
// tombstone of a deleted message. Everything is built as DOM nodes: a message's text (and a
// previewed text file) only ever becomes text nodes and href attributes that passed
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

//: Files shown in the page's overlay: a PDF in a frame (the browser's viewer), text as text.
const PREVIEWS = { "application/pdf": "pdf", "text/plain": "text" };
//: How much of a text file the preview fetches (a byte range; the rest stays in the file).
export const TEXT_PREVIEW_BYTES = 64 * 1024;

function fileIcon(mime, name) {
  if (mime === "application/pdf") return "PDF";
  if (mime === "text/plain") return "TXT";
  const ext = /\.([A-Za-z0-9]{1,4})$/.exec(name || "");
  return ext ? ext[1].toUpperCase() : "FILE";
}

/** "pdf", "text" or null: how a file is previewed. Only the server's own uploads (the path
 * /v1/uploads/<site>/<name>.pdf|.txt, whose type the server sniffed from the content and
 * serves with nosniff and a sandboxing CSP) are previewed; anything else stays a link. */
function previewKind(mime, url) {
  const kind = PREVIEWS[mime];
  if (!kind) return null;
  try {
    const { protocol, pathname } = new URL(url);
    const ext = kind === "pdf" ? ".pdf" : ".txt";
    return (protocol === "http:" || protocol === "https:") && /^\/v1\/uploads\/[^/]+\/[^/]+$/.test(pathname) && pathname.endsWith(ext) ? kind : null;
  } catch {
    return null;
  }
}

/**
 * The body of an attachment message. `url` is the file's address (the widget adds its
 * token); `texts`: {openImage, openFile, preview, download, close, loading, previewFailed,
 * truncated} in the page's language; `layer`: where the overlay goes (the widget's shadow
 * root, the console's body).
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
  const kind = previewKind(mime, url);
  const card = h("a", {
    class: "file-card", href: url, target: "_blank", rel: LINK_REL, download: kind ? null : name,
    title: kind ? texts.preview : texts.download, dataset: { mime },
  },
  h("span", { class: "file-icon", "aria-hidden": "true" }, fileIcon(mime, name)),
  h("span", { class: "file-info" },
    h("span", { class: "file-name" }, name),
    h("span", { class: "file-size" }, humanSize(attachment.size || 0))));
  if (kind) {
    card.addEventListener("click", (event) => {
      if (event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return; // a tab on purpose
      event.preventDefault();
      openPreview(layer, { url, name, kind, size: attachment.size || 0, texts, opener: card });
    });
  }
  return card;
}

/** An overlay over the page: Esc or the close button closes it (and `closeOnClick` a click
 * on it), Tab stays among its controls, the focus goes back to what opened it. */
function overlay(layer, { label, className, content, controls, texts, opener, closeOnClick }) {
  layer.querySelector(":scope > .lightbox")?.remove();
  const close = h("button", { type: "button", class: "lightbox-close", "aria-label": texts.close, title: texts.close }, "×");
  const box = h("div", { class: `lightbox ${className}`, role: "dialog", "aria-modal": "true", "aria-label": label, tabindex: "-1" },
    ...content, close);
  const stops = [...controls, close];
  const done = () => {
    box.remove();
    document.removeEventListener("keydown", onKey, true);
    opener?.focus();
  };
  const onKey = (event) => {
    if (event.key === "Escape") { event.preventDefault(); event.stopPropagation(); done(); }
    if (event.key === "Tab") { // the focus stays inside: the overlay's links and buttons in turn
      event.preventDefault();
      const at = stops.indexOf(layer.activeElement ?? document.activeElement);
      stops[(at + (event.shiftKey ? stops.length - 1 : 1)) % stops.length].focus();
    }
  };
  close.addEventListener("click", (event) => { event.stopPropagation(); done(); });
  box.addEventListener("click", (event) => { if (closeOnClick || event.target === box) done(); });
  document.addEventListener("keydown", onKey, true);
  layer.append(box);
  close.focus();
  return box;
}

/** Full-size image over the page: Esc, a click anywhere or the close button closes it, and
 * the focus goes back to the image that opened it. */
export function openLightbox(layer, { url, name, texts, opener }) {
  return overlay(layer, {
    label: name, className: "image-box", texts, opener, closeOnClick: true, controls: [],
    content: [h("img", { src: url, alt: name, class: "lightbox-image" }), h("span", { class: "lightbox-name" }, name)],
  });
}

/**
 * A PDF or a text file over the page. A PDF is the served file in a frame (same address,
 * served inline with `Content-Security-Policy: sandbox` and nosniff: the browser's viewer
 * shows it, nothing in it runs as the page). A text file is fetched by range (its first
 * TEXT_PREVIEW_BYTES) and shown as the text of a <pre>, never parsed: an uploaded .html is
 * shown as its markup. A header names the file, with "open in a new tab" and "download".
 */
export function openPreview(layer, { url, name, kind, size, texts, opener }) {
  const tab = h("a", { class: "preview-action", href: url, target: "_blank", rel: LINK_REL }, texts.openFile);
  const save = h("a", { class: "preview-action", href: url, download: name }, texts.download);
  const head = h("div", { class: "preview-head" }, h("span", { class: "lightbox-name preview-name" }, name), tab, save);
  let view;
  if (kind === "pdf") {
    // no sandbox attribute: Chromium shows no PDF in a sandboxed frame; the file's own
    // response carries the sandbox (docs/ui.md, "Messages")
    view = h("iframe", { class: "preview-frame", src: url, title: name, referrerpolicy: "no-referrer" });
  } else {
    view = h("pre", { class: "preview-text", tabindex: "0", "aria-busy": "true" }, texts.loading);
    fetchText(url, size).then(({ text, cut }) => {
      view.textContent = text; // text only: markup stays markup
      view.removeAttribute("aria-busy");
      if (cut) view.after(h("p", { class: "preview-note" }, texts.truncated));
    }, () => {
      view.textContent = texts.previewFailed;
      view.classList.add("failed");
      view.removeAttribute("aria-busy");
    });
  }
  return overlay(layer, {
    label: name, className: `file-preview ${kind}`, texts, opener, closeOnClick: false,
    controls: [tab, save], content: [h("div", { class: "preview-sheet" }, head, view)],
  });
}

/** The first TEXT_PREVIEW_BYTES of a text file, decoded; cut: the file is longer. */
async function fetchText(url, size) {
  const resp = await fetch(url, { headers: { Range: `bytes=0-${TEXT_PREVIEW_BYTES - 1}` }, credentials: "same-origin" });
  if (resp.status !== 200 && resp.status !== 206) throw new Error(`HTTP ${resp.status}`);
  let bytes = new Uint8Array(await resp.arrayBuffer());
  const cut = size > TEXT_PREVIEW_BYTES || bytes.length > TEXT_PREVIEW_BYTES;
  if (bytes.length > TEXT_PREVIEW_BYTES) bytes = bytes.subarray(0, TEXT_PREVIEW_BYTES);
  let text = new TextDecoder("utf-8").decode(bytes);
  if (cut) text = text.replace(/\uFFFD$/, ""); // a character cut by the range
  return { text, cut };
}

/** What a deleted message shows instead of its text: "Message deleted (by Ann, 14:02)". */
export function tombstoneBody(label) {
  return h("p", { class: "text tombstone" }, label);
}
