// Desktop notifications and a short chime for new conversations and messages. Browsers allow
// both only after a user gesture: the "Enable notifications" button asks once.
import { tr } from "../lib/tr.js";

export class Notifier {
  constructor(button) {
    this.button = button;
    this.audio = null;
    this.enabled = "Notification" in window && Notification.permission === "granted";
    this.render();
    button.addEventListener("click", () => this.enable());
  }

  render() {
    this.button.textContent = this.enabled ? tr("Notifications on") : tr("Enable notifications");
    this.button.classList.toggle("active", this.enabled);
  }

  async enable() {
    try {
      this.audio = this.audio || new AudioContext();
      await this.audio.resume();
    } catch {
      this.audio = null;
    }
    if ("Notification" in window && Notification.permission !== "granted") {
      await Notification.requestPermission();
    }
    this.enabled = "Notification" in window && Notification.permission === "granted";
    this.render();
  }

  chime() {
    const ctx = this.audio;
    if (!ctx || ctx.state !== "running") return;
    const gain = ctx.createGain();
    gain.connect(ctx.destination);
    gain.gain.setValueAtTime(0.0001, ctx.currentTime);
    gain.gain.exponentialRampToValueAtTime(0.15, ctx.currentTime + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, ctx.currentTime + 0.45);
    for (const [freq, at] of [[880, 0], [1320, 0.12]]) {
      const osc = ctx.createOscillator();
      osc.frequency.value = freq;
      osc.connect(gain);
      osc.start(ctx.currentTime + at);
      osc.stop(ctx.currentTime + at + 0.3);
    }
  }

  /** Tell the agent, unless they are looking at it already. */
  notify(title, body, { tag, onclick, quietIfVisible = true } = {}) {
    if (quietIfVisible && !document.hidden) {
      this.chime();
      return;
    }
    this.chime();
    if (!this.enabled) return;
    const note = new Notification(title, { body: String(body || "").slice(0, 140), tag });
    note.onclick = () => {
      window.focus();
      onclick?.();
      note.close();
    };
  }
}
