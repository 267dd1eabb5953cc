import { api, SSE } from "../api";
import { fmtAgo, fmtPct, h } from "../dom";
import { t } from "../i18n";
import type { AlertEvent, AlertRecord, HostView, Listing, StreamEvent, Summary } from "../types";
import { drawSpark, sortHeader } from "../widgets";

// The fleet page keeps every host in memory but touches the DOM only for the rows on screen,
// once a second: with thousands of hosts sending a frame a second, the cost stays that of ~30 rows.
const SPARK = 60;
const ROW_H = 44;
const OFFLINE_AFTER_S = 30;

/** A /hosts entry, or a `host` event's data (a HostInfo: no status, last_seen or last). */
type HostUpdate = Pick<HostView, "host" | "status"> & Partial<HostView>;
interface Row {
  host: string;
  hostname: string;
  status: string;
  labels: Record<string, string>;
  labelText: string;
  last: Summary | null;
  lastSeen: number;
  cpu: Float32Array;
  mem: Float32Array;
  n: number;
  alerts: number;
  version: number;
}

type SortKey = "host" | "status" | "cpu" | "mem" | "disk" | "gpu" | "alerts" | "seen";
const VALUE: Record<SortKey, (r: Row) => number | string> = {
  host: (r) => r.host,
  status: (r) => (r.status === "online" ? 1 : 0),
  cpu: (r) => r.last?.cpu_percent ?? -1,
  mem: (r) => r.last?.mem_percent ?? -1,
  disk: (r) => r.last?.disk_max_percent ?? -1,
  gpu: (r) => r.last?.gpu_util_percent ?? -1,
  alerts: (r) => r.alerts,
  seen: (r) => r.lastSeen,
};

function newRow(host: string): Row {
  return {
    host,
    hostname: "",
    status: "offline",
    labels: {},
    labelText: "",
    last: null,
    lastSeen: 0,
    cpu: new Float32Array(SPARK),
    mem: new Float32Array(SPARK),
    n: 0,
    alerts: 0,
    version: 0,
  };
}

function push(r: Row, s: Summary): void {
  r.cpu[r.n % SPARK] = s.cpu_percent ?? 0;
  r.mem[r.n % SPARK] = s.mem_percent ?? 0;
  r.n++;
}

interface Slot {
  tr: HTMLTableRowElement;
  cells: HTMLElement[];
  link: HTMLAnchorElement;
  cpuC: HTMLCanvasElement;
  memC: HTMLCanvasElement;
  host: string;
  version: number;
}

export function fleetPage(root: HTMLElement): () => void {
  const rows = new Map<string, Row>();
  const firing = new Map<string, string>(); // alert fingerprint -> host
  let order: Row[] = [];
  let needSort = true;
  const sort = { key: "host" as SortKey, desc: false };
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  let filter = params.get("q") || "";

  const filterInput = h("input", {
    type: "search",
    placeholder: t("filter"),
    "aria-label": t("filter"),
    value: filter,
    "data-testid": "fleet-filter",
  });
  const live = h("span", { class: "pill", role: "status", "data-testid": "stream-state" }, t("connecting"));
  const count = h("span", { class: "muted", "data-testid": "fleet-count" });
  const thead = h("thead");
  const tbody = h("tbody");
  const topPad = h("tr", { class: "pad", "aria-hidden": "true" });
  const botPad = h("tr", { class: "pad", "aria-hidden": "true" });
  const table = h("table", { class: "fleet", "data-testid": "fleet-table", "aria-label": t("fleet") }, thead, tbody);
  root.append(
    h("div", { class: "toolbar" }, h("h1", null, t("fleet")), filterInput, count, live),
    h("div", { class: "table-wrap" }, table),
  );

  const colors = getComputedStyle(document.documentElement);
  const cpuColor = colors.getPropertyValue("--accent").trim() || "#4ea1ff";
  const memColor = colors.getPropertyValue("--accent2").trim() || "#b48cff";

  function renderHead(): void {
    const on = (k: string) => {
      sort.desc = sort.key === k ? !sort.desc : k !== "host";
      sort.key = k as SortKey;
      needSort = true;
      renderHead();
      paint();
    };
    thead.replaceChildren(
      h(
        "tr",
        null,
        sortHeader(t("host"), "host", sort, on),
        sortHeader(t("status"), "status", sort, on),
        sortHeader(t("cpu"), "cpu", sort, on),
        sortHeader(t("memory"), "mem", sort, on),
        sortHeader(t("disk"), "disk", sort, on),
        sortHeader(t("gpu"), "gpu", sort, on),
        sortHeader(t("alertsCol"), "alerts", sort, on),
        sortHeader(t("lastSeen"), "seen", sort, on),
      ),
    );
  }
  renderHead();

  function matches(r: Row, q: string): boolean {
    return !q || r.host.toLowerCase().includes(q) || r.hostname.toLowerCase().includes(q) || r.labelText.includes(q);
  }

  function resort(): void {
    const q = filter.trim().toLowerCase();
    order = [];
    for (const r of rows.values()) if (matches(r, q)) order.push(r);
    const f = VALUE[sort.key];
    const dir = sort.desc ? -1 : 1;
    order.sort((a, b) => {
      const x = f(a),
        y = f(b);
      return (x < y ? -1 : x > y ? 1 : a.host < b.host ? -1 : 1) * dir;
    });
    count.textContent = `${order.length} / ${rows.size} ${t("hostsShown")}`;
    needSort = false;
  }

  const slots: Slot[] = [];
  function slot(i: number): Slot {
    if (slots[i]) return slots[i];
    const link = h("a", { href: "#" });
    const cpuC = h("canvas", { width: 80, height: 20, "aria-hidden": "true" });
    const memC = h("canvas", { width: 80, height: 20, "aria-hidden": "true" });
    const cells = [
      h("td", { class: "hostcell" }, link),
      h("td"),
      h("td", { class: "num" }),
      h("td", { class: "num" }),
      h("td", { class: "num" }),
      h("td", { class: "num" }),
      h("td", { class: "num" }),
      h("td", { class: "num muted" }),
    ];
    const cpuV = h("span"),
      memV = h("span");
    cells[2].append(cpuV, cpuC);
    cells[3].append(memV, memC);
    const tr = h("tr", null, ...cells);
    const s: Slot = {
      tr,
      cells: [cells[0], cells[1], cpuV, memV, cells[4], cells[5], cells[6], cells[7]],
      link,
      cpuC,
      memC,
      host: "",
      version: -1,
    };
    slots[i] = s;
    return s;
  }

  function setText(el: HTMLElement, v: string): void {
    if (el.textContent !== v) el.textContent = v;
  }

  function fill(s: Slot, r: Row, now: number): void {
    if (s.host !== r.host) {
      s.host = r.host;
      s.version = -1;
      s.link.href = `#/host/${encodeURIComponent(r.host)}`;
      s.link.textContent = r.host;
      s.tr.dataset.host = r.host;
    }
    const online = r.status === "online" && now - r.lastSeen < OFFLINE_AFTER_S;
    const st = online ? t("online") : t("offline");
    if (s.cells[1].textContent !== st) {
      s.cells[1].replaceChildren(h("span", { class: `dot ${online ? "on" : "off"}` }), st);
    }
    setText(s.cells[7], fmtAgo(r.lastSeen || null));
    if (s.version === r.version) return;
    s.version = r.version;
    const l = r.last;
    setText(s.cells[2], fmtPct(l?.cpu_percent));
    setText(s.cells[3], fmtPct(l?.mem_percent));
    setText(s.cells[4], fmtPct(l?.disk_max_percent));
    setText(s.cells[5], fmtPct(l?.gpu_util_percent));
    setText(s.cells[6], r.alerts ? String(r.alerts) : "0");
    s.cells[6].classList.toggle("alerting", r.alerts > 0);
    drawSpark(s.cpuC, r.cpu, r.n, cpuColor);
    drawSpark(s.memC, r.mem, r.n, memColor);
  }

  let firstPaint = true;
  function paint(): void {
    if (needSort) resort();
    const rect = table.getBoundingClientRect();
    const headH = thead.getBoundingClientRect().height;
    const viewTop = Math.max(0, -rect.top - headH);
    const first = Math.max(0, Math.floor(viewTop / ROW_H) - 5);
    const visible = Math.ceil(window.innerHeight / ROW_H) + 10;
    const last = Math.min(order.length, first + visible);
    const now = Date.now() / 1000;
    const want: Node[] = [topPad];
    for (let i = first; i < last; i++) {
      const s = slot(i - first);
      fill(s, order[i], now);
      want.push(s.tr);
    }
    want.push(botPad);
    topPad.style.height = `${first * ROW_H}px`;
    botPad.style.height = `${(order.length - last) * ROW_H}px`;
    // Re-attach only when the set of row elements changed.
    const cur = tbody.children;
    let same = cur.length === want.length;
    for (let i = 0; same && i < want.length; i++) same = cur[i] === want[i];
    if (!same) tbody.replaceChildren(...want);
    if (firstPaint && order.length) {
      firstPaint = false;
      performance.mark("fleet-rendered");
    }
  }

  let scheduled = false;
  function schedule(): void {
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(() => {
      scheduled = false;
      paint();
    });
  }

  function ingestHosts(list: HostUpdate[]): void {
    for (const v of list) {
      let r = rows.get(v.host);
      if (!r) {
        r = newRow(v.host);
        rows.set(v.host, r);
      }
      r.hostname = v.hostname || "";
      r.labels = v.labels || {};
      r.labelText = Object.entries(r.labels)
        .map(([k, x]) => `${k}=${x}`)
        .join(" ")
        .toLowerCase();
      r.status = v.status;
      if (v.last_seen) r.lastSeen = Math.max(r.lastSeen, v.last_seen);
      if (v.last && !r.last) {
        r.last = v.last;
        push(r, v.last);
      }
      r.version++;
    }
    needSort = true;
  }

  function recount(): void {
    for (const r of rows.values()) r.alerts = 0;
    for (const host of firing.values()) {
      const r = rows.get(host);
      if (r) r.alerts++;
    }
    for (const r of rows.values()) r.version++;
    if (sort.key === "alerts") needSort = true;
  }

  let closed = false;
  const refresh = async () => {
    try {
      ingestHosts(await api<HostView[]>("GET", "/api/v1/hosts"));
      schedule();
    } catch {
      /* the stream state shows trouble */
    }
  };
  void refresh().then(() => {
    if (closed) return;
    api<Listing<AlertRecord>>("GET", "/api/v1/alerts")
      .then((res) => {
        for (const a of Array.isArray(res) ? res : (res?.items ?? res?.alerts ?? []))
          if (a.state === "firing") firing.set(a.fingerprint, a.host);
        recount();
        schedule();
      })
      .catch(() => {
        /* alerting not reachable: counts come from the stream */
      });
  });

  const sse = new SSE("/api/v1/stream?kinds=frame,host,alert", {
    onState(state) {
      live.textContent = state === "open" ? "● " + t("live") : t("retrying");
      live.className = `pill ${state === "open" ? "ok" : "warn"}`;
    },
    onEvent(kind, data) {
      const ev = JSON.parse(data) as StreamEvent;
      if (kind === "frame") {
        const s = ev.data as Summary;
        let r = rows.get(ev.host);
        if (!r) {
          r = newRow(ev.host);
          rows.set(ev.host, r);
          needSort = true;
        }
        r.last = s;
        r.lastSeen = s.ts ?? ev.ts;
        if (r.status !== "online") {
          r.status = "online";
          if (sort.key === "status") needSort = true;
        }
        push(r, s);
        r.version++;
        if (sort.key !== "host" && sort.key !== "alerts") needSort = true;
      } else if (kind === "host") {
        ingestHosts([{ ...(ev.data as Partial<HostView>), host: ev.host, status: "online" }]);
      } else if (kind === "alert") {
        const a = ev.data as AlertEvent;
        if (a.state === "firing") firing.set(a.fingerprint, a.host);
        else firing.delete(a.fingerprint);
        recount();
      }
    },
  });

  // One repaint a second at most from live data; scrolling repaints on the next frame.
  const tick = window.setInterval(paint, 1000);
  const hostsTimer = window.setInterval(refresh, 30000);
  const onScroll = () => schedule();
  window.addEventListener("scroll", onScroll, { passive: true });
  window.addEventListener("resize", onScroll);
  filterInput.addEventListener("input", () => {
    filter = filterInput.value;
    needSort = true;
    schedule();
  });

  return () => {
    closed = true;
    sse.close();
    clearInterval(tick);
    clearInterval(hostsTimer);
    window.removeEventListener("scroll", onScroll);
    window.removeEventListener("resize", onScroll);
  };
}
