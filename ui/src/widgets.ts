import { h } from "./dom";
import { t } from "./i18n";

/** A modal confirmation (a <dialog>: focus is trapped and Escape cancels). */
export function confirmDialog(text: string, okLabel = t("confirm")): Promise<boolean> {
  return new Promise((resolve) => {
    const ok = h("button", { class: "danger", type: "submit", value: "ok" }, okLabel);
    const dlg = h("dialog", { class: "confirm", "aria-label": t("confirmAction") },
      h("form", { method: "dialog" },
        h("p", null, text),
        h("div", { class: "row end" }, h("button", { type: "submit", value: "cancel" }, t("cancel")), ok)));
    dlg.addEventListener("close", () => { resolve(dlg.returnValue === "ok"); dlg.remove(); });
    document.body.appendChild(dlg);
    dlg.showModal();
    ok.focus();
  });
}

let toastBox: HTMLElement | null = null;
export function toast(text: string, kind: "ok" | "error" = "ok"): void {
  if (!toastBox) {
    toastBox = h("div", { class: "toasts", role: "status", "aria-live": "polite" });
    document.body.appendChild(toastBox);
  }
  const el = h("div", { class: `toast ${kind}` }, text);
  toastBox.appendChild(el);
  setTimeout(() => el.remove(), kind === "error" ? 8000 : 3500);
}

/** A sortable table header cell; `aria-sort` tells screen readers the current order. */
export function sortHeader(label: string, key: string, state: { key: string; desc: boolean }, onSort: (key: string) => void): HTMLElement {
  const active = state.key === key;
  return h("th", { scope: "col", "aria-sort": active ? (state.desc ? "descending" : "ascending") : "none" },
    h("button", { class: "linklike", type: "button", onclick: () => onSort(key) }, label, active ? (state.desc ? " ▾" : " ▴") : ""));
}

/** Draws a sparkline of `values` (0..100) on a canvas sized by CSS. */
export function drawSpark(canvas: HTMLCanvasElement, values: ArrayLike<number>, count: number, color: string): void {
  const w = canvas.width, hgt = canvas.height;
  const ctx = canvas.getContext("2d");
  if (!ctx) return;
  ctx.clearRect(0, 0, w, hgt);
  if (count < 2) return;
  ctx.strokeStyle = color;
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  const n = values.length;
  const start = count < n ? 0 : count % n;
  const pts = Math.min(count, n);
  for (let i = 0; i < pts; i++) {
    const v = values[(start + i) % n];
    const x = (i / Math.max(pts - 1, 1)) * w; // a young series spans the whole width too
    const y = hgt - 1 - (Math.max(0, Math.min(100, v)) / 100) * (hgt - 2);
    if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
  }
  ctx.stroke();
}
