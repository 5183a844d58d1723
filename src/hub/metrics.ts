import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { Db } from "../db/database.js";
import type { TaskObserver } from "../tasks/task-attempts.js";

/**
 * The hub's Prometheus metrics, one registry per hub (tests run several hubs in one process).
 * Other modules get what they need from here — an observer, a counter — and never import
 * prom-client themselves. Queue and host gauges are read from the database on each scrape.
 */
export interface HubMetrics {
  registry: Registry;
  /** Task attempts by method and outcome: closed, failed, retried, requeued, timeout. */
  taskAttempts: Counter<"method" | "outcome">;
  taskWaitSeconds: Histogram<"method">;
  taskRunSeconds: Histogram<"method">;
  /** publishGeneration runs by outcome: live, unchanged, failed. */
  publishSeconds: Histogram<"outcome">;
  publishFailures: Counter;
  /**
   * Webhook delivery attempts, for the webhooks engine to count: outcome is `delivered`,
   * `failed` (an error status), `timeout`, `error` (no answer) or `gave_up`.
   */
  webhookDeliveries: Counter<"outcome">;
  webhookDeliverySeconds: Histogram<"outcome">;
  httpRequestSeconds: Histogram<"method" | "route" | "status">;
  /** Wire into EngineDeps.observer. */
  taskObserver: TaskObserver;
  /** Wire into PublishDeps.observePublish. */
  observePublish(this: void, outcome: "live" | "unchanged" | "failed", seconds: number): void;
  /** The text exposition, with its content type. */
  scrape(): Promise<{ contentType: string; body: string }>;
}

// Builds take minutes to hours; queue waits seconds to hours.
const LONG_BUCKETS = [1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400];
const SHORT_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

export function createHubMetrics(db: Db): HubMetrics {
  const registry = new Registry();
  const registers = [registry];
  const taskAttempts = new Counter({
    name: "kiln_task_attempts_total",
    help: "Task attempts that ended, by method and outcome",
    labelNames: ["method", "outcome"] as const,
    registers,
  });
  const taskWaitSeconds = new Histogram({
    name: "kiln_task_wait_seconds",
    help: "Time from runnable to claimed, per attempt",
    labelNames: ["method"] as const,
    buckets: LONG_BUCKETS,
    registers,
  });
  const taskRunSeconds = new Histogram({
    name: "kiln_task_run_seconds",
    help: "Time from claimed to finished, per attempt",
    labelNames: ["method"] as const,
    buckets: LONG_BUCKETS,
    registers,
  });
  const publishSeconds = new Histogram({
    name: "kiln_publish_duration_seconds",
    help: "Time to make and switch a publication generation, by outcome",
    labelNames: ["outcome"] as const,
    buckets: [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600],
    registers,
  });
  const publishFailures = new Counter({
    name: "kiln_publish_failures_total",
    help: "Publication generations that failed",
    registers,
  });
  const webhookDeliveries = new Counter({
    name: "kiln_webhook_deliveries_total",
    help: "Webhook delivery attempts by outcome",
    labelNames: ["outcome"] as const,
    registers,
  });
  const webhookDeliverySeconds = new Histogram({
    name: "kiln_webhook_delivery_duration_seconds",
    help: "Time a webhook receiver took to answer, by outcome",
    labelNames: ["outcome"] as const,
    buckets: SHORT_BUCKETS,
    registers,
  });
  const httpRequestSeconds = new Histogram({
    name: "kiln_http_request_duration_seconds",
    help: "HTTP request durations by method, route pattern and status",
    labelNames: ["method", "route", "status"] as const,
    buckets: SHORT_BUCKETS,
    registers,
  });

  new Gauge({
    name: "kiln_tasks",
    help: "Unfinished tasks by state, arch and channel (waiting parents count as state waiting)",
    labelNames: ["state", "arch", "channel"] as const,
    registers,
    async collect() {
      const rows = await db.kysely
        .selectFrom("tasks")
        .select(["state", "waiting", "arch", "channel", (eb) => eb.fn.countAll<number>().as("n")])
        .where("state", "in", ["free", "assigned", "open"])
        .groupBy(["state", "waiting", "arch", "channel"])
        .execute();
      this.reset();
      for (const r of rows) {
        const state = r.waiting === 1 ? "waiting" : r.state;
        this.inc({ state, arch: r.arch, channel: r.channel }, Number(r.n));
      }
    },
  });

  const hostRows = () =>
    db.kysely
      .selectFrom("hosts")
      .leftJoin(
        (eb) =>
          eb
            .selectFrom("tasks")
            .select(["host_id", (e) => e.fn.sum<number>("weight").as("load")])
            .where("state", "in", ["assigned", "open"])
            .where("host_id", "is not", null)
            .groupBy("host_id")
            .as("l"),
        (join) => join.onRef("l.host_id", "=", "hosts.id"),
      )
      .select([
        "hosts.name",
        "hosts.enabled",
        "hosts.ready",
        "hosts.capacity",
        "hosts.disabled_reason",
        "l.load",
      ])
      .execute();
  new Gauge({
    name: "kiln_hosts",
    help: "Hosts by state: ready, offline, disabled, quarantined",
    labelNames: ["state"] as const,
    registers,
    async collect() {
      const rows = await hostRows();
      this.reset();
      for (const state of ["ready", "offline", "disabled", "quarantined"]) this.set({ state }, 0);
      for (const h of rows) {
        const state =
          h.enabled !== 1
            ? h.disabled_reason?.startsWith("quarantined")
              ? "quarantined"
              : "disabled"
            : h.ready === 1
              ? "ready"
              : "offline";
        this.inc({ state });
      }
    },
  });
  new Gauge({
    name: "kiln_host_load_ratio",
    help: "Weight of the tasks a host runs, over its capacity",
    labelNames: ["host"] as const,
    registers,
    async collect() {
      const rows = await hostRows();
      this.reset();
      for (const h of rows) this.set({ host: h.name }, h.capacity > 0 ? Number(h.load ?? 0) / h.capacity : 0);
    },
  });

  return {
    registry,
    taskAttempts,
    taskWaitSeconds,
    taskRunSeconds,
    publishSeconds,
    publishFailures,
    webhookDeliveries,
    webhookDeliverySeconds,
    httpRequestSeconds,
    taskObserver: {
      attemptEnded(end) {
        taskAttempts.inc({ method: end.method, outcome: end.outcome });
        if (end.waitMs !== null) taskWaitSeconds.observe({ method: end.method }, end.waitMs / 1000);
        if (end.runMs !== null) taskRunSeconds.observe({ method: end.method }, end.runMs / 1000);
      },
    },
    observePublish(outcome, seconds) {
      publishSeconds.observe({ outcome }, seconds);
      if (outcome === "failed") publishFailures.inc();
    },
    async scrape() {
      return { contentType: registry.contentType, body: await registry.metrics() };
    },
  };
}
