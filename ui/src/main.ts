import "./style.css";
import { api, ApiError, can, current, setSession, whenUnauthorized, type Role, type Session } from "./api";
import { clear, h } from "./dom";
import { getLang, setLang, t } from "./i18n";
import { alertsPage } from "./pages/alerts";
import { auditPage } from "./pages/audit";
import { fleetPage } from "./pages/fleet";
import { hostPage } from "./pages/host";
import { loginPage } from "./pages/login";
import { logsPage } from "./pages/logs";
import { usersPage } from "./pages/users";
import { passwordDialog, toast } from "./widgets";

export type Cleanup = () => void;
export type Page = (root: HTMLElement, params: string[]) => Cleanup | void;

// Hash routes: the gateway serves one index.html and every view is addressable and bookmarkable.
const ROUTES: [RegExp, Page, Role?][] = [
  [/^\/fleet$/, fleetPage],
  [/^\/host\/([^/]+)$/, hostPage],
  [/^\/logs\/([^/]+)\/([^/]+)$/, logsPage, "operator"],
  [/^\/alerts$/, alertsPage],
  [/^\/alerts\/([^/]+)$/, alertsPage],
  [/^\/users$/, usersPage, "admin"],
  [/^\/audit$/, auditPage, "operator"],
];

let cleanup: Cleanup | void;

function applyTheme(theme: string): void {
  document.documentElement.dataset.theme = theme;
  localStorage.setItem("fleetwatch.theme", theme);
}
applyTheme(localStorage.getItem("fleetwatch.theme") === "light" ? "light" : "dark");
setLang(getLang());

export function go(path: string): void {
  if (location.hash !== "#" + path) location.hash = path;
  else render();
}

async function changeOwnPassword(): Promise<void> {
  const saved = await passwordDialog(t("changePassword"), true, async (current_password, new_password) => {
    // The change ends every session opened before it, this one too; the answer is its successor.
    try {
      setSession(await api<Session>("POST", "/api/v1/auth/password", { current_password, new_password }));
      return null;
    } catch (e) {
      return e instanceof ApiError ? e.detail : String(e);
    }
  });
  if (saved) toast(t("passwordChanged"));
}

function nav(path: string): HTMLElement {
  const s = current()!;
  const link = (href: string, label: string) =>
    h("a", { href: "#" + href, "aria-current": path.startsWith(href) ? "page" : null }, label);
  const theme = document.documentElement.dataset.theme === "light" ? "light" : "dark";
  return h(
    "header",
    { class: "top" },
    h(
      "a",
      {
        class: "skip",
        href: "#main",
        onclick: (e: Event) => {
          e.preventDefault();
          document.getElementById("main")?.focus();
        },
      },
      t("skip"),
    ),
    h("a", { class: "brand", href: "#/fleet" }, "◉ fleetwatch"),
    h(
      "nav",
      { "aria-label": t("menu") },
      link("/fleet", t("fleet")),
      link("/alerts", t("alerts")),
      can("operator") ? link("/audit", t("audit")) : null,
      can("admin") ? link("/users", t("users")) : null,
    ),
    h(
      "div",
      { class: "who" },
      h(
        "button",
        {
          type: "button",
          class: "ghost",
          "aria-label": `${t("theme")}: ${theme === "dark" ? t("light") : t("dark")}`,
          onclick: () => {
            applyTheme(theme === "dark" ? "light" : "dark");
            render();
          },
        },
        theme === "dark" ? "☀" : "☾",
      ),
      h(
        "button",
        {
          type: "button",
          class: "ghost",
          "aria-label": t("language"),
          onclick: () => {
            setLang(getLang() === "en" ? "es" : "en");
            render();
          },
        },
        getLang() === "en" ? "ES" : "EN",
      ),
      h(
        "span",
        { class: "user", "data-testid": "whoami" },
        s.username,
        " ",
        h("span", { class: `role role-${s.role}`, "data-testid": "role" }, s.role),
      ),
      h(
        "button",
        {
          type: "button",
          class: "ghost",
          "aria-label": t("changePassword"),
          title: t("changePassword"),
          "data-testid": "change-password",
          onclick: () => void changeOwnPassword(),
        },
        "⚷",
      ),
      h(
        "button",
        {
          type: "button",
          onclick: () => {
            setSession(null);
            go("/login");
          },
        },
        t("logout"),
      ),
    ),
  );
}

function render(): void {
  const app = document.getElementById("app")!;
  if (cleanup) {
    cleanup();
    cleanup = undefined;
  }
  const path = location.hash.replace(/^#/, "") || "/fleet";
  if (!current()) {
    clear(app);
    cleanup = loginPage(app, [path === "/login" ? "/fleet" : path]);
    return;
  }
  if (path === "/login") {
    go("/fleet");
    return;
  }
  const main = h("main", { id: "main", tabindex: "-1" });
  clear(app, nav(path), main);
  for (const [re, page, role] of ROUTES) {
    const m = path.match(re);
    if (!m) continue;
    if (role && !can(role)) {
      main.append(h("p", { class: "banner error" }, t("forbidden")));
      return;
    }
    cleanup = page(main, m.slice(1).map(decodeURIComponent));
    return;
  }
  go("/fleet");
}

whenUnauthorized(() => {
  setSession(null);
  render();
});
window.addEventListener("hashchange", render);
render();
