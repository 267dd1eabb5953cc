// English and Spanish texts; the language is kept in localStorage.
const en = {
  app: "fleetwatch", fleet: "Fleet", alerts: "Alerts", users: "Users", audit: "Audit", logs: "Logs",
  login: "Log in", logout: "Log out", username: "Username", password: "Password", signedInAs: "Signed in as",
  theme: "Theme", dark: "Dark", light: "Light", language: "Language",
  host: "Host", status: "Status", online: "online", offline: "offline", cpu: "CPU", memory: "Memory", disk: "Disk",
  gpu: "GPU", network: "Network", load: "Load", lastSeen: "Last seen", labels: "Labels", alertsCol: "Alerts",
  filter: "Filter by name or label", sortBy: "Sort by", hostsShown: "hosts shown", live: "live", retrying: "disconnected — retrying",
  connecting: "connecting…", range: "Range", processes: "Processes", apps: "Apps", jobs: "Jobs",
  name: "Name", pid: "PID", ram: "RAM", actions: "Actions", user: "User", command: "Command", threads: "Threads",
  start: "Start", stop: "Stop", restart: "Restart", delete: "Delete", adopt: "Adopt", run: "Run", cancel: "Cancel", confirm: "Confirm",
  registerApp: "Register an app", runtime: "Runtime", script: "Script (absolute path)", argv: "Command (one argument per line)",
  interpreter: "Interpreter", workdir: "Working directory", envVars: "Environment (KEY=value per line)", restartPolicy: "Restart policy",
  startNow: "Start after registering", register: "Register", scan: "Scan for unmanaged processes", noneFound: "Nothing found.",
  runJob: "Run a job", timeout: "Timeout (s)", state: "State", exit: "Exit", created: "Created", output: "Output",
  confirmAction: "Are you sure?", confirmStop: "Stop {0} on {1}?", confirmRestart: "Restart {0} on {1}?", confirmDelete: "Stop and unregister {0} on {1}?",
  privileges: "The commander on this host lacks privileges:", forbidden: "Not allowed",
  pause: "Pause", resume: "Resume", level: "Level", all: "All", search: "Search", autoscroll: "Auto-scroll", lines: "lines",
  firing: "Firing", pending: "Pending", resolved: "Resolved", since: "Since", value: "Value", rule: "Rule", severity: "Severity",
  silence: "Silence", silenced: "silenced", silenceFor: "Silence for", comment: "Comment", silences: "Silences", rules: "Rules", checks: "Health checks", notifiers: "Notifiers",
  save: "Save", edit: "Edit", add: "Add", remove: "Remove", json: "Definition (JSON)", notAvailable: "Not available: {0}",
  createUser: "Create a user", role: "Role", email: "Email", active: "Active", deactivate: "Deactivate", activate: "Activate",
  resetPassword: "Reset password", newPassword: "New password", replication: "Replication by host", ok: "ok", error: "error",
  when: "When", who: "Who", what: "What", where: "Where", target: "Target", result: "Result", code: "Code", more: "Load more",
  apply: "Apply", saved: "Saved", done: "Done", back: "Back", noData: "No data yet", empty: "Nothing here.", sync: "Sync now",
  skip: "Skip to content", menu: "Menu", field: "Field", threshold: "Threshold",
  changePassword: "Change your password", currentPassword: "Current password", repeatPassword: "New password again",
  passwordsDiffer: "The two new passwords differ", passwordSame: "The new password must differ from the current one",
  passwordChanged: "Password changed", passwordReset: "Password reset",
  roleViewer: "You are signed in as a viewer: you can watch this host. Starting, stopping and restarting apps, their logs, scans and jobs need the operator role; registering and removing apps needs admin. Ask an admin for more.",
  roleOperator: "Registering and removing apps needs the admin role.",
  roleRefused: "Your role does not allow this:",
};
type Key = keyof typeof en;
const es: Record<Key, string> = {
  app: "fleetwatch", fleet: "Flota", alerts: "Alertas", users: "Usuarios", audit: "Auditoría", logs: "Registros",
  login: "Iniciar sesión", logout: "Cerrar sesión", username: "Usuario", password: "Contraseña", signedInAs: "Sesión de",
  theme: "Tema", dark: "Oscuro", light: "Claro", language: "Idioma",
  host: "Equipo", status: "Estado", online: "en línea", offline: "desconectado", cpu: "CPU", memory: "Memoria", disk: "Disco",
  gpu: "GPU", network: "Red", load: "Carga", lastSeen: "Visto", labels: "Etiquetas", alertsCol: "Alertas",
  filter: "Filtrar por nombre o etiqueta", sortBy: "Ordenar por", hostsShown: "equipos mostrados", live: "en vivo", retrying: "desconectado — reintentando",
  connecting: "conectando…", range: "Intervalo", processes: "Procesos", apps: "Aplicaciones", jobs: "Tareas",
  name: "Nombre", pid: "PID", ram: "RAM", actions: "Acciones", user: "Usuario", command: "Comando", threads: "Hilos",
  start: "Iniciar", stop: "Detener", restart: "Reiniciar", delete: "Eliminar", adopt: "Adoptar", run: "Ejecutar", cancel: "Cancelar", confirm: "Confirmar",
  registerApp: "Registrar una aplicación", runtime: "Entorno", script: "Script (ruta absoluta)", argv: "Comando (un argumento por línea)",
  interpreter: "Intérprete", workdir: "Directorio de trabajo", envVars: "Entorno (CLAVE=valor por línea)", restartPolicy: "Política de reinicio",
  startNow: "Iniciar tras registrar", register: "Registrar", scan: "Buscar procesos no gestionados", noneFound: "No se encontró nada.",
  runJob: "Ejecutar una tarea", timeout: "Límite (s)", state: "Estado", exit: "Salida", created: "Creada", output: "Salida",
  confirmAction: "¿Seguro?", confirmStop: "¿Detener {0} en {1}?", confirmRestart: "¿Reiniciar {0} en {1}?", confirmDelete: "¿Detener y eliminar {0} en {1}?",
  privileges: "Al commander de este equipo le faltan privilegios:", forbidden: "No permitido",
  pause: "Pausar", resume: "Reanudar", level: "Nivel", all: "Todos", search: "Buscar", autoscroll: "Desplazamiento automático", lines: "líneas",
  firing: "Activas", pending: "Pendientes", resolved: "Resueltas", since: "Desde", value: "Valor", rule: "Regla", severity: "Gravedad",
  silence: "Silenciar", silenced: "silenciada", silenceFor: "Silenciar durante", comment: "Comentario", silences: "Silencios", rules: "Reglas", checks: "Comprobaciones", notifiers: "Notificadores",
  save: "Guardar", edit: "Editar", add: "Añadir", remove: "Quitar", json: "Definición (JSON)", notAvailable: "No disponible: {0}",
  createUser: "Crear un usuario", role: "Rol", email: "Correo", active: "Activo", deactivate: "Desactivar", activate: "Activar",
  resetPassword: "Restablecer contraseña", newPassword: "Nueva contraseña", replication: "Replicación por equipo", ok: "ok", error: "error",
  when: "Cuándo", who: "Quién", what: "Qué", where: "Dónde", target: "Objetivo", result: "Resultado", code: "Código", more: "Cargar más",
  apply: "Aplicar", saved: "Guardado", done: "Hecho", back: "Volver", noData: "Aún no hay datos", empty: "No hay nada.", sync: "Sincronizar",
  skip: "Saltar al contenido", menu: "Menú", field: "Campo", threshold: "Umbral",
  changePassword: "Cambiar tu contraseña", currentPassword: "Contraseña actual", repeatPassword: "Repite la nueva contraseña",
  passwordsDiffer: "Las dos contraseñas nuevas no coinciden", passwordSame: "La nueva contraseña debe ser distinta de la actual",
  passwordChanged: "Contraseña cambiada", passwordReset: "Contraseña restablecida",
  roleViewer: "Has iniciado sesión como observador (viewer): puedes ver este equipo. Iniciar, detener y reiniciar aplicaciones, sus registros, las búsquedas y las tareas requieren el rol operator; registrar y eliminar aplicaciones requiere admin. Pide más a un administrador.",
  roleOperator: "Registrar y eliminar aplicaciones requiere el rol admin.",
  roleRefused: "Tu rol no permite esto:",
};

export type Lang = "en" | "es";
let lang: Lang = (localStorage.getItem("fleetwatch.lang") as Lang) === "es" ? "es" : "en";

export function getLang(): Lang { return lang; }
export function setLang(l: Lang): void {
  lang = l;
  localStorage.setItem("fleetwatch.lang", l);
  document.documentElement.lang = l;
}

export function t(key: Key, ...args: (string | number)[]): string {
  let s = (lang === "es" ? es : en)[key] ?? key;
  args.forEach((a, i) => { s = s.replace(`{${i}}`, String(a)); });
  return s;
}
