import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { parse as parseToml } from "smol-toml";
import { formatRetryPolicy, parseRetryPolicy } from "../builds/retry-policy.js";
import { KilnError } from "../errors/catalogue.js";
import { readWebhookConfig, type WebhookConfig } from "../events/webhook-config.js";

/** Timings and limits of the task engine, all in seconds unless named otherwise. */
export interface EngineConfig {
  heartbeatInterval: number;
  missedHeartbeats: number;
  maxInfraFailures: number;
  sweepInterval: number;
  backoffBase: number;
  backoffMax: number;
  claimWaitMax: number;
  killGrace: number;
  logLimitBytes: number;
  /** Per-method default timeouts; `default` applies to methods not listed. */
  timeouts: Record<string, number>;
  /** Retry policy of targets that set none (kiln.toml `[retry] default`); see builds/retry-policy.ts. */
  retryDefault: string;
  /** Infra failure incidents within quarantineWindow seconds that quarantine a host; 0: never. */
  quarantineFailures: number;
  quarantineWindow: number;
}

export interface HubConfig {
  data: string;
  listen: { host: string; port: number };
  db: string;
  worker: boolean;
  /** Name of the embedded build worker's host; defaults to the machine's hostname. */
  workerName: string | undefined;
  logLevel: string;
  engine: EngineConfig;
  /** Koji-style policies (build_from_source, tag, package_list) from kiln.toml's [policy]. */
  policies: Record<string, string>;
  /** Largest file one upload may hold. */
  uploadLimitBytes: number;
  /** Seconds between automatic garbage collections (kiln.toml `gc_interval`); 0 turns them off. Default 3600. */
  gcInterval?: number;
  /** Serve the Aptly-compatible API (/api, not /api/v1) without a token, as user "aptly". */
  aptlyAnonymous?: boolean;
  /** Let tokenless GET calls read the native API (the web UI without sign-in). kiln.toml `ui_public_reads`. */
  uiPublicReads?: boolean;
  /**
   * Who may read /metrics without a token: "always", "loopback" (the default: scrapers on this
   * machine) or "never" (a token is needed). kiln.toml: `metrics_public = true | false`.
   */
  metricsPublic?: "always" | "loopback" | "never";
  /** Webhook delivery, kiln.toml's [webhooks]; defaults when absent. */
  webhooks?: WebhookConfig;
}

export const DEFAULT_ENGINE: EngineConfig = {
  heartbeatInterval: 30,
  missedHeartbeats: 3,
  maxInfraFailures: 3,
  sweepInterval: 1,
  backoffBase: 5,
  backoffMax: 600,
  claimWaitMax: 30,
  killGrace: 10,
  logLimitBytes: 64 * 1024 * 1024,
  timeouts: { default: 7200, build: 7200, buildArch: 7200, publish: 1800 },
  retryDefault: "none",
  quarantineFailures: 3,
  quarantineWindow: 600,
};

export const DEFAULT_LISTEN = "127.0.0.1:8471";
export const DEFAULT_UPLOAD_LIMIT = 4 * 1024 ** 3;
export const DEFAULT_GC_INTERVAL = 3600;

function readPolicies(raw: unknown): Record<string, string> {
  if (raw === undefined) return {};
  if (typeof raw !== "object" || raw === null)
    throw new KilnError("CONFIG_INVALID", "kiln.toml: [policy] must be a table");
  const out: Record<string, string> = {};
  for (const [name, text] of Object.entries(raw as Record<string, unknown>)) {
    if (typeof text !== "string")
      throw new KilnError("CONFIG_INVALID", `kiln.toml: policy.${name} must be a string`);
    out[name] = text;
  }
  return out;
}

export interface HubFlags {
  data?: string | undefined;
  listen?: string | undefined;
  db?: string | undefined;
  worker?: boolean | undefined;
  aptlyAnonymous?: boolean | undefined;
}

export function parseListen(value: string): { host: string; port: number } {
  const match = /^(\[[^\]]+\]|[^:]*):(\d{1,5})$/.exec(value);
  const port = match ? Number(match[2]) : NaN;
  if (!match || !(port >= 0 && port <= 65535)) {
    throw new KilnError("CONFIG_INVALID", `listen address "${value}" is not HOST:PORT`);
  }
  const host = (match[1] ?? "").replace(/^\[|\]$/g, "") || "0.0.0.0";
  return { host, port };
}

function asNumber(value: unknown, key: string): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value < 0) {
    throw new KilnError("CONFIG_INVALID", `kiln.toml: ${key} must be a non-negative number`);
  }
  return value;
}

function readEngine(raw: unknown): Partial<EngineConfig> {
  if (raw === undefined) return {};
  if (typeof raw !== "object" || raw === null) {
    throw new KilnError("CONFIG_INVALID", "kiln.toml: [engine] must be a table");
  }
  const table = raw as Record<string, unknown>;
  const keys: Record<string, keyof EngineConfig> = {
    heartbeat_interval: "heartbeatInterval",
    missed_heartbeats: "missedHeartbeats",
    max_infra_failures: "maxInfraFailures",
    sweep_interval: "sweepInterval",
    backoff_base: "backoffBase",
    backoff_max: "backoffMax",
    claim_wait_max: "claimWaitMax",
    kill_grace: "killGrace",
    log_limit_bytes: "logLimitBytes",
    quarantine_failures: "quarantineFailures",
    quarantine_window: "quarantineWindow",
  };
  const out: Partial<EngineConfig> = {};
  for (const [key, value] of Object.entries(table)) {
    if (key === "timeouts") {
      if (typeof value !== "object" || value === null) {
        throw new KilnError("CONFIG_INVALID", "kiln.toml: [engine.timeouts] must be a table");
      }
      out.timeouts = { ...DEFAULT_ENGINE.timeouts };
      for (const [method, seconds] of Object.entries(value as Record<string, unknown>)) {
        out.timeouts[method] = asNumber(seconds, `engine.timeouts.${method}`);
      }
      continue;
    }
    const field = keys[key];
    if (!field) throw new KilnError("CONFIG_INVALID", `kiln.toml: unknown setting engine.${key}`);
    (out as Record<string, number>)[field] = asNumber(value, `engine.${key}`);
  }
  return out;
}

/** kiln.toml's `[retry]` table: `default = "2 on exit:75,signal:KILL"`. */
function readRetryDefault(raw: unknown): string | undefined {
  if (raw === undefined) return undefined;
  if (typeof raw !== "object" || raw === null)
    throw new KilnError("CONFIG_INVALID", "kiln.toml: [retry] must be a table");
  const table = raw as Record<string, unknown>;
  for (const key of Object.keys(table)) {
    if (key !== "default") throw new KilnError("CONFIG_INVALID", `kiln.toml: unknown setting retry.${key}`);
  }
  const text = table.default;
  if (text === undefined) return undefined;
  if (typeof text !== "string")
    throw new KilnError("CONFIG_INVALID", "kiln.toml: retry.default must be a string");
  try {
    return formatRetryPolicy(parseRetryPolicy(text));
  } catch (err) {
    throw new KilnError("CONFIG_INVALID", `kiln.toml: retry.default: ${(err as Error).message}`);
  }
}

function readFile(dataDir: string): Record<string, unknown> {
  const file = path.join(dataDir, "kiln.toml");
  if (!existsSync(file)) return {};
  try {
    return parseToml(readFileSync(file, "utf8"));
  } catch (err) {
    throw new KilnError("CONFIG_INVALID", `${file}: ${(err as Error).message}`);
  }
}

function fileBool(file: Record<string, unknown>, key: string): boolean | undefined {
  const value = file[key];
  if (value !== undefined && typeof value !== "boolean") {
    throw new KilnError("CONFIG_INVALID", `kiln.toml: ${key} must be true or false`);
  }
  return value;
}

function envBool(value: string | undefined): boolean | undefined {
  if (value === undefined || value === "") return undefined;
  return !/^(0|false|no|off)$/i.test(value);
}

/** Defaults, then `<data>/kiln.toml`, then KILN_* environment, then flags. */
export function loadHubConfig(flags: HubFlags, env: NodeJS.ProcessEnv = process.env): HubConfig {
  const data = path.resolve(flags.data ?? env.KILN_DATA ?? "./kiln-data");
  const file = readFile(data);
  const str = (key: string): string | undefined => {
    const value = file[key];
    if (value === undefined) return undefined;
    if (typeof value !== "string")
      throw new KilnError("CONFIG_INVALID", `kiln.toml: ${key} must be a string`);
    return value;
  };
  const fileWorker = file.worker;
  if (fileWorker !== undefined && typeof fileWorker !== "boolean") {
    throw new KilnError("CONFIG_INVALID", "kiln.toml: worker must be true or false");
  }
  const listen = flags.listen ?? env.KILN_LISTEN ?? str("listen") ?? DEFAULT_LISTEN;
  const db = flags.db ?? env.KILN_DB ?? str("db") ?? `sqlite://${path.join(data, "kiln.db")}`;
  const worker = flags.worker ?? envBool(env.KILN_WORKER) ?? fileWorker ?? true;
  return {
    data,
    listen: parseListen(listen),
    db: normalizeDbUrl(db, data),
    worker,
    workerName: env.KILN_WORKER_NAME ?? str("worker_name"),
    logLevel: env.KILN_LOG_LEVEL ?? str("log_level") ?? "info",
    engine: {
      ...DEFAULT_ENGINE,
      ...readEngine(file.engine),
      retryDefault: readRetryDefault(file.retry) ?? DEFAULT_ENGINE.retryDefault,
    },
    policies: readPolicies(file.policy),
    gcInterval:
      env.KILN_GC_INTERVAL !== undefined && env.KILN_GC_INTERVAL !== ""
        ? asNumber(Number(env.KILN_GC_INTERVAL), "KILN_GC_INTERVAL")
        : file.gc_interval === undefined
          ? DEFAULT_GC_INTERVAL
          : asNumber(file.gc_interval, "gc_interval"),
    uploadLimitBytes:
      file.upload_limit_bytes === undefined
        ? DEFAULT_UPLOAD_LIMIT
        : asNumber(file.upload_limit_bytes, "upload_limit_bytes"),
    aptlyAnonymous:
      flags.aptlyAnonymous ?? envBool(env.KILN_APTLY_ANONYMOUS) ?? fileBool(file, "aptly_anonymous") ?? false,
    uiPublicReads: envBool(env.KILN_UI_PUBLIC_READS) ?? fileBool(file, "ui_public_reads") ?? false,
    metricsPublic: ((v) => (v === undefined ? "loopback" : v ? "always" : "never"))(
      envBool(env.KILN_METRICS_PUBLIC) ?? fileBool(file, "metrics_public"),
    ),
    webhooks: readWebhookConfig(file.webhooks, env),
  };
}

/** Plain paths and `sqlite:` URLs name a SQLite file; `postgres://` a server. */
export function normalizeDbUrl(url: string, dataDir: string): string {
  if (/^postgres(ql)?:\/\//.test(url)) return url;
  const file = url.replace(/^sqlite:(\/\/)?/, "");
  if (file === "") throw new KilnError("CONFIG_INVALID", "the database URL names no file");
  return `sqlite://${path.resolve(dataDir, file)}`;
}
