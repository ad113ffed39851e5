// Canned replies of the site, kept by the agent_tools plugin (/v1/canned_replies); admins
// manage the shared ones (scope "site") here.
import { api, ApiError } from "../lib/api.js";
import { h, replace } from "../lib/dom.js";
import { ready, tr } from "../lib/tr.js";

await ready;

const rows = document.getElementById("canned-rows");
const form = document.getElementById("canned-form");
const message = document.getElementById("canned-message");

function say(text, error = false) {
  message.hidden = !text;
  message.textContent = text;
  message.className = error ? "error" : "muted";
}

async function load() {
  let replies;
  try {
    replies = (await api("/v1/canned_replies")).replies;
  } catch (err) {
    const missing = err instanceof ApiError && err.status === 404;
    replace(rows, h("tr", {}, h("td", { colspan: "4", class: missing ? "muted" : "error" },
      missing ? tr("Canned replies need the agent_tools plugin.") : err.message)));
    form.hidden = missing;
    return;
  }
  replace(rows, ...(replies.length ? replies.map((r) => h("tr", { dataset: { id: r.id } },
    h("td", {}, `/${r.shortcut}`), h("td", { class: "pre" }, r.text), h("td", {}, r.scope === "site" ? tr("yes") : tr("own")),
    h("td", {}, h("button", { type: "button", class: "ghost", onclick: () => remove(r) }, tr("Delete")))))
    : [h("tr", {}, h("td", { colspan: "4", class: "muted" }, tr("None yet.")))]));
}

async function remove(reply) {
  try {
    await api(`/v1/canned_replies/${encodeURIComponent(reply.id)}`, { method: "DELETE" });
    say(tr("Deleted /{shortcut}.", { shortcut: reply.shortcut }));
  } catch (err) {
    say(err.message, true);
  }
  load();
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const shortcut = form.shortcut.value.trim().replace(/^\//, "").toLowerCase();
  try {
    await api("/v1/canned_replies", { method: "POST", json: { shortcut, text: form.text.value.trim(), scope: "site" } });
    form.reset();
    say(tr("Saved /{shortcut}.", { shortcut }));
  } catch (err) {
    say(err.message, true);
  }
  load();
});

load();
