import { api, ApiError, can } from "../../api";
import { clear, field, fmtTime, h } from "../../dom";
import { t } from "../../i18n";
import type { JobInfo, JobList, JobLogs } from "../../types";
import { confirmDialog } from "../../widgets";

/** The host's one-off jobs: list, logs, stop/rerun, and the operator's run form. */
export function jobsSection(
  root: HTMLElement,
  base: string,
  fail: (e: unknown) => void,
  cleanups: (() => void)[],
): void {
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
