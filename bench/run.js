// `npm run bench`: thousands of `sleep 0` tasks through Kiln's real HTTP path (SQLite and
// PostgreSQL) and the same workload on graphile-worker, printed as a Markdown table and written
// to bench/results/latest.md. Progress goes to stderr.
//
// Environment: BENCH_N (measured tasks, default 3000), BENCH_ONLY=kiln|graphile, BENCH_WARMUP
// (default 200), BENCH_WORKERS (default 4), BENCH_CONCURRENCY (per worker, default 4),
// BENCH_SUBMIT_CONCURRENCY (default 16), BENCH_LIGHT_N and BENCH_LIGHT_GAP_MS (the light-load
// latency probe, default 100 tasks one every 50 ms), BENCH_TIMEOUT (seconds per wait for
// completion, default 120), BENCH_DEADLINE (seconds for the whole bench, default 600),
// BENCH_KEEP=1 keeps the logs, BENCH_PROFILE=1 writes V8 CPU profiles of the Kiln hub and workers
// (and keeps them), BENCH_KILN_LOG_LEVEL sets KILN_LOG_LEVEL for the hub.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import { clearTimeout } from "node:timers";
import path from "node:path";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { databaseUrl, dropOwnDatabases } from "./lib/postgres.js";
import { ProcessGroup, progress } from "./lib/processes.js";
import { renderReport } from "./lib/report.js";

const here = path.dirname(fileURLToPath(import.meta.url));

function intEnv(name, fallback, min = 1) {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min) {
    console.error(`bench: ${name} must be an integer ≥ ${min}, not ${JSON.stringify(raw)}`);
    process.exit(2);
  }
  return value;
}

const only = process.env.BENCH_ONLY ?? "";
if (!["", "kiln", "graphile"].includes(only)) {
  console.error(`bench: BENCH_ONLY must be "kiln" or "graphile", not ${JSON.stringify(only)}`);
  process.exit(2);
}
const config = {
  n: intEnv("BENCH_N", 3000),
  warmup: intEnv("BENCH_WARMUP", 200, 0),
  workers: intEnv("BENCH_WORKERS", 4),
  concurrency: intEnv("BENCH_CONCURRENCY", 4),
  submitConcurrency: intEnv("BENCH_SUBMIT_CONCURRENCY", 16),
  timeoutMs: intEnv("BENCH_TIMEOUT", 120) * 1000,
  paced: { count: intEnv("BENCH_LIGHT_N", 100), gapMs: intEnv("BENCH_LIGHT_GAP_MS", 50) },
};
const profile = process.env.BENCH_PROFILE === "1";
const deadlineSeconds = intEnv("BENCH_DEADLINE", 600);
const targets = { p50Ms: 50, sqliteThroughput: 300 };

const tmpDir = mkdtempSync(path.join(os.tmpdir(), "kiln-bench-"));
let failed = false;

async function cleanup() {
  await ProcessGroup.stopEverything();
  await dropOwnDatabases().catch((err) => progress(`could not drop the bench's databases: ${err.message}`));
  if (failed && !process.env.BENCH_KEEP) progress(`logs kept in ${tmpDir} (something failed)`);
  else if (process.env.BENCH_KEEP || profile)
    progress(`logs${profile ? " and CPU profiles" : ""} kept in ${tmpDir}`);
  else rmSync(tmpDir, { recursive: true, force: true });
}

// Every wait has its own timeout; this is the last resort so that the bench always stops by itself.
const watchdog = setTimeout(() => {
  failed = true;
  progress(`the whole bench took longer than ${deadlineSeconds} s (BENCH_DEADLINE); stopping everything`);
  void cleanup().finally(() => process.exit(1));
}, deadlineSeconds * 1000);
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => {
    failed = true;
    progress(`${signal}: stopping`);
    void cleanup().finally(() => process.exit(130));
  });
}

async function postgresVersion() {
  const client = new pg.Client({ connectionString: databaseUrl("postgres"), connectionTimeoutMillis: 5000 });
  try {
    await client.connect();
    const { rows } = await client.query("SHOW server_version");
    return rows[0].server_version.split(" ")[0];
  } catch (err) {
    return `unreachable (${err.message})`;
  } finally {
    await client.end().catch(() => {});
  }
}

const runs = [];
const plan = [];
if (only !== "graphile") {
  plan.push({ key: "sqlite", name: "Kiln (SQLite)" });
  plan.push({ key: "postgres", name: "Kiln (PostgreSQL)" });
}
if (only !== "kiln") plan.push({ key: "graphile", name: "graphile-worker (PostgreSQL)" });

const common = {
  n: config.n,
  warmup: config.warmup,
  paced: config.paced,
  workers: config.workers,
  submitConcurrency: config.submitConcurrency,
  tmpDir,
  timeoutMs: config.timeoutMs,
};
progress(
  `${config.n} tasks (+${config.warmup} warm-up), ${config.workers} workers × ${config.concurrency}, ` +
    `${config.submitConcurrency} submissions in flight, then ${config.paced.count} at light load; temp dir ${tmpDir}`,
);
for (const step of plan) {
  const started = Date.now();
  progress(`${step.name}: starting`);
  try {
    let result;
    if (step.key === "graphile") {
      const { runGraphile } = await import("./graphile.js");
      result = await runGraphile({ ...common, concurrency: config.concurrency });
    } else {
      const { runKiln } = await import("./kiln.js");
      result = await runKiln({ ...common, dialect: step.key, capacity: config.concurrency, profile });
    }
    runs.push({ ...step, result });
    progress(
      `${step.name}: ${result.throughput.toFixed(0)} tasks/s, submit→start p50 ${result.submitToStart.p50} ms, ` +
        `p99 ${result.submitToStart.p99} ms; light load p50 ${result.light.submitToStart.p50} ms (${((Date.now() - started) / 1000).toFixed(1)} s)`,
    );
  } catch (err) {
    failed = true;
    const message = err instanceof Error ? err.message : String(err);
    progress(`${step.name}: FAILED: ${message}`);
    if (err instanceof Error && err.stack) process.stderr.write(`${err.stack}\n`);
    runs.push({ ...step, error: message });
  }
}

const cpus = os.cpus();
const machine = {
  date: new Date().toISOString().slice(0, 16).replace("T", " ") + " UTC",
  cpus: cpus.length,
  cpuModel: cpus[0]?.model.replace(/\s+/g, " ").trim() ?? "unknown CPU",
  node: process.versions.node,
  postgres: await postgresVersion(),
};
const notes = [
  `Workers: ${config.workers} separate worker processes per system, each running ${config.concurrency} tasks at a time ` +
    `(Kiln: hosts of capacity ${config.concurrency}; graphile-worker: \`concurrency: ${config.concurrency}\`), so both ` +
    `have ${config.workers * config.concurrency} slots. On a ${cpus.length}-CPU machine more processes only add ` +
    "contention; this many keeps every slot busy while submissions arrive.",
  `Kiln: \`kiln serve --no-worker\` (default settings${process.env.BENCH_KILN_LOG_LEVEL ? `, KILN_LOG_LEVEL=${process.env.BENCH_KILN_LOG_LEVEL}` : ""}) ` +
    "and `kiln worker` processes; tasks submitted with `POST /api/v1/tasks` (`sleep`, 0 s) by the bench " +
    `with ${config.submitConcurrency} requests in flight, times read back from \`GET /api/v1/tasks\`. ` +
    "SQLite is the hub's default WAL file; PostgreSQL is a fresh database on the local server.",
  "graphile-worker 0.17: `run()` in each worker process with a `sleep0` task that does nothing, default " +
    "options (pollInterval 2 s, but new jobs wake workers with LISTEN/NOTIFY; no local queue, no batching), " +
    `a quiet logger; jobs added from the bench with \`WorkerUtils.addJob\` (${config.submitConcurrency} in flight, ` +
    "a direct database call: graphile-worker has no HTTP API). Fresh database per run.",
  "submit→start: from `Date.now()` in the bench just before the submit call to the start of the task " +
    "(Kiln: the hub's `startedAt`, set when a worker claims the task; graphile-worker: `Date.now()` when the task " +
    "function is entered). All clocks are this machine's. When tasks are submitted faster than they are run, this " +
    "is mostly time spent in the backlog, so it follows from throughput; the light-load columns show the latency " +
    "of an idle queue.",
  "Throughput: measured tasks ÷ (last completion − first submission), so submission is part of it; completion is " +
    "Kiln's `completedAt` and, for graphile-worker, the `job:complete` event (after the job's row was deleted).",
  `The first ${config.warmup} tasks of each system are a warm-up (JIT, connection pools) and are not measured. ` +
    "Systems run one after another on the same machine, in the order listed.",
  "CPU is read from /proc around the measured run: the hub process, the worker processes, every `postgres` " +
    "process on the machine (so PostgreSQL work of anything else running then is counted too), and the bench " +
    "process (which submits, and for graphile-worker runs the addJob pool).",
];
const markdown = renderReport({ runs, config: { ...config, notes }, targets, machine });

mkdirSync(path.join(here, "results"), { recursive: true });
writeFileSync(path.join(here, "results", "latest.md"), markdown);
process.stdout.write(markdown);
progress("wrote bench/results/latest.md");
clearTimeout(watchdog);
await cleanup();
process.exit(failed ? 1 : 0);
