import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { insertHost } from "../../src/db/hosts.js";
import { claimTask } from "../../src/tasks/claim-task.js";
import { createTask } from "../../src/tasks/create-task.js";
import { completeTask, failTask, startTask } from "../../src/tasks/finish-task.js";
import { DIALECTS, postgresAvailable } from "../helpers/db.js";
import { startTestHub, type TestHub } from "../helpers/hub.js";

const pgOk = await postgresAvailable();
const dialects = DIALECTS.filter((d) => d === "sqlite" || pgOk);

/**
 * A strict reading of the Prometheus text format: every line is a comment (# HELP / # TYPE) or
 * `name{labels} value`. Returns the samples by their series text.
 */
function parsePrometheus(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  const label = String.raw`[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"`;
  const sample = new RegExp(
    String.raw`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:${label})(?:,${label})*\})? (-?[0-9.eE+-]+|NaN|\+Inf|-Inf)$`,
  );
  for (const line of text.split("\n")) {
    if (line === "") continue;
    if (line.startsWith("# HELP ") || line.startsWith("# TYPE ")) continue;
    const m = sample.exec(line);
    if (!m) throw new Error(`not Prometheus text: ${JSON.stringify(line)}`);
    samples.set(`${m[1]}${m[2] ?? ""}`, Number(m[3]));
  }
  return samples;
}

describe.each(dialects)("metrics, stats, target retry and host enable on %s", (dialect) => {
  let h: TestHub;

  beforeAll(async () => {
    h = await startTestHub(dialect);
  });
  afterAll(async () => {
    await h.cleanup();
  });

  async function scrape(headers: Record<string, string> = {}): Promise<Map<string, number>> {
    const res = await fetch(`${h.url}/metrics`, { headers });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/plain/);
    return parsePrometheus(await res.text());
  }

  it("serves Prometheus text whose counters move as tasks run", async () => {
    const deps = h.hub.deps;
    const before = await scrape();
    const closedKey = 'kiln_task_attempts_total{method="sleep",outcome="closed"}';
    const requeuedKey = 'kiln_task_attempts_total{method="sleep",outcome="requeued"}';
    const start = before.get(closedKey) ?? 0;

    const host = await insertHost(
      deps.db.kysely,
      "metrics-host",
      { arches: ["amd64"], capacity: 4 },
      deps.clock.now(),
    );
    const t1 = await createTask(deps, { method: "sleep", args: { seconds: 0 }, owner: "alice" });
    const t2 = await createTask(deps, { method: "sleep", args: { seconds: 0 }, owner: "alice" });
    const queued = await scrape();
    expect(queued.get('kiln_tasks{state="free",arch="noarch",channel="default"}')).toBeGreaterThanOrEqual(2);

    const c1 = await claimTask(deps, host);
    expect(c1?.id).toBe(t1.id);
    const ref = { id: t1.id, epoch: c1!.lease_epoch, hostId: host.id };
    await startTask(deps, ref);
    const running = await scrape();
    expect(running.get('kiln_tasks{state="open",arch="noarch",channel="default"}')).toBe(1);
    await completeTask(deps, ref, null);
    const c2 = await claimTask(deps, host);
    expect(c2?.id).toBe(t2.id);
    await failTask(
      deps,
      { id: t2.id, epoch: c2!.lease_epoch, hostId: host.id },
      {
        code: "HOST_LOST",
        message: "gone",
        infra: true,
      },
    );

    const after = await scrape();
    expect(after.get(closedKey)).toBe(start + 1);
    expect(after.get(requeuedKey)).toBeGreaterThanOrEqual(1);
    expect(after.get('kiln_task_run_seconds_count{method="sleep"}')).toBeGreaterThanOrEqual(2);
    expect(after.get('kiln_task_wait_seconds_count{method="sleep"}')).toBeGreaterThanOrEqual(2);
    expect(after.get('kiln_hosts{state="offline"}')).toBeGreaterThanOrEqual(1);
    expect([...after.keys()].some((k) => k.startsWith("kiln_host_load_ratio{host="))).toBe(true);
    // Earlier scrapes were timed by route pattern (this one counts once its answer is sent).
    expect(
      after.get('kiln_http_request_duration_seconds_count{method="GET",route="/metrics",status="200"}'),
    ).toBeGreaterThanOrEqual(3);
    // Exposed for the webhooks engine.
    deps.metrics!.webhookDeliveries.inc({ outcome: "delivered" });
    expect((await scrape()).get('kiln_webhook_deliveries_total{outcome="delivered"}')).toBe(1);
  });

  it("needs a token from elsewhere when metrics_public is false", async () => {
    const deps = h.hub.deps;
    deps.config.metricsPublic = "never";
    try {
      const res = await fetch(`${h.url}/metrics`);
      expect(res.status).toBe(401);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe("AUTH_REQUIRED");
      await scrape({ authorization: `Bearer ${h.adminToken}` });
    } finally {
      deps.config.metricsPublic = "loopback";
    }
  });

  it("edits a target's retry policy, refusing bad strings with a stable code", async () => {
    await h.admin.createTag({ name: "rel-tag" });
    await h.admin.createTarget({ name: "rel", buildTag: "rel-tag", destTag: "rel-tag" });
    const edited = await h.admin.editTarget("rel", { retry: 2, retryOn: "exit:75,signal:KILL,infra" });
    expect(edited.retry).toBe("2 on exit:75,signal:KILL");
    expect((await h.admin.editTarget("rel", { retry: 3 })).retry).toBe("3 on exit:75,signal:KILL");
    for (const bad of [{ retryOn: "exit:0" }, { retryOn: "signal:BOGUS" }, { retry: 99 }]) {
      await expect(h.admin.editTarget("rel", bad)).rejects.toMatchObject({ code: "RETRY_POLICY_INVALID" });
    }
    expect((await h.admin.listTargets()).find((t) => t.name === "rel")?.retry).toBe(
      "3 on exit:75,signal:KILL",
    );
    expect((await h.admin.editTarget("rel", { retryPolicy: null })).retry).toBeNull();
  });

  it("lifts a quarantine when the host is enabled", async () => {
    const k = h.hub.deps.db.kysely;
    await insertHost(k, "sick-host", { arches: ["amd64"] }, 0);
    await k
      .updateTable("hosts")
      .set({ enabled: 0, disabled_reason: "quarantined: 3 infra failures within 600 s" })
      .where("name", "=", "sick-host")
      .execute();
    const shown = (await h.admin.listHosts()).find((x) => x.name === "sick-host");
    expect(shown?.disabledReason).toMatch(/^quarantined/);
    const enabled = await h.admin.editHost("sick-host", { enabled: true });
    expect(enabled.enabled).toBe(true);
    expect(enabled.disabledReason).toBeNull();
    const row = await k
      .selectFrom("hosts")
      .selectAll()
      .where("name", "=", "sick-host")
      .executeTakeFirstOrThrow();
    expect(row.enabled_at).not.toBeNull();
  });

  it("answers the stats view, and refuses a bad window", async () => {
    const stats = await h.admin.stats({ since: "7d" });
    expect(stats.builds.total).toBeGreaterThanOrEqual(0);
    expect(stats).toHaveProperty("queueWait.p95");
    expect(Array.isArray(stats.flakiest)).toBe(true);
    expect(stats.hostFailures.find((x) => x.host === "metrics-host")?.infra).toBeGreaterThanOrEqual(1);
    await expect(h.admin.stats({ since: "seven days" })).rejects.toMatchObject({ code: "DURATION_INVALID" });
  });
});
