// REST calls with the session token, and a fetch-based SSE reader (EventSource cannot send the
// Authorization header and hides why a connection failed).

export type Role = "viewer" | "operator" | "admin";
const LEVEL: Record<Role, number> = { viewer: 0, operator: 1, admin: 2 };

export interface Session {
  token: string;
  username: string;
  role: Role;
  expires_at: number;
}

const KEY = "fleetwatch.session";
let session: Session | null = load();

function load(): Session | null {
  try {
    const s = JSON.parse(sessionStorage.getItem(KEY) || "null") as Session | null;
    return s && s.expires_at > Date.now() / 1000 ? s : null;
  } catch {
    return null;
  }
}

export function current(): Session | null {
  return session;
}
export function can(role: Role): boolean {
  return !!session && LEVEL[session.role] >= LEVEL[role];
}

export function setSession(s: Session | null): void {
  session = s;
  if (s) sessionStorage.setItem(KEY, JSON.stringify(s));
  else sessionStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(
    public status: number,
    public detail: string,
  ) {
    super(detail);
  }
}

let onUnauthorized: () => void = () => {};
export function whenUnauthorized(f: () => void): void {
  onUnauthorized = f;
}

function reason(body: unknown, status: number): string {
  if (body && typeof body === "object") {
    const b = body as { detail?: unknown; extra?: unknown };
    let d = typeof b.detail === "string" ? b.detail : "";
    // Litestar's validation errors list the offending fields in `extra`.
    if (Array.isArray(b.extra) && b.extra.length) {
      const extra = b.extra as { key?: string; message?: string }[];
      d += ": " + extra.map((e) => [e.key, e.message].filter(Boolean).join(" ")).join("; ");
    }
    if (d) return d;
  }
  return `HTTP ${status}`;
}

export async function api<T = unknown>(
  method: string,
  path: string,
  body?: unknown,
  query?: Record<string, string | number | boolean | null | undefined>,
): Promise<T> {
  let url = path;
  if (query) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
    const s = q.toString();
    if (s) url += "?" + s;
  }
  // The door audit records name (services/gateway/auditing.py); it labels, never grants.
  const headers: Record<string, string> = { "X-Fleetwatch-Client": "ui" };
  if (session) headers.Authorization = `Bearer ${session.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let r: Response;
  try {
    r = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new ApiError(0, `network error: ${(e as Error).message}`);
  }
  const text = await r.text();
  let data: unknown;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = text;
  }
  if (!r.ok) {
    if (r.status === 401 && session && path !== "/api/v1/auth/login") onUnauthorized();
    throw new ApiError(r.status, reason(data, r.status));
  }
  return data as T;
}

export async function login(username: string, password: string): Promise<Session> {
  const r = await api<Session>("POST", "/api/v1/auth/login", { username, password });
  const s = { token: r.token, username: r.username, role: r.role, expires_at: r.expires_at };
  setSession(s);
  return s;
}

export interface SSEHandlers {
  onEvent(kind: string, data: string, id: string | null): void;
  onState?(state: "open" | "retrying", detail?: string): void;
}

/** Follows an SSE URL until `close()`: reconnects with backoff, resumes with Last-Event-ID. */
export class SSE {
  private ctrl: AbortController | null = null;
  private closed = false;
  private lastId: string | null = null;
  private delay = 1000;
  private timer: number | undefined;

  constructor(
    private url: string,
    private h: SSEHandlers,
    private resume = true,
  ) {
    void this.connect();
  }

  close(): void {
    this.closed = true;
    this.ctrl?.abort();
    clearTimeout(this.timer);
  }

  private async connect(): Promise<void> {
    if (this.closed) return;
    this.ctrl = new AbortController();
    const headers: Record<string, string> = { Accept: "text/event-stream" };
    if (session) headers.Authorization = `Bearer ${session.token}`;
    if (this.resume && this.lastId) headers["Last-Event-ID"] = this.lastId;
    let why: string;
    try {
      const r = await fetch(this.url, { headers, signal: this.ctrl.signal, cache: "no-store" });
      if (!r.ok || !r.body) {
        const t = await r.text().catch(() => "");
        let d = `HTTP ${r.status}`;
        try {
          d = (JSON.parse(t) as { detail?: string }).detail || d;
        } catch {
          /* not JSON */
        }
        if (r.status === 401) onUnauthorized();
        throw new Error(d);
      }
      this.delay = 1000;
      this.h.onState?.("open");
      await this.read(r.body);
      why = "stream ended";
    } catch (e) {
      if (this.closed) return;
      why = (e as Error).message || "connection lost";
    }
    if (this.closed) return;
    this.h.onState?.("retrying", why);
    this.timer = window.setTimeout(() => void this.connect(), this.delay);
    this.delay = Math.min(this.delay * 2, 10000);
  }

  private async read(body: ReadableStream<Uint8Array>): Promise<void> {
    const reader = body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += dec.decode(value, { stream: true });
      // Servers may end lines with \r\n (Litestar's SSE does); a lone trailing \r waits for its \n.
      if (buf.includes("\r")) {
        const keep = buf.endsWith("\r") ? "\r" : "";
        buf = (keep ? buf.slice(0, -1) : buf).replace(/\r\n?/g, "\n") + keep;
      }
      let end: number;
      while ((end = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, end);
        buf = buf.slice(end + 2);
        this.block(block);
      }
    }
  }

  private block(block: string): void {
    let kind = "message";
    let id: string | null = null;
    let data = "";
    let hasData = false;
    for (const line of block.split("\n")) {
      if (!line || line[0] === ":") continue;
      const i = line.indexOf(":");
      const f = i < 0 ? line : line.slice(0, i);
      let v = i < 0 ? "" : line.slice(i + 1);
      if (v[0] === " ") v = v.slice(1);
      if (f === "data") {
        data = hasData ? data + "\n" + v : v;
        hasData = true;
      } else if (f === "event") kind = v;
      else if (f === "id") id = v;
    }
    if (id !== null) this.lastId = id;
    if (hasData && data !== "") this.h.onEvent(kind, data, id);
  }
}
