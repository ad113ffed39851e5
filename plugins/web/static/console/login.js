// Agent sign-in: the auth plugin's /v1/auth/login checks the password (and throttles), then
// /console/session stores the token in an HttpOnly cookie that scripts cannot read.
import { api, ApiError } from "../lib/api.js";
import { ready, tr } from "../lib/tr.js";

await ready;

const form = document.getElementById("login-form");
const error = document.getElementById("login-error");
form.querySelector("button").disabled = false; // signing in needs this script: ready now

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  error.hidden = true;
  const data = Object.fromEntries(new FormData(form).entries());
  const button = form.querySelector("button");
  button.disabled = true;
  try {
    const login = await api("/v1/auth/login", {
      method: "POST",
      json: { site_id: data.site_id, email: data.email, password: data.password },
    });
    const session = await api("/console/session", {
      method: "POST",
      json: { token: login.token, expires_at: login.expires_at },
    });
    location.assign(session.next || "/console");
  } catch (err) {
    error.textContent =
      err instanceof ApiError && err.status === 429
        ? tr("Too many failed attempts. Wait a few minutes and try again.")
        : err instanceof ApiError && err.status === 401
          ? tr("Wrong site, e-mail or password.")
          : tr("Sign-in failed: {error}", { error: err.message });
    error.hidden = false;
  } finally {
    button.disabled = false;
  }
});
