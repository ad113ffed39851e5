// Admin > Widget: the widget's title, greeting and colour, and the pre-chat form's fields
// (settings.widget of the site), read with GET /v1/sites/{id} and saved with
// PATCH /v1/sites/{id} {"widget": ...}, which checks them (docs/ui.md, "The pre-chat form").
import { api } from "../lib/api.js";
import { h } from "../lib/dom.js";
import { ready, tr } from "../lib/tr.js";

const form = document.getElementById("widget-form");
const list = document.getElementById("prechat-fields");
const message = document.getElementById("widget-message");
const site = form.dataset.site;
const DEFAULT_COLOR = "#0f766e";
const PROFILE = { name: "text", email: "email", phone: "tel" }; // keys with a fixed type
const keys = () => [["name", tr("Name")], ["email", tr("E-mail")], ["phone", tr("Phone")], ["custom", tr("Custom attribute")]];
const types = () => [["text", tr("Text box")], ["email", tr("E-mail")], ["tel", tr("Phone number")], ["select", tr("Choice from a list")]];

function say(text, error = false) {
  message.hidden = !text;
  message.textContent = text;
  message.className = error ? "error" : "muted";
}

const choices = (pairs, selected) => pairs.map(([value, label]) => h("option", { value, selected: value === selected }, label));

/** "English | 中文" per line <-> [{value, label: {en, zh}}] */
const optionsText = (options) => (options || []).map((o) => [o.label?.en || o.value, o.label?.zh].filter(Boolean).join(" | ")).join("\n");
function optionsOf(text) {
  return text.split("\n").map((line) => line.split("|").map((part) => part.trim())).filter(([en]) => en)
    .map(([en, zh]) => ({ value: en, label: zh ? { en, zh } : { en } }));
}

function fieldRow(field = { key: "name", type: "text", label: { en: "" }, required: false, options: [] }) {
  const custom = !(field.key in PROFILE);
  const keySelect = h("select", { name: "key" }, choices(keys(), custom ? "custom" : field.key));
  const customKey = h("input", { name: "custom_key", value: custom ? field.key : "", pattern: "[a-z][a-z0-9_]{0,39}", maxlength: "40" });
  const typeSelect = h("select", { name: "type" }, choices(types(), field.type));
  const options = h("textarea", { name: "options", rows: "3", placeholder: tr("One per line: English | 中文") });
  options.value = optionsText(field.options);
  const li = h("li", { class: "prechat-field-editor" },
    h("label", {}, tr("Detail"), keySelect),
    h("label", { class: "custom-key" }, tr("Attribute key (a-z, 0-9, _)"), customKey),
    h("label", {}, tr("Input"), typeSelect),
    h("label", {}, tr("Label in English"), h("input", { name: "label_en", value: field.label?.en || "", maxlength: "100" })),
    h("label", {}, tr("Label in Chinese"), h("input", { name: "label_zh", value: field.label?.zh || "", maxlength: "100" })),
    h("label", { class: "check" }, h("input", { type: "checkbox", name: "required", checked: field.required }), tr("Required")),
    h("label", { class: "wide options" }, tr("Choices"), options),
    h("div", { class: "field-actions" },
      h("button", { type: "button", class: "ghost", onclick: () => li.previousElementSibling?.before(li) }, tr("Move up")),
      h("button", { type: "button", class: "ghost", onclick: () => li.nextElementSibling?.after(li) }, tr("Move down")),
      h("button", { type: "button", class: "ghost", onclick: () => li.remove() }, tr("Remove"))));
  const sync = () => {
    const key = keySelect.value;
    li.querySelector(".custom-key").hidden = key !== "custom";
    if (key in PROFILE) typeSelect.value = PROFILE[key];
    typeSelect.disabled = key in PROFILE;
    li.querySelector(".options").hidden = typeSelect.value !== "select";
  };
  keySelect.addEventListener("change", sync);
  typeSelect.addEventListener("change", sync);
  sync();
  return li;
}

function fieldOf(li) {
  const value = (name) => li.querySelector(`[name=${name}]`).value.trim();
  const key = value("key") === "custom" ? value("custom_key") : value("key");
  const type = value("type");
  const label = { en: value("label_en") };
  if (value("label_zh")) label.zh = value("label_zh");
  const field = { key, type, label, required: li.querySelector("[name=required]").checked };
  if (type === "select") field.options = optionsOf(li.querySelector("[name=options]").value);
  return field;
}

function draw(widget) {
  form.elements.title.value = widget.title || "";
  form.elements.greeting.value = widget.greeting || "";
  form.elements.greeting_zh.value = widget.greeting_zh || "";
  form.elements.color.value = widget.color || DEFAULT_COLOR;
  form.elements.default_color.checked = !widget.color;
  form.elements.prechat_enabled.checked = Boolean(widget.prechat?.enabled);
  list.replaceChildren(...(widget.prechat?.fields || []).map((f) => fieldRow(f)));
}

function collect() {
  const text = (name) => form.elements[name].value.trim() || undefined;
  return {
    title: text("title"),
    greeting: text("greeting"),
    greeting_zh: text("greeting_zh"),
    color: form.elements.default_color.checked ? undefined : form.elements.color.value,
    prechat: { enabled: form.elements.prechat_enabled.checked, fields: [...list.children].map(fieldOf) },
  };
}

document.getElementById("prechat-add").addEventListener("click", () => {
  const row = fieldRow({ key: "", type: "text", label: { en: "" }, required: false });
  list.append(row);
  row.querySelector("[name=custom_key]").focus();
});
form.elements.color.addEventListener("input", () => { form.elements.default_color.checked = false; });

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const saved = await api(`/v1/sites/${encodeURIComponent(site)}`, { method: "PATCH", json: { widget: collect() } });
    draw(saved.settings.widget || {});
    say(tr("Saved."));
  } catch (err) {
    say(err.message, true);
  }
});

ready.then(async () => {
  try {
    const found = await api(`/v1/sites/${encodeURIComponent(site)}`);
    draw(found.settings.widget || {});
    form.hidden = false;
    document.getElementById("widget-loading").hidden = true;
  } catch (err) {
    document.getElementById("widget-loading").textContent = err.message;
  }
});
