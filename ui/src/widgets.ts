import { field, h } from "./dom";
import { t } from "./i18n";

/** A modal confirmation (a <dialog>: focus is trapped and Escape cancels). */
export function confirmDialog(text: string, okLabel = t("confirm")): Promise<boolean> {
  return new Promise((resolve) => {
    const ok = h("button", { class: "danger", type: "submit", value: "ok" }, okLabel);
    const dlg = h(
      "dialog",
      { class: "confirm", "aria-label": t("confirmAction") },
      h(
        "form",
        { method: "dialog" },
        h("p", null, text),
        h("div", { class: "row end" }, h("button", { type: "submit", value: "cancel" }, t("cancel")), ok),
      ),
    );
    dlg.addEventListener("close", () => {
      resolve(dlg.returnValue === "ok");
      dlg.remove();
    });
    document.body.appendChild(dlg);
    dlg.showModal();
    ok.focus();
  });
}

/**
 * A password form in a modal: the new password twice (and the current one when `withCurrent`),
 * checked in the browser first. `save` answers null when done, else the server's reason, which
 * the dialog shows while it stays open. Resolves true once saved, false when cancelled.
 */
export function passwordDialog(
  title: string,
  withCurrent: boolean,
  save: (current: string, next: string) => Promise<string | null>,
): Promise<boolean> {
  const input = (name: string, auto: string) =>
    h("input", { type: "password", name, required: true, maxlength: 1024, autocomplete: auto });
  const cur = withCurrent ? input("current-password", "current-password") : null;
  const pw = input("new-password", "new-password");
  pw.minLength = 8;
  const again = input("repeat-password", "new-password");
  const err = h("p", { class: "error", role: "alert", "data-testid": "password-error" });
  const ok = h("button", { type: "submit", class: "primary" }, t("save"));
  const cancel = h("button", { type: "button" }, t("cancel"));
  const form = h(
    "form",
    { class: "grid-form" },
    h("h2", null, title),
    cur ? field(t("currentPassword"), cur) : null,
    field(t("newPassword"), pw, "≥ 8"),
    field(t("repeatPassword"), again),
    err,
    h("div", { class: "row end" }, cancel, ok),
  );
  const dlg = h("dialog", { "aria-label": title, "data-testid": "password-dialog" }, form);
  const check = () => {
    pw.setCustomValidity(cur && pw.value && pw.value === cur.value ? t("passwordSame") : "");
    again.setCustomValidity(again.value && again.value !== pw.value ? t("passwordsDiffer") : "");
  };
  for (const el of [cur, pw, again]) el?.addEventListener("input", check);
  return new Promise((resolve) => {
    let saved = false;
    dlg.addEventListener("close", () => {
      dlg.remove();
      resolve(saved);
    });
    cancel.addEventListener("click", () => dlg.close());
    async function submit(e: SubmitEvent): Promise<void> {
      e.preventDefault();
      check();
      err.textContent = "";
      if (!form.reportValidity()) return;
      ok.disabled = true;
      const why = await save(cur?.value ?? "", pw.value);
      ok.disabled = false;
      if (why) {
        err.textContent = why;
        return;
      }
      saved = true;
      dlg.close();
    }
    form.addEventListener("submit", (e) => void submit(e));
    document.body.appendChild(dlg);
    dlg.showModal();
    (cur ?? pw).focus();
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
export function sortHeader(
  label: string,
  key: string,
  state: { key: string; desc: boolean },
  onSort: (key: string) => void,
): HTMLElement {
  const active = state.key === key;
  return h(
    "th",
    { scope: "col", "aria-sort": active ? (state.desc ? "descending" : "ascending") : "none" },
    h(
      "button",
      { class: "linklike", type: "button", onclick: () => onSort(key) },
      label,
      active ? (state.desc ? " ▾" : " ▴") : "",
    ),
  );
}

/** Draws a sparkline of `values` (0..100) on a canvas sized by CSS. */
export function drawSpark(canvas: HTMLCanvasElement, values: ArrayLike<number>, count: number, color: string): void {
  const w = canvas.width,
    hgt = canvas.height;
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
    if (i === 0) ctx.moveTo(x, y);
    else ctx.lineTo(x, y);
  }
  ctx.stroke();
}
