import { api, ApiError, can, current, SSE } from "../api";
import { clear, field, fmtAgo, fmtTime, h } from "../dom";
import { t } from "../i18n";
import type { AlertRecord, ConfigItem, Listing, Silence } from "../types";
import { confirmDialog, toast } from "../widgets";

// The alerting API as the gateway exposes it: one place to change if its paths move.
export const ALERTING = {
  alerts: "/api/v1/alerts",
  list: (res: string) => `/api/v1/${res}`,
  // silences are created (the alerter may pick the id); the others are put under their name
  put: (res: string, obj: unknown): [string, string] =>
    res === "silences"
      ? ["POST", "/api/v1/silences"]
      : ["PUT", `/api/v1/${res}/${encodeURIComponent((obj as { name?: string }).name ?? "")}`],
  del: (res: string, name: string) => `/api/v1/${res}/${encodeURIComponent(name)}`,
};

const TEMPLATES: Record<string, object> = {
  rules: {
    name: "high-cpu",
    kind: "metric",
    field: "cpu.percent",
    op: ">",
    threshold: 90,
    resolve: 80,
    for_s: 300,
    severity: "warning",
    hosts: [],
    summary: "CPU above 90 % for 5 minutes",
  },
  checks: {
    name: "website",
    url: "https://example.org/health",
    method: "GET",
    interval_s: 60,
    timeout_s: 5,
    status_min: 200,
    status_max: 299,
    failure_threshold: 2,
    severity: "critical",
  },
  notifiers: {
    name: "ops-webhook",
    kind: "webhook",
    url: "https://hooks.example.org/fleetwatch",
    min_severity: "warning",
    matchers: [],
  },
};
const KEY: Record<string, "name" | "id"> = { rules: "name", checks: "name", notifiers: "name", silences: "id" };

function items<T>(res: Listing<T>, key: string): T[] {
  if (Array.isArray(res)) return res;
  return res?.[key] ?? res?.items ?? [];
}

function silencedBy(a: AlertRecord, silences: Silence[]): Silence | undefined {
  const labels: Record<string, string> = {
    ...a.labels,
    alertname: a.rule,
    rule: a.rule,
    host: a.host,
    severity: a.severity,
    kind: a.kind,
  };
  const now = Date.now() / 1000;
  return silences.find(
    (s) =>
      s.starts <= now &&
      now < s.ends &&
      s.matchers.every((m) => {
        const v = labels[m.name] ?? "";
        if (m.op === "=" || !m.op) return v === m.value;
        if (m.op === "!=") return v !== m.value;
        const hit = new RegExp(`^(?:${m.value})$`).test(v);
        return m.op === "=~" ? hit : !hit;
      }),
  );
}

export function alertsPage(root: HTMLElement): () => void {
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
                { "data-alert": a.fingerprint, "data-rule": a.rule, "data-host": a.host },
                h("td", null, a.rule, a.summary ? h("small", { class: "muted" }, " " + a.summary) : null),
                h(
                  "td",
                  null,
                  a.host && a.host !== "_fleet"
                    ? h("a", { href: `#/host/${encodeURIComponent(a.host)}` }, a.host)
                    : a.host,
                ),
                h("td", null, h("span", { class: `sev sev-${a.severity}` }, a.severity)),
                h("td", { title: fmtTime(a.since) }, fmtAgo(a.since)),
                h(
                  "td",
                  { class: "num" },
                  a.value == null
                    ? "–"
                    : `${Number(a.value).toFixed(2)}${a.threshold != null ? ` / ${a.threshold}` : ""}`,
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
      status.textContent = "";
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
function editor(root: HTMLElement, res: "rules" | "checks" | "notifiers"): void {
  const body = h("tbody");
  const admin = can("operator"); // the gateway lets operators edit alerting
  const text = h("textarea", { rows: 10, spellcheck: "false", class: "mono", name: `${res}-json` });
  const err = h("p", { class: "error", role: "alert" });
  const form = h(
    "form",
    {
      class: "card grid-form",
      hidden: true,
      "aria-label": `${t(res)} ${t("edit")}`,
      "data-testid": `editor-form-${res}`,
    },
    field(t("json"), text),
    err,
    h(
      "div",
      { class: "row end" },
      h(
        "button",
        {
          type: "button",
          onclick: () => {
            form.hidden = true;
          },
        },
        t("cancel"),
      ),
      h("button", { type: "submit", class: "primary" }, t("save")),
    ),
  );
  const sec = h(
    "section",
    { "aria-labelledby": `ed-${res}` },
    h(
      "div",
      { class: "toolbar" },
      h("h2", { id: `ed-${res}` }, t(res)),
      admin
        ? h(
            "button",
            { type: "button", onclick: () => open(TEMPLATES[res]), "aria-label": `${t("add")}: ${t(res)}` },
            t("add"),
          )
        : null,
    ),
    h(
      "div",
      { class: "table-wrap" },
      h("table", { class: "data", "data-testid": `editor-${res}`, "aria-label": t(res) }, body),
    ),
    form,
  );
  root.append(sec);
  function open(obj: object): void {
    text.value = JSON.stringify(obj, null, 2);
    err.textContent = "";
    form.hidden = false;
    text.focus();
  }
  async function save(e: SubmitEvent): Promise<void> {
    e.preventDefault();
    let obj: unknown;
    try {
      obj = JSON.parse(text.value);
    } catch (x) {
      err.textContent = `JSON: ${(x as Error).message}`;
      return;
    }
    try {
      await api(...ALERTING.put(res, obj), obj);
      form.hidden = true;
      toast(t("saved"));
      await load();
    } catch (x) {
      err.textContent = x instanceof ApiError ? x.detail : String(x);
    }
  }
  form.addEventListener("submit", (e) => void save(e));
  async function test(it: ConfigItem): Promise<void> {
    try {
      await api("POST", `/api/v1/notifiers/${encodeURIComponent(it.name)}/test`, {});
      toast(`${it.name}: ${t("done")}`);
    } catch (x) {
      toast(x instanceof ApiError ? x.detail : String(x), "error");
    }
  }
  async function remove(key: string): Promise<void> {
    if (!(await confirmDialog(`${t("delete")} ${key}?`, t("delete")))) return;
    try {
      await api("DELETE", ALERTING.del(res, key));
      await load();
    } catch (x) {
      toast(x instanceof ApiError ? x.detail : String(x), "error");
    }
  }
  async function load(): Promise<void> {
    try {
      const list = items(await api<Listing<ConfigItem>>("GET", ALERTING.list(res)), res);
      clear(
        body,
        list.length
          ? list.map((it) => {
              const key = it[KEY[res]] as string; // every listed item has its KEY field
              return h(
                "tr",
                null,
                h("td", null, key),
                h(
                  "td",
                  { class: "muted" },
                  it.summary || it.url || (it.field && `${it.field} ${it.op} ${it.threshold}`) || it.kind || "",
                ),
                h("td", null, it.enabled === false ? "off" : "on"),
                admin
                  ? h(
                      "td",
                      { class: "actions" },
                      h(
                        "button",
                        { type: "button", onclick: () => open(it), "aria-label": `${t("edit")} ${key}` },
                        t("edit"),
                      ),
                      res === "notifiers"
                        ? h(
                            "button",
                            {
                              type: "button",
                              onclick: () => void test(it),
                            },
                            "Test",
                          )
                        : null,
                      h(
                        "button",
                        {
                          type: "button",
                          class: "danger",
                          onclick: () => void remove(key),
                        },
                        t("delete"),
                      ),
                    )
                  : null,
              );
            })
          : h("tr", null, h("td", { class: "muted" }, t("empty"))),
      );
    } catch (x) {
      clear(
        body,
        h("tr", null, h("td", { class: "muted" }, t("notAvailable", x instanceof ApiError ? x.detail : String(x)))),
      );
    }
  }
  void load();
}
