import { api, ApiError } from "../../api";
import { field, h } from "../../dom";
import { t } from "../../i18n";
import type { AppInfo, AppReply, ScannedProc } from "../../types";
import { toast } from "../../widgets";
import { ENV_KEY, NAME_RE } from "./common";

/** The admin's app registration form; returns a prefill for the scan section's "adopt". */
export function registerForm(
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
