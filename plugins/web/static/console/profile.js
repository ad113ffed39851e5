// The password form of the Profile page: POST /v1/agents/me/password (auth plugin).
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
    await api("/v1/agents/me/password", { method: "POST", json: {
      current_password: form.current_password.value, new_password: form.new_password.value } });
    form.reset();
    say(tr("Password changed."));
  } catch (err) {
    say(err.code === "wrong_password" ? tr("The current password is not right.") : err.message, true);
  }
});
