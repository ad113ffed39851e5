// The visitor panel's "Pre-chat form" list: the visitor's answers under the labels the site's
// form gives them (/console/prechat.json: the fields, on or off), in the agent's language, a
// choice shown by its label (name and e-mail have their rows already). The keys it shows are
// left out of the custom attributes. The contact page (contacts.js) shows the same list.
import { api } from "../lib/api.js";
import { h } from "../lib/dom.js";
import { LANG, tr } from "../lib/tr.js";

let loading = null;
const lang = LANG.startsWith("zh") ? "zh" : "en";
const labelOf = (labels, fallback) => (labels && (labels[lang] || labels.en)) || fallback;

/** The site's pre-chat fields (asked again after a minute: an admin may change them). */
function fields() {
  if (!loading) {
    loading = api("/console/prechat.json").then((body) => body.fields || []).catch(() => []);
    setTimeout(() => { loading = null; }, 60000);
  }
  return loading;
}

function answerOf(visitor, field) {
  const value = visitor.attributes?.[field.key];
  if (typeof value !== "string" || !value) return null;
  const option = field.type === "select" ? field.options.find((o) => o.value === value) : null;
  return option ? labelOf(option.label, value) : value;
}

/** [section or null, the attribute keys it shows]. */
export async function prechatAnswers(visitor) {
  // name and e-mail have their own rows in the panel
  const answered = (await fields()).filter((f) => f.key !== "name" && f.key !== "email")
    .map((field) => [field, answerOf(visitor, field)]).filter(([, v]) => v);
  if (!answered.length) return [null, new Set()];
  const section = h("div", { class: "prechat-answers" },
    h("h3", {}, tr("Pre-chat form")),
    h("dl", {}, ...answered.flatMap(([field, value]) => [
      h("dt", { translate: "no", dataset: { key: field.key } }, labelOf(field.label, field.key)),
      h("dd", { translate: "no", dataset: { attribute: field.key } }, value)])));
  return [section, new Set(answered.map(([field]) => field.key))];
}
