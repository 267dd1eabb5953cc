import { api, ApiError, can, current, SSE } from "../api";
import { clear, field, fmtAgo, fmtTime, h } from "../dom";
import { t } from "../i18n";
import type { AlertRecord, Listing, Silence } from "../types";
import { confirmDialog, toast } from "../widgets";
import { editor } from "./alertconfig";
import { ALERTING, fmtAlertValue, items, placeName, silencedBy } from "./alertutil";

export { ALERTING };

// #/alerts/<fingerprint> (the link in a notification) opens the list with that alert marked.
export function alertsPage(root: HTMLElement, params: string[] = []): () => void {
  const focus = params[0] ?? "";
  let alerts: AlertRecord[] = [];
  let silences: Silence[] = [];
  const status = h("p", { class: "muted", role: "status" });
  const lists = { firing: h("tbody"), pending: h("tbody"), resolved: h("tbody") };
  const silBody = h("tbody");
  const op = can("operator");
  root.append(h("div", { class: "toolbar" }, h("h1", null, t("alerts")), status));
  for (const st of ["firing", "pending", "resolved"] as const) {
    root.append(
      h(
        "section",
        { "aria-labelledby": `al-${st}` },
        h("h2", { id: `al-${st}` }, t(st)),
        h(
          "div",
          { class: "table-wrap" },
          h(
            "table",
            { class: "data", "data-testid": `alerts-${st}`, "aria-label": t(st) },
            h(
              "thead",
              null,
              h(
                "tr",
                null,
                ...[t("rule"), t("host"), t("severity"), t("since"), t("value"), ""].map((x) =>
                  h("th", { scope: "col" }, x),
                ),
                op && st !== "resolved" ? h("th", { scope: "col" }, t("actions")) : null,
              ),
            ),
            lists[st],
          ),
        ),
      ),
    );
  }
  root.append(
    h(
      "section",
      { "aria-labelledby": "al-sil" },
      h("h2", { id: "al-sil" }, t("silences")),
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { class: "data", "data-testid": "silences", "aria-label": t("silences") },
          h(
            "thead",
            null,
            h(
              "tr",
              null,
              ...["Matchers", t("since"), "Until", t("who"), t("comment")].map((x) => h("th", { scope: "col" }, x)),
              op ? h("th", { scope: "col" }, t("actions")) : null,
            ),
          ),
          silBody,
        ),
      ),
    ),
  );

  function render(): void {
    for (const st of ["firing", "pending", "resolved"] as const) {
      const rows = alerts.filter((a) => a.state === st).sort((a, b) => b.since - a.since);
      clear(
        lists[st],
        rows.length
          ? rows.map((a) => {
              const sil = silencedBy(a, silences);
              return h(
                "tr",
                {
                  "data-alert": a.fingerprint,
                  "data-rule": a.rule,
                  "data-host": a.host,
                  class: a.fingerprint === focus ? "focus" : null,
                  "aria-current": a.fingerprint === focus ? "true" : null,
                },
                h("td", null, a.rule, a.summary ? h("small", { class: "muted" }, " " + a.summary) : null),
                h(
                  "td",
                  null,
                  a.host && a.host !== "_fleet"
                    ? h("a", { href: `#/host/${encodeURIComponent(a.host)}` }, a.host)
                    : placeName(a.host),
                ),
                h("td", null, h("span", { class: `sev sev-${a.severity}` }, a.severity)),
                h("td", { title: fmtTime(a.since) }, fmtAgo(a.since)),
                h(
                  "td",
                  { class: "num" },
                  a.value == null
                    ? "–"
                    : `${fmtAlertValue(a.field, a.value)}${a.threshold != null ? ` / ${fmtAlertValue(a.field, a.threshold)}` : ""}`,
                ),
                h("td", null, sil ? h("span", { class: "pill", "data-testid": "silenced" }, t("silenced")) : null),
                op && st !== "resolved"
                  ? h(
                      "td",
                      null,
                      sil
                        ? null
                        : h(
                            "button",
                            {
                              type: "button",
                              onclick: () => void silence(a),
                              "aria-label": `${t("silence")} ${a.rule} ${a.host}`,
                            },
                            t("silence"),
                          ),
                    )
                  : null,
              );
            })
          : h("tr", null, h("td", { colspan: 7, class: "muted" }, t("empty"))),
      );
    }
    clear(
      silBody,
      silences.length
        ? silences.map((s) =>
            h(
              "tr",
              { "data-silence": s.id },
              h("td", null, s.matchers.map((m) => `${m.name}${m.op || "="}${m.value}`).join(", ")),
              h("td", null, fmtTime(s.starts)),
              h("td", null, fmtTime(s.ends)),
              h("td", null, s.created_by),
              h("td", null, s.comment),
              op ? h("td", null, h("button", { type: "button", onclick: () => void expire(s) }, t("remove"))) : null,
            ),
          )
        : h("tr", null, h("td", { colspan: 6, class: "muted" }, t("empty"))),
    );
  }

  async function silence(a: AlertRecord): Promise<void> {
    const dur = h(
      "select",
      { name: "duration" },
      [
        ["1h", 3600],
        ["4h", 14400],
        ["24h", 86400],
        ["7d", 604800],
      ].map(([l, s]) => h("option", { value: s }, l)),
    );
    const comment = h("input", { name: "comment", maxlength: 200 });
    const dlg = h(
      "dialog",
      { "aria-label": t("silence") },
      h(
        "form",
        { method: "dialog", class: "grid-form" },
        h("h2", null, `${t("silence")}: ${a.rule} @ ${a.host}`),
        field(t("silenceFor"), dur),
        field(t("comment"), comment),
        h(
          "div",
          { class: "row end" },
          h("button", { value: "cancel" }, t("cancel")),
          h("button", { value: "ok", class: "primary" }, t("silence")),
        ),
      ),
    );
    document.body.append(dlg);
    dlg.showModal();
    const ok = await new Promise<boolean>((r) => dlg.addEventListener("close", () => r(dlg.returnValue === "ok")));
    dlg.remove();
    if (!ok) return;
    const now = Date.now() / 1000;
    const matchers = [
      { name: "rule", op: "=", value: a.rule },
      ...(a.host ? [{ name: "host", op: "=", value: a.host }] : []),
    ];
    const s = {
      id: `ui-${Math.random().toString(36).slice(2, 10)}`,
      matchers,
      starts: now,
      ends: now + Number(dur.value),
      created_by: current()?.username ?? "",
      comment: comment.value,
    };
    try {
      await api(...ALERTING.put("silences", s), s);
      toast(t("saved"));
      await load();
    } catch (e) {
      toast(e instanceof ApiError ? e.detail : String(e), "error");
    }
  }
  async function expire(s: Silence): Promise<void> {
    if (!(await confirmDialog(`${t("remove")} ${s.id}?`))) return;
    try {
      await api("DELETE", ALERTING.del("silences", s.id));
      await load();
    } catch (e) {
      toast(e instanceof ApiError ? e.detail : String(e), "error");
    }
  }

  async function load(): Promise<void> {
    try {
      const [a, s] = await Promise.all([
        api<Listing<AlertRecord>>("GET", ALERTING.alerts, undefined, { all: true }),
        api<Listing<Silence>>("GET", ALERTING.list("silences")),
      ]);
      alerts = items(a, "alerts");
      silences = items(s, "silences");
      status.textContent = focus && !alerts.some((x) => x.fingerprint === focus) ? t("alertGone", focus) : "";
    } catch (e) {
      status.textContent = t("notAvailable", e instanceof ApiError ? e.detail : String(e));
    }
    render();
  }
  void load();
  for (const res of ["rules", "checks", "notifiers"] as const) editor(root, res);

  // Alert transitions arrive live; the list is re-read so since/value come from the alerter.
  let timer: number | undefined;
  const sse = new SSE("/api/v1/stream?kinds=alert", {
    onEvent() {
      clearTimeout(timer);
      timer = window.setTimeout(load, 300);
    },
  });
  const poll = window.setInterval(load, 15000);
  return () => {
    sse.close();
    clearInterval(poll);
    clearTimeout(timer);
  };
}

/** A list of one alerting resource with a JSON editor (the server validates and gives the reason). */
