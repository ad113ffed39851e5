// Signed visitor identity of the site, kept by the visitor_identity plugin (/v1/identity):
// the secrets (current first, retired ones with the end of their grace period), rotation,
// and whether claims without a valid user_hash are refused or kept as unverified.
import { api, ApiError } from "../lib/api.js";
import { h, replace } from "../lib/dom.js";
import { ready, tr } from "../lib/tr.js";

const rows = document.getElementById("identity-rows");
const rotateForm = document.getElementById("identity-rotate");
const policyForm = document.getElementById("identity-policy");
const message = document.getElementById("identity-message");

function say(text, error = false) {
  message.hidden = !text;
  message.textContent = text;
  message.className = error ? "error" : "muted";
}

function draw(settings) {
  replace(rows, ...(settings.secrets.length ? settings.secrets.map((s) => h("tr", { dataset: { id: s.id } },
    h("td", {}, h("code", { class: "identity-secret", translate: "no" }, s.secret)),
    h("td", {}, new Date(s.created_at * 1000).toLocaleString()),
    h("td", {}, s.current ? tr("current") : new Date(s.expires_at * 1000).toLocaleString())))
    : [h("tr", {}, h("td", { colspan: "3", class: "muted" }, tr("No secret yet: identified visitors are refused until you create one.")))]));
  for (const input of policyForm.querySelectorAll("input[name=unverified]")) input.checked = input.value === settings.unverified;
}

async function load() {
  try {
    draw(await api("/v1/identity"));
  } catch (err) {
    const missing = err instanceof ApiError && err.status === 404;
    replace(rows, h("tr", {}, h("td", { colspan: "3", class: missing ? "muted" : "error" },
      missing ? tr("Visitor identity needs the visitor_identity plugin.") : err.message)));
    rotateForm.hidden = policyForm.hidden = missing;
  }
}

rotateForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const hours = Number(new FormData(rotateForm).get("grace_h") || 0);
  try {
    draw(await api("/v1/identity/secrets", { method: "POST", json: { grace_s: hours * 3600 } }));
    say(tr("New secret created: give it to your backend."));
  } catch (err) {
    say(err.message, true);
  }
});

policyForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const unverified = new FormData(policyForm).get("unverified") || "refuse";
  try {
    draw(await api("/v1/identity", { method: "PATCH", json: { unverified } }));
    say(tr("Saved."));
  } catch (err) {
    say(err.message, true);
  }
});

ready.then(load);
