// Texts of the console and admin pages: written in English in the code and the templates,
// translated by /static/i18n/<lang>.json, a table keyed by the English text (the server
// renders the templates with the same table). The page's <html lang> says which language:
// the agent's own setting, else the browser's (docs/ui.md, Languages).

export const LANG = document.documentElement.lang || "en";
let table = {};

/** Resolves once the page's table is loaded (modules await it before drawing). */
export const ready = LANG === "en"
  ? Promise.resolve()
  : fetch(`/static/i18n/${LANG}.json`, { credentials: "same-origin" })
    .then((resp) => (resp.ok ? resp.json() : {}))
    .then((loaded) => { table = loaded; })
    .catch(() => {});

/** The text in the page's language, with {name} placeholders filled from `vars`. */
export function tr(text, vars = {}) {
  return (table[text] ?? text).replace(/\{(\w+)\}/g, (_, name) => String(vars[name] ?? ""));
}
