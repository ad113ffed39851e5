// The pre-chat form (the widget config's `prechat`): asked before a visitor's first message
// when the site enables it and the page did not already tell who the visitor is
// (kefu.identify with a name, e-mail or user_id). The answers are checked here for the
// visitor's sake and again by the server (POST /v1/widget/prechat), which stores them on the
// visitor's profile; the composer shows once they are saved. Done once per visitor.
import { h } from "../lib/dom.js";

const EMAIL = /^[^@\s]+@[^@\s.]+(\.[^@\s.]+)+$/;
const PHONE = /^\+?[0-9 ()./-]{5,40}$/;
const INPUT_TYPE = { text: "text", email: "email", tel: "tel" };
const AUTOCOMPLETE = { name: "name", email: "email", phone: "tel" };
const PROBLEM_TEXT = {
  required: "prechatRequired", invalid_email: "prechatEmail", invalid_phone: "prechatPhone",
  not_an_option: "prechatOption", too_long: "prechatTooLong",
};
const MAX = { text: 200, email: 254, tel: 40, select: 100 };

/** What is wrong with one answer (the server's codes), or null. */
export function problemOf(field, raw) {
  const value = (raw || "").trim();
  if (!value) return field.required ? "required" : null;
  if (value.length > MAX[field.type]) return "too_long";
  if (field.type === "email" && !EMAIL.test(value)) return "invalid_email";
  if (field.type === "tel" && (!PHONE.test(value) || (value.match(/\d/g) || []).length < 5)) return "invalid_phone";
  if (field.type === "select" && !field.options.some((o) => o.value === value)) return "not_an_option";
  return null;
}

/** Whether a kefu.identify() profile says who the visitor is. */
export function identifies(profile) {
  return Boolean(profile && ["name", "email", "user_id"].some((k) => typeof profile[k] === "string" && profile[k]));
}

const labelOf = (labels, lang) => (labels && (labels[lang] || labels.en)) || "";

/** The form element for `fields`; `submit(answers)` resolves, or rejects with `err.fields`. */
function buildForm(fields, lang, t, submit) {
  const rows = fields.map((field) => {
    const id = `kefu-prechat-${field.key}`;
    const attrs = { id, name: field.key, "aria-describedby": `${id}-error`, required: field.required };
    const input = field.type === "select"
      ? h("select", attrs, h("option", { value: "" }, t("prechatChoose")),
        field.options.map((o) => h("option", { value: o.value }, labelOf(o.label, lang) || o.value)))
      : h("input", { ...attrs, type: INPUT_TYPE[field.type], maxlength: String(MAX[field.type]), autocomplete: AUTOCOMPLETE[field.key] || "off" });
    const error = h("p", { class: "field-error", id: `${id}-error`, hidden: true });
    const label = h("label", { for: id }, labelOf(field.label, lang), field.required ? h("span", { class: "req", "aria-hidden": "true" }, " *") : null);
    return { field, input, error, row: h("div", { class: "prechat-field", dataset: { key: field.key } }, label, input, error) };
  });
  const summary = h("p", { class: "prechat-summary", role: "alert", hidden: true });
  const button = h("button", { type: "submit" }, t("prechatSubmit"));
  const form = h("form", { class: "prechat", novalidate: true },
    h("h3", {}, t("prechatTitle")), h("p", { class: "prechat-text" }, t("prechatText")),
    rows.map((r) => r.row), summary, button);

  function show(problems) {
    let first = null;
    for (const { field, input, error } of rows) {
      const problem = problems[field.key];
      error.hidden = !problem;
      error.textContent = problem ? t(PROBLEM_TEXT[problem] || "prechatRequired") : "";
      input.setAttribute("aria-invalid", problem ? "true" : "false");
      if (problem && !first) first = input;
    }
    summary.hidden = !first;
    summary.textContent = first ? t("prechatFix") : "";
    if (first) first.focus();
    return !first;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const answers = {};
    const problems = {};
    for (const { field, input } of rows) {
      answers[field.key] = input.value.trim();
      const problem = problemOf(field, input.value);
      if (problem) problems[field.key] = problem;
    }
    if (!show(problems)) return;
    button.disabled = true;
    try {
      await submit(answers);
    } catch (err) {
      if (err.fields && typeof err.fields === "object") show(err.fields); // the server's word
      else { summary.hidden = false; summary.textContent = t("prechatFailed"); }
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

/** The gate in front of the composer: shown until the visitor answered (or was identified). */
export class PrechatGate {
  constructor({ form, lang, t, view, store, post }) {
    this.fields = form?.enabled ? form.fields || [] : [];
    this.lang = lang;
    this.t = t;
    this.view = view;
    this.store = store; // {visitors: [ids that answered]}
    this.post = post;
    this.open = false;
  }

  answered(visitorId) {
    return (this.store.load().visitors || []).includes(visitorId);
  }

  /** After the first session: show the form unless it is not needed. */
  start({ visitorId, identified, chatting }) {
    if (!this.fields.length || identified || chatting || this.answered(visitorId)) return;
    this.visitorId = visitorId;
    this.open = true;
    this.view.setGate(buildForm(this.fields, this.lang, this.t, (answers) => this.submit(answers)));
  }

  async submit(answers) {
    await this.post(answers);
    const visitors = [...(this.store.load().visitors || []), this.visitorId].slice(-20);
    this.store.save({ visitors });
    this.done();
  }

  /** The page identified the visitor, or they answered: the composer comes back. */
  done() {
    if (!this.open) return;
    this.open = false;
    this.view.setGate(null);
  }
}
