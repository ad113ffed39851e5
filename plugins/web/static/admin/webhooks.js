// Outgoing webhooks of the site, kept by the webhooks plugin (/v1/webhooks): subscriptions,
// and per subscription its queue, delivery log and dead letters with "Resend".
import { api, ApiError } from "../lib/api.js";
import { h, replace } from "../lib/dom.js";
import { ready, tr } from "../lib/tr.js";

const rows = document.getElementById("webhook-rows");
const form = document.getElementById("webhook-form");
const eventsBox = document.getElementById("webhook-events");
const message = document.getElementById("webhook-message");
const logBox = document.getElementById("webhook-log");
const logTitle = document.getElementById("webhook-log-title");
const deliveryRows = document.getElementById("delivery-rows");
let shown = null; // { sub, status }
const STATUS = { queued: "Queued", delivered: "Delivered", dead: "Dead letters" };

function say(text, error = false) {
  message.hidden = !text;
  message.textContent = text;
  message.className = error ? "error" : "muted";
}

function when(ts) {
  return ts ? new Date(ts * 1000).toLocaleString() : "";
}

async function load() {
  let listing;
  try {
    listing = await api("/v1/webhooks");
  } catch (err) {
    const missing = err instanceof ApiError && err.status === 404;
    replace(rows, h("tr", {}, h("td", { colspan: "4", class: missing ? "muted" : "error" },
      missing ? tr("Webhooks need the webhooks plugin.") : err.message)));
    form.hidden = missing;
    return;
  }
  if (!eventsBox.querySelector("input")) {
    for (const name of ["*", ...listing.events]) {
      eventsBox.append(h("label", { class: "check" }, h("input", { type: "checkbox", name: "events", value: name }), " ",
        name === "*" ? tr("every event") : h("code", { translate: "no" }, name)));
    }
  }
  replace(rows, ...(listing.webhooks.length ? listing.webhooks.map((w) => h("tr", { dataset: { id: w.id } },
    h("td", { translate: "no" }, w.url, w.description ? h("div", { class: "muted" }, w.description) : null),
    h("td", {}, w.events.includes("*") ? tr("every event") : h("code", { translate: "no" }, w.events.join(", "))),
    h("td", {}, w.active ? tr("yes") : tr("paused")),
    h("td", {},
      h("button", { type: "button", class: "ghost", onclick: () => show(w, "queued") }, tr("Deliveries")),
      h("button", { type: "button", class: "ghost", onclick: () => toggle(w) }, w.active ? tr("Pause") : tr("Resume")),
      h("button", { type: "button", class: "ghost", onclick: () => remove(w) }, tr("Delete")))))
    : [h("tr", {}, h("td", { colspan: "4", class: "muted" }, tr("None yet.")))]));
}

async function toggle(w) {
  try {
    await api(`/v1/webhooks/${encodeURIComponent(w.id)}`, { method: "PATCH", json: { active: !w.active } });
  } catch (err) {
    say(err.message, true);
  }
  load();
}

async function remove(w) {
  try {
    await api(`/v1/webhooks/${encodeURIComponent(w.id)}`, { method: "DELETE" });
    say(tr("Deleted the subscription of {url}.", { url: w.url }));
    if (shown?.sub.id === w.id) logBox.hidden = true;
  } catch (err) {
    say(err.message, true);
  }
  load();
}

async function show(sub, status) {
  shown = { sub, status };
  logBox.hidden = false;
  logTitle.textContent = tr("Deliveries to {url}: {status}", { url: sub.url, status: tr(STATUS[status] || status) });
  let found;
  try {
    found = (await api(`/v1/webhooks/${encodeURIComponent(sub.id)}/deliveries?status=${status}&limit=100`)).deliveries;
  } catch (err) {
    replace(deliveryRows, h("tr", {}, h("td", { colspan: "5", class: "error" }, err.message)));
    return;
  }
  replace(deliveryRows, ...(found.length ? found.map((d) => {
    const last = d.history[d.history.length - 1];
    const lastText = last ? `${when(last.at)}: ${last.status ?? ""} ${last.error ?? "ok"} (${last.ms} ms)` : tr("not yet");
    return h("tr", { dataset: { id: d.id } },
      h("td", {}, h("code", { translate: "no" }, d.event)), h("td", { translate: "no" }, d.conversation_id || ""), h("td", {}, String(d.attempts)),
      h("td", { translate: last ? "no" : "yes" }, lastText),
      h("td", {}, status === "queued" ? (d.next_at ? tr("next {time}", { time: when(d.next_at) }) : "")
        : h("button", { type: "button", class: "ghost", onclick: () => resend(sub, d) }, tr("Resend"))));
  }) : [h("tr", {}, h("td", { colspan: "5", class: "muted" }, tr("None.")))]));
}

async function resend(sub, d) {
  try {
    await api(`/v1/webhooks/${encodeURIComponent(sub.id)}/deliveries/${encodeURIComponent(d.id)}/resend`, { method: "POST" });
    say(tr("Queued {event} again.", { event: d.event }));
  } catch (err) {
    say(err.message, true);
  }
  show(sub, shown.status);
}

for (const button of logBox.querySelectorAll("button[data-status]")) {
  button.addEventListener("click", () => shown && show(shown.sub, button.dataset.status));
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const events = [...form.querySelectorAll('input[name="events"]:checked')].map((i) => i.value);
  if (!events.length) return say(tr("Choose at least one event."), true);
  try {
    const made = await api("/v1/webhooks", { method: "POST", json: {
      url: form.url.value.trim(), events: events.includes("*") ? ["*"] : events, description: form.description.value.trim() } });
    form.reset();
    say(tr("Subscribed. Signing secret (shown only now, keep it): {secret}", { secret: made.secret }));
  } catch (err) {
    say(err.message, true);
  }
  load();
});

ready.then(load);
