// Deep links, unread counts in the page title and keyboard shortcuts (issue 14; docs/ui.md).
// The place lives in the URL hash: #c=<conversation>&tab=<tab>&<filters>, so a reload, a
// bookmark or a link to a colleague opens the same conversation with the same list.
import { h } from "../lib/dom.js";
import { tr } from "../lib/tr.js";

export const SHORTCUTS = [
  ["?", "Show or hide these shortcuts"],
  ["/", "Search"],
  ["j / k", "Next / previous conversation"],
  ["1 – 4", "Queued, Mine, All open, Resolved"],
  ["r", "Reply (focus the composer)"],
  ["Esc", "Leave the search or this help"],
];

export function readPlace() {
  const params = new URLSearchParams(location.hash.slice(1));
  const filters = {};
  for (const [k, v] of params) if (k !== "c" && k !== "tab") filters[k] = v;
  return { conversation: params.get("c"), tab: params.get("tab"), filters };
}

export function writePlace({ conversation, tab, filters }) {
  const params = new URLSearchParams();
  if (conversation) params.set("c", conversation);
  if (tab) params.set("tab", tab);
  for (const [k, v] of Object.entries(filters || {})) if (v) params.set(k, v);
  const hash = params.toString();
  history.replaceState(null, "", hash ? `#${hash}` : location.pathname + location.search);
}

/** "(3) Console · kefu" while 3 messages are unread. */
export function titleWithUnread(base, n) {
  document.title = n > 0 ? `(${n}) ${base}` : base;
}

function typing(target) {
  return target && (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName));
}

export function installShortcuts({ inbox, finder, composer, tabs }) {
  const help = h("div", { class: "shortcuts", id: "shortcuts", role: "dialog", "aria-label": tr("Keyboard shortcuts"), hidden: true },
    h("h2", {}, tr("Keyboard shortcuts")),
    h("dl", {}, ...SHORTCUTS.flatMap(([key, what]) => [h("dt", {}, h("kbd", {}, key)), h("dd", {}, tr(what))])));
  help.addEventListener("click", () => { help.hidden = true; });
  document.body.append(help);
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.key === "Escape") {
      help.hidden = true;
      if (document.activeElement === finder.els.q) {
        finder.clear();
        finder.els.q.blur();
      }
      return;
    }
    if (typing(event.target)) return;
    const key = event.key;
    if (key === "?") help.hidden = !help.hidden;
    else if (key === "/") finder.focus();
    else if (key === "j" || key === "k") inbox.step(key === "j" ? 1 : -1);
    else if (key === "r") composer.focus();
    else if (tabs[Number(key) - 1]) inbox.show(tabs[Number(key) - 1]);
    else return;
    event.preventDefault();
  });
  return help;
}
