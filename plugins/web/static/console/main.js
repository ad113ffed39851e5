// The agent console: one connection (cookie-authenticated, CSRF header on long-poll calls),
// the inbox, the conversation view, the visitor panel, presence and notifications.
import { api, csrf } from "../lib/api.js";
import { Client } from "../lib/client.js";
import { Actions } from "./actions.js";
import { Annotations } from "./annotations.js";
import { ChatView } from "./chat.js";
import { Finder } from "./finder.js";
import { Inbox } from "./inbox.js";
import { installShortcuts, readPlace, titleWithUnread, writePlace } from "./nav.js";
import { Notifier } from "./notify.js";
import { showVisitor, visitorRecord } from "./visitor.js";
import { Suggestions } from "./suggest.js";
import { ready, tr } from "../lib/tr.js";

await ready; // the page's language table, before anything is drawn

const $ = (id) => document.getElementById(id);
const meta = document.querySelector('meta[name="kefu-agent"]');
const me = { id: meta.content, name: meta.dataset.name, site: meta.dataset.site, admin: meta.dataset.admin === "true" };
const params = new URLSearchParams(location.search);
const handoverNotes = new Map(); // conversation id -> the transferring agent's note

const client = new Client({
  base: `${location.origin}/`,
  credentials: "same-origin",
  csrf,
  transport: params.get("transport") || "auto",
});
const notifier = new Notifier($("notify-btn"));
const chat = new ChatView({
  client,
  me,
  els: {
    empty: $("empty-state"), inner: $("chat-inner"), title: $("chat-title"), state: $("chat-state"),
    actions: $("chat-actions"), list: $("message-list"), scroller: $("messages"), older: $("older"),
    typing: $("typing"), canned: $("canned"), composer: $("composer"), text: $("composer-text"),
    file: $("composer-file"), rating: $("chat-rating"), readonly: $("composer-note"),
  },
  onSent: (conversation) => {
    inbox.refreshSoon();
    actions.render(conversation);
  },
  onSeen: (id, seq) => inbox.markRead(id, seq),
  onHead: (conversation) => {
    actions.render(conversation);
    const note = handoverNotes.get(conversation.id);
    $("handover").hidden = !note;
    $("handover").textContent = note ? tr("Handed over with a note: {note}", { note }) : "";
  },
});
const actions = new Actions({
  client,
  me,
  bar: $("chat-actions"),
  panel: $("transfer-panel"),
  status: $("chat-status"),
  onDone: () => reload(chat.id),
  answered: () => Boolean($("message-list").querySelector(".msg.self")),
});

/** Read a conversation again (its meta says whether it was accepted) and redraw. */
async function reload(id) {
  inbox.refreshSoon();
  if (!id || id !== chat.id) return;
  try {
    chat.update(await api(`/v1/conversations/${encodeURIComponent(id)}`));
  } catch {
    /* gone from view: the inbox refresh shows where it is */
  }
}
const inbox = new Inbox({
  list: $("conversation-list"),
  tabs: document.querySelector(".tabs"),
  visitors: visitorRecord,
  me: me.id,
  onSelect: (conversation) => openConversation(conversation),
});
window.kefuConsole = { client, chat, inbox }; // for debugging and the browser tests

/** Names (and pictures) of the site's agents: messages, the inbox and transfers show them. */
async function loadTeam() {
  try {
    const { agents } = await api("/console/agents.json");
    chat.setTeam(agents);
    inbox.setTeam(agents);
    finder.setTeam(agents);
  } catch {
    /* names stay "Agent" until the next try */
  }
}

const annotations = new Annotations({ client, panel: $("annotations") });
const suggestions = new Suggestions({ panel: $("suggestions"), composer: $("composer-text") });

function openConversation(conversation) {
  place.conversation = conversation.id;
  writePlace(place);
  chat.open(conversation);
  annotations.open(conversation);
  suggestions.open(conversation);
  showVisitor($("visitor-panel"), conversation, openConversation);
}

// -- presence -----------------------------------------------------------------------------
const presence = $("presence");
presence.value = meta.dataset.status === "offline" ? "online" : meta.dataset.status || "online";
presence.addEventListener("change", () => client.send({ op: "presence", status: presence.value }));

// -- connection ---------------------------------------------------------------------------
const pill = $("conn-state");
function setConn(text, cls) {
  pill.textContent = text;
  pill.className = `pill ${cls}`;
}
client.on("connecting", () => setConn(tr("connecting…"), "away"));
client.on("open", async ({ transport }) => {
  setConn(transport === "ws" ? tr("live") : tr("live (long-poll)"), transport);
  await loadTeam();
  client.send({ op: "presence", status: presence.value });
  const mine = await inbox.refresh();
  for (const c of mine) if (c.id !== chat.id) client.send({ op: "watch", conversation_id: c.id });
  chat.watch();
});
client.on("close", () => setConn(tr("reconnecting…"), "down"));
client.on("auth_failed", () => location.assign("/console/login"));

// -- frames -------------------------------------------------------------------------------
client.on("message", (frame) => {
  const onScreen = chat.onMessage(frame);
  suggestions.onMessage(frame);
  if (frame.sender.kind !== "visitor") return;
  if (!onScreen) inbox.noteMessage(frame);
  if (!onScreen || document.hidden) {
    notifier.notify(tr("New message"), frame.text || frame.attachment?.name || "", {
      tag: frame.conversation_id,
      quietIfVisible: onScreen,
      onclick: () => inbox.select(frame.conversation_id),
    });
  }
});
client.on("ack", (frame) => chat.onAck(frame));
client.on("resumed", (frame) => chat.onResumed(frame));
client.on("message_deleted", (frame) => {
  chat.onDeleted(frame);
  inbox.noteDeleted(frame);
  // the suggestions may quote the deleted text: ask again from the history (tombstones have none)
  if (frame.conversation_id === chat.id && chat.conversation) suggestions.open(chat.conversation);
});
client.on("typing", (frame) => chat.onTyping(frame));
client.on("bot_draft", (frame) => chat.onDraft(frame));
client.on("read", (frame) => chat.onRead(frame));
client.on("error", (frame) => chat.onError(frame));
client.on("watching", (frame) => chat.update(frame.conversation));
client.on("assignment", (frame) => {
  const conversation = frame.conversation;
  if (frame.note) handoverNotes.set(conversation.id, frame.note);
  inbox.upsert(conversation);
  reload(conversation.id);
  const title = frame.reason === "transfer" ? tr("Conversation transferred to you") : tr("Conversation assigned to you");
  notifier.notify(title, frame.note || tr("A visitor is waiting for your answer"), {
    quietIfVisible: false,
    onclick: () => inbox.select(conversation.id),
  });
});
client.on("conversation", (frame) => {
  const conversation = frame.conversation;
  if (!conversation) return;
  inbox.upsert(conversation);
  if (conversation.id === chat.id) reload(conversation.id);
  if (frame.event === "started") {
    notifier.notify(tr("New conversation"), tr("A visitor is waiting"), { quietIfVisible: false, onclick: () => inbox.select(conversation.id) });
  }
  if (conversation.assignee_id === me.id && conversation.id !== chat.id) {
    client.send({ op: "watch", conversation_id: conversation.id });
  }
});

// -- search, filters, deep links, unread title, shortcuts (finder.js, nav.js) ---------------
const TAB_KEYS = ["queued", "mine", "open", "resolved"];
const place = readPlace();
const baseTitle = document.title;
const finder = new Finder({ root: $("finder"), inbox });
finder.onChange = (filters) => {
  place.filters = filters;
  writePlace(place);
};
inbox.onTab = (tab) => {
  place.tab = tab;
  writePlace(place);
};
inbox.onUnread = (n) => titleWithUnread(baseTitle, n);
installShortcuts({ inbox, finder, composer: $("composer-text"), tabs: TAB_KEYS });
window.kefuConsole.finder = finder;

inbox.show(TAB_KEYS.includes(place.tab) ? place.tab : "queued");
if (Object.keys(place.filters).length) finder.set(place.filters);
if (place.conversation) {
  api(`/v1/conversations/${encodeURIComponent(place.conversation)}`)
    .then((conversation) => {
      inbox.current = conversation.id;
      inbox.conversations.set(conversation.id, conversation);
      openConversation(conversation);
    })
    .catch(() => {
      place.conversation = null;
      writePlace(place);
    });
}
client.connect();
