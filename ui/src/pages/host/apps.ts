import { api, ApiError, can } from "../../api";
import { clear, fmtBytes, fmtPct, h } from "../../dom";
import { t } from "../../i18n";
import type { AppInfo, AppList, AppReply, AppStatus } from "../../types";
import { confirmDialog, toast } from "../../widgets";
import { isPrivilegeError, type Fail } from "./common";

export interface AppsSection {
  added: (a: AppInfo) => void;
  onStatus: (s: AppStatus) => void;
}

/** The host's registered apps with start/stop/restart/logs/delete by role. */
export function appsSection(
  root: HTMLElement,
  base: string,
  host: string,
  fail: Fail,
  showBanner: (e: ApiError) => void,
): AppsSection {
  const appsBody = h("tbody");
  const appsTable = h(
    "table",
    { class: "data", "data-testid": "apps-table", "aria-label": t("apps") },
    h(
      "thead",
      null,
      h(
        "tr",
        null,
        ...[t("name"), t("status"), t("pid"), t("cpu"), t("ram")].map((x) => h("th", { scope: "col" }, x)),
        can("operator") ? h("th", { scope: "col" }, t("actions")) : null,
      ),
    ),
    appsBody,
  );
  const appsNote = h("p", { class: "muted" });
  root.append(
    h(
      "section",
      { "aria-labelledby": "apps-h" },
      h("h2", { id: "apps-h" }, t("apps")),
      appsNote,
      h("div", { class: "table-wrap" }, appsTable),
    ),
  );
  const apps = new Map<string, AppInfo>();

  async function appAction(name: string, verb: "start" | "stop" | "restart"): Promise<void> {
    if (verb !== "start" && !(await confirmDialog(t(verb === "stop" ? "confirmStop" : "confirmRestart", name, host))))
      return;
    try {
      const r = await api<AppReply>("POST", `${base}/apps/${encodeURIComponent(name)}/${verb}`);
      apps.set(name, r.app);
      renderApps();
      toast(`${name}: ${r.app.state}${r.app.pid ? " (PID " + r.app.pid + ")" : ""}`);
    } catch (e) {
      fail(e);
    }
  }
  async function removeApp(name: string): Promise<void> {
    if (!(await confirmDialog(t("confirmDelete", name, host), t("delete")))) return;
    try {
      await api("DELETE", `${base}/apps/${encodeURIComponent(name)}`);
      apps.delete(name);
      renderApps();
    } catch (e) {
      fail(e);
    }
  }
  function renderApps(): void {
    clear(
      appsBody,
      [...apps.values()]
        .sort((a, b) => (a.spec.name < b.spec.name ? -1 : 1))
        .map((a) => {
          const n = a.spec.name;
          const btn = (label: string, f: () => void, cls = "") =>
            h("button", { type: "button", class: cls, onclick: f, "aria-label": `${label} ${n}` }, label);
          return h(
            "tr",
            { "data-app": n },
            h("td", null, n),
            h(
              "td",
              null,
              h("span", { class: `state state-${a.state}` }, a.state),
              a.detail ? h("small", { class: "muted" }, " " + a.detail) : null,
            ),
            h("td", { class: "num", "data-testid": "app-pid" }, a.pid ?? "–"),
            h("td", { class: "num" }, fmtPct(a.cpu_percent)),
            h("td", { class: "num" }, fmtBytes(a.rss)),
            can("operator")
              ? h(
                  "td",
                  { class: "actions" },
                  btn(t("start"), () => void appAction(n, "start")),
                  btn(t("stop"), () => void appAction(n, "stop")),
                  btn(t("restart"), () => void appAction(n, "restart")),
                  h(
                    "a",
                    {
                      class: "button",
                      href: `#/logs/${encodeURIComponent(host)}/${encodeURIComponent(n)}`,
                      "aria-label": `${t("logs")} ${n}`,
                    },
                    t("logs"),
                  ),
                  can("admin") ? btn(t("delete"), () => void removeApp(n), "danger") : null,
                )
              : null,
          );
        }),
    );
    appsNote.textContent = apps.size ? "" : t("empty");
  }
  const loadApps = () =>
    api<AppList>("GET", `${base}/apps`)
      .then((r) => {
        apps.clear();
        for (const a of r.apps) apps.set(a.spec.name, a);
        renderApps();
      })
      .catch((e) => {
        appsNote.textContent = e instanceof ApiError ? e.detail : String(e);
        if (isPrivilegeError(e)) showBanner(e);
      });
  void loadApps();
  return {
    added(a: AppInfo): void {
      apps.set(a.spec.name, a);
      renderApps();
    },
    onStatus(s: AppStatus): void {
      const a = apps.get(s.app);
      if (a) {
        apps.set(s.app, {
          ...a,
          state: s.state,
          pid: s.pid,
          cpu_percent: s.cpu_percent,
          rss: s.rss,
          restarts: s.restarts,
          detail: s.detail,
        });
        renderApps();
      } else void loadApps();
    },
  };
}
