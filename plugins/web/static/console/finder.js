// Search, filters and saved views of the inbox (issue 14; docs/ui.md "Search and filters").
// A query or any filter replaces the tab's list with GET /v1/search/conversations; message
// hits (GET /v1/search) become the previews of their conversations.
import { api } from "../lib/api.js";
import { h, replace } from "../lib/dom.js";
import { tr } from "../lib/tr.js";

const FIELDS = ["q", "state", "assignee", "department", "tag", "since", "until"];

/** A date input's value (local midnight) as UNIX seconds; "" when empty. */
function dayStart(value) {
  return value ? String(new Date(`${value}T00:00:00`).getTime() / 1000) : "";
}

export class Finder {
  constructor({ root, inbox }) {
    this.inbox = inbox;
    this.timer = null;
    this.els = {
      q: h("input", { type: "search", id: "search", placeholder: tr("Search messages, contacts  ( / )"), "aria-label": tr("Search") }),
      state: h("select", { id: "filter-state", "aria-label": tr("Status") },
        h("option", { value: "" }, tr("Any status")),
        ...["open", "bot", "queued", "assigned", "resolved"].map((s) => h("option", { value: s }, tr(s)))),
      assignee: h("select", { id: "filter-assignee", "aria-label": tr("Agent") },
        h("option", { value: "" }, tr("Any agent")), h("option", { value: "me" }, tr("Me")),
        h("option", { value: "none" }, tr("Unassigned"))),
      department: h("input", { id: "filter-department", placeholder: tr("Department"), "aria-label": tr("Department") }),
      tag: h("input", { id: "filter-tag", placeholder: tr("Tag"), "aria-label": tr("Tag") }),
      since: h("input", { type: "date", id: "filter-since", "aria-label": tr("From") }),
      until: h("input", { type: "date", id: "filter-until", "aria-label": tr("Until") }),
    };
    this.views = h("select", { id: "saved-views", "aria-label": tr("Saved views") });
    this.status = h("span", { class: "muted finder-status", id: "finder-status" });
    const save = h("button", { type: "button", class: "ghost", id: "save-view", onclick: () => this.saveView() }, tr("Save view"));
    const clear = h("button", { type: "button", class: "ghost", id: "clear-filters", onclick: () => this.clear() }, tr("Clear"));
    const more = h("details", { class: "filters" }, h("summary", {}, tr("Filters")),
      h("div", { class: "filter-grid" }, this.els.state, this.els.assignee, this.els.department,
        this.els.tag, this.els.since, this.els.until),
      h("div", { class: "filter-views" }, this.views, save, clear));
    replace(root, this.els.q, more, this.status);
    for (const el of Object.values(this.els)) {
      el.addEventListener(el.tagName === "SELECT" || el.type === "date" ? "change" : "input", () => this.soon());
    }
    this.views.addEventListener("change", () => this.applyView(this.views.value));
    this.loadViews();
  }

  setTeam(agents) {
    const select = this.els.assignee;
    for (const old of select.querySelectorAll("option[data-agent]")) old.remove();
    for (const a of agents) select.append(h("option", { value: a.id, dataset: { agent: "1" } }, a.name));
  }

  /** The filter as the query string of /v1/search/conversations ("" = no filter). */
  query() {
    const params = new URLSearchParams();
    for (const name of FIELDS) {
      let value = this.els[name].value.trim();
      if (name === "since" || name === "until") value = dayStart(value);
      if (value) params.set(name, value);
    }
    return params.toString();
  }

  values() {
    return Object.fromEntries(FIELDS.map((n) => [n, this.els[n].value.trim()]).filter(([, v]) => v));
  }

  set(values) {
    for (const name of FIELDS) this.els[name].value = values?.[name] ?? "";
    this.run();
  }

  soon() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.run(), 200);
  }

  clear() {
    this.views.value = "";
    this.set({});
  }

  focus() {
    this.els.q.focus();
    this.els.q.select();
  }

  async run() {
    const query = this.query();
    this.onChange?.(this.values());
    if (!query) {
      this.status.textContent = "";
      this.inbox.showFound(null);
      return;
    }
    try {
      const q = this.els.q.value.trim();
      const [found, hits] = await Promise.all([
        api(`/v1/search/conversations?${query}&limit=100`),
        q ? api(`/v1/search?${new URLSearchParams({ q, limit: "50" })}`) : null,
      ]);
      if (query !== this.query()) return; // typed on meanwhile
      for (const hit of hits?.messages || []) {
        this.inbox.setPreview(hit.message.conversation_id, hit.message.seq, hit.snippet);
      }
      const n = found.conversations.length;
      this.status.textContent = n === 1 ? tr("1 conversation found") : tr("{n} conversations found", { n });
      this.inbox.showFound(found.conversations);
    } catch (err) {
      this.status.textContent = err.message;
    }
  }

  // -- saved views (GET/PUT/DELETE /v1/views) ---------------------------------------------
  async loadViews() {
    try {
      const { views } = await api("/v1/views");
      this.saved = new Map(views.map((v) => [v.id, v]));
    } catch {
      this.saved = new Map();
    }
    replace(this.views, h("option", { value: "" }, tr("Saved views…")),
      ...[...this.saved.values()].map((v) => h("option", { value: v.id }, v.name)));
  }

  applyView(id) {
    const view = this.saved?.get(id);
    if (view) this.set(view.filter);
  }

  async saveView() {
    const name = window.prompt(tr("Name of this view"));
    if (!name) return;
    const id = name.toLowerCase().replace(/[^a-z0-9_-]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 64) || `view-${Date.now()}`;
    try {
      await api(`/v1/views/${encodeURIComponent(id)}`, { method: "PUT", json: { name, filter: this.values() } });
      await this.loadViews();
      this.views.value = id;
      this.status.textContent = tr("View saved");
    } catch (err) {
      this.status.textContent = err.message;
    }
  }
}
