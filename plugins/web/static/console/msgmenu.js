// A message's menu in the console (docs/ui.md, "Deleting a message"): Delete, on the messages
// the agent may delete (docs/protocol.md section 7), after a confirmation, through
// DELETE /v1/conversations/{id}/messages/{seq}. The tombstone reaches every screen in the
// conversation as a `message_deleted` frame; the audit record stays on the server.
import { api } from "../lib/api.js";
import { h } from "../lib/dom.js";
import { tr } from "../lib/tr.js";

/** What the server would allow: admins any message; an agent their own, the visitor's and
 * the bot's, in a conversation that is theirs or unassigned. Notes and events: none. */
export function mayDelete(me, conversation, msg) {
  if (!msg.seq || msg.pending || msg.meta?.deleted || msg.type === "note" || msg.type === "event") return false;
  if (me.admin) return true;
  const assignee = conversation?.state === "assigned" ? conversation.assignee_id : null;
  if (assignee && assignee !== me.id) return false;
  if (msg.kind === "agent") return msg.senderId === me.id;
  return msg.kind === "visitor" || msg.kind === "bot";
}

function closeAll(except = null) {
  for (const menu of document.querySelectorAll(".msg-menu:not([hidden])")) {
    if (menu === except) continue;
    menu.hidden = true;
    menu.previousElementSibling?.setAttribute("aria-expanded", "false");
  }
}
document.addEventListener("click", () => closeAll());

/** The ⋯ button and its menu for one message, or null when there is nothing to offer. */
export function messageMenu({ me, conversation, msg, onDeleted }) {
  if (!mayDelete(me, conversation, msg)) return null;
  const toggle = h("button", {
    type: "button", class: "msg-menu-button", "aria-haspopup": "menu", "aria-expanded": "false",
    "aria-label": tr("Message actions"), title: tr("Message actions"),
  }, "⋯");
  const remove = h("button", { type: "button", role: "menuitem", class: "msg-menu-item danger", dataset: { action: "delete" } }, tr("Delete message"));
  const menu = h("div", { class: "msg-menu", role: "menu", hidden: true }, remove);
  const close = () => { menu.hidden = true; toggle.setAttribute("aria-expanded", "false"); };
  toggle.addEventListener("click", (event) => {
    event.stopPropagation();
    const opening = menu.hidden;
    closeAll(menu);
    menu.hidden = !opening;
    toggle.setAttribute("aria-expanded", String(opening));
    if (opening) remove.focus();
  });
  menu.addEventListener("keydown", (event) => {
    if (event.key === "Escape") { event.preventDefault(); close(); toggle.focus(); }
  });
  remove.addEventListener("click", async (event) => {
    event.stopPropagation();
    close();
    const question = tr("Delete this message? Everyone in the chat will see that it was deleted; the audit log keeps who deleted it.");
    if (!window.confirm(question)) return;
    const path = `/v1/conversations/${encodeURIComponent(conversation.id)}/messages/${msg.seq}`;
    try {
      onDeleted(await api(path, { method: "DELETE" }));
    } catch (err) {
      if (err.code !== "already_deleted") alert(tr("The message could not be deleted: {error}", { error: err.message }));
    }
  });
  return h("span", { class: "msg-tools" }, toggle, menu);
}
