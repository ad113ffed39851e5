// Per-conversation delivery bookkeeping (docs/protocol.md section 4): the highest seq up to
// which every message is held, and the seqs seen beyond it. Duplicates are dropped by seq.

export class SeqTracker {
  constructor(last = 0) {
    this.last = last; // every message with seq <= last is held
    this.ahead = new Set(); // seqs > last that arrived out of order
  }

  /** Record a seq; false when it was seen before (a duplicate to drop). */
  add(seq) {
    if (!Number.isInteger(seq) || seq <= this.last || this.ahead.has(seq)) return false;
    this.ahead.add(seq);
    while (this.ahead.has(this.last + 1)) {
      this.ahead.delete(this.last + 1);
      this.last += 1;
    }
    return true;
  }

  /** True when something between last and the newest seen seq is missing. */
  get hasGap() {
    return this.ahead.size > 0;
  }
}
