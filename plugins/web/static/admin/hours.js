// Business hours of the site: read and written through the routing plugin's REST endpoints
// (GET/PUT/DELETE /v1/business_hours); the session cookie authenticates, the CSRF header guards.
import { api } from "../lib/api.js";
import { ready, tr } from "../lib/tr.js";

await ready;

const DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const form = document.getElementById("hours-form");
const message = document.getElementById("hours-message");
const list = (text) => text.split(",").map((s) => s.trim()).filter(Boolean);

function say(text, error = false) {
  message.hidden = !text;
  message.textContent = text;
  message.className = error ? "error" : "muted";
}

function show(answer) {
  const openNow = document.getElementById("open-now");
  openNow.textContent = answer.open_now ? tr("open") : tr("closed");
  openNow.className = `pill ${answer.open_now ? "online" : "offline"}`;
  const source = { site: tr("(hours set for this site)"), config: tr("(hours from kefu.toml)"), none: tr("(no hours: always open)") };
  document.getElementById("hours-source").textContent = source[answer.source] || "";
  const hours = answer.hours || {};
  form.timezone.value = hours.timezone || "UTC";
  for (const day of DAYS) form[day].value = (hours[day] || []).join(", ");
  form.closed_dates.value = (hours.closed_dates || []).join(", ");
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const body = { timezone: form.timezone.value.trim(), closed_dates: list(form.closed_dates.value) };
  for (const day of DAYS) body[day] = list(form[day].value);
  try {
    show(await api("/v1/business_hours", { method: "PUT", json: body }));
    say(tr("Saved."));
  } catch (err) {
    say(err.message, true);
  }
});

document.getElementById("hours-reset").addEventListener("click", async () => {
  try {
    show(await api("/v1/business_hours", { method: "DELETE" }));
    say(tr("Back to the configured hours."));
  } catch (err) {
    say(err.message, true);
  }
});

api("/v1/business_hours").then(show).catch((err) => say(tr("Cannot read the hours: {error}", { error: err.message }), true));
