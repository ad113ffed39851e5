// The emoji picker of both composers (docs/ui.md, "Emoji"): a small list vendored here (no
// network at run time, no font or image to fetch: the system's emoji font draws them), a
// button that opens a grid above the composer, and the keyboard: Enter/Space or ArrowDown on
// the button opens it with the first emoji focused, the arrow keys, Home and End move, Enter
// or Space inserts at the caret, Esc closes and gives the focus back to the button.
import { h } from "./dom.js";

/** [emoji, English name, Chinese name]: the everyday set of a support chat. */
export const EMOJI = [
  ["😀", "grinning face", "笑脸"], ["😊", "smiling face", "微笑"], ["😂", "tears of joy", "笑哭"],
  ["😉", "winking face", "眨眼"], ["😍", "heart eyes", "喜爱"], ["🤔", "thinking face", "思考"],
  ["😅", "sweat smile", "尴尬"], ["😢", "crying face", "难过"], ["😮", "surprised face", "惊讶"],
  ["😎", "cool face", "酷"], ["🤗", "hugging face", "拥抱"], ["😴", "sleeping face", "困了"],
  ["🙏", "thank you", "感谢"], ["👍", "thumbs up", "赞"], ["👎", "thumbs down", "踩"],
  ["👌", "OK hand", "好的"], ["👏", "clapping hands", "鼓掌"], ["🙌", "raised hands", "欢呼"],
  ["👋", "waving hand", "挥手"], ["🤝", "handshake", "握手"], ["💪", "flexed biceps", "加油"],
  ["✌️", "victory hand", "胜利"], ["❤️", "red heart", "爱心"], ["💯", "hundred points", "满分"],
  ["🔥", "fire", "火"], ["⭐", "star", "星星"], ["✅", "check mark", "完成"],
  ["❌", "cross mark", "错误"], ["❓", "question mark", "疑问"], ["❗", "exclamation mark", "注意"],
  ["⚠️", "warning", "警告"], ["⏰", "alarm clock", "闹钟"], ["📦", "package", "包裹"],
  ["🚚", "delivery truck", "送货"], ["💳", "credit card", "银行卡"], ["🛒", "shopping cart", "购物车"],
  ["🎁", "gift", "礼物"], ["🎉", "party popper", "庆祝"], ["☕", "coffee", "咖啡"], ["🌹", "rose", "玫瑰"],
];
const COLUMNS = 8;

/** Put `text` at the caret of a textarea (replacing a selection) and tell its listeners. */
export function insertAtCaret(input, text) {
  const start = input.selectionStart ?? input.value.length;
  const end = input.selectionEnd ?? start;
  input.setRangeText(text, start, end, "end");
  input.dispatchEvent(new Event("input", { bubbles: true }));
  input.focus();
}

/**
 * The picker for one composer: returns its element (a button and the grid it opens), to be
 * placed in the composer. `texts`: {button, list} (the button's label, the grid's name) in
 * the page's language; `lang`: "zh" names the emoji in Chinese for screen readers.
 */
export function emojiPicker(input, { texts, lang = "en" }) {
  const named = lang.startsWith("zh") ? 2 : 1;
  const button = h("button", {
    type: "button", class: "emoji-button", "aria-label": texts.button, title: texts.button,
    "aria-haspopup": "true", "aria-expanded": "false",
  }, "☺");
  const cells = EMOJI.map(([emoji, ...names], i) => h("button", {
    type: "button", class: "emoji", role: "gridcell", tabindex: i === 0 ? "0" : "-1",
    "aria-label": names[named - 1], title: names[named - 1], dataset: { emoji },
  }, emoji));
  const rows = [];
  for (let i = 0; i < cells.length; i += COLUMNS) rows.push(h("div", { role: "row", class: "emoji-row" }, cells.slice(i, i + COLUMNS)));
  const grid = h("div", { class: "emoji-panel", role: "grid", "aria-label": texts.list, hidden: true }, rows);
  const box = h("span", { class: "emoji-picker" }, grid, button);

  const isOpen = () => !grid.hidden;
  function open() {
    grid.hidden = false;
    button.setAttribute("aria-expanded", "true");
    focusCell(Math.max(0, cells.findIndex((c) => c.tabIndex === 0)));
  }
  function close(refocus = true) {
    grid.hidden = true;
    button.setAttribute("aria-expanded", "false");
    if (refocus) button.focus();
  }
  function focusCell(i) {
    const at = Math.min(cells.length - 1, Math.max(0, i));
    cells.forEach((c, n) => { c.tabIndex = n === at ? 0 : -1; });
    cells[at].focus();
  }
  function pick(cell) {
    close(false);
    insertAtCaret(input, cell.dataset.emoji);
  }

  button.addEventListener("click", () => (isOpen() ? close() : open()));
  button.addEventListener("keydown", (event) => {
    if (event.key === "ArrowDown" || event.key === "ArrowUp") { event.preventDefault(); open(); }
  });
  grid.addEventListener("click", (event) => {
    const cell = event.target.closest?.(".emoji");
    if (cell) pick(cell);
  });
  grid.addEventListener("keydown", (event) => {
    const at = cells.indexOf(event.target);
    const moves = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: COLUMNS, ArrowUp: -COLUMNS };
    if (event.key in moves) { event.preventDefault(); focusCell(at + moves[event.key]); }
    else if (event.key === "Home") { event.preventDefault(); focusCell(0); }
    else if (event.key === "End") { event.preventDefault(); focusCell(cells.length - 1); }
    else if (event.key === "Escape") { event.preventDefault(); event.stopPropagation(); close(); }
    else if ((event.key === "Enter" || event.key === " ") && at >= 0) { event.preventDefault(); pick(cells[at]); }
  });
  // a click elsewhere or the focus leaving closes it (composedPath: inside the widget's shadow root too)
  document.addEventListener("click", (event) => {
    if (isOpen() && !event.composedPath().includes(box)) close(false);
  });
  box.addEventListener("focusout", (event) => {
    if (isOpen() && event.relatedTarget && !box.contains(event.relatedTarget)) close(false);
  });
  return box;
}
