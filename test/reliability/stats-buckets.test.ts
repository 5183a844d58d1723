import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { bucketStats, type StatsBucketJson } from "../../src/hub/routes/v1/stats.js";
import { DIALECTS, postgresAvailable } from "../helpers/db.js";
import { startTestHub, type TestHub } from "../helpers/hub.js";

const pgOk = await postgresAvailable();
const dialects = DIALECTS.filter((d) => d === "sqlite" || pgOk);

const H = 3600_000;

describe("bucketStats", () => {
  it("splits the window into equal buckets, each with its own rate and medians", () => {
    const since = 0;
    const now = 4 * H;
    const series = bucketStats(
      {
        builds: [
          { state: "complete", created_at: 0, completed_at: 60_000 },
          { state: "complete", created_at: 10, completed_at: 10 + 180_000 },
          { state: "failed", created_at: 20, completed_at: 30 },
          { state: "failed", created_at: 2 * H, completed_at: 2 * H + 5 },
          { state: "building", created_at: 3 * H, completed_at: null },
          // At the window's very end: the last bucket, not a fifth one.
          { state: "complete", created_at: 4 * H, completed_at: 4 * H + 2000 },
        ],
        waits: [
          { created_at: 0, started_at: 1000 },
          { created_at: 5, started_at: 5 + 3000 },
          { created_at: 9, started_at: 9 + 5000 },
          { created_at: 2 * H, started_at: 2 * H + 10_000 },
        ],
      },
      since,
      now,
      4,
    );
    expect(series.map((b) => [b.start, b.end])).toEqual([
      ["1970-01-01T00:00:00.000Z", "1970-01-01T01:00:00.000Z"],
      ["1970-01-01T01:00:00.000Z", "1970-01-01T02:00:00.000Z"],
      ["1970-01-01T02:00:00.000Z", "1970-01-01T03:00:00.000Z"],
      ["1970-01-01T03:00:00.000Z", "1970-01-01T04:00:00.000Z"],
    ]);
    const pick = (b: StatsBucketJson) => [b.builds, b.successRate, b.queueWaitP50, b.buildTimeP50];
    expect(series.map(pick)).toEqual([
      [3, 2 / 3, 3, 60],
      [0, null, null, null],
      [1, 0, 10, null],
      [2, 1, null, 2],
    ]);
  });

  it("gives one bucket the whole window", () => {
    const [only, ...rest] = bucketStats({ builds: [], waits: [] }, 1000, 2000, 1);
    expect(rest).toEqual([]);
    expect(only).toEqual({
      start: new Date(1000).toISOString(),
      end: new Date(2000).toISOString(),
      builds: 0,
      successRate: null,
      queueWaitP50: null,
      buildTimeP50: null,
    });
  });
});

describe.each(dialects)("GET /api/v1/stats?buckets= on %s", (dialect) => {
  let h: TestHub;
  beforeAll(async () => {
    h = await startTestHub(dialect);
  });
  afterAll(async () => {
    await h.cleanup();
  });

  const get = async (query: string) => {
    const res = await fetch(`${h.url}/api/v1/stats?${query}`, {
      headers: { authorization: `Bearer ${h.adminToken}` },
    });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };

  it("adds a series of the asked length only when asked, counting a build in its bucket", async () => {
    const db = h.hub.deps.db.kysely;
    const now = h.hub.deps.clock.now();
    await db
      .insertInto("builds")
      .values({
        source: "bucketed",
        version: "1.0-1",
        state: "failed",
        owner: "admin",
        target_id: null,
        scratch: 0,
        task_id: null,
        created_at: now - 1000,
        completed_at: now - 500,
      })
      .execute();
    expect((await get("since=1d")).body).not.toHaveProperty("series");
    const { status, body } = await get("since=1d&buckets=24");
    expect(status).toBe(200);
    const series = body.series as StatsBucketJson[];
    expect(series).toHaveLength(24);
    expect(series.at(-1)).toMatchObject({ builds: 1, successRate: 0 });
    expect(series.slice(0, -1).every((b) => b.builds === 0)).toBe(true);
    expect((await get("buckets=0")).status).toBe(400);
    expect((await get("buckets=201")).status).toBe(400);
  });
});
