import { api, ApiError, can, SSE } from "../api";
import { clear, fmtBytes, h } from "../dom";
import { t } from "../i18n";
import type { AppStatus, HostDetail, ProcSnapshot, ScannedProc, StreamEvent, Summary } from "../types";
import { toast } from "../widgets";
import { appsSection } from "./host/apps";
import { chartsSection } from "./host/charts";
import { isPrivilegeError, isRoleRefusal, roleNote } from "./host/common";
import { jobsSection } from "./host/jobs";
import { processesSection } from "./host/processes";
import { registerForm } from "./host/register";
import { scanSection } from "./host/scan";

const OFFLINE_AFTER_S = 30; // as the fleet page: three missed frames

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
      // Fill the stat cards now from the directory's last frame instead of waiting for the next one;
      // a host not heard from lately is shown offline with its values greyed and dated.
      const fresh = v.status === "online" && v.last_seen != null && Date.now() / 1000 - v.last_seen < OFFLINE_AFTER_S;
      if (v.last && !liveVals.childElementCount) charts.showStats(v.last, fresh ? null : (v.last_seen ?? v.last.ts));
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

  const charts = chartsSection(root, base, liveVals, cleanups);
  const procs = processesSection(root, base);
  const apps = appsSection(root, base, host, fail, showBanner);

  // ---- register / scan / adopt (admins register, operators scan) ------------------------------
  let prefill: ((p: ScannedProc) => void) | null = null;
  if (can("admin")) prefill = registerForm(root, base, host, apps.added, fail);
  if (can("operator")) scanSection(root, base, prefill);
  jobsSection(root, base, fail, cleanups);

  // ---- live ----------------------------------------------------------------------------------
  const sse = new SSE(`/api/v1/stream?hosts=${encodeURIComponent(host)}&kinds=frame,procs,app`, {
    onEvent(kind, data) {
      const ev = JSON.parse(data) as StreamEvent;
      if (kind === "frame") charts.liveFrame(ev.data as Summary);
      else if (kind === "procs") procs.onSnapshot(ev.data as ProcSnapshot);
      else if (kind === "app") apps.onStatus(ev.data as AppStatus);
    },
  });
  cleanups.push(() => sse.close());
  return () => cleanups.forEach((f) => f());
}
