import { SSE } from "../api";
import { h } from "../dom";
import { t } from "../i18n";

const MAX_LINES = 5000;
const LEVELS = ["error", "warning", "info", "debug"];

interface Line {
  ts: number;
  line: string;
  stream: string;
  level: string;
}

function levelOf(l: Line): string {
  if (l.level) return l.level.toLowerCase().replace(/^warn$/, "warning");
  const m = /\b(ERROR|CRITICAL|FATAL|WARN(?:ING)?|INFO|DEBUG)\b/i.exec(l.line);
  if (m) {
    const x = m[1].toLowerCase();
    return x.startsWith("warn") ? "warning" : x === "critical" || x === "fatal" ? "error" : x;
  }
  return l.stream === "stderr" ? "error" : "info";
}

export function logsPage(root: HTMLElement, [host, app]: string[]): () => void {
  const lines: (Line & { lvl: string })[] = [];
  let paused = false;
  let held = 0;
  const state = h("p", { class: "pill", role: "status", "data-testid": "logs-state" }, t("connecting"));
  const pauseBtn = h("button", { type: "button", "aria-pressed": "false", "data-testid": "logs-pause" }, t("pause"));
  const level = h(
    "select",
    { "aria-label": t("level"), "data-testid": "logs-level" },
    h("option", { value: "" }, t("all")),
    LEVELS.map((l) => h("option", { value: l }, l)),
  );
  const search = h("input", {
    type: "search",
    "aria-label": t("search"),
    placeholder: t("search"),
    "data-testid": "logs-search",
  });
  const auto = h("input", { type: "checkbox", checked: true, id: "logs-auto" });
  const count = h("span", { class: "muted", "data-testid": "logs-count" });
  const view = h("div", {
    class: "log",
    role: "log",
    "aria-live": "off",
    tabindex: "0",
    "aria-label": `${t("logs")} ${app}`,
    "data-testid": "log-view",
  });
  root.append(
    h(
      "div",
      { class: "toolbar" },
      h("a", { href: `#/host/${encodeURIComponent(host)}`, class: "ghost" }, "← " + host),
      h("h1", null, `${t("logs")}: ${app}`),
      state,
    ),
    h(
      "div",
      { class: "toolbar" },
      pauseBtn,
      level,
      search,
      h("label", { class: "check", for: "logs-auto" }, auto, " ", t("autoscroll")),
      count,
    ),
    view,
  );

  function visible(l: Line & { lvl: string }): boolean {
    const q = search.value.toLowerCase();
    return (!level.value || l.lvl === level.value) && (!q || l.line.toLowerCase().includes(q));
  }
  function row(l: Line & { lvl: string }): HTMLElement {
    return h(
      "div",
      { class: `ll lvl-${l.lvl}` },
      h("time", null, new Date(l.ts * 1000).toLocaleTimeString()),
      " ",
      l.line,
    );
  }
  function redraw(): void {
    view.replaceChildren(...lines.filter(visible).map(row));
    if (auto.checked) view.scrollTop = view.scrollHeight;
    updateCount();
  }
  function updateCount(): void {
    count.textContent = `${lines.length} ${t("lines")}` + (held ? ` (+${held})` : "");
  }
  const pending: (Line & { lvl: string })[] = [];
  function add(batch: Line[]): void {
    for (const l of batch) pending.push({ ...l, lvl: levelOf(l) });
    if (paused) {
      held = pending.length;
      updateCount();
      return;
    }
    flush();
  }
  function flush(): void {
    const frag = document.createDocumentFragment();
    for (const l of pending) {
      lines.push(l);
      if (visible(l)) frag.append(row(l));
    }
    pending.length = 0;
    held = 0;
    view.append(frag);
    if (lines.length > MAX_LINES) {
      lines.splice(0, lines.length - MAX_LINES);
      redraw();
      return;
    }
    if (auto.checked) view.scrollTop = view.scrollHeight;
    updateCount();
  }
  pauseBtn.addEventListener("click", () => {
    paused = !paused;
    pauseBtn.textContent = paused ? t("resume") : t("pause");
    pauseBtn.setAttribute("aria-pressed", String(paused));
    if (!paused) flush();
  });
  level.addEventListener("change", redraw);
  search.addEventListener("input", redraw);
  // Scrolling up stops following; scrolling back to the bottom follows again.
  view.addEventListener("scroll", () => {
    auto.checked = view.scrollTop + view.clientHeight >= view.scrollHeight - 4;
  });

  let first = true;
  const sse = new SSE(
    `/api/v1/hosts/${encodeURIComponent(host)}/apps/${encodeURIComponent(app)}/logs/stream?lines=${first ? 200 : 0}`,
    {
      onState(s, detail) {
        state.textContent = s === "open" ? "● " + t("live") : `${t("retrying")}${detail ? ` (${detail})` : ""}`;
        state.className = `pill ${s === "open" ? "ok" : "warn"}`;
        state.dataset.state = s;
        if (s === "open" && !first) {
          // a reconnect sends the tail again
          lines.length = 0;
          redraw();
        }
        first = false;
      },
      onEvent(kind, data) {
        if (kind !== "logs") return;
        try {
          add((JSON.parse(data) as { lines?: Line[] }).lines || []);
        } catch {
          /* not a batch */
        }
      },
    },
    false,
  );
  return () => sse.close();
}
