import { api, ApiError } from "../api";
import { clear, field, fmtTime, h } from "../dom";
import { t } from "../i18n";
import type { AuditPage } from "../types";

export function auditPage(root: HTMLElement): () => void {
  const host = h("input", { name: "host", pattern: "^[A-Za-z0-9_-]*$" });
  const actor = h("input", { name: "actor" });
  const action = h("input", { name: "action", placeholder: "apps.restart" });
  const result = h(
    "select",
    { name: "result" },
    h("option", { value: "" }, t("all")),
    h("option", { value: "ok" }, "ok"),
    h("option", { value: "error" }, "error"),
  );
  const body = h("tbody");
  const err = h("p", { class: "error", role: "alert" });
  const more = h("button", { type: "button", hidden: true }, t("more"));
  const form = h(
    "form",
    { class: "filters", "aria-label": t("audit"), "data-testid": "audit-filters" },
    field(t("where"), host),
    field(t("who"), actor),
    field(t("what"), action),
    field(t("result"), result),
    h("button", { type: "submit", class: "primary" }, t("apply")),
  );
  root.append(
    h("h1", null, t("audit")),
    form,
    err,
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: "data", "data-testid": "audit-table", "aria-label": t("audit") },
        h(
          "thead",
          null,
          h(
            "tr",
            null,
            ...[t("when"), t("who"), t("what"), t("target"), t("where"), t("result"), t("code"), "ms", "Params"].map(
              (x) => h("th", { scope: "col" }, x),
            ),
          ),
        ),
        body,
      ),
    ),
    more,
  );
  const table = body.parentElement as HTMLElement;
  let offset: number | null = 0;
  // Each load supersedes the ones still in flight: a slow earlier answer must not land on
  // (or after) the rows of a newer filter.
  let generation = 0;
  async function load(reset: boolean): Promise<void> {
    const mine = ++generation;
    if (reset) offset = 0;
    if (offset === null) return;
    err.textContent = "";
    table.setAttribute("aria-busy", "true");
    try {
      const page = await api<AuditPage>("GET", "/api/v1/audit", undefined, {
        host: host.value.trim(),
        actor: actor.value.trim(),
        action: action.value.trim(),
        result: result.value,
        limit: 100,
        offset,
      });
      if (mine !== generation) return;
      if (reset) body.replaceChildren();
      for (const r of page.items) {
        const params = typeof r.params === "string" ? r.params : JSON.stringify(r.params);
        body.append(
          h(
            "tr",
            { "data-action": r.action, "data-actor": r.actor },
            h("td", null, fmtTime(r.ts ?? r.time)),
            h("td", null, r.actor),
            h("td", null, r.action),
            h("td", null, r.target),
            h("td", null, r.host),
            h(
              "td",
              null,
              h("span", { class: `state state-${r.result === "ok" ? "running" : "failed"}` }, r.result),
              r.error ? h("small", { class: "muted" }, " " + r.error) : null,
            ),
            h("td", { class: "num" }, r.code),
            h("td", { class: "num" }, r.duration_ms != null ? Math.round(r.duration_ms) : ""),
            h("td", { class: "cmd", title: params }, params),
          ),
        );
      }
      if (!body.children.length) clear(body, h("tr", null, h("td", { colspan: 9, class: "muted" }, t("empty"))));
      offset = page.next_offset ?? null;
      more.hidden = offset === null;
    } catch (e) {
      if (mine === generation) err.textContent = e instanceof ApiError ? e.detail : String(e);
    } finally {
      if (mine === generation) table.setAttribute("aria-busy", "false");
    }
  }
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    if (form.reportValidity()) void load(true);
  });
  more.addEventListener("click", () => void load(false));
  void load(true);
  return () => {};
}
