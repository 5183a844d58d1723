import { constants as osConstants } from "node:os";
import { KilnError } from "../errors/catalogue.js";
import { registerRetryRule } from "../tasks/finish-task.js";
import type { TaskError } from "../tasks/types.js";

/**
 * A target's retry policy: how many times a failed build step runs again, and which failures
 * count as transient. Infra failures (lost host, lease expiry) are retried by the engine whatever
 * the policy says; `infra` is accepted in the list so policies can say so explicitly.
 */
export interface RetryPolicy {
  retries: number;
  exitCodes: number[];
  signals: string[];
  infra: boolean;
}

export const MAX_RETRIES = 20;
export const NO_RETRY: RetryPolicy = { retries: 0, exitCodes: [], signals: [], infra: true };

function invalid(text: string, why: string): KilnError {
  return new KilnError("RETRY_POLICY_INVALID", `retry policy "${text}": ${why}`, { policy: text });
}

function signalName(raw: string, text: string): string {
  const upper = raw.toUpperCase();
  const signals = osConstants.signals as Record<string, number>;
  if (/^\d+$/.test(raw)) {
    const name = Object.keys(signals).find((k) => signals[k] === Number(raw));
    if (!name) throw invalid(text, `no signal number ${raw}`);
    return name;
  }
  const name = upper.startsWith("SIG") ? upper : `SIG${upper}`;
  if (!(name in signals)) throw invalid(text, `unknown signal "${raw}"`);
  return name;
}

/** Parses the `--retry-on` list: `exit:75`, `exit:75-78`, `signal:KILL` (or SIGKILL, 9), `infra`. */
export function parseRetryOn(list: string): Omit<RetryPolicy, "retries"> {
  const out = { exitCodes: new Set<number>(), signals: new Set<string>(), infra: true };
  for (const part of list.split(",").map((p) => p.trim())) {
    if (part === "") throw invalid(list, "an empty entry");
    if (part === "infra") continue;
    const m = /^(exit|signal):(.+)$/.exec(part);
    if (!m) throw invalid(list, `"${part}" is not exit:CODE, signal:NAME or infra`);
    const value = m[2]!;
    if (m[1] === "signal") {
      out.signals.add(signalName(value, list));
      continue;
    }
    const range = /^(\d{1,3})(?:-(\d{1,3}))?$/.exec(value);
    const from = range ? Number(range[1]) : NaN;
    const to = range?.[2] !== undefined ? Number(range[2]) : from;
    // Exit 0 is success; above 255 no process can exit with it.
    if (!(from >= 1 && to <= 255 && from <= to))
      throw invalid(list, `"${value}" is not an exit code from 1 to 255`);
    for (let c = from; c <= to; c++) out.exitCodes.add(c);
  }
  return {
    exitCodes: [...out.exitCodes].sort((a, b) => a - b),
    signals: [...out.signals].sort(),
    infra: true,
  };
}

export function parseRetryCount(value: string | number): number {
  const n = typeof value === "number" ? value : /^\d+$/.test(value.trim()) ? Number(value) : NaN;
  if (!Number.isInteger(n) || n < 0 || n > MAX_RETRIES) {
    throw invalid(String(value), `the retry count must be a whole number from 0 to ${MAX_RETRIES}`);
  }
  return n;
}

/**
 * The policy's text, as stored and as kiln.toml's `[retry] default` takes it: `none` (or `0`),
 * `N` (retry N times on nothing but infra failures) or `N on LIST`, e.g. `2 on exit:75,signal:KILL`.
 */
export function parseRetryPolicy(text: string): RetryPolicy {
  const trimmed = text.trim();
  if (trimmed === "none" || trimmed === "") return { ...NO_RETRY };
  const m = /^(\S+)(?:\s+on\s+(.+))?$/.exec(trimmed);
  if (!m) throw invalid(text, 'expected "none", "N" or "N on exit:CODE,signal:NAME,infra"');
  const retries = parseRetryCount(m[1]!);
  const on = m[2] === undefined ? { exitCodes: [], signals: [], infra: true } : parseRetryOn(m[2]);
  return { retries, ...on };
}

/** The inverse of parseRetryPolicy, with exit codes and signals in a stable order. */
export function formatRetryPolicy(p: RetryPolicy): string {
  const on = [...p.exitCodes.map((c) => `exit:${c}`), ...p.signals.map((s) => `signal:${s.slice(3)}`)];
  if (p.retries === 0 && on.length === 0) return "none";
  return on.length === 0 ? String(p.retries) : `${p.retries} on ${on.join(",")}`;
}

/** Does a build step's failure, after `retriesSoFar` retries, run again under this policy? Pure. */
export function shouldRetry(policy: RetryPolicy, error: TaskError, retriesSoFar: number): boolean {
  // Infra failures are the engine's (always retried); a cancel or a timeout is never transient.
  if (error.infra || error.code === "TASK_CANCELED" || error.code === "TASK_TIMEOUT") return false;
  if (retriesSoFar >= policy.retries) return false;
  if (error.signal) return policy.signals.includes(error.signal);
  return typeof error.exitCode === "number" && policy.exitCodes.includes(error.exitCode);
}

// The build steps that run a package's own build: a failure there may be transient. The policy
// is looked up when the attempt fails, so an edit to the target applies to builds in flight.
for (const method of ["buildSrc", "buildArch"]) {
  registerRetryRule(method, async (trx, task, error, engine) => {
    if (error.infra) return false;
    const args = JSON.parse(task.args) as { buildId?: number };
    let text: string | null = null;
    if (typeof args.buildId === "number") {
      const row = await trx
        .selectFrom("builds")
        .leftJoin("targets", "targets.id", "builds.target_id")
        .select("targets.retry_policy as policy")
        .where("builds.id", "=", args.buildId)
        .executeTakeFirst();
      text = row?.policy ?? null;
    }
    let policy: RetryPolicy;
    try {
      policy = parseRetryPolicy(text ?? engine.retryDefault);
    } catch {
      // Stored policies were checked when set; a broken one must not turn a failure into a crash.
      policy = NO_RETRY;
    }
    return shouldRetry(policy, error, task.retries);
  });
}
