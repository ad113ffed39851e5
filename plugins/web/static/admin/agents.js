// Agent accounts on Admin -> Agents, through the auth plugin's REST API: disable or enable
// (POST /v1/agents/{id}/disable|enable), reset the password (POST /v1/agents/{id}/password)
// and delete (DELETE /v1/agents/{id}); each ends the agent's sessions at once.
import { api } from "../lib/api.js";
import { h, replace } from "../lib/dom.js";
import { ready, tr } from "../lib/tr.js";

await ready;
const message = document.getElementById("agents-message");

function say(text, error = false) {
  message.hidden = !text;
  message.textContent = text;
  message.className = error ? "error" : "muted";
}

async function act(call, done) {
  try {
    await call();
    say(done);
  } catch (err) {
    say(err.message, true);
  }
  await load();
}

function resetForm(row, id, name) {
  const input = h("input", { type: "password", minlength: "8", required: true, autocomplete: "new-password",
    placeholder: tr("New password for {name} (at least 8 characters)", { name }), "aria-label": tr("Reset password") });
  const form = h("form", { class: "row-form reset" }, input, h("button", { type: "submit" }, tr("Reset password")));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    act(() => api(`/v1/agents/${id}/password`, { method: "POST", json: { password: input.value } }),
      tr("The password of {name} was reset; their sessions ended.", { name }));
  });
  return form;
}

async function load() {
  let agents;
  try {
    agents = (await api("/v1/agents")).agents;
  } catch {
    say(tr("Agent accounts need the auth plugin's agent API."), true);
    return;
  }
  const byId = new Map(agents.map((a) => [a.id, a]));
  for (const row of document.querySelectorAll("tr[data-agent]")) {
    const id = row.dataset.agent, name = row.dataset.name;
    const agent = byId.get(id);
    if (!agent) { row.hidden = true; continue; } // deleted
    row.classList.toggle("disabled", Boolean(agent.disabled));
    const box = row.querySelector(".account");
    if (row.dataset.self === "true") { replace(box); continue; } // not oneself
    const path = `/v1/agents/${encodeURIComponent(id)}`;
    const toggle = agent.disabled
      ? h("button", { type: "button", class: "ghost enable", onclick: () => act(() => api(`${path}/enable`, { method: "POST" }), tr("{name} can sign in again.", { name })) }, tr("Enable"))
      : h("button", { type: "button", class: "ghost disable", onclick: () => act(() => api(`${path}/disable`, { method: "POST" }), tr("{name} is disabled; their sessions ended.", { name })) }, tr("Disable"));
    const remove = h("button", { type: "button", class: "ghost delete", onclick: () => {
      if (confirm(tr("Delete {name}? Their sessions end and they cannot sign in again.", { name }))) {
        act(() => api(path, { method: "DELETE" }), tr("{name} was deleted.", { name }));
      }
    } }, tr("Delete agent"));
    replace(box, agent.disabled ? h("span", { class: "pill offline" }, tr("Disabled")) : null, toggle, resetForm(row, encodeURIComponent(id), name), remove);
  }
}

load();
