// One graphile-worker process for the benchmark, started by bench/graphile.js with fork().
// It runs the `sleep0` task (which does nothing), notes when each job started and when its
// completion was written back, and hands the records to the parent over IPC when asked.
import { setInterval, clearInterval } from "node:timers";
import { run } from "graphile-worker";
import { quietLogger as logger } from "./lib/quiet-logger.js";

const connectionString = process.env.BENCH_GW_DB;
const concurrency = Number(process.env.BENCH_GW_CONCURRENCY ?? "4");

const started = new Map();
const records = [];

const runner = await run({
  connectionString,
  concurrency,
  noHandleSignals: true,
  logger,
  taskList: {
    sleep0: (payload, helpers) => {
      started.set(helpers.job.id, {
        submit: payload.submit,
        created: helpers.job.created_at.getTime(),
        start: Date.now(),
      });
    },
  },
});

runner.events.on("job:complete", ({ job, error }) => {
  const record = started.get(job.id);
  if (!record) return;
  started.delete(job.id);
  records.push({ ...record, done: Date.now(), error: error ? String(error) : undefined });
});

let reported = -1;
const ticker = setInterval(() => {
  if (records.length !== reported) {
    reported = records.length;
    process.send({ type: "progress", done: records.length });
  }
}, 200);

process.on("message", (msg) => {
  if (msg.type === "report") process.send({ type: "report", records });
});

let stopping = false;
process.on("SIGTERM", () => {
  if (stopping) return;
  stopping = true;
  clearInterval(ticker);
  runner
    .stop()
    .then(() => process.exit(0))
    .catch((err) => {
      process.stderr.write(`stop failed: ${err}\n`);
      process.exit(1);
    });
});

process.send({ type: "ready" });
