// Same-origin JSON calls of the console and admin pages: the session cookie authenticates,
// the CSRF header (from <meta name="csrf-token">) guards every state-changing call.
import { errorText } from "./errors.js";

export const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";

export class ApiError extends Error {
  constructor(status, body) {
    // in the page's language from the code (lib/errors.js); the server's words on English pages
    super(errorText(body?.error) || body?.error?.message || `HTTP ${status}`);
    this.status = status;
    this.code = body?.error?.code;
    this.detail = body?.error?.message; // the server's own (English) words
  }
}

export async function api(path, { method = "GET", json, body } = {}) {
  const headers = { "X-CSRF-Token": csrf };
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  const resp = await fetch(path, { method, headers, body, credentials: "same-origin" });
  const text = await resp.text();
  const data = text ? JSON.parse(text) : null;
  if (!resp.ok) throw new ApiError(resp.status, data);
  return data;
}
