// What the console and admin pages say of a refusal, from its machine `code` (docs/protocol.md
// section 6) in the page's language (issue 14). The server's `message` is English for people:
// an English page keeps it (it may name more), a page in another language shows the code's
// text below, worded from the error's fields (`field`, `problem`, `limit`, ...). A code missing
// here fails tests/test_web_i18n.py::test_every_error_code_has_a_text_in_chinese.
import { LANG, tr } from "./tr.js";

/** A field's problem (`invalid_request` / `invalid_query`: pydantic's error type). */
const PROBLEMS = {
  missing: () => tr("required"),
  null: () => tr("required"),
  string_too_long: (e) => tr("at most {limit} characters", e),
  string_too_short: (e) => (Number(e.limit) > 1 ? tr("at least {limit} characters", e) : tr("may not be empty")),
  too_long: (e) => tr("at most {limit} entries", e),
  too_short: (e) => tr("at least {limit} entries", e),
  string_pattern_mismatch: () => tr("holds characters that are not allowed"),
  greater_than: (e) => tr("must be more than {limit}", e),
  greater_than_equal: (e) => tr("must be {limit} or more", e),
  less_than: (e) => tr("must be less than {limit}", e),
  less_than_equal: (e) => tr("must be {limit} or less", e),
  extra_forbidden: () => tr("is not a field of this form"),
  literal_error: () => tr("is not one of the allowed values"),
  enum: () => tr("is not one of the allowed values"),
};

const CONTROLS = "input, select, textarea, button, code";

/** The label the page shows for an API field (`shortcut`, `settings.widget.greeting_zh`,
 * `allowed_origins.0`): the forms name their controls after the API's fields, so the text of
 * the <label> of the control named so, in the form being used first, without its
 * parenthesised explanation; the API's name when no control of the page has it. */
export function fieldLabel(field) {
  const parts = String(field).split(".").filter((p) => !/^\d+$/.test(p));
  const names = [String(field), ...parts.reverse()];
  const scopes = [document.activeElement?.closest?.("form"), document].filter(Boolean);
  for (const scope of scopes) {
    for (const name of names) {
      for (const control of scope.querySelectorAll(`[name="${CSS.escape(name)}"]`)) {
        const label = control.labels?.[0];
        if (!label) continue;
        const copy = label.cloneNode(true);
        copy.querySelectorAll(CONTROLS).forEach((el) => el.remove());
        const text = copy.textContent.replace(/\s+/g, " ").replace(/\s*[(（].*$/u, "").replace(/[:：]\s*$/u, "").trim();
        if (text) return text;
      }
    }
  }
  return String(field);
}

function fieldText(e) {
  const problem = PROBLEMS[e.problem]?.(e) || tr("is not valid");
  return e.field ? tr("{field}: {problem}.", { field: fieldLabel(e.field), problem }) : tr("A value {problem}.", { problem });
}

/** One entry per code of docs/protocol.md section 6; `e` is the error object (frame or body). */
export const ERROR_TEXTS = {
  account_disabled: () => tr("This account is disabled; an admin can enable it."),
  agent_full: (e) => tr("{name} has no free slot ({capacity}).", { name: e.name || tr("The agent"), capacity: e.capacity ?? "" }),
  agent_offline: (e) => tr("{name} just went offline.", { name: e.name || tr("The agent") }),
  already_assigned: () => tr("The conversation is already theirs."),
  already_deleted: () => tr("This message was deleted already."),
  already_rated: () => tr("This conversation is rated already."),
  article_not_found: () => tr("This article does not exist (any more)."),
  bad_frame: () => tr("The server did not understand the request."),
  bad_json: () => tr("The server did not understand the request."),
  both_open: () => tr("Both contacts have an open conversation: resolve one, then merge."),
  busy: () => tr("The server is busy; try again in a moment."),
  cannot_change_self: () => tr("You cannot disable or delete your own account."),
  cannot_demote_self: () => tr("You cannot remove your own admin role."),
  conflict: () => tr("It changed meanwhile, or the name or e-mail is taken; reload and try again."),
  conversation_not_found: () => tr("This conversation does not exist (any more)."),
  conversation_resolved: () => tr("This conversation is resolved."),
  csrf_failed: () => tr("The page is out of date; reload it and try again."),
  flood: () => tr("Too many requests; the connection was closed."),
  forbidden: () => tr("You may not do this."),
  frame_too_large: () => tr("This is too large to send."),
  identity_invalid: () => tr("The visitor's identity is not signed by this site's secret."),
  identity_not_configured: () => tr("This site has no identity secret."),
  identity_unsigned: () => tr("The visitor's identity has no signature."),
  internal_error: () => tr("Something went wrong on the server; try again."),
  invalid_capacity: () => tr("The capacity must be from 0 to 100."),
  invalid_credentials: () => tr("Wrong site, e-mail or password."),
  invalid_field: fieldText,
  invalid_json: () => tr("The server did not understand the request."),
  invalid_multipart: () => tr("The file could not be read; try again."),
  invalid_query: fieldText,
  invalid_range: () => tr("The start date is after the end date."),
  invalid_request: fieldText,
  invalid_time_zone: () => tr("Unknown time zone."),
  invalid_token: () => tr("Your session ended; sign in again."),
  invalid_widget_key: () => tr("Unknown widget key."),
  missing_field: (e) => fieldText({ ...e, problem: "missing" }),
  missing_file: () => tr("Choose a file first."),
  no_earlier_version: () => tr("There is no earlier version to go back to."),
  no_email: () => tr("This visitor left no e-mail address."),
  no_password_hasher: () => tr("No plugin hashes passwords: enable the auth plugin."),
  not_assignee: () => tr("This conversation is not assigned to you (any more)."),
  not_available: () => tr("This needs a plugin that is not running."),
  not_found: () => tr("Not found: it may have been deleted meanwhile."),
  not_held: () => tr("The bot does not hold this conversation."),
  not_resolved: () => tr("Only a resolved conversation can be reopened."),
  not_started: () => tr("The provider has not started yet; try again in a moment."),
  not_supported: () => tr("The storage backend cannot do this."),
  nothing_to_pick: () => tr("No waiting conversation you may take."),
  nothing_to_rate: () => tr("Nobody answered this conversation: there is nothing to rate."),
  origin_not_allowed: () => tr("This website is not allowed to use the chat."),
  prechat_invalid: () => tr("Please check the fields marked above."),
  prechat_off: () => tr("This site has no pre-chat form."),
  range_not_satisfiable: () => tr("The file is shorter than asked."),
  range_too_long: () => tr("At most 366 days at a time."),
  rate_limited: () => tr("Too many requests; wait a moment."),
  rejected: () => tr("The message was refused."),
  revoked: () => tr("Your session ended; sign in again."),
  same_contact: () => tr("Choose two different contacts."),
  session_lost: () => tr("The connection was lost; reconnecting."),
  session_not_found: () => tr("The connection was lost; reconnecting."),
  shortcut_taken: () => tr("This shortcut exists already."),
  shutdown: () => tr("The server is restarting; reconnecting."),
  slow_consumer: () => tr("The connection was too slow; reconnecting."),
  too_large: () => tr("This is too large."),
  too_many_attempts: () => tr("Too many failed attempts; wait a moment."),
  too_many_replies: () => tr("There are too many canned replies; delete some first."),
  too_many_sessions: () => tr("Too many open connections; close some tabs."),
  too_many_tags: () => tr("A conversation has at most 20 tags."),
  too_many_views: () => tr("The site has 100 saved views already."),
  unauthorized: () => tr("Your session ended; sign in again."),
  unavailable: () => tr("This is not available right now; try again in a moment."),
  unknown_agent: () => tr("Unknown agent."),
  unknown_bot: () => tr("Unknown bot."),
  unknown_delivery: () => tr("Unknown delivery."),
  unknown_department: () => tr("Unknown department, or nobody serves it."),
  unknown_identity: () => tr("This visitor was never identified."),
  unknown_op: () => tr("The server did not understand the request."),
  unknown_webhook: () => tr("Unknown webhook."),
  unsupported_media_type: () => tr("The server did not understand the request."),
  unsupported_type: () => tr("This type of file is not allowed."),
  version_conflict: () => tr("Someone changed it meanwhile; reload and try again."),
  wrong_password: () => tr("The current password is wrong."),
};

/** The error in the page's language; null on an English page or for an unknown code
 * (show the server's message then). `error`: an error frame or an HTTP body's `error`. */
export function errorText(error) {
  if (!error?.code || LANG.startsWith("en")) return null;
  return ERROR_TEXTS[error.code]?.(error) || null;
}
