import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { api, ApiError, can, SSE } from "../api";
import { clear, field, fmtBytes, fmtPct, fmtTime, h } from "../dom";
import { t, type Key } from "../i18n";
import type {
  AppInfo,
  AppList,
  AppReply,
  AppStatus,
  History,
  HostDetail,
  JobInfo,
  JobList,
  JobLogs,
  Proc,
  ProcList,
  ProcSnapshot,
  ScannedProc,
  ScanReply,
  StreamEvent,
  Summary,
} from "../types";
import { confirmDialog, sortHeader, toast } from "../widgets";

const RANGES: [string, number][] = [
  ["15m", 900],
  ["1h", 3600],
  ["24h", 86400],
  ["7d", 7 * 86400],
  ["30d", 30 * 86400],
];

interface ChartDef {
  id: string;
  title: Key;
  fields: string[];
  labels: string[];
  unit: "pct" | "bps";
  summary: string[];
}
const CHARTS: ChartDef[] = [
  { id: "cpu", title: "cpu", fields: ["cpu_percent"], labels: ["CPU %"], unit: "pct", summary: ["cpu_percent"] },
  {
    id: "mem",
    title: "memory",
    fields: ["mem_percent", "swap_percent"],
    labels: ["RAM %", "Swap %"],
    unit: "pct",
    summary: ["mem_percent", "swap_percent"],
  },
  {
    id: "disk",
    title: "disk",
    fields: ["disk_max_percent"],
    labels: ["Disk %"],
    unit: "pct",
    summary: ["disk_max_percent"],
  },
  {
    id: "net",
    title: "network",
    fields: ["net_bytes_recv", "net_bytes_sent"],
    labels: ["Recv B/s", "Sent B/s"],
    unit: "bps",
    summary: ["net_bytes_recv", "net_bytes_sent"],
  },
  {
    id: "gpu",
    title: "gpu",
    fields: ["gpu_util_percent"],
    labels: ["GPU %"],
    unit: "pct",
    summary: ["gpu_util_percent"],
  },
];
const ALL_FIELDS = [...new Set(CHARTS.flatMap((c) => c.fields))];
const NAME_RE = "^[A-Za-z0-9][A-Za-z0-9_.\\-]{0,62}$";
const ENV_KEY = /^[A-Za-z_][A-Za-z0-9_]*$/;

function cssVar(name: string, fallback: string): string {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback;
}

/** The gateway's role check refused: the session's role is below the action's (the page hides
 *  such controls, so this is a role lowered since the page was drawn). */
function isRoleRefusal(e: unknown): e is ApiError {
  return e instanceof ApiError && e.status === 403 && /^role /.test(e.detail);
}

/** A commander's 403 (as opposed to the gateway's role check) means the agent lacks a privilege. */
function isPrivilegeError(e: unknown): e is ApiError {
  return e instanceof ApiError && e.status === 403 && !isRoleRefusal(e);
}

/** What this session's role may not do on a host page, said up front instead of a missing button. */
function roleNote(): string | null {
  return can("admin") ? null : can("operator") ? t("roleOperator") : t("roleViewer");
}

export function hostPage(root: HTMLElement, [host]: string[]): () => void {
  const cleanups: (() => void)[] = [];
  const base = `/api/v1/hosts/${encodeURIComponent(host)}`;
  const banner = h("div", { class: "banner error", role: "alert", hidden: true, "data-testid": "privilege-banner" });
  const note = roleNote();
  const roleBanner = h(
    "div",
    { class: "banner info", role: "status", hidden: !note, "data-testid": "role-banner" },
    note,
  );
  const headInfo = h("p", { class: "muted", "data-testid": "host-info" });
  const liveVals = h("div", { class: "stats", "data-testid": "host-live" });
  root.append(
    h(
      "div",
      { class: "toolbar" },
      h("a", { href: "#/fleet", class: "ghost" }, "← " + t("fleet")),
      h("h1", { "data-testid": "host-title" }, host),
    ),
    headInfo,
    roleBanner,
    banner,
    liveVals,
  );

  function showBanner(e: ApiError): void {
    clear(banner, h("strong", null, t("privileges")), " ", e.detail);
    banner.hidden = false;
  }
  function fail(e: unknown): void {
    if (isPrivilegeError(e)) showBanner(e);
    if (isRoleRefusal(e)) {
      clear(roleBanner, h("strong", null, t("roleRefused")), " ", e.detail);
      roleBanner.hidden = false;
    }
    toast(e instanceof ApiError ? e.detail : String(e), "error");
  }

  api<HostDetail>("GET", base)
    .then((d) => {
      const v = d.host;
      headInfo.textContent = [
        v.hostname,
        v.os,
        v.kernel,
        v.cpu_model && `${v.cpu_model} ×${v.cpu_count}`,
        v.mem_total && fmtBytes(v.mem_total),
        Object.entries(v.labels || {})
          .map(([k, x]) => `${k}=${x}`)
          .join(" "),
      ]
        .filter(Boolean)
        .join(" · ");
    })
    .catch((e) => {
      headInfo.textContent = e instanceof ApiError ? e.detail : String(e);
    });

  // ---- charts ------------------------------------------------------------------------------
  let range = 900;
  const rangeBox = h("div", { class: "segmented", role: "radiogroup", "aria-label": t("range") });
  const chartsBox = h("div", { class: "charts" });
  const plots = new Map<string, { u: uPlot; def: ChartDef; data: (number | null)[][] }>();
  root.append(
    h(
      "section",
      { "aria-labelledby": "charts-h" },
      h("div", { class: "toolbar" }, h("h2", { id: "charts-h" }, t("range")), rangeBox),
      chartsBox,
    ),
  );

  function renderRanges(): void {
    clear(
      rangeBox,
      RANGES.map(([label, s]) =>
        h(
          "button",
          {
            type: "button",
            role: "radio",
            "aria-checked": String(s === range),
            class: s === range ? "on" : "",
            "data-range": label,
            onclick: () => {
              range = s;
              renderRanges();
              void loadHistory();
            },
          },
          label,
        ),
      ),
    );
  }
  renderRanges();

  function width(): number {
    return Math.max(260, Math.min(chartsBox.clientWidth || 600, 1400) / (window.innerWidth > 900 ? 2 : 1) - 24);
  }

  function makePlot(def: ChartDef, data: (number | null)[][]): uPlot {
    const colors = [cssVar("--accent", "#4ea1ff"), cssVar("--accent2", "#b48cff")];
    const axis = {
      stroke: cssVar("--muted", "#8a94a6"),
      grid: { stroke: cssVar("--grid", "#2a3140"), width: 1 },
      ticks: { stroke: cssVar("--grid", "#2a3140") },
    };
    const fmt =
      def.unit === "pct"
        ? (_: uPlot, v: number | null) => (v == null ? "–" : v.toFixed(1) + "%")
        : (_: uPlot, v: number | null) => (v == null ? "–" : fmtBytes(v) + "/s");
    return new uPlot(
      {
        width: width(),
        height: 170,
        title: t(def.title),
        scales: { x: { time: true }, y: def.unit === "pct" ? { range: [0, 100] } : { auto: true } },
        axes: [axis, { ...axis, size: def.unit === "pct" ? 60 : 84, values: (u, vals) => vals.map((v) => fmt(u, v)) }],
        series: [
          {},
          ...def.labels.map((label, i) => ({
            label,
            stroke: colors[i],
            width: 1.5,
            fill: i === 0 ? colors[0] + "22" : undefined,
            value: fmt,
          })),
        ],
      },
      data as uPlot.AlignedData,
      undefined,
    );
  }

  let histSeq = 0;
  async function loadHistory(): Promise<void> {
    const seq = ++histSeq;
    const to = Date.now() / 1000;
    try {
      const res = await api<History>("GET", `${base}/metrics`, undefined, {
        from: Math.floor(to - range),
        to: Math.ceil(to),
        fields: ALL_FIELDS.join(","),
        max_points: 600,
      });
      if (seq !== histSeq) return;
      chartsBox.dataset.tier = res.tier;
      chartsBox.dataset.points = String(res.times.length);
      for (const def of CHARTS) {
        const data = [res.times, ...def.fields.map((f) => res.series[f] ?? res.times.map(() => null))];
        const p = plots.get(def.id);
        if (p) {
          p.data = data;
          p.u.setData(data as uPlot.AlignedData);
        } else {
          const box = h("figure", { class: "chart card", "data-chart": def.id, "aria-label": t(def.title) });
          chartsBox.append(box);
          const u = makePlot(def, data);
          box.append(u.root);
          plots.set(def.id, { u, def, data });
        }
      }
    } catch (e) {
      chartsBox.dataset.error = e instanceof ApiError ? e.detail : String(e);
      if (!plots.size) clear(chartsBox, h("p", { class: "muted" }, t("noData"), ": ", chartsBox.dataset.error));
    }
  }
  void loadHistory();
  const onResize = () => {
    for (const p of plots.values()) p.u.setSize({ width: width(), height: 170 });
  };
  window.addEventListener("resize", onResize);
  cleanups.push(() => {
    window.removeEventListener("resize", onResize);
    for (const p of plots.values()) p.u.destroy();
  });

  function liveFrame(s: Summary): void {
    clear(
      liveVals,
      stat(t("cpu"), fmtPct(s.cpu_percent), "live-cpu"),
      stat(t("memory"), fmtPct(s.mem_percent), "live-mem"),
      stat(t("disk"), fmtPct(s.disk_max_percent), "live-disk"),
      stat(t("gpu"), fmtPct(s.gpu_util_percent), "live-gpu"),
      stat(t("load"), s.load1 != null ? s.load1.toFixed(2) : "–", "live-load"),
      stat(t("network"), `↓${fmtBytes(s.net_bytes_recv)}/s ↑${fmtBytes(s.net_bytes_sent)}/s`, "live-net"),
    );
    if (range > 3600) return; // long ranges are rollups: a raw point would not belong
    const ts = s.ts;
    for (const p of plots.values()) {
      const d = p.data;
      const times = d[0] as number[];
      if (times.length && ts <= times[times.length - 1]) continue;
      times.push(ts);
      p.def.summary.forEach((k, i) => d[i + 1].push(s[k] ?? null));
      while (times.length && times[0] < ts - range) d.forEach((a) => a.shift());
      p.u.setData(d as uPlot.AlignedData);
    }
  }

  // ---- processes ---------------------------------------------------------------------------
  const procSort: { key: keyof Proc; desc: boolean } = { key: "cpu_percent", desc: true };
  let procs: Proc[] = [];
  const procTable = h("table", { class: "data", "data-testid": "proc-table", "aria-label": t("processes") });
  const procNote = h("span", { class: "muted" });
  root.append(
    h(
      "section",
      { "aria-labelledby": "procs-h" },
      h("div", { class: "toolbar" }, h("h2", { id: "procs-h" }, t("processes")), procNote),
      h("div", { class: "table-wrap" }, procTable),
    ),
  );
  function renderProcs(): void {
    const k = procSort.key;
    const sorted = [...procs]
      .sort((a, b) => (a[k] < b[k] ? -1 : a[k] > b[k] ? 1 : 0) * (procSort.desc ? -1 : 1))
      .slice(0, 50);
    const on = (key: string) => {
      procSort.desc = procSort.key === key ? !procSort.desc : key !== "name" && key !== "user";
      procSort.key = key as keyof Proc;
      renderProcs();
    };
    clear(
      procTable,
      h(
        "thead",
        null,
        h(
          "tr",
          null,
          sortHeader(t("pid"), "pid", procSort, on),
          sortHeader(t("name"), "name", procSort, on),
          sortHeader(t("user"), "user", procSort, on),
          sortHeader(t("cpu"), "cpu_percent", procSort, on),
          sortHeader(t("ram"), "rss", procSort, on),
          sortHeader(t("threads"), "threads", procSort, on),
          h("th", { scope: "col", class: "wide" }, t("command")),
        ),
      ),
      h(
        "tbody",
        null,
        sorted.map((p) =>
          h(
            "tr",
            null,
            h("td", { class: "num" }, p.pid),
            h("td", null, p.name),
            h("td", null, p.user),
            h("td", { class: "num" }, fmtPct(p.cpu_percent)),
            h("td", { class: "num" }, fmtBytes(p.rss)),
            h("td", { class: "num" }, p.threads),
            h("td", { class: "cmd wide", title: p.cmdline }, p.cmdline),
          ),
        ),
      ),
    );
  }
  api<ProcList>("GET", `${base}/processes`, undefined, { limit: 100 })
    .then((r) => {
      procs = r.procs;
      procNote.textContent = r.total ? `${r.procs.length} / ${r.total}` : "";
      renderProcs();
    })
    .catch(() => renderProcs());

  // ---- apps --------------------------------------------------------------------------------
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

  // ---- register / scan / adopt (admins register, operators scan) ------------------------------
  let prefill: ((p: ScannedProc) => void) | null = null;
  if (can("admin"))
    prefill = registerForm(
      root,
      base,
      host,
      (a) => {
        apps.set(a.spec.name, a);
        renderApps();
      },
      fail,
    );
  if (can("operator")) scanSection(root, base, prefill);
  jobsSection(root, base, fail, cleanups);

  // ---- live ----------------------------------------------------------------------------------
  const sse = new SSE(`/api/v1/stream?hosts=${encodeURIComponent(host)}&kinds=frame,procs,app`, {
    onEvent(kind, data) {
      const ev = JSON.parse(data) as StreamEvent;
      if (kind === "frame") liveFrame(ev.data as Summary);
      else if (kind === "procs") {
        const snap = ev.data as ProcSnapshot;
        procs = snap.procs || [];
        procNote.textContent = `${procs.length} / ${snap.total ?? procs.length}`;
        renderProcs();
      } else if (kind === "app") {
        const s = ev.data as AppStatus;
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
      }
    },
  });
  cleanups.push(() => sse.close());
  return () => cleanups.forEach((f) => f());
}

function stat(label: string, value: string, id: string): HTMLElement {
  return h(
    "div",
    { class: "stat card" },
    h("span", { class: "muted" }, label),
    h("strong", { "data-testid": id }, value),
  );
}

function registerForm(
  root: HTMLElement,
  base: string,
  host: string,
  added: (a: AppInfo) => void,
  fail: (e: unknown) => void,
): (p: ScannedProc) => void {
  const name = h("input", { name: "name", required: true, pattern: NAME_RE, maxlength: 63, autocomplete: "off" });
  const runtime = h(
    "select",
    { name: "runtime" },
    ["python", "node", "binary"].map((r) => h("option", { value: r }, r)),
  );
  const backend = h(
    "select",
    { name: "backend" },
    ["process", "systemd"].map((r) => h("option", { value: r }, r)),
  );
  const script = h("input", { name: "script", pattern: "^/.*", placeholder: "/srv/app/main.py" });
  const interpreter = h("input", { name: "interpreter", placeholder: "python3" });
  const args = h("textarea", { name: "args", rows: 2 });
  const argv = h("textarea", { name: "argv", rows: 3, placeholder: "/usr/bin/myserver\n--port\n8000" });
  const user = h("input", { name: "user", autocomplete: "off" });
  const cwd = h("input", { name: "cwd", pattern: "^/.*" });
  const env = h("textarea", { name: "env", rows: 3, placeholder: "PORT=8000" });
  const restart = h(
    "select",
    { name: "restart" },
    ["on-failure", "always", "never"].map((r) => h("option", { value: r }, r)),
  );
  const startNow = h("input", { type: "checkbox", name: "start", checked: true });
  startNow.defaultChecked = true; // form.reset() after a register restores the default, not unchecked
  const err = h("p", { class: "error", role: "alert", "data-testid": "register-error" });
  const scriptF = field(t("script"), script),
    interpF = field(t("interpreter"), interpreter),
    argsF = field(t("argv"), args),
    argvF = field(t("argv"), argv);
  const sync = () => {
    const bin = runtime.value === "binary";
    scriptF.hidden = interpF.hidden = argsF.hidden = bin;
    argvF.hidden = !bin;
    script.required = !bin;
    argv.required = bin;
  };
  runtime.addEventListener("change", sync);
  sync();
  const form = h(
    "form",
    { class: "card grid-form", "aria-labelledby": "reg-h", "data-testid": "register-form", novalidate: false },
    h("h2", { id: "reg-h" }, t("registerApp")),
    field(t("name"), name, "letters, digits, . _ -"),
    field(t("runtime"), runtime),
    field("Backend", backend),
    scriptF,
    interpF,
    argsF,
    argvF,
    field(t("user"), user),
    field(t("workdir"), cwd),
    field(t("envVars"), env),
    field(t("restartPolicy"), restart),
    h("label", { class: "check" }, startNow, " ", t("startNow")),
    err,
    h("div", { class: "row end" }, h("button", { type: "submit", class: "primary" }, t("register"))),
  );

  function parseEnv(): Record<string, string> | null {
    const out: Record<string, string> = {};
    for (const [i, line] of env.value.split("\n").entries()) {
      if (!line.trim()) continue;
      const eq = line.indexOf("=");
      const k = eq > 0 ? line.slice(0, eq).trim() : "";
      if (!ENV_KEY.test(k)) {
        env.setCustomValidity(`line ${i + 1}: expected KEY=value with KEY like [A-Za-z_][A-Za-z0-9_]*`);
        return null;
      }
      out[k] = line.slice(eq + 1);
    }
    env.setCustomValidity("");
    return out;
  }
  env.addEventListener("input", () => parseEnv());
  async function submit(e: SubmitEvent): Promise<void> {
    e.preventDefault();
    err.textContent = "";
    const envs = parseEnv();
    if (!form.reportValidity() || envs === null) return;
    const lines = (x: HTMLTextAreaElement) =>
      x.value
        .split("\n")
        .map((s) => s.trim())
        .filter(Boolean);
    const run =
      runtime.value === "binary"
        ? { runtime: "binary", argv: lines(argv) }
        : {
            runtime: runtime.value,
            script: script.value.trim(),
            args: lines(args),
            ...(interpreter.value.trim() ? { interpreter: interpreter.value.trim() } : {}),
          };
    const spec = {
      name: name.value.trim(),
      backend: backend.value,
      run,
      cwd: cwd.value.trim(),
      user: user.value.trim(),
      env: envs,
      restart: restart.value,
    };
    try {
      const r = await api<AppReply>("POST", `${base}/apps`, { spec, start: startNow.checked });
      added(r.app);
      toast(`${spec.name} → ${host}`);
      form.reset();
      sync();
    } catch (x) {
      err.textContent = x instanceof ApiError ? x.detail : String(x);
      fail(x);
    }
  }
  form.addEventListener("submit", (e) => void submit(e));
  root.append(form);
  return (p: ScannedProc) => {
    const cmd: string[] = p.cmdline || [];
    const si = cmd.findIndex((c, i) => i > 0 && !c.startsWith("-"));
    runtime.value = p.runtime;
    sync();
    interpreter.value = cmd[0] || "";
    let sc = si > 0 ? cmd[si] : "";
    if (sc && !sc.startsWith("/") && p.cwd) sc = `${p.cwd.replace(/\/$/, "")}/${sc}`;
    script.value = sc;
    args.value = si > 0 ? cmd.slice(si + 1).join("\n") : "";
    cwd.value = p.cwd || "";
    user.value = p.user || "";
    name.value = (sc.split("/").pop() || "app").replace(/\.[^.]+$/, "").replace(/[^A-Za-z0-9_.-]/g, "-");
    form.scrollIntoView({ behavior: "smooth", block: "start" });
    name.focus();
  };
}

function scanSection(root: HTMLElement, base: string, prefill: ((p: ScannedProc) => void) | null): void {
  const out = h("div", { "data-testid": "scan-result" });
  const btn = h("button", { type: "button" }, t("scan"));
  async function scan(): Promise<void> {
    btn.disabled = true;
    try {
      const r = await api<ScanReply>("GET", `${base}/scan`);
      clear(
        out,
        r.procs.length
          ? h(
              "table",
              { class: "data", "aria-label": t("scan") },
              h(
                "thead",
                null,
                h(
                  "tr",
                  null,
                  ...[t("pid"), t("runtime"), t("command"), t("workdir"), t("user"), "Ports"].map((x) =>
                    h("th", { scope: "col" }, x),
                  ),
                  prefill ? h("th", { scope: "col" }, t("actions")) : null,
                ),
              ),
              h(
                "tbody",
                null,
                r.procs.map((p) =>
                  h(
                    "tr",
                    null,
                    h("td", { class: "num" }, p.pid),
                    h("td", null, p.runtime),
                    h("td", { class: "cmd" }, p.cmdline.join(" ")),
                    h("td", null, p.cwd),
                    h("td", null, p.user),
                    h("td", null, p.ports.join(", ")),
                    prefill
                      ? h(
                          "td",
                          null,
                          h(
                            "button",
                            { type: "button", onclick: () => prefill(p), "aria-label": `${t("adopt")} ${p.pid}` },
                            t("adopt"),
                          ),
                        )
                      : null,
                  ),
                ),
              ),
            )
          : h("p", { class: "muted" }, t("noneFound")),
      );
    } catch (e) {
      clear(out, h("p", { class: "error" }, e instanceof ApiError ? e.detail : String(e)));
    } finally {
      btn.disabled = false;
    }
  }
  btn.addEventListener("click", () => void scan());
  root.append(h("section", { class: "card" }, h("h2", null, t("scan")), btn, out));
}

function jobsSection(root: HTMLElement, base: string, fail: (e: unknown) => void, cleanups: (() => void)[]): void {
  const body = h("tbody");
  const logOut = h("pre", { class: "log small", hidden: true, "data-testid": "job-log", tabindex: "0" });
  const note = h("p", { class: "muted" });
  const op = can("operator");
  const sec = h(
    "section",
    { "aria-labelledby": "jobs-h" },
    h("h2", { id: "jobs-h" }, t("jobs")),
    note,
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: "data", "data-testid": "jobs-table", "aria-label": t("jobs") },
        h(
          "thead",
          null,
          h(
            "tr",
            null,
            ...[t("command"), t("state"), t("exit"), t("created"), t("user")].map((x) => h("th", { scope: "col" }, x)),
            op ? h("th", { scope: "col" }, t("actions")) : null,
          ),
        ),
        body,
      ),
    ),
    logOut,
  );
  root.append(sec);
  const load = () =>
    api<JobList>("GET", `${base}/jobs`)
      .then((r) => {
        note.textContent = r.jobs.length ? "" : t("empty");
        clear(
          body,
          r.jobs
            .slice(0, 50)
            .map((j) =>
              h(
                "tr",
                null,
                h("td", { class: "cmd" }, j.argv.join(" ")),
                h("td", null, h("span", { class: `state state-${j.state}` }, j.state)),
                h("td", { class: "num" }, j.exit_code ?? "–"),
                h("td", null, fmtTime(j.created)),
                h("td", null, j.actor || j.user),
                op
                  ? h(
                      "td",
                      { class: "actions" },
                      j.state === "running"
                        ? h("button", { type: "button", onclick: () => void act(j, "stop") }, t("stop"))
                        : null,
                      h("button", { type: "button", onclick: () => void act(j, "restart") }, t("run")),
                      h("button", { type: "button", onclick: () => void showLog(j) }, t("logs")),
                    )
                  : null,
              ),
            ),
        );
      })
      .catch((e) => {
        note.textContent = e instanceof ApiError ? e.detail : String(e);
      });
  async function act(j: JobInfo, verb: string): Promise<void> {
    if (verb === "stop" && !(await confirmDialog(t("confirmStop", j.argv.join(" "), "")))) return;
    try {
      await api("POST", `${base}/jobs/${j.id}/${verb}`);
      await load();
    } catch (e) {
      fail(e);
    }
  }
  async function showLog(j: JobInfo): Promise<void> {
    try {
      const r = await api<JobLogs>("GET", `${base}/jobs/${j.id}/logs`, undefined, { lines: 200 });
      logOut.hidden = false;
      logOut.textContent = r.lines.join("\n") || t("empty");
    } catch (e) {
      fail(e);
    }
  }
  if (op) {
    const argv = h("textarea", { name: "argv", rows: 2, required: true, placeholder: "/usr/bin/df\n-h" });
    const cwd = h("input", { name: "cwd", pattern: "^/.*" });
    // max: the commander's default job timeout cap; defaultValue so form.reset() keeps 300, not ""
    const timeout = h("input", { name: "timeout", type: "number", min: 1, max: 3600, value: 300 });
    timeout.defaultValue = "300";
    const form = h(
      "form",
      { class: "card grid-form", "aria-label": t("runJob") },
      h("h3", null, t("runJob")),
      field(t("argv"), argv),
      field(t("workdir"), cwd),
      field(t("timeout"), timeout),
      h("div", { class: "row end" }, h("button", { type: "submit" }, t("run"))),
    );
    async function runJob(e: SubmitEvent): Promise<void> {
      e.preventDefault();
      if (!form.reportValidity()) return;
      try {
        await api("POST", `${base}/jobs`, {
          argv: argv.value
            .split("\n")
            .map((s) => s.trim())
            .filter(Boolean),
          cwd: cwd.value.trim(),
          timeout_s: Number(timeout.value),
        });
        form.reset();
        await load();
      } catch (x) {
        fail(x);
      }
    }
    form.addEventListener("submit", (e) => void runJob(e));
    sec.append(form);
  }
  void load();
  const timer = window.setInterval(load, 10000);
  cleanups.push(() => clearInterval(timer));
}
