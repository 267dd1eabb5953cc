import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { api, ApiError } from "../../api";
import { clear, fmtAgo, fmtBytes, fmtPct, h } from "../../dom";
import { t, type Key } from "../../i18n";
import type { History, Summary } from "../../types";
import { cssVar, stat } from "./common";

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
  /** A field whose per-bucket peak is drawn too (dashed), so an average does not hide a spike. */
  peak?: string;
}
const CHARTS: ChartDef[] = [
  {
    id: "cpu",
    title: "cpu",
    fields: ["cpu_percent"],
    labels: ["CPU %"],
    unit: "pct",
    summary: ["cpu_percent"],
    peak: "cpu_percent",
  },
  {
    id: "mem",
    title: "memory",
    fields: ["mem_percent", "swap_percent"],
    labels: ["RAM %", "Swap %"],
    unit: "pct",
    summary: ["mem_percent", "swap_percent"],
    peak: "mem_percent",
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

/** The range picker, the history charts and the live stat cards of one host. */
export function chartsSection(
  root: HTMLElement,
  base: string,
  liveVals: HTMLElement,
  cleanups: (() => void)[],
): { liveFrame: (s: Summary) => void; showStats: (s: Summary, lastSeen: number | null) => void } {
  let range = 900;
  const rangeBox = h("div", { class: "segmented", role: "radiogroup", "aria-label": t("range") });
  const chartsBox = h("div", { class: "charts" });
  const plots = new Map<
    string,
    { u: uPlot; def: ChartDef; data: (number | null)[][]; box: HTMLElement; peakOut: HTMLElement }
  >();
  // The x axis always spans the chosen range up to now, whatever points exist (one rollup point
  // or a host seen for a minute must not stretch or shrink it).
  let xEnd = Date.now() / 1000;
  const xRange = (): uPlot.Range.MinMax => [xEnd - range, xEnd];
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
        // The x scale's span is left on the figure (data-xmin/-xmax) for tests and tools to read.
        hooks: {
          setScale: [
            (u, key) => {
              const fig = u.root.parentElement;
              if (key !== "x" || !fig) return;
              fig.dataset.xmin = String(u.scales.x.min);
              fig.dataset.xmax = String(u.scales.x.max);
            },
          ],
        },
        scales: { x: { time: true, range: xRange }, y: def.unit === "pct" ? { range: [0, 100] } : { auto: true } },
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
          ...(def.peak
            ? [{ label: def.labels[0] + " max", stroke: colors[0], width: 1, dash: [4, 3], value: fmt }]
            : []),
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
      xEnd = to;
      const none = res.times.map(() => null);
      for (const def of CHARTS) {
        const data = [res.times, ...def.fields.map((f) => res.series[f] ?? none)];
        if (def.peak) data.push(res.max?.[def.peak] ?? res.series[def.peak] ?? none);
        let p = plots.get(def.id);
        if (p) {
          p.data = data;
          p.u.setData(data as uPlot.AlignedData);
        } else {
          const peakOut = h("figcaption", { class: "muted", "data-testid": `chart-max-${def.id}` });
          const box = h("figure", { class: "chart card", "data-chart": def.id, "aria-label": t(def.title) });
          chartsBox.append(box);
          const u = makePlot(def, data);
          box.append(u.root, peakOut);
          p = { u, def, data, box, peakOut };
          plots.set(def.id, p);
          box.dataset.xmin = String(u.scales.x.min);
          box.dataset.xmax = String(u.scales.x.max);
        }
        // A host without GPUs reports none: no empty GPU chart.
        if (def.id === "gpu") p.box.hidden = !data.slice(1).some((a) => a.some((v) => v != null));
        showPeak(p);
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

  function showPeak(p: { def: ChartDef; data: (number | null)[][]; peakOut: HTMLElement }): void {
    if (!p.def.peak) return;
    const vals = p.data[p.data.length - 1].filter((v): v is number => v != null);
    p.peakOut.textContent = vals.length ? `max ${fmtPct(Math.max(...vals))}` : "";
  }

  /** The stat cards; `lastSeen` set means the values are stale (host offline): greyed, dated. */
  function showStats(s: Summary, lastSeen: number | null): void {
    liveVals.classList.toggle("stale", lastSeen != null);
    liveVals.dataset.state = lastSeen != null ? "offline" : "online";
    clear(
      liveVals,
      stat(t("cpu"), fmtPct(s.cpu_percent), "live-cpu"),
      stat(t("memory"), fmtPct(s.mem_percent), "live-mem"),
      stat(t("disk"), fmtPct(s.disk_max_percent), "live-disk"),
      stat(t("gpu"), fmtPct(s.gpu_util_percent), "live-gpu"),
      stat(t("load"), s.load1 != null ? s.load1.toFixed(2) : "–", "live-load"),
      stat(t("network"), `↓${fmtBytes(s.net_bytes_recv)}/s ↑${fmtBytes(s.net_bytes_sent)}/s`, "live-net"),
      lastSeen != null
        ? h(
            "p",
            { class: "stale-note", "data-testid": "host-stale" },
            `${t("offline")} · ${t("lastSeen")} ${fmtAgo(lastSeen)}`,
          )
        : null,
    );
  }

  function liveFrame(s: Summary): void {
    showStats(s, null);
    if (range > 3600) return; // long ranges are rollups: a raw point would not belong
    const ts = s.ts;
    for (const p of plots.values()) {
      const d = p.data;
      const times = d[0] as number[];
      if (times.length && ts <= times[times.length - 1]) continue;
      times.push(ts);
      p.def.summary.forEach((k, i) => d[i + 1].push(s[k] ?? null));
      if (p.def.peak) d[d.length - 1].push(s[p.def.peak] ?? null);
      xEnd = Math.max(xEnd, ts);
      while (times.length && times[0] < ts - range) d.forEach((a) => a.shift());
      p.u.setData(d as uPlot.AlignedData);
      showPeak(p);
    }
  }
  return { liveFrame, showStats };
}
