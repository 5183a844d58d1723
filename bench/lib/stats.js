/** Nearest-rank percentile of an ascending-sorted array (p in 0..100). */
export function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))];
}

/** p50/p99/max of a list of numbers. */
export function distribution(values) {
  const sorted = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  return {
    count: sorted.length,
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    max: sorted.length > 0 ? sorted[sorted.length - 1] : NaN,
  };
}

/**
 * Summarises one measured run. Each record holds epoch-millisecond times from this machine's clock:
 * `submit` (bench, just before the submit call), `created` (as the queue stored it), `start`, `done`.
 */
export function summarize(records, extra = {}) {
  const firstSubmit = Math.min(...records.map((r) => r.submit));
  const lastDone = Math.max(...records.map((r) => r.done));
  const seconds = (lastDone - firstSubmit) / 1000;
  return {
    tasks: records.length,
    seconds,
    throughput: records.length / seconds,
    submitToStart: distribution(records.map((r) => r.start - r.submit)),
    createdToStart: distribution(records.map((r) => r.start - r.created)),
    startToDone: distribution(records.map((r) => r.done - r.start)),
    ...extra,
  };
}
