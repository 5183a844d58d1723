// The graphile-worker half: the same `sleep 0` workload on graphile-worker 0.17 (PostgreSQL),
// with as many worker processes and as much total concurrency as Kiln gets.
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { makeWorkerUtils, runMigrations } from "graphile-worker";
import { quietLogger } from "./lib/quiet-logger.js";
import { createDatabase, dropDatabase } from "./lib/postgres.js";
import { ProcessGroup, progress, runPool, startCpuMeter, waitFor } from "./lib/processes.js";
import { summarize } from "./lib/stats.js";

const here = path.dirname(fileURLToPath(import.meta.url));

/**
 * Runs `warmup` then `n` jobs through `workers` graphile-worker processes of `concurrency` each,
 * adding jobs from this process with `submitConcurrency` in flight; then `paced.count` jobs one
 * every `paced.gapMs` ms.
 */
export async function runGraphile({
  n,
  warmup,
  paced,
  workers,
  concurrency,
  submitConcurrency,
  tmpDir,
  timeoutMs,
}) {
  const dbName = `kiln_bench_${process.pid}_gw`;
  const group = new ProcessGroup();
  let utils;
  try {
    const connectionString = await createDatabase(dbName);
    progress(`graphile-worker: database ${dbName} created; migrating`);
    await runMigrations({ connectionString, logger: quietLogger });

    const done = new Array(workers).fill(0);
    const reports = new Array(workers).fill(undefined);
    const children = [];
    for (let w = 0; w < workers; w++) {
      const entry = group.spawn(
        `graphile-worker ${w + 1}`,
        path.join(here, "graphile-worker-process.js"),
        [],
        {
          ipc: true,
          logFile: path.join(tmpDir, `graphile-worker-${w + 1}.log`),
          env: { BENCH_GW_DB: connectionString, BENCH_GW_CONCURRENCY: String(concurrency) },
        },
      );
      entry.ready = false;
      entry.child.on("message", (msg) => {
        if (msg.type === "ready") entry.ready = true;
        else if (msg.type === "progress") done[w] = msg.done;
        else if (msg.type === "report") reports[w] = msg.records;
      });
      children.push(entry);
    }
    const deaths = () => {
      const dead = group.deaths();
      if (dead.length > 0) throw new Error(dead.join("; "));
    };
    await waitFor(
      `${workers} graphile-worker processes to start`,
      () => (deaths(), children.every((c) => c.ready)),
      { timeoutMs: 30_000, describe: () => `${children.filter((c) => c.ready).length} ready` },
    );

    utils = await makeWorkerUtils({ connectionString, maxPoolSize: submitConcurrency, logger: quietLogger });
    const totalDone = () => done.reduce((a, b) => a + b, 0);
    // Burst, or paced (`gapMs`): one at a time, a new one every `gapMs`, as on the Kiln side.
    const addJobs = async (count, label, { gapMs } = {}) => {
      const base = totalDone();
      const t0 = Date.now();
      const addOne = () => utils.addJob("sleep0", { submit: Date.now() });
      if (gapMs === undefined) await runPool(count, submitConcurrency, addOne);
      else {
        for (let i = 0; i < count; i++) {
          await addOne();
          await sleep(Math.max(0, t0 + (i + 1) * gapMs - Date.now()));
        }
      }
      const submitSeconds = (Date.now() - t0) / 1000;
      progress(`graphile-worker: ${label}: ${count} jobs added in ${submitSeconds.toFixed(2)} s`);
      await waitFor(`${label} jobs to complete`, () => (deaths(), totalDone() >= base + count), {
        timeoutMs,
        intervalMs: 50,
        describe: () => `${totalDone() - base} of ${count} completed`,
      });
      return submitSeconds;
    };

    if (warmup > 0) await addJobs(warmup, "warm-up");
    const warmDone = done.slice();
    const meter = startCpuMeter({ workers: children.map((c) => c.child.pid) });
    const submitSeconds = await addJobs(n, "measured run");
    const cpu = meter.stop();
    const burstDone = done.slice();
    await addJobs(paced.count, `light load (1 every ${paced.gapMs} ms)`, { gapMs: paced.gapMs });

    for (const c of children) c.child.send({ type: "report" });
    await waitFor("the workers' reports", () => (deaths(), reports.every((r) => r !== undefined)), {
      timeoutMs: 10_000,
    });
    // Each worker's records are in completion order: warm-up, measured run, light load.
    const records = (from, to) => reports.flatMap((r, w) => r.slice(from[w], to?.[w]));
    const burst = records(warmDone, burstDone);
    const light = records(burstDone);
    const failed = [...burst, ...light].filter((r) => r.error);
    if (failed.length > 0) throw new Error(`${failed.length} jobs failed, e.g. ${failed[0].error}`);
    if (burst.length !== n) throw new Error(`expected ${n} job records, got ${burst.length}`);
    if (light.length !== paced.count)
      throw new Error(`expected ${paced.count} light-load records, got ${light.length}`);
    return summarize(burst, { workers, concurrency, submitSeconds, cpu, light: summarize(light) });
  } finally {
    await utils?.release();
    await group.stopAll();
    await dropDatabase(dbName).catch((err) =>
      progress(`graphile-worker: could not drop ${dbName}: ${err.message}`),
    );
  }
}
