import { ApiError, login } from "../api";
import { field, h } from "../dom";
import { t } from "../i18n";

export function loginPage(root: HTMLElement, [next]: string[]): void {
  const user = h("input", { name: "username", autocomplete: "username", required: true, maxlength: 64 });
  const pass = h("input", { name: "password", type: "password", autocomplete: "current-password", required: true });
  const err = h("p", { class: "error", role: "alert" });
  const btn = h("button", { type: "submit", class: "primary" }, t("login"));
  const form = h(
    "form",
    { class: "card login", "aria-label": t("login") },
    h("h1", null, "◉ fleetwatch"),
    field(t("username"), user),
    field(t("password"), pass),
    err,
    btn,
  );
  async function submit(e: SubmitEvent): Promise<void> {
    e.preventDefault();
    err.textContent = "";
    btn.disabled = true;
    try {
      await login(user.value.trim(), pass.value);
      location.hash = next || "/fleet";
      if (location.hash === "#" + (next || "/fleet")) window.dispatchEvent(new HashChangeEvent("hashchange"));
    } catch (x) {
      err.textContent = x instanceof ApiError ? x.detail : String(x);
    } finally {
      btn.disabled = false;
    }
  }
  form.addEventListener("submit", (e) => void submit(e));
  root.append(h("main", { id: "main", class: "center" }, form));
  user.focus();
}
