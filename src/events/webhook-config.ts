import { KilnError } from "../errors/catalogue.js";

/** How the hub delivers webhooks (kiln.toml's [webhooks]); seconds unless named otherwise. */
export interface WebhookConfig {
  /** Let webhooks reach loopback, private, link-local and metadata addresses. */
  allowPrivate: boolean;
  /** Per-request timeout. */
  timeout: number;
  /** Requests in flight at once, across all webhooks. */
  concurrency: number;
  backoffBase: number;
  backoffMax: number;
  /** How long a delivery is retried before it is given up and its webhook disabled. */
  maxAge: number;
  /** How often the hub looks for new events when nothing wakes it. */
  pollInterval: number;
}

export const DEFAULT_WEBHOOKS: WebhookConfig = {
  allowPrivate: false,
  timeout: 10,
  concurrency: 8,
  backoffBase: 10,
  backoffMax: 3600,
  maxAge: 86400,
  pollInterval: 1,
};

const KEYS: Record<string, Exclude<keyof WebhookConfig, "allowPrivate">> = {
  timeout: "timeout",
  concurrency: "concurrency",
  backoff_base: "backoffBase",
  backoff_max: "backoffMax",
  max_age: "maxAge",
  poll_interval: "pollInterval",
};

/** [webhooks] from kiln.toml, then KILN_WEBHOOKS_ALLOW_PRIVATE. */
export function readWebhookConfig(raw: unknown, env: NodeJS.ProcessEnv = process.env): WebhookConfig {
  if (raw !== undefined && (typeof raw !== "object" || raw === null)) {
    throw new KilnError("CONFIG_INVALID", "kiln.toml: [webhooks] must be a table");
  }
  const out: WebhookConfig = { ...DEFAULT_WEBHOOKS };
  for (const [key, value] of Object.entries((raw ?? {}) as Record<string, unknown>)) {
    if (key === "allow_private") {
      if (typeof value !== "boolean") {
        throw new KilnError("CONFIG_INVALID", "kiln.toml: webhooks.allow_private must be true or false");
      }
      out.allowPrivate = value;
      continue;
    }
    const field = KEYS[key];
    if (!field) throw new KilnError("CONFIG_INVALID", `kiln.toml: unknown setting webhooks.${key}`);
    if (typeof value !== "number" || !Number.isFinite(value) || value <= 0) {
      throw new KilnError("CONFIG_INVALID", `kiln.toml: webhooks.${key} must be a number above 0`);
    }
    out[field] = value;
  }
  const envAllow = env.KILN_WEBHOOKS_ALLOW_PRIVATE;
  if (envAllow !== undefined && envAllow !== "") out.allowPrivate = !/^(0|false|no|off)$/i.test(envAllow);
  out.concurrency = Math.max(1, Math.floor(out.concurrency));
  return out;
}
