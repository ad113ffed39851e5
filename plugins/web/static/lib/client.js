// A kefu protocol connection: WebSocket first, long-polling when WebSockets fail; reconnects
// with back-off. The application resumes its conversations on every "open" event.
//
//   const client = new Client({base: "https://chat.example/", token, transport: "auto"});
//   client.on("message", (frame) => ...); client.on("open", ({transport}) => ...);
//   client.connect(); client.send({op: "ping"});

const MAX_BACKOFF_MS = 8000;
const WS_FAILURES_BEFORE_POLL = 2;
const PING_EVERY_MS = 20000; // until the server says otherwise (hello/pong heartbeat_s)
const PONG_WAIT_MS = 8000;

export class Client {
  constructor({ base, token = null, transport = "auto", credentials = "omit", csrf = null }) {
    this.base = base.endsWith("/") ? base : `${base}/`;
    this.token = token;
    this.mode = transport;
    this.credentials = credentials;
    this.csrf = csrf;
    this.handlers = new Map();
    this.transport = null; // "ws" | "longpoll" while open
    this.open = false;
    this.stopped = true;
    this.wsFailures = 0;
    this.backoff = 250;
    this.generation = 0; // bumps on every (re)connect; stale callbacks check it
    this.ws = null;
    this.session = null;
    this.outgoing = [];
    this.flushing = false;
    this.timer = null;
    // the server's intervals, stretched while it sheds load (docs/degradation.md level 1)
    this.pingEveryMs = PING_EVERY_MS;
    this.recvTimeout = 25;
    window.addEventListener("offline", () => this.drop("offline"));
    window.addEventListener("online", () => this.reconnectNow());
  }

  on(op, fn) {
    if (!this.handlers.has(op)) this.handlers.set(op, []);
    this.handlers.get(op).push(fn);
    return this;
  }

  emit(op, data) {
    for (const fn of this.handlers.get(op) || []) {
      try {
        fn(data);
      } catch (err) {
        console.error("kefu: handler for", op, "failed", err);
      }
    }
  }

  connect() {
    this.stopped = false;
    clearTimeout(this.timer);
    const gen = ++this.generation;
    const usePoll =
      this.mode === "longpoll" ||
      (this.mode === "auto" && this.wsFailures >= WS_FAILURES_BEFORE_POLL) ||
      typeof WebSocket === "undefined";
    this.emit("connecting", { transport: usePoll ? "longpoll" : "ws" });
    if (usePoll) this.openPoll(gen);
    else this.openWs(gen);
  }

  /** Send a frame now; false when not connected (the caller keeps it for later). */
  send(frame) {
    if (!this.open) return false;
    if (this.transport === "ws") {
      try {
        this.ws.send(JSON.stringify(frame));
      } catch {
        return false;
      }
      return true;
    }
    this.outgoing.push(frame);
    this.flushPoll(this.generation);
    return true;
  }

  stop() {
    this.stopped = true;
    this.drop("stopped");
  }

  reconnectNow() {
    if (this.stopped) return;
    this.backoff = 250;
    if (!this.open) this.connect();
  }

  // -- shared ---------------------------------------------------------------------------
  opened(gen, transport) {
    if (gen !== this.generation) return;
    this.open = true;
    this.transport = transport;
    this.backoff = 250;
    this.emit("open", { transport });
    this.heartbeat(gen);
  }

  dispatch(gen, frame) {
    if (gen !== this.generation || !frame || typeof frame.op !== "string") return;
    if ((frame.op === "pong" || frame.op === "hello") && frame.heartbeat_s > 0) {
      this.pingEveryMs = frame.heartbeat_s * 1000;
    }
    if (frame.op === "hello" && this.open) this.heartbeat(gen); // at the interval it told
    if (frame.op === "pong") {
      this.lastPong = Date.now();
      if (this.pinging) this.heartbeat(gen); // answered: the next ping, at the interval told
    }
    if (frame.op === "error" && frame.fatal) {
      this.emit("fatal", frame);
      if (frame.code === "invalid_token") {
        this.stopped = true;
        this.emit("auth_failed", frame);
      }
    }
    this.emit(frame.op, frame);
    this.emit("*", frame);
  }

  /** Close the current transport (if any) and schedule a reconnect unless stopped. */
  drop(reason) {
    const wasOpen = this.open;
    this.generation += 1;
    this.open = false;
    this.transport = null;
    clearTimeout(this.pingTimer);
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      try {
        ws.close();
      } catch {
        /* already closed */
      }
    }
    if (this.session) {
      const session = this.session;
      this.session = null;
      this.abort?.abort();
      if (reason === "stopped") this.post(`v1/poll/close?session=${session}`, "").catch(() => {});
    }
    if (wasOpen || reason !== "stopped") this.emit("close", { reason });
    if (!this.stopped && reason !== "offline") {
      clearTimeout(this.timer);
      const wait = this.backoff * (0.8 + Math.random() * 0.4);
      this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF_MS);
      this.timer = setTimeout(() => this.connect(), wait);
    }
  }

  /** Ping every pingEveryMs (the server's heartbeat_s); a pong re-arms the next ping, no pong
   *  within PONG_WAIT_MS drops the connection. */
  heartbeat(gen) {
    clearTimeout(this.pingTimer);
    this.pinging = false;
    this.pingTimer = setTimeout(() => {
      if (gen !== this.generation) return;
      this.pinging = true;
      this.send({ op: "ping" });
      this.pingTimer = setTimeout(() => {
        if (gen === this.generation) this.drop("ping_timeout");
      }, PONG_WAIT_MS);
    }, this.pingEveryMs);
  }

  // -- WebSocket --------------------------------------------------------------------------
  openWs(gen) {
    const url = new URL("v1/ws", this.base);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    if (this.token) url.searchParams.set("token", this.token);
    let hello = false;
    let ws;
    try {
      ws = new WebSocket(url.href);
    } catch {
      this.wsFailures += 1;
      this.drop("ws_error");
      return;
    }
    this.ws = ws;
    ws.onmessage = (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (frame.op === "hello" && !hello) {
        hello = true;
        this.wsFailures = 0;
        this.opened(gen, "ws");
      }
      this.dispatch(gen, frame);
    };
    ws.onclose = (event) => {
      if (gen !== this.generation) return;
      if (!hello) this.wsFailures += 1;
      this.ws = null;
      this.drop(event.code === 4401 ? "invalid_token" : "ws_closed");
    };
  }

  // -- long-polling -------------------------------------------------------------------------
  async post(path, body) {
    const headers = {};
    if (this.csrf) headers["X-CSRF-Token"] = this.csrf;
    return fetch(new URL(path, this.base), {
      method: "POST",
      body, // a string: sent as text/plain, a "simple" cross-origin request (no preflight)
      credentials: this.credentials,
      headers,
    });
  }

  async openPoll(gen) {
    let session;
    try {
      const resp = await this.post("v1/poll/open", JSON.stringify(this.token ? { token: this.token } : {}));
      if (gen !== this.generation) return;
      if (resp.status === 401) {
        this.stopped = true;
        this.emit("auth_failed", { code: "invalid_token" });
        this.drop("invalid_token");
        return;
      }
      if (!resp.ok) throw new Error(`open: ${resp.status}`);
      const opened = await resp.json();
      session = opened.session;
      if (opened.recv_timeout > 0) this.recvTimeout = opened.recv_timeout;
    } catch {
      if (gen === this.generation) this.drop("poll_error");
      return;
    }
    if (gen !== this.generation) return;
    this.session = session;
    this.receive(gen, session);
  }

  async receive(gen, session) {
    while (gen === this.generation && this.session === session) {
      this.abort = new AbortController();
      let frames;
      try {
        const url = new URL("v1/poll/recv", this.base);
        url.searchParams.set("session", session);
        url.searchParams.set("timeout", String(this.recvTimeout));
        const resp = await fetch(url, { credentials: this.credentials, signal: this.abort.signal });
        if (!resp.ok) throw new Error(`recv: ${resp.status}`);
        const body = await resp.json();
        frames = body.frames || [];
        if (body.recv_timeout > 0) this.recvTimeout = body.recv_timeout;
      } catch {
        if (gen === this.generation) this.drop("poll_closed");
        return;
      }
      for (const frame of frames) {
        if (frame.op === "hello" && !this.open) this.opened(gen, "longpoll");
        this.dispatch(gen, frame);
      }
    }
  }

  async flushPoll(gen) {
    if (this.flushing) return;
    this.flushing = true;
    try {
      while (this.outgoing.length && gen === this.generation && this.session) {
        const batch = this.outgoing.splice(0, 64);
        const resp = await this.post(`v1/poll/send?session=${this.session}`, JSON.stringify(batch));
        if (!resp.ok) throw new Error(`send: ${resp.status}`);
      }
    } catch {
      this.outgoing = [];
      if (gen === this.generation) this.drop("poll_closed");
    } finally {
      this.flushing = false;
      if (this.outgoing.length && this.session && gen !== this.generation) {
        this.flushPoll(this.generation);
      }
    }
  }
}
