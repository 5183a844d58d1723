/**
 * Exponential backoff with full jitter: a delay drawn uniformly from [0, min(max, base·2^(n-1))).
 * `attempt` counts failures so far, starting at 1. Pure; `random` is injectable for tests.
 */
export function backoffDelayMs(
  attempt: number,
  baseSeconds: number,
  maxSeconds: number,
  random: () => number = Math.random,
): number {
  const exp = Math.min(maxSeconds, baseSeconds * 2 ** Math.max(0, attempt - 1));
  return Math.floor(random() * exp * 1000);
}
