import { KilnError } from "../errors/catalogue.js";
import { backoffDelayMs } from "../tasks/retry.js";

/** The HTTP status the hub answered with (the client puts it in `details.status`). */
export function hubStatus(err: KilnError): number {
  const status = err.details?.status;
  return typeof status === "number" ? status : err.status;
}

/** The hub is down, restarting or overloaded: worth retrying the same call later. */
export function isTransientHubError(err: unknown): boolean {
  return err instanceof KilnError && (err.code === "HUB_UNREACHABLE" || hubStatus(err) >= 500);
}

/** The token is unknown, revoked or not a host's: retrying cannot help. */
export function isAuthError(err: unknown): boolean {
  if (!(err instanceof KilnError)) return false;
  const status = hubStatus(err);
  return status === 401 || status === 403;
}

/**
 * The task is no longer this attempt's (lease moved on, canceled, finished elsewhere, or not
 * this host's): whatever the worker wanted to tell the hub about it no longer matters.
 */
export function isLeaseLost(err: unknown): boolean {
  if (!(err instanceof KilnError)) return false;
  return (
    err.code === "LEASE_STALE" ||
    err.code === "TASK_CANCELED" ||
    err.code === "TASK_FINISHED" ||
    err.code === "TASK_NOT_RUNNING" ||
    err.code === "TASK_NOT_FOUND" ||
    err.code === "HOST_MISMATCH"
  );
}

/** Jittered exponential backoff between calls to an unreachable hub: 0.2 s doubling to 10 s. */
export function retryDelayMs(attempt: number, baseSeconds = 0.2, maxSeconds = 10): number {
  return backoffDelayMs(attempt, baseSeconds, maxSeconds);
}

/** Resolves after `ms`, or at once when `signal` aborts (never rejects). */
export function delay(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) {
      resolve();
      return;
    }
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}

export function describeError(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
