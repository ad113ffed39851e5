// The site's generative-answer settings, kept by the llm_openai plugin (/v1/llm/settings).
// The API key is write-only: the page shows whether one is set, never the key.
import { api, ApiError } from "../lib/api.js";
import { h, replace } from "../lib/dom.js";
import { ready, tr } from "../lib/tr.js";

const form = document.getElementById("llm-form");
const missing = document.getElementById("llm-missing");
const keyState = document.getElementById("llm-key-state");
const spent = document.getElementById("llm-spent");
const bounds = document.getElementById("llm-bounds");
const message = document.getElementById("llm-message");
const FIELDS = ["base_url", "model", "max_tokens", "temperature", "budget_tokens", "budget_window"];
const NUMBERS = new Set(["max_tokens", "budget_tokens", "temperature"]);
const BOUNDS = {
  connect_timeout_s: "Connect timeout (s)",
  idle_timeout_s: "Idle timeout (s)",
  timeout_s: "Whole answer at most (s)",
  max_passages: "Passages per answer",
  max_passage_chars: "Characters per passage",
  max_concurrent: "Answers at once per process",
};

function say(text, error = false) {
  message.hidden = !text;
  message.textContent = text;
  message.className = error ? "error" : "muted";
}

let current = null; // the settings as last read: only what the admin changes is sent

function draw(s) {
  current = s;
  form.hidden = false;
  form.elements.enabled.checked = s.enabled;
  for (const name of FIELDS) form.elements[name].value = s[name];
  form.elements.api_key.value = "";
  form.elements.clear_key.checked = false;
  form.elements.clear_key.parentElement.hidden = s.api_key_from !== "site";
  keyState.textContent = s.api_key_from === "site" ? tr("A key is set for this site (hidden). Leave the box empty to keep it.")
    : s.api_key_from === "config" ? tr("The install's key is used (hidden). Type one to give this site its own.")
      : tr("No key: requests go without an Authorization header.");
  spent.textContent = tr("Spent in this window: {spent} of {budget} tokens.", { spent: s.spent_tokens, budget: s.budget_tokens });
  replace(bounds, ...Object.entries(BOUNDS).map(([key, label]) => h("tr", {}, h("th", {}, tr(label)), h("td", {}, String(s.bounds[key])))));
}

async function load() {
  try {
    draw(await api("/v1/llm/settings"));
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) missing.hidden = false;
    else say(err.message, true);
  }
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const change = {};
  if (form.elements.enabled.checked !== current.enabled) change.enabled = form.elements.enabled.checked;
  for (const name of FIELDS) {
    const raw = form.elements[name].value.trim();
    if (raw === String(current[name])) continue; // unchanged: the install's value stays the install's
    change[name] = raw === "" ? null : NUMBERS.has(name) ? Number(raw) : raw;
  }
  const key = form.elements.api_key.value;
  if (key) change.api_key = key;
  else if (form.elements.clear_key.checked) change.api_key = null;
  try {
    draw(await api("/v1/llm/settings", { method: "PATCH", json: change }));
    say(tr("Saved."));
  } catch (err) {
    say(err.message, true);
  }
});

document.getElementById("llm-reset").addEventListener("click", async () => {
  const change = Object.fromEntries(["enabled", ...FIELDS, "api_key"].map((name) => [name, null]));
  try {
    draw(await api("/v1/llm/settings", { method: "PATCH", json: change }));
    say(tr("Saved."));
  } catch (err) {
    say(err.message, true);
  }
});

ready.then(load);
