/**
 * Making a pool's directories and hard links in worker threads. A first publish of a large repo
 * makes one directory per source package; mkdir(2) is slow on ext4 (an inode and a directory
 * block each, and on a file system without a journal a scan past every recently deleted inode
 * of the group), and through libuv's four-thread pool the calls queue behind each other and in
 * front of the publish's own gzip and file writes. Here plain synchronous calls run in threads
 * of their own, one parent directory per batch (mkdirs in one directory take its lock in turn,
 * so a thread per parent never waits for another), while the hub's own thread makes the indexes.
 */
import fs from "node:fs";
import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";

/** One parent directory's share of a pool: the directories to make in it, then the links. */
export interface PoolBatch {
  /** Made (with its own parents) when missing. */
  parent: string;
  /** Names of directories to have in `parent`; only the missing ones are made. */
  dirs: string[];
  /** [existing file, new path] pairs, the new path in one of `dirs`. */
  links: [from: string, to: string][];
}

export interface PoolBatchResult {
  linked: number;
  /** New paths not linked: something is there already (EEXIST), or the file or directory is missing (ENOENT). */
  clashes: string[];
}

/** Below this many links a thread's start (tens of milliseconds) costs more than it saves. */
const LINKS_PER_WORKER = 1000;
/** Two threads: more make the kernel's inode allocation contend with itself. */
const MAX_WORKERS = 2;

/**
 * Runs `batches` in up to `workers` threads (default: two for a large pool, none for a small
 * one). Without threads they run here, a batch at a time between turns of the event loop. The
 * threads start before this returns, so the caller's synchronous work that follows runs beside
 * them. Errors other than EEXIST and ENOENT of a link reject, with the errno code of the call.
 */
export async function runPoolBatches(
  batches: readonly PoolBatch[],
  opts: { workers?: number } = {},
): Promise<PoolBatchResult> {
  const links = batches.reduce((n, b) => n + b.links.length, 0);
  const workers = Math.min(
    opts.workers ?? Math.min(MAX_WORKERS, availableParallelism(), Math.floor(links / LINKS_PER_WORKER)),
    batches.length,
  );
  const results =
    workers > 0 ? await Promise.all(shareOut(batches, workers).map(runInWorker)) : await runHere(batches);
  return {
    linked: results.reduce((n, r) => n + r.linked, 0),
    clashes: results.flatMap((r) => r.clashes),
  };
}

async function runHere(batches: readonly PoolBatch[]): Promise<PoolBatchResult[]> {
  const results: PoolBatchResult[] = [];
  for (const batch of batches) {
    await new Promise<void>((resolve) => setImmediate(resolve));
    results.push(applyPoolBatches([batch], fs));
  }
  return results;
}

/** Batches dealt out to `n` threads, largest first to the least loaded, so they finish together. */
function shareOut(batches: readonly PoolBatch[], n: number): PoolBatch[][] {
  const shares = Array.from({ length: n }, () => ({ load: 0, batches: [] as PoolBatch[] }));
  const size = (b: PoolBatch) => b.dirs.length + b.links.length;
  for (const batch of [...batches].sort((a, b) => size(b) - size(a))) {
    const least = shares.reduce((a, b) => (b.load < a.load ? b : a));
    least.batches.push(batch);
    least.load += size(batch);
  }
  return shares.map((s) => s.batches).filter((s) => s.length > 0);
}

/**
 * The work itself, synchronous. It runs both here and, as its source text, in the threads (see
 * WORKER_SOURCE): it must use nothing but its arguments.
 */
function applyPoolBatches(
  batches: readonly PoolBatch[],
  fs: Pick<typeof import("node:fs"), "mkdirSync" | "readdirSync" | "linkSync">,
): PoolBatchResult {
  let linked = 0;
  const clashes: string[] = [];
  for (const batch of batches) {
    // Listed once, so that only missing directories are made: a failed mkdir() costs as much.
    fs.mkdirSync(batch.parent, { recursive: true });
    const there = new Set(fs.readdirSync(batch.parent));
    for (const name of batch.dirs) {
      if (there.has(name)) continue;
      try {
        fs.mkdirSync(`${batch.parent}/${name}`);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      }
    }
    for (const [from, to] of batch.links) {
      try {
        fs.linkSync(from, to);
        linked++;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== "EEXIST" && code !== "ENOENT") throw err;
        clashes.push(to);
      }
    }
  }
  return { linked, clashes };
}

const WORKER_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
const applyPoolBatches = ${applyPoolBatches.toString()};
try {
  parentPort.postMessage({ ok: applyPoolBatches(workerData, require("node:fs")) });
} catch (err) {
  parentPort.postMessage({ error: { message: String(err && err.message), code: err && err.code } });
}
`;

function runInWorker(batches: PoolBatch[]): Promise<PoolBatchResult> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: batches });
    let settled = false;
    worker.once("message", (msg: { ok?: PoolBatchResult; error?: { message: string; code?: string } }) => {
      settled = true;
      if (msg.ok) resolve(msg.ok);
      else {
        const err = new Error(msg.error?.message ?? "a pool worker failed");
        reject(Object.assign(err, { code: msg.error?.code }));
      }
    });
    worker.once("error", (err) => {
      settled = true;
      reject(err);
    });
    worker.once("exit", (code) => {
      if (!settled) reject(new Error(`a pool worker exited (${code}) without an answer`));
    });
  });
}
