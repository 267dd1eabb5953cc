import type { AlertRecord, Listing, Silence } from "../types";

// Helpers of the alerts page: starting points for new items, and how an alert's value reads.

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

export const TEMPLATES: Record<string, object> = {
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
export const KEY: Record<string, "name" | "id"> = { rules: "name", checks: "name", notifiers: "name", silences: "id" };

export function items<T>(res: Listing<T>, key: string): T[] {
  if (Array.isArray(res)) return res;
  return res?.[key] ?? res?.items ?? [];
}

export function silencedBy(a: AlertRecord, silences: Silence[]): Silence | undefined {
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

const PERCENT = ["percent", "iowait", "steal"];
const BYTES = ["bytes_", "_bps", "mem_total", "mem_used", "available", "total", "used", "free"];

function humanBytes(v: number): string {
  if (Math.abs(v) < 1024) return `${v.toFixed(0)} B`;
  for (const unit of ["KiB", "MiB", "GiB"]) {
    v /= 1024;
    if (Math.abs(v) < 1024) return `${v.toFixed(1)} ${unit}`;
  }
  return `${(v / 1024).toFixed(1)} TiB`;
}

// The same reading as the alerter's notification text (services/alerter/notify/templates.py).
export function fmtAlertValue(field: string | undefined, v: number): string {
  const f = field ?? "";
  const name = f.slice(f.lastIndexOf(".") + 1);
  if (PERCENT.some((p) => name.includes(p))) return `${v.toFixed(1)}%`;
  if (f.startsWith("gpu.mem_")) return `${v.toFixed(0)} MiB`;
  if (BYTES.some((p) => name.includes(p)) && !f.startsWith("procs.")) {
    const rate = name.endsWith("_bps") || f.startsWith("net.") || f.startsWith("iface.");
    return humanBytes(v) + (rate ? "/s" : "");
  }
  if (Number.isInteger(v)) return String(v);
  return Math.abs(v) < 1e6 ? v.toFixed(2) : v.toPrecision(3);
}

export function placeName(host: string): string {
  return host === "_fleet" ? "fleet-wide" : host;
}
