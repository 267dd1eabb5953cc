// The JSON the gateway answers with and streams, as far as the UI reads it. The server's msgspec
// structs are the source (libs/schemas and the gateway's controllers); they encode every field,
// defaults too, so a field is optional here only where the UI reads one the server may not send.

/** One event on /api/v1/stream: `data` depends on `kind`. */
export interface StreamEvent<T = unknown> {
  id: number;
  kind: string;
  host: string;
  ts: number;
  data: T;
}

/** The figures a live client gets for each frame (the gateway's frame_summary). */
export interface Summary {
  ts: number;
  cpu_percent: number;
  load1: number;
  mem_percent: number;
  swap_percent: number;
  disk_max_percent: number | null;
  gpu_util_percent: number | null;
  net_bytes_recv: number;
  net_bytes_sent: number;
  [field: string]: number | null;
}

export interface HostView {
  host: string;
  status: string;
  last_seen: number | null;
  hostname: string;
  os: string;
  kernel: string;
  cpu_model: string;
  cpu_count: number;
  mem_total: number;
  labels: Record<string, string>;
  last: Summary | null;
}

export interface HostDetail {
  host: HostView;
}

export interface History {
  tier: string;
  times: number[];
  series: Record<string, (number | null)[] | undefined>;
  /** Per-bucket peaks of the fields that keep one (cpu_percent, mem_percent). */
  max?: Record<string, (number | null)[] | undefined>;
}

export interface Proc {
  pid: number;
  name: string;
  user: string;
  cmdline: string;
  cpu_percent: number;
  rss: number;
  threads: number;
}

export interface ProcList {
  total: number;
  procs: Proc[];
}

/** A `procs` stream event's data (a ProcessSnapshot). */
export interface ProcSnapshot {
  total: number;
  procs: Proc[];
}

export interface AppSpec {
  name: string;
}

export interface AppInfo {
  spec: AppSpec;
  state: string;
  pid: number | null;
  restarts: number;
  cpu_percent: number | null;
  rss: number | null;
  detail: string;
}

/** An `app` stream event's data. */
export interface AppStatus {
  app: string;
  state: string;
  pid: number | null;
  restarts: number;
  cpu_percent: number | null;
  rss: number | null;
  detail: string;
}

export interface AppReply {
  app: AppInfo;
}

export interface AppList {
  apps: AppInfo[];
}

export interface JobInfo {
  id: string;
  argv: string[];
  state: string;
  exit_code: number | null;
  created: number;
  user: string;
  actor: string;
}

export interface JobList {
  jobs: JobInfo[];
}

export interface JobLogs {
  lines: string[];
}

export interface ScannedProc {
  pid: number;
  runtime: string;
  cmdline: string[];
  cwd: string;
  user: string;
  ports: number[];
}

export interface ScanReply {
  procs: ScannedProc[];
}

export interface Matcher {
  name: string;
  value: string;
  op: string;
}

export interface Silence {
  id: string;
  matchers: Matcher[];
  starts: number;
  ends: number;
  created_by: string;
  comment: string;
}

export interface AlertRecord {
  fingerprint: string;
  rule: string;
  kind: string;
  host: string;
  state: string;
  since: number;
  severity: string;
  labels: Record<string, string>;
  value: number | null;
  threshold: number | null;
  field?: string;
  summary: string;
}

/** An `alert` stream event's data (an AlertEvent), as far as the fleet page reads it. */
export type AlertEvent = Pick<AlertRecord, "fingerprint" | "host" | "state">;

/** A rule, check or notifier as the alerting editor lists it (each has only some of these). */
export interface ConfigItem {
  name: string;
  id?: string;
  kind?: string;
  summary?: string;
  url?: string;
  field?: string;
  op?: string;
  threshold?: number;
  enabled: boolean;
}

/** A list answer: the gateway's `{items: [...]}`, also read as a bare list or under its own name. */
export type Listing<T> = T[] | { [key: string]: T[] | undefined } | null;

export interface UserOut {
  username: string;
  email: string;
  role: string;
  is_active: boolean;
  system_uid: number;
  created_at: number;
}

export interface ReplicationStatus {
  host: string;
  ts: number;
  ok: boolean;
  added: number;
  updated: number;
  removed: number;
  total: number;
  duration_ms: number;
  error: string;
}

export interface AuditRecord {
  ts: number;
  time?: number; // read where a record has no ts
  host: string;
  actor: string;
  action: string;
  target: string;
  params: unknown;
  result: string;
  code: number;
  error: string;
  duration_ms: number | null;
}

export interface AuditPage {
  items: AuditRecord[];
  next_offset: number | null;
}
