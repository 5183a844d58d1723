import type { FastifyInstance } from "fastify";
import type { Kysely } from "kysely";
import type { DurationStatsJson, StatsJson } from "../../../client/types.js";
import type { Database } from "../../../db/schema.js";
import { KilnError } from "../../../errors/catalogue.js";
import { requireAuth } from "../../auth.js";

const UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400, w: 604800 };

/** `7d`, `12h`, `30m`, `2w`, `90s` (or plain seconds) → milliseconds. */
export function parseDuration(text: string): number {
  const m = /^(\d{1,9})([smhdw]?)$/.exec(text.trim());
  if (!m) throw new KilnError("DURATION_INVALID", `"${text}" is not a duration such as 7d, 12h or 30m`);
  return Number(m[1]) * (UNITS[m[2] || "s"] ?? 1) * 1000;
}

/** Nearest-rank percentile of sorted values. Pure. */
export function percentile(sorted: readonly number[], p: number): number | null {
  if (sorted.length === 0) return null;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))] ?? null;
}

function durations(ms: number[]): DurationStatsJson {
  const sorted = ms.map((v) => v / 1000).sort((a, b) => a - b);
  return { count: sorted.length, p50: percentile(sorted, 50), p95: percentile(sorted, 95) };
}

/** One slice of the window in `?buckets=`: the health of what was submitted in it. */
export interface StatsBucketJson {
  start: string;
  end: string;
  builds: number;
  /** complete / (complete + failed) of the builds submitted in the bucket; null when none ended. */
  successRate: number | null;
  /** Seconds, median, of the build steps created in the bucket. */
  queueWaitP50: number | null;
  /** Seconds, median, of the complete builds submitted in the bucket. */
  buildTimeP50: number | null;
}

export type StatsWithSeriesJson = StatsJson & { series?: StatsBucketJson[] };

/**
 * Splits [since, now) into `count` equal buckets and sums up each, by when the build or step was
 * created (the same clock the window filters on, so every row lands in one bucket). Pure.
 */
export function bucketStats(
  rows: {
    builds: readonly { state: string; created_at: number; completed_at: number | null }[];
    waits: readonly { created_at: number; started_at: number | null }[];
  },
  since: number,
  now: number,
  count: number,
): StatsBucketJson[] {
  const width = Math.max(1, (now - since) / count);
  const slot = (at: number) => Math.min(count - 1, Math.max(0, Math.floor((at - since) / width)));
  const buckets = Array.from({ length: count }, () => ({
    builds: 0,
    complete: 0,
    failed: 0,
    waits: [] as number[],
    times: [] as number[],
  }));
  for (const b of rows.builds) {
    const k = buckets[slot(b.created_at)]!;
    k.builds++;
    if (b.state === "failed") k.failed++;
    if (b.state === "complete") {
      k.complete++;
      if (b.completed_at !== null) k.times.push((b.completed_at - b.created_at) / 1000);
    }
  }
  for (const w of rows.waits) {
    buckets[slot(w.created_at)]!.waits.push(((w.started_at ?? w.created_at) - w.created_at) / 1000);
  }
  const median = (v: number[]) =>
    percentile(
      v.sort((a, b) => a - b),
      50,
    );
  return buckets.map((k, i) => ({
    start: new Date(since + i * width).toISOString(),
    end: new Date(i === count - 1 ? now : since + (i + 1) * width).toISOString(),
    builds: k.builds,
    successRate: k.complete + k.failed === 0 ? null : k.complete / (k.complete + k.failed),
    queueWaitP50: median(k.waits),
    buildTimeP50: median(k.times),
  }));
}

const BUILD_STEPS = ["buildSrc", "buildArch"];
const FAILED_OUTCOMES = ["failed", "retried", "requeued", "timeout"];

/** The build-health view of the window [since, now]: a few grouped queries, summarized in JS. */
export async function computeStats(
  db: Kysely<Database>,
  since: number,
  now: number,
  top = 10,
  opts: { buckets?: number } = {},
): Promise<StatsWithSeriesJson> {
  const [builds, waits, flaky, hostFails] = await Promise.all([
    db
      .selectFrom("builds")
      .select(["source", "state", "created_at", "completed_at"])
      .where("created_at", ">=", since)
      .execute(),
    db
      .selectFrom("tasks")
      .select(["created_at", "started_at"])
      .where("method", "in", BUILD_STEPS)
      .where("created_at", ">=", since)
      .where("started_at", "is not", null)
      .execute(),
    db
      .selectFrom("tasks as t")
      .innerJoin("builds as b", "b.task_id", "t.parent_id")
      .select([
        "b.source",
        (eb) => eb.fn.countAll<number>().as("steps"),
        (eb) => eb.fn.sum<number>("t.retries").as("retries"),
      ])
      .where("t.method", "in", BUILD_STEPS)
      .where("t.state", "=", "closed")
      .where("t.retries", ">", 0)
      .where("t.completed_at", ">=", since)
      .groupBy("b.source")
      .execute(),
    db
      .selectFrom("task_attempts as a")
      .innerJoin("hosts as h", "h.id", "a.host_id")
      .select([
        "h.name",
        (eb) => eb.fn.countAll<number>().as("failures"),
        (eb) => eb.fn.sum<number>("a.infra").as("infra"),
      ])
      .where("a.outcome", "in", FAILED_OUTCOMES)
      .where("a.ended_at", ">=", since)
      .groupBy("h.name")
      .execute(),
  ]);

  const count = (state: string) => builds.filter((b) => b.state === state).length;
  const complete = count("complete");
  const failed = count("failed");
  const times = new Map<string, number[]>();
  for (const b of builds) {
    if (b.state !== "complete" || b.completed_at === null) continue;
    const list = times.get(b.source) ?? [];
    list.push(b.completed_at - b.created_at);
    times.set(b.source, list);
  }
  const slowest = [...times.entries()]
    .map(([pkg, ms]) => {
      const sorted = ms.map((v) => v / 1000).sort((a, b) => a - b);
      return {
        package: pkg,
        builds: sorted.length,
        p50: percentile(sorted, 50) ?? 0,
        max: sorted.at(-1) ?? 0,
      };
    })
    .sort((a, b) => b.p50 - a.p50 || a.package.localeCompare(b.package))
    .slice(0, top);
  return {
    since: new Date(since).toISOString(),
    until: new Date(now).toISOString(),
    builds: {
      total: builds.length,
      complete,
      failed,
      canceled: count("canceled"),
      building: count("building"),
      successRate: complete + failed === 0 ? null : complete / (complete + failed),
    },
    queueWait: durations(waits.map((t) => (t.started_at ?? t.created_at) - t.created_at)),
    buildTime: durations([...times.values()].flat()),
    slowest,
    flakiest: flaky
      .map((f) => ({ package: f.source, flakySteps: Number(f.steps), retries: Number(f.retries) }))
      .sort(
        (a, b) => b.flakySteps - a.flakySteps || b.retries - a.retries || a.package.localeCompare(b.package),
      )
      .slice(0, top),
    hostFailures: hostFails
      .map((h) => ({ host: h.name, failures: Number(h.failures), infra: Number(h.infra) }))
      .sort((a, b) => b.failures - a.failures || a.host.localeCompare(b.host))
      .slice(0, top),
    ...(opts.buckets ? { series: bucketStats({ builds, waits }, since, now, opts.buckets) } : {}),
  };
}

export function registerStatsRoutes(app: FastifyInstance): void {
  const { deps } = app.kiln;
  app.get<{ Querystring: { since?: string; buckets?: number } }>(
    "/api/v1/stats",
    {
      schema: {
        summary:
          "Build health: success rate, queue wait and build time, slowest and flakiest packages; `buckets=N` adds `series`, the window in N equal slices",
        tags: ["meta"],
        querystring: {
          type: "object",
          properties: {
            since: { type: "string", maxLength: 20 },
            buckets: { type: "integer", minimum: 1, maximum: 200 },
          },
        },
      },
    },
    async (req) => {
      requireAuth(req);
      const now = deps.clock.now();
      const since = now - parseDuration(req.query.since ?? "7d");
      const buckets = req.query.buckets;
      return computeStats(deps.db.kysely, since, now, 10, buckets === undefined ? {} : { buckets });
    },
  );
}
