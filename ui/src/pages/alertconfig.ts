import { api, ApiError, can } from "../api";
import { clear, field, h } from "../dom";
import { t } from "../i18n";
import type { ConfigItem, Listing } from "../types";
import { confirmDialog, toast } from "../widgets";
import { ALERTING, items, KEY, TEMPLATES } from "./alertutil";

export function editor(root: HTMLElement, res: "rules" | "checks" | "notifiers"): void {
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
