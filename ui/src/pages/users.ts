import { api, ApiError, current } from "../api";
import { clear, field, fmtAgo, fmtTime, h } from "../dom";
import { t } from "../i18n";
import type { ReplicationStatus, UserOut } from "../types";
import { confirmDialog, passwordDialog, toast } from "../widgets";

export function usersPage(root: HTMLElement): () => void {
  const body = h("tbody");
  const repBody = h("tbody");
  const err = h("p", { class: "error", role: "alert", "data-testid": "user-error" });
  const username = h("input", {
    name: "username",
    required: true,
    // Browsers compile `pattern` with the `v` flag, where a bare `-` in a class is a syntax error
    // (the pattern would be dropped with a console warning): escape it.
    pattern: "^[a-z_][a-z0-9_\\-]{0,31}$",
    autocomplete: "off",
  });
  const password = h("input", {
    name: "password",
    type: "password",
    required: true,
    minlength: 8,
    autocomplete: "new-password",
  });
  const email = h("input", { name: "email", type: "email" });
  const role = h(
    "select",
    { name: "role" },
    ["viewer", "operator", "admin"].map((r) => h("option", { value: r }, r)),
  );
  const form = h(
    "form",
    { class: "card grid-form", "aria-labelledby": "cu-h", "data-testid": "user-form" },
    h("h2", { id: "cu-h" }, t("createUser")),
    field(t("username"), username, "a-z 0-9 _ -"),
    field(t("password"), password, "≥ 8"),
    field(t("email"), email),
    field(t("role"), role),
    err,
    h("div", { class: "row end" }, h("button", { type: "submit", class: "primary" }, t("createUser"))),
  );
  root.append(
    h("h1", null, t("users")),
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: "data", "data-testid": "users-table", "aria-label": t("users") },
        h(
          "thead",
          null,
          h(
            "tr",
            null,
            ...[t("username"), t("role"), t("email"), "UID", t("active"), t("created"), t("actions")].map((x) =>
              h("th", { scope: "col" }, x),
            ),
          ),
        ),
        body,
      ),
    ),
    form,
    h(
      "section",
      { "aria-labelledby": "rep-h" },
      h("h2", { id: "rep-h" }, t("replication")),
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { class: "data", "data-testid": "replication-table", "aria-label": t("replication") },
          h(
            "thead",
            null,
            h(
              "tr",
              null,
              ...[t("host"), t("result"), t("when"), "+/~/−", "Total", "ms", t("error"), t("actions")].map((x) =>
                h("th", { scope: "col" }, x),
              ),
            ),
          ),
          repBody,
        ),
      ),
    ),
  );

  async function patch(u: UserOut, change: object, what: string): Promise<void> {
    try {
      await api("PATCH", `/api/v1/users/${encodeURIComponent(u.username)}`, change);
      toast(`${u.username}: ${what}`);
      await load();
    } catch (e) {
      toast(e instanceof ApiError ? e.detail : String(e), "error");
    }
  }
  async function resetPassword(u: UserOut): Promise<void> {
    // The dialog stays open with the server's reason when the reset is refused.
    const saved = await passwordDialog(`${t("resetPassword")}: ${u.username}`, false, async (_, password) => {
      try {
        await api("PATCH", `/api/v1/users/${encodeURIComponent(u.username)}`, { password });
        return null;
      } catch (e) {
        return e instanceof ApiError ? e.detail : String(e);
      }
    });
    if (saved) toast(`${u.username}: ${t("passwordReset")}`);
  }
  async function deactivate(u: UserOut): Promise<void> {
    if (await confirmDialog(`${t("deactivate")} ${u.username}?`, t("deactivate"))) {
      try {
        await api("DELETE", `/api/v1/users/${encodeURIComponent(u.username)}`);
        await load();
      } catch (e) {
        toast(e instanceof ApiError ? e.detail : String(e), "error");
      }
    }
  }
  async function syncHost(r: ReplicationStatus): Promise<void> {
    try {
      await api("POST", `/api/v1/hosts/${encodeURIComponent(r.host)}/replication/sync`);
      toast(t("sync") + ": " + r.host);
    } catch (e) {
      toast(e instanceof ApiError ? e.detail : String(e), "error");
    }
  }
  async function load(): Promise<void> {
    try {
      const users = await api<UserOut[]>("GET", "/api/v1/users");
      const me = current()?.username;
      clear(
        body,
        users.map((u) =>
          h(
            "tr",
            { "data-user": u.username, class: u.is_active ? "" : "inactive" },
            h("td", null, u.username),
            h("td", null, h("span", { class: `role role-${u.role}` }, u.role)),
            h("td", null, u.email),
            h("td", { class: "num" }, u.system_uid),
            h("td", null, u.is_active ? "✓" : "✗"),
            h("td", null, fmtTime(u.created_at)),
            h(
              "td",
              { class: "actions" },
              h(
                "button",
                {
                  type: "button",
                  onclick: () => void resetPassword(u),
                  "aria-label": `${t("resetPassword")} ${u.username}`,
                },
                t("resetPassword"),
              ),
              u.username === me
                ? null
                : u.is_active
                  ? h(
                      "button",
                      {
                        type: "button",
                        class: "danger",
                        "aria-label": `${t("deactivate")} ${u.username}`,
                        onclick: () => void deactivate(u),
                      },
                      t("deactivate"),
                    )
                  : h(
                      "button",
                      { type: "button", onclick: () => void patch(u, { is_active: true }, t("activate")) },
                      t("activate"),
                    ),
            ),
          ),
        ),
      );
    } catch (e) {
      err.textContent = e instanceof ApiError ? e.detail : String(e);
    }
    try {
      // The gateway answers {items: [...]}; a bare list is read too.
      const rep = await api<{ items?: ReplicationStatus[] }>("GET", "/api/v1/replication");
      const list = rep.items ?? (rep as ReplicationStatus[]);
      clear(
        repBody,
        list.length
          ? list.map((r) =>
              h(
                "tr",
                { "data-host": r.host },
                h("td", null, r.host),
                h(
                  "td",
                  null,
                  h("span", { class: `state state-${r.ok ? "running" : "failed"}` }, r.ok ? t("ok") : t("error")),
                ),
                h("td", { title: fmtTime(r.ts) }, fmtAgo(r.ts)),
                h("td", null, `${r.added}/${r.updated}/${r.removed}`),
                h("td", { class: "num" }, r.total),
                h("td", { class: "num" }, Math.round(r.duration_ms)),
                h("td", null, r.error),
                h(
                  "td",
                  null,
                  h(
                    "button",
                    {
                      type: "button",
                      onclick: () => void syncHost(r),
                    },
                    t("sync"),
                  ),
                ),
              ),
            )
          : h("tr", null, h("td", { colspan: 8, class: "muted" }, t("empty"))),
      );
    } catch (e) {
      clear(repBody, h("tr", null, h("td", { colspan: 8 }, e instanceof ApiError ? e.detail : String(e))));
    }
  }
  async function submit(e: SubmitEvent): Promise<void> {
    e.preventDefault();
    err.textContent = "";
    if (!form.reportValidity()) return;
    try {
      await api("POST", "/api/v1/users", {
        username: username.value.trim(),
        password: password.value,
        email: email.value.trim(),
        role: role.value,
      });
      toast(`${username.value}: ${t("done")}`);
      form.reset();
      await load();
    } catch (x) {
      err.textContent = x instanceof ApiError ? x.detail : String(x);
    }
  }
  form.addEventListener("submit", (e) => void submit(e));
  void load();
  return () => {};
}
