import { ApiError, can } from "../../api";
import { h } from "../../dom";
import { t } from "../../i18n";

export const NAME_RE = "^[A-Za-z0-9][A-Za-z0-9_.\\-]{0,62}$";
export const ENV_KEY = /^[A-Za-z_][A-Za-z0-9_]*$/;

export function cssVar(name: string, fallback: string): string {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback;
}

/** The gateway's role check refused: the session's role is below the action's (the page hides
 *  such controls, so this is a role lowered since the page was drawn). */
export function isRoleRefusal(e: unknown): e is ApiError {
  return e instanceof ApiError && e.status === 403 && /^role /.test(e.detail);
}

/** A commander's 403 (as opposed to the gateway's role check) means the agent lacks a privilege. */
export function isPrivilegeError(e: unknown): e is ApiError {
  return e instanceof ApiError && e.status === 403 && !isRoleRefusal(e);
}

/** What this session's role may not do on a host page, said up front instead of a missing button. */
export function roleNote(): string | null {
  return can("admin") ? null : can("operator") ? t("roleOperator") : t("roleViewer");
}

export function stat(label: string, value: string, id: string): HTMLElement {
  return h(
    "div",
    { class: "stat card" },
    h("span", { class: "muted" }, label),
    h("strong", { "data-testid": id }, value),
  );
}

/** What each host-page section needs from the page: report a failed call (toast + banners). */
export type Fail = (e: unknown) => void;
