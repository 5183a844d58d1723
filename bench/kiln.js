// The Kiln half: a real hub (`kiln serve --no-worker`) and separate `kiln worker` processes,
// tasks submitted and read back over the HTTP API.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";
import { KilnClient } from "../dist/client/client.js";
import { createDatabase, dropDatabase } from "./lib/postgres.js";
import { freePort } from "./lib/kiln-hub.js";
import { ProcessGroup, progress, runPool, startCpuMeter, waitFor } from "./lib/processes.js";
import { summarize } from "./lib/stats.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const KILN = path.join(here, "..", "bin", "kiln.js");

/** Pages through GET /api/v1/tasks (newest first) until ids drop below `minId`. */
async function listTasksSince(client, state, minId) {
  const out = [];
  let before;
  for (;;) {
    const page = await client.listTasks({ state, limit: 1000, ...(before !== undefined ? { before } : {}) });
    for (const t of page.tasks) if (t.id >= minId) out.push(t);
    const last = page.tasks[page.tasks.length - 1];
    if (page.next === null || !last || last.id < minId) return out;
    before = page.next;
  }
}

/** Counts tasks by state (for progress and for saying where things stood when a wait times out). */
async function countStates(client, minId) {
  const counts = {};
  for (const state of ["free", "assigned", "open", "closed", "failed", "canceled"]) {
    counts[state] = (await listTasksSince(client, state, minId)).length;
  }
  return counts;
}

/**
 * Runs `warmup` then `n` `sleep 0` tasks through a hub on `dialect` ("sqlite" or "postgres") and
 * `workers` worker processes of `capacity` each, submitting with `submitConcurrency` requests in flight;
 * then `paced.count` tasks one every `paced.gapMs` ms, for the latency of a lightly loaded queue.
 */
export async function runKiln({
  dialect,
  n,
  warmup,
  workers,
  capacity,
  submitConcurrency,
  tmpDir,
  timeoutMs,
  paced,
  profile,
}) {
  const label = `Kiln (${dialect === "sqlite" ? "SQLite" : "PostgreSQL"})`;
  const dir = path.join(tmpDir, `kiln-${dialect}`);
  const dataDir = path.join(dir, "data");
  mkdirSync(dataDir, { recursive: true });
  const dbName = `kiln_bench_${process.pid}_${dialect === "postgres" ? "kiln" : "unused"}`;
  // Workers stop before the hub, so that they can hand back what they hold.
  const hubGroup = new ProcessGroup();
  const workerGroup = new ProcessGroup();
  const deaths = () => {
    const dead = [...hubGroup.deaths(), ...workerGroup.deaths()];
    if (dead.length > 0) throw new Error(dead.join("; "));
  };
  try {
    const dbArgs = dialect === "postgres" ? ["--db", await createDatabase(dbName)] : [];
    const port = await freePort();
    const hubUrl = `http://127.0.0.1:${port}`;
    const logLevel = process.env.BENCH_KILN_LOG_LEVEL;
    // With BENCH_PROFILE=1 every Kiln process writes a V8 CPU profile when it exits.
    const node = (script) =>
      profile ? ["--cpu-prof", "--cpu-prof-dir", path.join(dir, "profiles"), script] : [script];
    const hub = hubGroup.spawn(
      `${label} hub`,
      process.execPath,
      [...node(KILN), "serve", "--data", dataDir, "--listen", `127.0.0.1:${port}`, "--no-worker", ...dbArgs],
      { logFile: path.join(dir, "hub.log"), env: logLevel ? { KILN_LOG_LEVEL: logLevel } : {} },
    );
    progress(`${label}: hub starting on ${hubUrl} (pid ${hub.child.pid}, log ${hub.logFile})`);
    const anonymous = new KilnClient({ hub: hubUrl, timeoutMs: 2000 });
    await waitFor(
      `the ${label} hub to answer /healthz`,
      async () => (deaths(), (await anonymous.raw("GET", "/healthz")).ok),
      {
        timeoutMs: 30_000,
      },
    );
    const adminToken = readFileSync(path.join(dataDir, "admin-token"), "utf8").trim();
    const admin = new KilnClient({ hub: hubUrl, token: adminToken, timeoutMs: 30_000 });

    const workerPids = [];
    for (let w = 0; w < workers; w++) {
      const name = `bench-${w + 1}`;
      const { token } = await admin.addHost({ name, arches: ["amd64"], channels: ["default"], capacity });
      const workDir = path.join(dir, `work-${w + 1}`);
      mkdirSync(workDir, { recursive: true });
      const worker = workerGroup.spawn(
        `${label} worker ${name}`,
        process.execPath,
        [...node(KILN), "worker", "--hub", hubUrl, "--token", token, "--work-dir", workDir],
        { logFile: path.join(dir, `worker-${w + 1}.log`) },
      );
      workerPids.push(worker.child.pid);
    }
    await waitFor(
      `${workers} ${label} workers to report ready`,
      async () => (
        deaths(),
        (await admin.listHosts()).filter((h) => h.name.startsWith("bench-") && h.ready).length === workers
      ),
      {
        timeoutMs: 30_000,
        intervalMs: 200,
        describe: async () =>
          (await admin.listHosts()).map((h) => `${h.name}: ${h.ready ? "ready" : "not ready"}`).join(", "),
      },
    );
    progress(`${label}: ${workers} workers ready (capacity ${capacity} each)`);

    // Burst: `count` tasks as fast as `submitConcurrency` requests in flight allow.
    // Paced (`gapMs`): one at a time, a new one every `gapMs`, to see latency without a backlog.
    const submit = async (count, what, { gapMs } = {}) => {
      const submitted = new Map();
      const t0 = Date.now();
      const createOne = async () => {
        const at = Date.now();
        const task = await admin.createTask({ method: "sleep", args: { seconds: 0 } });
        submitted.set(task.id, at);
      };
      if (gapMs === undefined) await runPool(count, submitConcurrency, createOne);
      else {
        for (let i = 0; i < count; i++) {
          await createOne();
          await sleep(Math.max(0, t0 + (i + 1) * gapMs - Date.now()));
        }
      }
      const submitSeconds = (Date.now() - t0) / 1000;
      progress(`${label}: ${what}: ${count} tasks submitted in ${submitSeconds.toFixed(2)} s`);
      const minId = Math.min(...submitted.keys());
      let lastReport = Date.now();
      await waitFor(
        `${what} tasks to finish`,
        async () => {
          deaths();
          const pending = await admin.listTasks({ state: "free,assigned,open", limit: 1 });
          if (pending.tasks.length === 0) return true;
          if (Date.now() - lastReport > 5000) {
            lastReport = Date.now();
            progress(`${label}: ${what}: still waiting; newest unfinished task is ${pending.tasks[0].id}`);
          }
          return false;
        },
        {
          timeoutMs,
          intervalMs: 100,
          describe: async () => `tasks by state: ${JSON.stringify(await countStates(admin, minId))}`,
        },
      );
      return { records: await readRecords(admin, submitted, minId), submitSeconds };
    };

    if (warmup > 0) await submit(warmup, "warm-up");
    const meter = startCpuMeter({ hub: [hub.child.pid], workers: workerPids });
    const burst = await submit(n, "measured run");
    const cpu = meter.stop();
    writeFileSync(path.join(dir, "records.json"), JSON.stringify(burst.records));
    const light = await submit(paced.count, `light load (1 every ${paced.gapMs} ms)`, { gapMs: paced.gapMs });
    return summarize(burst.records, {
      workers,
      concurrency: capacity,
      submitSeconds: burst.submitSeconds,
      cpu,
      light: summarize(light.records),
    });
  } finally {
    await workerGroup.stopAll();
    await hubGroup.stopAll();
    if (dialect === "postgres") {
      await dropDatabase(dbName).catch((err) =>
        progress(`${label}: could not drop ${dbName}: ${err.message}`),
      );
    }
  }
}

/** The finished tasks among `submitted` (id → submit time), as timing records; throws if any failed. */
async function readRecords(admin, submitted, minId) {
  const finished = (await listTasksSince(admin, "closed,failed,canceled", minId)).filter((t) =>
    submitted.has(t.id),
  );
  const bad = finished.filter((t) => t.state !== "closed");
  if (bad.length > 0) {
    const t = bad[0];
    throw new Error(
      `${bad.length} tasks did not close, e.g. task ${t.id} ${t.state}: ${JSON.stringify(t.error)}`,
    );
  }
  if (finished.length !== submitted.size) {
    throw new Error(`expected ${submitted.size} closed tasks, found ${finished.length}`);
  }
  return finished.map((t) => ({
    submit: submitted.get(t.id),
    created: Date.parse(t.createdAt),
    start: Date.parse(t.startedAt),
    done: Date.parse(t.completedAt),
  }));
}
