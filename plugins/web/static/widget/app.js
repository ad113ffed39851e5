// The visitor widget: session, connection, conversation state, delivery bookkeeping.
// Resume and duplicate handling follow docs/protocol.md section 4: messages are keyed by seq,
// unacknowledged ones are re-sent with their cid after every reconnect.
import { Client } from "../lib/client.js";
import { uuid } from "../lib/dom.js";
import { pickLanguage, translator } from "../lib/i18n.js";
import { SeqTracker } from "../lib/seq.js";
import { identifies, PrechatGate } from "./prechat.js";
import { postJSON, storage, TitleFlasher } from "./support.js";
import { createView } from "./view.js";

const TYPING_IDLE_MS = 4000;
const TYPING_SHOWN_MS = 6000;
const AVAILABILITY_MS = 5000;

export async function mount(options) {
  const base = options.base;
  const store = storage(`kefu:${options.siteKey}`);
  const saved = store.load();
  const configResp = await fetch(`${base}v1/widget/config?key=${encodeURIComponent(options.siteKey)}`, { credentials: "omit" });
  if (!configResp.ok) { console.warn("kefu: unknown widget key"); return; }
  const config = await configResp.json();
  const lang = pickLanguage(saved.lang || options.lang);
  const t = translator(lang);

  const host = document.createElement("div");
  host.id = "kefu-widget";
  document.body.append(host);
  const root = host.attachShadow({ mode: "open" });

  const state = {
    token: saved.token || null,
    conversation: saved.conversationId ? { id: saved.conversationId, state: "unknown" } : null,
    tracker: new SeqTracker(),
    pending: new Map(), // cid -> message awaiting its ack
    names: new Map((config.team || []).map((a) => [a.id, a.name])), // agent id -> name
    avatars: new Map((config.team || []).filter((a) => a.avatar).map((a) => [a.id, new URL(a.avatar, base).href])),
    open: false,
    unread: 0,
    lastRead: 0,
    typingSentAt: 0,
    starting: false,
    // a bot serving the site answers even with no agent online (config.bot): chat, no form
    // a server under pressure answers busy: new visitors get the polite leave-a-message form
    offline: ((!config.online && !config.bot) || config.busy === true) && !saved.conversationId,
  };
  const persist = () => store.save({ token: state.token, visitorId: state.visitorId, conversationId: state.conversation?.id || null, lang: saved.lang });
  state.visitorId = saved.visitorId || null;

  async function session(extra = {}) {
    // the language tells the bot which one to greet in before the visitor wrote anything
    const body = { widget_key: options.siteKey, page: location.pathname + location.search, referrer: document.referrer || undefined, ...extra };
    body.attributes = { language: lang, ...(extra.attributes || {}) };
    if (state.token) body.token = state.token;
    const answer = await postJSON(`${base}v1/visitors/session`, body);
    const switched = state.visitorId && answer.visitor_id !== state.visitorId;
    state.token = answer.token;
    state.visitorId = answer.visitor_id;
    client.token = answer.token;
    if (switched) forgetConversation(); // a verified user continues as their own contact
    persist();
    return answer;
  }

  const actions = {
    toggle(open = !state.open) {
      state.open = open;
      view.setOpen(open);
      if (open) { state.unread = 0; view.setBadge(0); flashTitle(); markRead(); checkAvailability(); }
    },
    send(text) { queueMessage({ type: "text", text }); },
    typing(active) {
      if (!state.conversation) return;
      const now = Date.now();
      if (active && now - state.typingSentAt < 2000) return;
      state.typingSentAt = active ? now : 0;
      client.send({ op: "typing", conversation_id: state.conversation.id, state: active });
      clearTimeout(state.typingTimer);
      if (active) state.typingTimer = setTimeout(() => actions.typing(false), TYPING_IDLE_MS);
    },
    async upload(file) {
      const form = new FormData();
      form.append("file", file);
      try {
        const resp = await fetch(`${base}v1/uploads?token=${encodeURIComponent(state.token)}`, { method: "POST", body: form, credentials: "omit" });
        if (!resp.ok) throw new Error(String(resp.status));
        const up = await resp.json();
        queueMessage({ type: up.mime.startsWith("image/") ? "image" : "file", text: "", attachment: up });
      } catch {
        view.setStatus(t("uploadFailed"));
        setTimeout(() => view.setStatus(client.open ? null : t("reconnecting")), 3000);
      }
    },
    fileUrl(attachment) {
      const url = new URL(attachment.url || "", base);
      url.searchParams.set("token", state.token || "");
      return url.href;
    },
    async leaveMessage({ name, email, message }) {
      await session({ name, attributes: { email } });
      prechat.done(); // the offline form asked who they are; no pre-chat form after it
      state.leaving = { name, email, text: message, cid: uuid() };
      sendLeave();
    },
    rate(score, comment) {
      client.send({ op: "rate", conversation_id: state.conversation.id, score, comment: comment || undefined, ref: "rate" });
    },
    endChat() {
      if (state.conversation && state.conversation.state !== "resolved") {
        client.send({ op: "resolve", conversation_id: state.conversation.id, ref: "end" });
      }
    },
    newChat() {
      forgetConversation();
      persist();
    },
    switchLanguage() {
      saved.lang = lang === "zh" ? "en" : "zh";
      persist();
      location.reload();
    },
  };

  const view = createView(root, t, actions, {
    stylesheet: `${base}static/widget/widget.css${options.version ? `?v=${options.version}` : ""}`,
    richStylesheet: `${base}static/lib/rich.css${options.version ? `?v=${options.version}` : ""}`,
    title: config.name,
    greeting: (lang === "zh" && config.greeting_zh) || config.greeting,
    busy: config.busy === true,
    lang,
  });
  view.showOffline(state.offline);
  if (/^#[0-9a-fA-F]{6}$/.test(config.color || "")) root.querySelector(".kefu").style.setProperty("--accent", config.color);
  const prechat = new PrechatGate({
    form: config.prechat, lang, t, view, store: storage(`kefu:${options.siteKey}:prechat`),
    post: (answers) => postJSON(`${base}v1/widget/prechat?token=${encodeURIComponent(state.token)}`, { answers }),
  });

  const client = new Client({ base, token: state.token, transport: options.transport });

  function forgetConversation() {
    state.conversation = null;
    state.tracker = new SeqTracker();
    state.lastRead = 0;
    state.endedShown = false;
    view.clear();
    view.setEnded(false);
    view.canEnd(false);
  }

  /** kefu.identify({name, email, attributes, user_id, user_hash}): who the visitor is, told
   * by the company's page (docs/ui.md, "The widget's page API"). `user_id` with its
   * `user_hash` (signed by the company's backend) makes the visitor that user's one contact:
   * when that is another visitor than before, the widget reconnects as it and drops the
   * conversation it showed. Resolves to {visitor_id, identity}; rejects with the server's
   * `code` (identity_invalid, identity_unsigned, ...), and the visitor stays as they were. */
  const PROFILE_FIELDS = ["name", "email", "user_id", "user_hash"];
  function identifyFields(profile) {
    if (!profile || typeof profile !== "object") throw new TypeError("kefu.identify: an object");
    const extra = {};
    for (const key of PROFILE_FIELDS) if (typeof profile[key] === "string" && profile[key]) extra[key] = profile[key];
    if (profile.attributes && typeof profile.attributes === "object") extra.attributes = profile.attributes;
    return extra;
  }
  async function identify(profile) {
    const before = state.visitorId;
    const answer = await session(identifyFields(profile));
    if (identifies(profile)) prechat.done(); // the page said who the visitor is
    if (before !== answer.visitor_id && !client.stopped) { client.stop(); client.connect(); }
    return { visitor_id: answer.visitor_id, identity: answer.identity || null };
  }

  function queueMessage(fields) {
    const msg = { cid: uuid(), mine: true, pending: true, created_at: Date.now() / 1000, ...fields };
    state.pending.set(msg.cid, msg);
    view.upsert(msg);
    flush();
  }

  function frameOf(msg) {
    const frame = { op: "send", conversation_id: state.conversation.id, cid: msg.cid, type: msg.type, text: msg.text };
    if (msg.attachment) frame.attachment = { id: msg.attachment.id, url: msg.attachment.url };
    return frame;
  }

  /** Send what waits: start a conversation first when there is none. */
  function flush() {
    if (!client.open || !state.pending.size) return;
    if (!state.conversation) {
      if (!state.starting) state.starting = client.send({ op: "start", ref: "start" });
      return;
    }
    for (const msg of state.pending.values()) if (!msg.failed) client.send(frameOf(msg));
  }

  /** The offline form: the agent_tools plugin's `leave_message` op (stored once per cid);
   * without it, the message starts a conversation like any other. */
  function sendLeave() {
    const leaving = state.leaving;
    if (!leaving || !client.open) return;
    client.send({ op: "leave_message", ref: "leave", email: leaving.email, text: leaving.text, name: leaving.name || undefined, cid: leaving.cid });
  }

  /** kefu.track(name, props): a conversion event for the bot's A/B tests (the `track` op). */
  const TRACK_NAME = /^[A-Za-z0-9_.:-]{1,64}$/;
  const tracked = []; // frames waiting for a connection
  function track(name, props) {
    if (typeof name !== "string" || !TRACK_NAME.test(name)) {
      console.warn("kefu.track: a name of 1-64 letters, digits, _ . : -", name);
      return false;
    }
    const frame = { op: "track", name, ref: "track" };
    if (props && typeof props === "object") frame.props = props;
    if (!client.send(frame) && tracked.length < 50) tracked.push(frame);
    return true;
  }

  function resume() {
    if (state.conversation) client.send({ op: "resume", conversation_id: state.conversation.id, after_seq: state.tracker.last });
  }

  function markRead() {
    const last = state.tracker.last;
    if (!state.conversation || !state.open || document.hidden || last <= state.lastRead) return;
    state.lastRead = last;
    client.send({ op: "read", conversation_id: state.conversation.id, seq: last });
  }

  const title = new TitleFlasher(() => `(${state.unread}) ${t("newMessage")}`);
  const flashTitle = () => title.set(state.unread > 0 && (!state.open || document.hidden));
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && state.open) { state.unread = 0; view.setBadge(0); markRead(); }
    flashTitle();
  });

  /** Routing's answer (business hours, agents online) when it offers one; else the config's.
   * On a site a bot serves the chat starts with the bot; after its handoff the `queue`
   * frames decide, as for any waiting visitor. Asked again whenever the panel opens and,
   * while the form shows in an open panel, every AVAILABILITY_MS: an agent who signs in
   * meanwhile replaces the form with the chat, no reload needed. */
  async function checkAvailability() {
    clearTimeout(state.availabilityTimer);
    if (state.conversation || !state.token) return; // a chat follows its own queue frames
    try {
      const resp = await fetch(`${base}v1/availability?token=${encodeURIComponent(state.token)}`, { credentials: "omit" });
      if (!resp.ok) return;
      const answer = await resp.json();
      if (state.conversation || state.leaving) return;
      state.offline = answer.available === false && !config.bot;
      view.showOffline(state.offline);
    } catch {
      /* keep the last answer */
    }
    if (state.offline && state.open) state.availabilityTimer = setTimeout(checkAvailability, AVAILABILITY_MS);
  }

  function ended(rate) {
    if (state.conversation.state === "resolved" && state.endedShown) return;
    state.endedShown = true;
    state.conversation.state = "resolved";
    view.setEnded(true, { rate });
    view.setQueue(null);
  }

  client.on("connecting", () => { if (state.everOpen) view.setStatus(t("reconnecting")); });
  client.on("open", () => {
    state.everOpen = true;
    state.starting = false;
    view.setStatus(null);
    if (state.conversation) {
      client.send({ op: "watch", conversation_id: state.conversation.id });
      resume();
    } else flush();
    sendLeave();
    while (tracked.length && client.send(tracked[0])) tracked.shift();
  });
  client.on("close", () => { if (!client.stopped) view.setStatus(t("reconnecting")); });
  client.on("auth_failed", async () => {
    state.token = null;
    try { await session(); client.connect(); } catch { view.setStatus(t("reconnecting")); }
  });
  client.on("started", (frame) => {
    state.starting = false;
    const conv = frame.conversation;
    if (state.conversation?.id !== conv.id) { state.tracker = new SeqTracker(); state.lastRead = 0; }
    state.conversation = { id: conv.id, state: conv.state };
    persist();
    view.canEnd(true);
    if (conv.state === "queued") client.send({ op: "queue_status", conversation_id: conv.id });
    if (conv.last_seq > state.tracker.last) resume();
    flush();
  });
  client.on("watching", (frame) => {
    const conv = frame.conversation;
    if (state.conversation?.id !== conv.id) return;
    state.conversation.state = conv.state;
    if (conv.state === "resolved") ended(!conv.meta?.rating);
    else view.canEnd(true);
    if (conv.state === "queued") client.send({ op: "queue_status", conversation_id: conv.id });
  });
  client.on("resumed", (frame) => {
    if (frame.conversation_id !== state.conversation?.id) return;
    if (frame.more) { resume(); return; }
    flush();
    markRead();
  });
  client.on("ack", (frame) => {
    const msg = state.pending.get(frame.cid);
    if (!msg) return;
    state.pending.delete(frame.cid);
    state.tracker.add(frame.seq);
    view.upsert({ ...msg, seq: frame.seq, pending: false });
  });
  client.on("message", (frame) => {
    if (frame.conversation_id !== state.conversation?.id) return;
    if (state.pending.has(frame.cid) && frame.sender.kind === "visitor") state.pending.delete(frame.cid);
    if (!state.tracker.add(frame.seq)) { // a duplicate: already shown (a tombstone maybe since)
      if (frame.meta?.deleted) view.markDeleted(frame.seq, frame.meta.deleted);
      return;
    }
    const mine = frame.sender.kind === "visitor";
    const kind = frame.sender.kind;
    const name = kind === "bot" ? t("bot") : frame.sender.name || state.names.get(frame.sender.id);
    view.upsert({ ...frame, mine, senderKind: kind, name, avatar: kind === "agent" ? state.avatars.get(frame.sender.id) : null });
    if (kind === "agent") { view.showOffline(false); view.setQueue(null); } // someone answers
    if (state.tracker.hasGap) resume();
    if (!mine) {
      view.setTyping(null);
      if (!state.open || document.hidden) {
        state.unread += 1;
        view.setBadge(state.unread);
        flashTitle();
      } else markRead();
    }
  });
  client.on("bot_draft", (frame) => {
    if (frame.conversation_id !== state.conversation?.id) return;
    view.setTyping(null);
    view.draft({ cid: frame.cid, text: frame.text, senderKind: "bot", name: t("bot"), dropped: frame.state === "dropped" });
  });
  client.on("message_deleted", (frame) => {
    if (frame.conversation_id === state.conversation?.id) view.markDeleted(frame.seq, { by: frame.deleted_by?.id, at: frame.at });
  });
  client.on("typing", (frame) => {
    if (frame.conversation_id !== state.conversation?.id || frame.from.kind === "visitor") return;
    view.setTyping(frame.state ? t("agent") : null);
    clearTimeout(state.typingShown);
    if (frame.state) state.typingShown = setTimeout(() => view.setTyping(null), TYPING_SHOWN_MS);
  });
  client.on("read", (frame) => {
    if (frame.conversation_id === state.conversation?.id && frame.by.kind !== "visitor") view.markRead(frame.seq);
  });
  client.on("queue", (frame) => {
    if (frame.conversation_id !== state.conversation?.id) return;
    if (frame.position == null || frame.state === "assigned") { view.setQueue(null); return; }
    if (frame.available === false) { // nobody can answer now: offer the leave-a-message form
      if (state.left === state.conversation.id) { view.setQueue(null); return; } // done already
      view.setQueue(t(frame.reason === "closed" ? "queueClosed" : "queueNoAgents"));
      if (!state.leaving) view.showOffline(true);
      return;
    }
    view.showOffline(false);
    const eta = frame.eta_s == null ? "" : frame.eta_s < 60 ? t("seconds") : t("minutes", { n: Math.ceil(frame.eta_s / 60) });
    view.setQueue(t("queue", { position: frame.position, eta }));
  });
  client.on("agent_joined", (frame) => {
    if (frame.conversation_id !== state.conversation?.id) return;
    view.setQueue(null);
    view.showOffline(false);
    if (frame.agent?.name) state.names.set(frame.agent.id, frame.agent.name);
    view.notice(t("assigned", { name: frame.agent?.name || t("agent") }));
  });
  client.on("agent_left", (frame) => {
    if (frame.conversation_id === state.conversation?.id) client.send({ op: "queue_status", conversation_id: frame.conversation_id });
  });
  client.on("resolved", (frame) => {
    if (frame.conversation_id === state.conversation?.id) ended(true);
  });
  client.on("reopened", (frame) => {
    if (frame.conversation_id !== state.conversation?.id) return;
    state.conversation.state = "queued";
    state.endedShown = false;
    view.setEnded(false);
    view.canEnd(true);
  });
  client.on("conversation", (frame) => {
    const conv = frame.conversation;
    if (!conv || conv.id !== state.conversation?.id) return;
    state.conversation.state = conv.state;
    if (conv.state !== "queued") view.setQueue(null);
    if (conv.state === "resolved") ended(true);
  });
  client.on("leave_message_ok", (frame) => {
    state.leaving = null;
    state.left = frame.conversation_id; // its "nobody can answer" frames need no form again
    view.showOffline(false, { reset: true });
    view.setQueue(null);
    view.notice(t("left"));
    if (state.conversation?.id !== frame.conversation_id) {
      state.conversation = { id: frame.conversation_id, state: "queued" };
      state.tracker = new SeqTracker();
      persist();
    }
    client.send({ op: "watch", conversation_id: frame.conversation_id });
    resume();
  });
  client.on("csat_request", (frame) => {
    if (frame.conversation_id === state.conversation?.id) ended(true);
  });
  client.on("rate_ok", () => view.showRated());
  client.on("resolve_ok", (frame) => {
    if (frame.conversation?.id === state.conversation?.id) ended(true);
  });
  client.on("error", (frame) => {
    if (frame.ref === "leave" && state.leaving) {
      const { text } = state.leaving; // no leave_message op here: send it as a chat message
      state.leaving = null;
      if (frame.code === "unknown_op") {
        view.showOffline(false);
        view.notice(t("left"));
        queueMessage({ type: "text", text });
      }
      else view.setStatus(frame.message);
    }
    if (frame.ref === "rate") view.setStatus(frame.message);
    if (frame.ref === "start") state.starting = false;
    if (frame.code === "conversation_resolved" && state.conversation) ended(true);
    const msg = frame.cid && state.pending.get(frame.cid);
    if (msg && frame.code === "rejected") { msg.failed = true; view.upsert(msg); }
  });

  // the page API, in the same task that shows the launcher (calls wait for the connection)
  const api = (window.kefu = window.kefu || {});
  api.track = track;
  for (const [name, props] of options.queued || []) track(name, props);
  // an identify() called before the widget loaded goes with the first session
  const early = options.identified || [];
  const first = early.length ? early[early.length - 1] : null;
  try {
    const answer = await session(first ? identifyFields(first.profile) : {});
    for (const call of early) call.resolve({ visitor_id: answer.visitor_id, identity: answer.identity || null });
  } catch (err) {
    if (!first) throw err;
    for (const call of early) call.reject(err);
    await session(); // a refused claim: the visitor stays anonymous
  }
  api.identify = identify;
  prechat.start({ visitorId: state.visitorId, identified: identifies(first?.profile), chatting: Boolean(state.conversation) });
  client.token = state.token;
  await checkAvailability();
  client.connect();
  if (options.open) actions.toggle(true);
}
