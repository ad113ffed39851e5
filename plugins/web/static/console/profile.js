// The password form of the Profile page: POST /v1/agents/{id}/password with the current
// password. Every session of the agent ends, this one included: the answer's new token
// becomes the console's session cookie (POST /console/session), so the page stays signed in.
import { api } from "../lib/api.js";
import { ready, tr } from "../lib/tr.js";

await ready;
const form = document.getElementById("password-form");
const message = document.getElementById("password-message");

function say(text, error = false) {
  message.hidden = !text;
  message.textContent = text;
  message.className = error ? "error" : "muted";
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  if (form.new_password.value !== form.repeat.value) {
    say(tr("The two new passwords differ."), true);
    return;
  }
  try {
    const id = form.dataset.agent;
    const answer = await api(`/v1/agents/${encodeURIComponent(id)}/password`, { method: "POST", json: {
      current_password: form.current_password.value, password: form.new_password.value } });
    if (answer?.token) {
      await api("/console/session", { method: "POST", json: { token: answer.token, expires_at: answer.expires_at } });
    }
    form.reset();
    say(tr("Password changed."));
  } catch (err) {
    say(err.code === "wrong_password" ? tr("The current password is not right.") : err.message, true);
  }
});
