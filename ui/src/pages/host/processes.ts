import { api } from "../../api";
import { clear, fmtBytes, fmtPct, h } from "../../dom";
import { t } from "../../i18n";
import type { Proc, ProcList, ProcSnapshot } from "../../types";
import { sortHeader } from "../../widgets";

/** The host's process table, sorted by a clicked header, fed by the API then by live snapshots. */
export function processesSection(root: HTMLElement, base: string): { onSnapshot: (snap: ProcSnapshot) => void } {
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
  return {
    onSnapshot(snap: ProcSnapshot): void {
      procs = snap.procs || [];
      procNote.textContent = `${procs.length} / ${snap.total ?? procs.length}`;
      renderProcs();
    },
  };
}
