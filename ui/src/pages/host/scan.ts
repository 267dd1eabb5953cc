import { api, ApiError } from "../../api";
import { clear, h } from "../../dom";
import { t } from "../../i18n";
import type { ScannedProc, ScanReply } from "../../types";

/** The operator's scan for adoptable processes. */
export function scanSection(root: HTMLElement, base: string, prefill: ((p: ScannedProc) => void) | null): void {
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
