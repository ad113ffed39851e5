// The conversation's workflow buttons (routing ops, docs/protocol.md section 9): take from
// the queue, accept or decline an assignment, transfer to an agent or a department with a
// note, resolve, reopen. Each is one frame; the reply (or an error) updates the view.
import { api } from "../lib/api.js";
import { h, replace } from "../lib/dom.js";
import { errorText } from "../lib/errors.js";
import { tr } from "../lib/tr.js";

let refs = 0;

/** Why *Take* found nothing (the `reason` of routing's `nothing_to_pick`, its PICK_REFUSALS). */
const PICK_REFUSALS = {
  account_gone: () => tr("Your agent account is gone."),
  not_online: (p) => tr("You are {status}: set your status to online to take conversations.", { status: tr(p.status || "") }),
  full: (p) => tr("You are full ({open} of {capacity} open conversations).", p),
  not_waiting: (p) => tr("This conversation is not waiting any more ({state}).", { state: tr(p.state || "") }),
  department_not_served: (p) => tr("This conversation waits for department '{department}', which you do not serve (an admin adds it to your skills).", p),
  declined: () => tr("You declined this conversation."),
  routing_refused: () => tr("Routing did not let you take it (a filter refused, or it was just taken)."),
  none_waiting: () => tr("No waiting conversation you may take (none in a department you serve)."),
};

/** The workflow's refusals in the agent's language; null: show the server's own words. */
const REFUSALS = {
  nothing_to_pick: (f) => PICK_REFUSALS[f.reason]?.(f.params || {}),
  not_assignee: () => tr("This conversation is not assigned to you (any more)."),
  conversation_resolved: () => tr("This conversation is resolved."),
  not_resolved: () => tr("Only a resolved conversation can be reopened."),
  already_assigned: () => tr("The conversation is already theirs."),
  agent_offline: (f) => tr("{name} just went offline.", { name: f.name || tr("The agent") }),
  agent_full: (f) => tr("{name} has no free slot ({capacity}).", { name: f.name || tr("The agent"), capacity: f.capacity ?? "" }),
  conflict: () => tr("The conversation changed meanwhile; try again."),
};

/** What the console says of a refused workflow frame. */
export function refusalText(frame) {
  return REFUSALS[frame.code]?.(frame) || errorText(frame) || `${frame.code}: ${frame.message}`;
}

export class Actions {
  constructor({ client, me, bar, panel, status, onDone, answered }) {
    this.answered = answered; // () => true once this agent wrote in the conversation
    this.client = client;
    this.me = me;
    this.bar = bar; // where the buttons go
    this.panel = panel; // where the transfer form opens
    this.status = status; // one line for errors
    this.onDone = onDone;
    this.pending = new Map(); // ref -> op
    this.conversation = null;
    for (const op of ["accept_ok", "decline_ok", "transfer_ok", "resolve_ok", "reopen_ok", "pick_ok"]) {
      client.on(op, (frame) => this.done(frame));
    }
    client.on("error", (frame) => {
      if (!this.pending.has(frame.ref)) return;
      this.pending.delete(frame.ref);
      this.say(refusalText(frame));
    });
  }

  say(text) {
    this.status.hidden = !text;
    this.status.textContent = text || "";
  }

  send(op, fields = {}) {
    const ref = `act-${++refs}`;
    this.pending.set(ref, op);
    this.say("");
    if (!this.client.send({ op, ref, conversation_id: this.conversation.id, ...fields })) {
      this.pending.delete(ref);
      this.say(tr("Not connected; try again in a moment."));
    }
  }

  done(frame) {
    if (!this.pending.delete(frame.ref)) return;
    this.panel.hidden = true;
    this.onDone(frame.conversation);
  }

  render(conversation) {
    this.conversation = conversation;
    const c = conversation;
    const mine = c.assignee_id === this.me.id;
    const accepted = Boolean(c.meta?.accepted_at) || this.answered(); // answering accepts too
    const button = (label, onclick, cls = "ghost") => h("button", { type: "button", class: cls, dataset: { action: label.toLowerCase() }, onclick }, tr(label));
    const buttons = [];
    if (c.state === "queued") buttons.push(button("Take", () => this.send("pick"), ""));
    if (c.state === "assigned" && mine && !accepted) {
      buttons.push(button("Accept", () => this.send("accept"), ""), button("Decline", () => this.send("decline")));
    }
    if (c.state === "assigned" && (mine || this.me.admin)) {
      buttons.push(button("Transfer", () => this.openTransfer()), button("Resolve", () => this.send("resolve")));
    }
    if (c.state === "resolved") buttons.push(button("Reopen", () => this.send("reopen")));
    replace(this.bar, ...buttons);
    this.panel.hidden = true;
  }

  async openTransfer() {
    let agents = [];
    try {
      agents = (await api("/console/agents.json")).agents;
    } catch (err) {
      this.say(tr("Cannot list agents: {error}", { error: err.message }));
      return;
    }
    const others = agents.filter((a) => a.id !== this.me.id);
    const departments = [...new Set(agents.flatMap((a) => a.skills))].sort();
    const target = h("select", { name: "target", "aria-label": tr("Transfer to") },
      h("optgroup", { label: tr("Agents") }, ...others.map((a) =>
        h("option", { value: `agent:${a.id}`, disabled: a.status !== "online" }, `${a.name} (${tr(a.status)})`))),
      departments.length ? h("optgroup", { label: tr("Departments") }, ...departments.map((d) => h("option", { value: `department:${d}` }, d))) : null);
    const note = h("textarea", { name: "note", rows: "2", maxlength: "2000", placeholder: tr("Note for the next agent (the visitor does not see it)") });
    const form = h("form", { class: "transfer-form" },
      h("label", {}, tr("Transfer to"), " ", target), note,
      h("div", { class: "row" }, h("button", { type: "submit" }, tr("Transfer")),
        h("button", { type: "button", class: "ghost", onclick: () => { this.panel.hidden = true; } }, tr("Cancel"))));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const [kind, id] = target.value.split(/:(.*)/s);
      const fields = kind === "agent" ? { agent_id: id } : { department: id };
      if (note.value.trim()) fields.note = note.value.trim();
      this.send("transfer", fields);
    });
    replace(this.panel, form);
    this.panel.hidden = false;
    target.focus();
  }
}
