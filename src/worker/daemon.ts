import { mkdirSync, rmSync } from "node:fs";
import { mkdir, readdir, rm } from "node:fs/promises";
import path from "node:path";
import type { Logger } from "pino";
import type { KilnClient } from "../client/client.js";
import type { ClaimedTask, LeaseStatus } from "../client/types.js";
import { KilnError } from "../errors/catalogue.js";
import { unmountUnder } from "./buildroot-mount.js";
import { TaskFailure, type HandlerMap, type TaskContext } from "./handler.js";
import { LogStream } from "./log-stream.js";
import {
  delay,
  describeError,
  isAuthError,
  isLeaseLost,
  isTransientHubError,
  retryDelayMs,
} from "./retry.js";

export interface WorkerOptions {
  client: KilnClient;
  handlers: HandlerMap;
  /** Each attempt gets `<workDir>/task-<id>-<epoch>`; one worker per directory. */
  workDir: string;
  log: Logger;
  capabilities: string[];
  version: string;
  arches?: string[];
  /** Seconds between SIGTERM and SIGKILL when a job is stopped. */
  killGrace?: number;
  /** Seconds each claim long-polls. */
  claimWait?: number;
  /** Seconds stop() lets running tasks finish before handing them back. */
  shutdownGrace?: number;
}

type FailReport = {
  code: string;
  message: string;
  infra?: boolean;
  exitCode?: number | null;
  signal?: string | null;
};

/** Why a runner was stopped: what the hub said on a heartbeat, or this worker shutting down. */
type StopReason = Exclude<LeaseStatus, "ok"> | "shutdown";

interface Runner {
  id: number;
  epoch: number;
  weight: number;
  method: string;
  controller: AbortController;
  reason: StopReason | undefined;
  /** Set once the hub has (or no longer needs) this attempt's outcome. */
  settled: boolean;
  /** Set once the hub took the outcome through complete or fail (freeing the slot there). */
  reported: boolean;
  done: Promise<void>;
  log: Logger;
}

type Outcome =
  { kind: "complete"; result: unknown } | { kind: "fail"; error: FailReport } | { kind: "suspend" };

const MAX_MESSAGE = 60_000;
/** Most tasks asked for in one claim (the hub hands out at most 64). */
const MAX_CLAIM = 16;
/** Codes with which the hub refuses a log chunk, not the call that carried it. */
const LOG_REFUSALS = new Set(["LOG_GAP", "LOG_TOO_LARGE"]);
/** Extra seconds past the kill grace that stop() waits for killed jobs before releasing them anyway. */
const KILL_SLACK = 5;
/** How long stop() keeps trying to hand a task back to an unreachable hub. */
const RELEASE_DEADLINE_MS = 5_000;
/** With no capacity at all (capacity 0), how often to ask the hub again. */
const IDLE_REHELLO_MS = 30_000;

/**
 * The worker daemon: says hello, claims tasks up to the host's capacity, runs each through its
 * handler in a fresh directory, keeps the leases alive with heartbeats, and reports outcomes.
 * While the hub is down, running tasks keep running and every call is retried with backoff.
 */
export class Worker {
  private readonly client: KilnClient;
  private readonly handlers: HandlerMap;
  private readonly workDir: string;
  private readonly log: Logger;
  private readonly capabilities: string[];
  private readonly version: string;
  private readonly arches: string[] | undefined;
  private readonly killGrace: number;
  private readonly claimWait: number;
  private readonly shutdownGrace: number;

  private readonly runners = new Map<string, Runner>();
  private capacity = 1;
  private heartbeatMs = 30_000;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private heartbeating: Promise<void> | undefined;
  private heartbeatStopped = false;
  private needHello = false;
  private stopping = false;
  private readonly stopController = new AbortController();
  private readonly hurryController = new AbortController();
  private started = false;
  private loop: Promise<void> | undefined;
  private stopped: Promise<void> | undefined;
  private fatal: Error | undefined;
  private wake: (() => void) | undefined;
  /** Withdraws the claim in flight if it was sent while full. */
  private fullClaim: AbortController | undefined;

  constructor(opts: WorkerOptions) {
    this.client = opts.client;
    this.handlers = opts.handlers;
    this.workDir = path.resolve(opts.workDir);
    this.log = opts.log;
    this.capabilities = opts.capabilities;
    this.version = opts.version;
    this.arches = opts.arches;
    this.killGrace = opts.killGrace ?? 10;
    this.claimWait = opts.claimWait ?? 30;
    this.shutdownGrace = opts.shutdownGrace ?? 10;
  }

  /** The attempts this worker holds (what it quotes in heartbeats and hello). */
  get running(): { id: number; epoch: number }[] {
    return [...this.runners.values()]
      .filter((r) => !r.settled && (r.reason === undefined || r.reason === "shutdown"))
      .map((r) => ({ id: r.id, epoch: r.epoch }));
  }

  /**
   * Says hello (retrying while the hub is unreachable), then starts claiming and heartbeating.
   * Rejects if the hub refuses the token.
   */
  async start(): Promise<void> {
    if (this.started || this.stopping) return;
    this.started = true;
    await mkdir(this.workDir, { recursive: true });
    await this.removeLeftovers();
    await this.hello();
    if (this.stopping) return;
    this.log.info(
      { hub: this.client.hub, capacity: this.capacity, heartbeatInterval: this.heartbeatMs / 1000 },
      "worker ready",
    );
    this.scheduleHeartbeat();
    this.loop = this.claimLoop().catch((err: unknown) => {
      this.fatal = err instanceof Error ? err : new Error(String(err));
      this.log.error({ err }, "worker cannot go on");
      void this.stop().catch((e: unknown) => this.log.error({ err: e }, "stop failed"));
    });
  }

  /** Resolves once the worker has stopped; rejects if it stopped because the hub refused it. */
  async wait(): Promise<void> {
    await this.loop;
    await this.stopped;
    if (this.fatal) throw this.fatal;
  }

  /**
   * Stops claiming, gives running tasks `shutdownGrace` seconds to finish, then kills the rest
   * and hands them back to the hub (no failure counted). `now` skips the grace. Idempotent.
   */
  stop(opts: { now?: boolean } = {}): Promise<void> {
    if (opts.now) this.hurryController.abort();
    this.stopped ??= this.shutdown();
    return this.stopped;
  }

  private async shutdown(): Promise<void> {
    this.stopping = true;
    this.stopController.abort();
    this.wake?.();
    await this.loop;
    if (this.runners.size > 0) {
      this.log.info(
        { tasks: this.running, grace: this.shutdownGrace },
        "waiting for running tasks to finish",
      );
      await this.waitForRunners(this.shutdownGrace * 1000, this.hurryController.signal);
    }
    const rest = [...this.runners.values()];
    if (rest.length > 0) {
      for (const r of rest) {
        r.reason ??= "shutdown";
        r.log.info("stopping task for shutdown");
        r.controller.abort();
      }
      await this.waitForRunners((this.killGrace + KILL_SLACK) * 1000);
      // A handler that ignores its abort signal: hand the task back all the same.
      await Promise.all(
        [...this.runners.values()]
          .filter((r) => r.reason === "shutdown" && !r.settled)
          .map((r) => this.release(r)),
      );
    }
    this.heartbeatStopped = true;
    if (this.heartbeatTimer) clearTimeout(this.heartbeatTimer);
    this.heartbeatTimer = undefined;
    await this.heartbeating;
    this.log.info("worker stopped");
  }

  /** Waits until no task runs, at most `ms` (or until `cut` aborts). */
  private async waitForRunners(ms: number, cut?: AbortSignal): Promise<void> {
    if (this.runners.size === 0) return;
    await Promise.race([Promise.all([...this.runners.values()].map((r) => r.done)), delay(ms, cut)]);
  }

  private async removeLeftovers(): Promise<void> {
    // A build root a crash left mounted must be unmounted before its directory is removed.
    await unmountUnder(this.workDir);
    for (const entry of await readdir(this.workDir)) {
      if (!/^task-\d+-\d+(\.root)?$/.test(entry)) continue;
      this.log.info({ dir: entry }, "removing a directory left by an earlier run");
      await rm(path.join(this.workDir, entry), { recursive: true, force: true });
    }
  }

  // --- hub session -----------------------------------------------------------------------

  private async hello(): Promise<void> {
    for (let attempt = 1; !this.stopping; attempt++) {
      try {
        const res = await this.client.hello({
          running: this.running,
          capabilities: this.capabilities,
          version: this.version,
          ...(this.arches ? { arches: this.arches } : {}),
        });
        this.capacity = res.host.capacity;
        const ms = Math.max(1, res.heartbeatInterval) * 1000;
        if (ms !== this.heartbeatMs) {
          this.heartbeatMs = ms;
          if (this.heartbeatTimer) this.scheduleHeartbeat();
        }
        if (res.requeued.length > 0)
          this.log.warn({ requeued: res.requeued }, "the hub requeued tasks it thought lost");
        if (attempt > 1) this.log.info("hub reachable again");
        this.needHello = false;
        return;
      } catch (err) {
        if (!isTransientHubError(err)) throw err;
        if (attempt === 1) this.log.warn({ err: describeError(err) }, "hub unreachable; retrying");
        await delay(retryDelayMs(attempt), this.stopController.signal);
      }
    }
  }

  private async claimLoop(): Promise<void> {
    let failures = 0;
    while (!this.stopping) {
      if (this.needHello) {
        try {
          await this.hello();
        } catch (err) {
          if (isAuthError(err)) throw err;
          failures++;
          this.log.error({ err: describeError(err) }, "hello refused; trying again");
          await delay(retryDelayMs(failures), this.stopController.signal);
        }
        continue;
      }
      if (this.load() >= this.capacity && this.runners.size === 0) {
        // With capacity 0 nothing will ever finish here: ask again for the host's capacity.
        await this.waitForChange(IDLE_REHELLO_MS);
        this.needHello = true;
        continue;
      }
      // Even when full, a claim waits at the hub: the hub hands out nothing beyond the host's
      // capacity, and the moment a task here finishes it answers with the next one, so a slot
      // does not sit idle for a claim's round trip.
      let claimed: (ClaimedTask & { more?: ClaimedTask[] }) | undefined;
      // A claim sent while full is answered only when one of our tasks ends by our own report;
      // if one ends otherwise (killed, suspended), it is withdrawn and sent again.
      const full = this.load() >= this.capacity ? new AbortController() : undefined;
      this.fullClaim = full;
      try {
        // Up to a full host's worth: the hub hands out only what fits its capacity then.
        const max = Math.min(MAX_CLAIM, Math.max(1, Math.floor(this.capacity)));
        const signal = full
          ? AbortSignal.any([this.stopController.signal, full.signal])
          : this.stopController.signal;
        claimed = await this.client.claim(this.claimWait, signal, "me", max);
        failures = 0;
      } catch (err) {
        if (this.stopping) break;
        if (full?.signal.aborted) continue;
        if (isAuthError(err)) throw err;
        failures++;
        if (isTransientHubError(err)) this.needHello = true;
        if (failures === 1) this.log.warn({ err: describeError(err) }, "claim failed; retrying");
        await delay(retryDelayMs(failures), this.stopController.signal);
        continue;
      } finally {
        this.fullClaim = undefined;
      }
      if (!claimed) continue;
      const all = [claimed, ...(claimed.more ?? [])];
      if (this.stopping) {
        // Claimed as we were told to stop: give them straight back.
        await Promise.all(all.map((c) => this.releaseClaimed(c)));
        break;
      }
      for (const c of all) this.launch({ task: c.task, epoch: c.epoch });
    }
  }

  private load(): number {
    let sum = 0;
    for (const r of this.runners.values()) sum += r.weight;
    return sum;
  }

  /** Resolves when a task ends, the worker stops, or after `ms`. */
  private waitForChange(ms?: number): Promise<void> {
    return new Promise((resolve) => {
      const stop = this.stopController.signal;
      const timer = ms === undefined ? undefined : setTimeout(() => done(), ms);
      const done = () => {
        if (timer) clearTimeout(timer);
        stop.removeEventListener("abort", done);
        this.wake = undefined;
        resolve();
      };
      this.wake = done;
      if (stop.aborted) done();
      else stop.addEventListener("abort", done, { once: true });
    });
  }

  private scheduleHeartbeat(): void {
    if (this.heartbeatTimer) clearTimeout(this.heartbeatTimer);
    if (this.heartbeatStopped) return;
    this.heartbeatTimer = setTimeout(() => {
      this.heartbeatTimer = undefined;
      this.heartbeating = this.heartbeat().finally(() => {
        this.heartbeating = undefined;
        if (!this.heartbeatStopped) this.scheduleHeartbeat();
      });
    }, this.heartbeatMs);
  }

  /** Extends the leases; kills what the hub says is no longer ours. Never rejects. */
  private async heartbeat(): Promise<void> {
    const sent = this.running;
    let answer: { id: number; status: LeaseStatus }[];
    try {
      answer = (await this.client.heartbeat(sent)).tasks;
    } catch (err) {
      if (isTransientHubError(err)) this.needHello = true;
      this.log.warn({ err: describeError(err), tasks: sent.length }, "heartbeat failed; tasks keep running");
      return;
    }
    answer.forEach((entry, i) => {
      if (entry.status === "ok") return;
      const quoted = sent[i]?.id === entry.id ? sent[i] : sent.find((s) => s.id === entry.id);
      const runner = quoted && this.runners.get(key(quoted.id, quoted.epoch));
      if (!runner || runner.settled || runner.reason !== undefined) return;
      runner.reason = entry.status;
      runner.log.info({ status: entry.status }, "hub says the task is no longer ours; killing it");
      runner.controller.abort();
    });
  }

  // --- runners ---------------------------------------------------------------------------

  private launch({ task, epoch }: ClaimedTask): void {
    const runner: Runner = {
      id: task.id,
      epoch,
      weight: task.weight,
      method: task.method,
      controller: new AbortController(),
      reason: undefined,
      settled: false,
      reported: false,
      done: Promise.resolve(),
      log: this.log.child({ taskId: task.id, epoch, method: task.method }),
    };
    const k = key(task.id, epoch);
    this.runners.set(k, runner);
    runner.log.info({ weight: task.weight, attempts: task.attempts }, "task claimed");
    runner.done = this.run(runner, task)
      .catch((err: unknown) => runner.log.error({ err }, "task runner crashed"))
      .finally(() => {
        this.runners.delete(k);
        if (!runner.reported) this.fullClaim?.abort();
        this.wake?.();
      });
  }

  private async run(runner: Runner, task: ClaimedTask["task"]): Promise<void> {
    const { id, epoch, log } = runner;
    const dir = new TaskDir(path.join(this.workDir, `task-${id}-${epoch}`));
    try {
      await this.callHub(runner, () => this.client.startTask(id, epoch));
    } catch (err) {
      if (runner.reason === "shutdown") await this.release(runner);
      else if (isLeaseLost(err) || runner.reason)
        log.info({ err: describeError(err) }, "task gone before it started");
      else log.warn({ err: describeError(err) }, "cannot start task; leaving it to expire");
      return;
    }
    const stream = new LogStream({
      client: this.client,
      taskId: id,
      epoch,
      logger: log,
      signal: runner.controller.signal,
    });
    try {
      const outcome = await this.execute(runner, task, dir, stream);
      if (runner.reason) return await this.abandon(runner);
      if (outcome.kind === "suspend") {
        await stream.flush();
        runner.settled = true;
        log.info("task waits for its subtasks");
        return;
      }
      // The log's last chunk goes with the outcome: a short task needs no log call of its own.
      const tail = await stream.takeTail();
      if (runner.reason) return await this.abandon(runner);
      await this.report(runner, outcome, stream, tail);
      if (!runner.settled && runner.reason === "shutdown") await this.release(runner);
    } finally {
      stream.close();
      if (dir.made) {
        await rm(dir.path, { recursive: true, force: true }).catch((err: unknown) =>
          log.warn({ err, dir: dir.path }, "cannot remove the task's directory"),
        );
      }
    }
  }

  private async execute(
    runner: Runner,
    task: ClaimedTask["task"],
    dir: TaskDir,
    stream: LogStream,
  ): Promise<Outcome> {
    const handler = this.handlers.get(task.method);
    if (!handler) {
      return {
        kind: "fail",
        error: { code: "UNKNOWN_METHOD", message: `this worker has no handler for ${task.method}` },
      };
    }
    const ctx: TaskContext = {
      task,
      epoch: runner.epoch,
      signal: runner.controller.signal,
      log: (text) => stream.write(text),
      // Made on first use: most hub-side and trivial tasks never touch it.
      get workDir() {
        return dir.make();
      },
      client: this.client,
      logger: runner.log,
      killGrace: this.killGrace,
    };
    try {
      const res = await handler(ctx);
      return "suspend" in res ? { kind: "suspend" } : { kind: "complete", result: res.result };
    } catch (err) {
      return { kind: "fail", error: toFailReport(err) };
    }
  }

  /**
   * Sends the outcome with the log's last chunk, retrying while the hub is unreachable; a lost
   * lease discards it. If the hub refuses the chunk (a gap, too large), the log goes the usual
   * way, which resyncs, and the outcome again without it.
   */
  private async report(
    runner: Runner,
    outcome: Exclude<Outcome, { kind: "suspend" }>,
    stream: LogStream,
    tail: { offset: number; data: string } | undefined,
  ): Promise<void> {
    const { id, epoch, log } = runner;
    let error = outcome.kind === "fail" ? outcome.error : undefined;
    let chunk = tail;
    const send = async (call: (log: typeof tail) => Promise<unknown>): Promise<void> => {
      try {
        await this.callHub(runner, () => call(chunk));
      } catch (err) {
        if (!chunk || !(err instanceof KilnError) || !LOG_REFUSALS.has(err.code)) throw err;
        stream.untake(chunk);
        chunk = undefined;
        await stream.flush();
        await this.callHub(runner, () => call(undefined));
      }
    };
    try {
      if (outcome.kind === "complete") {
        try {
          await send((l) => this.client.completeTask(id, epoch, outcome.result, l));
          log.info("task completed");
          runner.settled = true;
          runner.reported = true;
          return;
        } catch (err) {
          // A result the hub will not take (too large, malformed) must still end the task.
          if (!(err instanceof KilnError) || isLeaseLost(err) || isTransientHubError(err)) throw err;
          error = { code: err.code, message: clip(`the hub refused the result: ${err.message}`) };
        }
      }
      if (error) {
        const report = error;
        await send((l) => this.client.failTask(id, epoch, report, l));
        runner.reported = true;
        log.info({ code: error.code, infra: error.infra ?? false }, `task failed: ${error.message}`);
      }
      runner.settled = true;
    } catch (err) {
      if (runner.reason === "shutdown") return; // the caller hands it back
      runner.settled = true;
      if (isLeaseLost(err) || runner.reason)
        log.info({ err: describeError(err) }, "outcome discarded: the task is no longer ours");
      else log.error({ err: describeError(err), outcome: outcome.kind }, "cannot report the task's outcome");
    }
  }

  private async abandon(runner: Runner): Promise<void> {
    if (runner.reason === "shutdown") return this.release(runner);
    runner.settled = true;
    runner.log.info({ reason: runner.reason }, "task killed; result discarded");
  }

  /** Hands a task back so it runs again elsewhere, with no failure counted. */
  private async release(runner: Runner): Promise<void> {
    if (runner.settled) return;
    runner.settled = true;
    const deadline = Date.now() + RELEASE_DEADLINE_MS;
    for (let attempt = 1; ; attempt++) {
      try {
        await this.client.releaseTask(runner.id, runner.epoch);
        runner.log.info("task handed back to the hub");
        return;
      } catch (err) {
        if (isTransientHubError(err) && Date.now() < deadline) {
          await delay(Math.min(retryDelayMs(attempt), Math.max(0, deadline - Date.now())));
          continue;
        }
        if (isLeaseLost(err))
          runner.log.info({ err: describeError(err) }, "task already gone; nothing to hand back");
        else runner.log.warn({ err: describeError(err) }, "cannot hand the task back; its lease will expire");
        return;
      }
    }
  }

  private async releaseClaimed({ task, epoch }: ClaimedTask): Promise<void> {
    try {
      await this.client.releaseTask(task.id, epoch);
    } catch (err) {
      this.log.warn(
        { err: describeError(err), taskId: task.id },
        "cannot hand back a task claimed while stopping",
      );
    }
  }

  /** Calls the hub, retrying with backoff while it is unreachable, until the runner is stopped. */
  private async callHub<T>(runner: Runner, call: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await call();
      } catch (err) {
        if (!isTransientHubError(err) || runner.controller.signal.aborted) throw err;
        this.needHello = true;
        if (attempt === 1) runner.log.warn({ err: describeError(err) }, "hub unreachable; retrying");
        await delay(retryDelayMs(attempt), runner.controller.signal);
        if (runner.controller.signal.aborted) throw err;
      }
    }
  }
}

/**
 * An attempt's work directory, made on first use (TaskContext.workDir is a getter), fresh: a
 * leftover of the same name is removed first. A failure to make it is the host's, not the task's.
 */
class TaskDir {
  made = false;
  constructor(readonly path: string) {}

  make(): string {
    if (!this.made) {
      try {
        rmSync(this.path, { recursive: true, force: true });
        mkdirSync(this.path, { recursive: true });
      } catch (err) {
        throw new TaskFailure(
          "TASK_FAILED",
          `cannot make the task's directory ${this.path}: ${describeError(err)}`,
          { infra: true },
        );
      }
      this.made = true;
    }
    return this.path;
  }
}

function key(id: number, epoch: number): string {
  return `${id}:${epoch}`;
}

function toFailReport(err: unknown): FailReport {
  if (err instanceof TaskFailure) {
    return {
      code: err.code,
      message: clip(err.message),
      ...(err.opts.infra !== undefined ? { infra: err.opts.infra } : {}),
      ...(err.opts.exitCode !== undefined ? { exitCode: err.opts.exitCode } : {}),
      ...(err.opts.signal !== undefined ? { signal: err.opts.signal } : {}),
    };
  }
  // A handler's own call to an unreachable hub is the infrastructure's fault, not the task's.
  if (err instanceof KilnError && isTransientHubError(err)) {
    return { code: "TASK_FAILED", message: clip(err.message), infra: true };
  }
  return { code: "TASK_FAILED", message: clip(describeError(err)) };
}

function clip(message: string): string {
  return message.length > MAX_MESSAGE ? `${message.slice(0, MAX_MESSAGE)}…` : message;
}
