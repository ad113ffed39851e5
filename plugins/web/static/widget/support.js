// Small helpers of the widget: the page's localStorage, JSON posts without a preflight, and
// the flashing page title that tells a visitor on another tab about a new message.

export function storage(key) {
  return {
    load() {
      try { return JSON.parse(localStorage.getItem(key)) || {}; } catch { return {}; }
    },
    save(value) {
      try { localStorage.setItem(key, JSON.stringify(value)); } catch { /* private mode */ }
    },
  };
}

export async function postJSON(url, body) {
  // text/plain keeps it a "simple" cross-origin request: no preflight
  const resp = await fetch(url, { method: "POST", body: JSON.stringify(body), credentials: "omit" });
  if (!resp.ok) {
    const body = await resp.json().catch(() => null);
    const err = new Error(body?.error?.message || `${url}: ${resp.status}`);
    err.status = resp.status;
    err.code = body?.error?.code; // e.g. identity_invalid (docs/protocol.md section 6)
    err.fields = body?.error?.fields; // prechat_invalid: field key -> problem
    throw err;
  }
  return resp.json();
}

/** Alternates document.title with a notice while `set(true)`; restores it on `set(false)`. */
export class TitleFlasher {
  constructor(notice) {
    this.notice = notice;
    this.original = document.title;
    this.timer = null;
  }

  set(flashing) {
    if (!flashing) {
      clearInterval(this.timer);
      this.timer = null;
      document.title = this.original;
      return;
    }
    if (this.timer) return;
    let on = false;
    this.timer = setInterval(() => {
      on = !on;
      document.title = on ? this.notice() : this.original;
    }, 1000);
  }
}
