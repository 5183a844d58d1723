import { fork, spawn } from "node:child_process";
import { openSync, closeSync, readFileSync, readdirSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";

/** Writes a progress line to stderr (stdout carries only the table). */
export function progress(message) {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 23)}] ${message}\n`);
}

export class TimeoutError extends Error {}

/**
 * Polls `check` until it returns a truthy value, every `intervalMs`, for at most `timeoutMs`.
 * On timeout throws a TimeoutError whose message says what was awaited and, via `describe`, where it stood.
 */
export async function waitFor(what, check, { timeoutMs, intervalMs = 100, describe } = {}) {
  const deadline = Date.now() + timeoutMs;
  let lastError;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
      lastError = undefined;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) {
      let state = "";
      if (describe) {
        try {
          state = `; ${await describe()}`;
        } catch (err) {
          state = `; (could not describe state: ${err.message})`;
        }
      }
      const cause = lastError ? `; last error: ${lastError.message}` : "";
      throw new TimeoutError(
        `timed out after ${Math.round(timeoutMs / 1000)} s waiting for ${what}${state}${cause}`,
      );
    }
    await sleep(intervalMs);
  }
}

/** Runs `fn(i)` for i in 0..n-1 with at most `concurrency` calls in flight; rejects on the first error. */
export async function runPool(n, concurrency, fn) {
  let next = 0;
  const lanes = Array.from({ length: Math.min(concurrency, n) }, async () => {
    while (next < n) {
      const i = next++;
      await fn(i);
    }
  });
  await Promise.all(lanes);
}

/**
 * Children started by the bench, so that every exit path stops them. Each child's output goes to a
 * log file, not to the bench's own stdout.
 */
export class ProcessGroup {
  /** Every group with live children, so that a watchdog or Ctrl-C can stop them all. */
  static live = new Set();

  constructor() {
    this.children = [];
  }

  static async stopEverything() {
    await Promise.all([...ProcessGroup.live].map((g) => g.stopAll(2000)));
  }

  /** Starts `cmd args`; with `ipc`, `cmd` is a Node module run by fork() with an IPC channel. */
  spawn(name, cmd, args, { logFile, env, ipc = false }) {
    const fd = openSync(logFile, "a");
    const options = { stdio: ["ignore", fd, fd, ...(ipc ? ["ipc"] : [])], env: { ...process.env, ...env } };
    const child = ipc ? fork(cmd, args, options) : spawn(cmd, args, options);
    closeSync(fd);
    const entry = { name, child, logFile, exited: false, exitCode: null, signal: null };
    child.on("exit", (code, signal) => {
      entry.exited = true;
      entry.exitCode = code;
      entry.signal = signal;
    });
    child.on("error", (err) => {
      entry.exited = true;
      entry.error = err;
    });
    this.children.push(entry);
    ProcessGroup.live.add(this);
    return entry;
  }

  /** Names of children that have exited, with how, for error messages. */
  deaths() {
    return this.children
      .filter((c) => c.exited)
      .map(
        (c) => `${c.name} exited (${c.error?.message ?? c.signal ?? `code ${c.exitCode}`}; log ${c.logFile})`,
      );
  }

  /** SIGTERM to every live child, SIGKILL to those still alive after `graceMs`. */
  async stopAll(graceMs = 5000) {
    const live = this.children.filter((c) => !c.exited);
    for (const c of live) c.child.kill("SIGTERM");
    const deadline = Date.now() + graceMs;
    while (live.some((c) => !c.exited) && Date.now() < deadline) await sleep(50);
    for (const c of live.filter((c) => !c.exited)) {
      progress(`${c.name} (pid ${c.child.pid}) ignored SIGTERM for ${graceMs} ms; sending SIGKILL`);
      c.child.kill("SIGKILL");
    }
    const killDeadline = Date.now() + 2000;
    while (live.some((c) => !c.exited) && Date.now() < killDeadline) await sleep(50);
    this.children = [];
    ProcessGroup.live.delete(this);
  }
}

const CLOCK_TICKS = 100; // USER_HZ on Linux

/** CPU seconds (user + system) a process has used so far, or 0 when it is gone. */
export function cpuSeconds(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
  } catch {
    return 0;
  }
}

/** CPU seconds per live process whose command name is `comm` (e.g. every PostgreSQL backend). */
export function cpuByCommand(comm) {
  const out = new Map();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/comm`, "utf8").trim() === comm) out.set(entry, cpuSeconds(entry));
    } catch {
      // The process ended between readdir and read.
    }
  }
  return out;
}

/** CPU seconds used by `comm` processes between two cpuByCommand() snapshots (new processes count from 0). */
export function cpuDelta(before, after) {
  let total = 0;
  for (const [pid, seconds] of after) total += seconds - (before.get(pid) ?? 0);
  return total;
}

/** Busy and total jiffies of the whole machine, from /proc/stat. */
export function machineTicks() {
  const line = readFileSync("/proc/stat", "utf8").split("\n")[0];
  const values = line.trim().split(/\s+/).slice(1).map(Number);
  const total = values.reduce((a, b) => a + b, 0);
  const idle = (values[3] ?? 0) + (values[4] ?? 0);
  return { busy: total - idle, total };
}

/**
 * Samples CPU use between start() and stop(): of the given child pids (`pids` maps a label such
 * as "hub" or "workers" to a list of pids), of every PostgreSQL process, of the bench itself, and
 * of the whole machine, so that CPU taken by unrelated processes shows up as `other`.
 */
export function startCpuMeter(pids) {
  const sum = (list) => list.reduce((a, pid) => a + cpuSeconds(pid), 0);
  const before = {
    machine: machineTicks(),
    postgres: cpuByCommand("postgres"),
    bench: process.cpuUsage(),
    labels: Object.fromEntries(Object.entries(pids).map(([k, list]) => [k, sum(list)])),
  };
  return {
    stop() {
      const machine = machineTicks();
      const bench = process.cpuUsage(before.bench);
      const out = {
        machine: (machine.busy - before.machine.busy) / CLOCK_TICKS,
        machineBusy: (machine.busy - before.machine.busy) / Math.max(1, machine.total - before.machine.total),
        postgres: cpuDelta(before.postgres, cpuByCommand("postgres")),
        bench: (bench.user + bench.system) / 1e6,
      };
      for (const [label, list] of Object.entries(pids)) out[label] = sum(list) - before.labels[label];
      const ours = out.postgres + out.bench + Object.keys(pids).reduce((a, label) => a + out[label], 0);
      out.other = Math.max(0, out.machine - ours);
      return out;
    },
  };
}
