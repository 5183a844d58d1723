import { claimTask, loadHosts, unclaimTask, type HostWithLoad } from "./claim-task.js";
import { ClaimMemory } from "./claim-memory.js";
import type { EngineDeps } from "./deps.js";
import type { TaskRow } from "./types.js";
import type { WakeHint } from "./wake.js";

interface Waiter {
  host: HostWithLoad;
  /** How many tasks the host asked for at most. */
  max: number;
  got: TaskRow[];
  /** The count of wake-ups without a hint when `host` was read. */
  generic: number;
  /**
   * The host was full when it asked: it gets a task only once one of its own tasks ended by its
   * own call. A host that lost its tasks otherwise (a lease run out: perhaps it is frozen) does
   * not get new ones on a claim it sent before.
   */
  full: boolean;
  resolve(tasks: TaskRow[]): void;
  timer: NodeJS.Timeout;
}

/** What admission looks at in a task to be queued. */
export interface TaskShape {
  arch: string;
  channel: string;
  weight: number;
}

/** Taken before reading a host, so that claim() knows whether anything happened since. */
export interface DispatchMark {
  generic: number;
  events: number;
}

/**
 * Long-poll claims. A host with nothing to do waits here; whenever something may have become
 * runnable, waiting hosts try to claim in order of load (the least loaded, relative to its
 * capacity, first), which spreads work softly the way Koji's capacity and weight do.
 *
 * Wake-ups carry hints (see WakeHint): a new task concerns only the hosts that can run it, and
 * only until one of them has it; a finished task frees capacity on its own host only. A
 * ClaimMemory keeps what claims found out, so most wake-ups cost one claim statement or none.
 * Loads are read again only after a wake-up without a hint; in between, each waiter's free
 * capacity is kept up to date from the claims made and the capacity hints (never below the real
 * value, which could strand a task).
 */
export class Dispatcher {
  private readonly waiters = new Set<Waiter>();
  private readonly memory = new ClaimMemory();
  private running = false;
  private again = false;
  private closed = false;
  /** Counts wake-ups without a hint: the loads read before one may be stale. */
  private generic = 0;
  /** Counts every wake-up. */
  private events = 0;
  /** Worker calls served since the last pacing turn. */
  private workerCalls = 0;
  /** Submissions held behind worker calls, oldest first. */
  private readonly held: { task: TaskShape; go: () => void }[] = [];
  private pacing = false;
  private readonly unsubscribe: () => void;

  constructor(private readonly deps: EngineDeps) {
    this.unsubscribe = deps.wake.on((hint) => this.heard(hint));
  }

  get waiting(): number {
    return this.waiters.size;
  }

  /** Call before reading the host that is given to claim(). */
  mark(): DispatchMark {
    return { generic: this.generic, events: this.events };
  }

  /**
   * Claims up to `max` tasks for `host` (read with its load after `mark()`), waiting up to
   * `waitSeconds` for the first. Resolves with the tasks claimed, none if the wait ran out.
   */
  async claim(
    host: HostWithLoad,
    waitSeconds: number,
    opts: { max?: number; mark?: DispatchMark; onAbort?: (cancel: () => void) => void } = {},
  ): Promise<TaskRow[]> {
    const max = Math.max(1, opts.max ?? 1);
    const mark = opts.mark ?? this.mark();
    const got: TaskRow[] = [];
    await this.claimFor(host, max, got);
    if (got.length > 0 || waitSeconds <= 0 || this.closed) return got;
    return new Promise<TaskRow[]>((resolve) => {
      // Anything heard since the host was read may concern it: then read it again and look.
      const stale = mark.events !== this.events;
      const waiter: Waiter = {
        host,
        max,
        got: [],
        generic: stale ? -1 : mark.generic,
        full: !stale && host.capacity - host.load <= 0,
        resolve,
        timer: setTimeout(() => this.drop(waiter), waitSeconds * 1000),
      };
      this.waiters.add(waiter);
      opts.onAbort?.(() => this.drop(waiter));
      if (stale) this.schedule();
    });
  }

  /** A worker protocol call (claim, start, log, finish, heartbeat) is being served. */
  noteWorkerCall(): void {
    this.workerCalls++;
  }

  /**
   * Resolves when a new task may be queued. Worker calls go first: while they keep the hub busy
   * and no waiting host has room for the task, submissions are let in one per turn of the event
   * loop, so a flood of them cannot starve the starts, completions and heartbeats of the work
   * already running (nor, at worst, let leases run out), and tasks are not queued faster than
   * they can be handed out. Otherwise, and always when the hub is idle, at once.
   */
  admit(task: TaskShape): Promise<void> | undefined {
    if (this.closed || (!this.pacing && this.workerCalls === 0) || this.roomFor(task) > 0) return undefined;
    return new Promise<void>((resolve) => {
      this.held.push({ task, go: resolve });
      if (this.pacing) return;
      this.pacing = true;
      const turn = () => {
        const busy = this.workerCalls > 0;
        this.workerCalls = 0;
        for (const { go } of this.held.splice(0, !busy || this.closed ? this.held.length : 1)) go();
        if (this.held.length > 0) setImmediate(turn);
        else this.pacing = false;
      };
      setImmediate(turn);
    });
  }

  /** How many tasks like this one the waiting hosts could take now. */
  private roomFor(task: TaskShape): number {
    let n = 0;
    for (const w of this.waiters) {
      if (w.full || w.host.enabled !== 1 || !this.memory.canRun(w.host, task)) continue;
      n += Math.max(0, Math.floor((w.host.capacity - w.host.load) / task.weight));
    }
    return n;
  }

  /** Something may be runnable, unannounced (any caller): every waiting host looks again. */
  kick(): void {
    this.heard(undefined);
  }

  /** Runs a dispatch round (coalescing overlapping requests). */
  private schedule(): void {
    if (this.closed || this.waiters.size === 0) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = true;
    void this.loop();
  }

  close(): void {
    this.closed = true;
    this.unsubscribe();
    for (const { go } of this.held.splice(0)) go();
    for (const waiter of [...this.waiters]) this.drop(waiter);
  }

  /**
   * The sweeper's periodic call. Tasks also become runnable with no commit to announce it (a
   * backoff running out), so the claim memory must forget what it knew: every waiting host
   * looks again.
   */
  tick(): void {
    this.kick();
  }

  private heard(hint: WakeHint | undefined): void {
    this.events++;
    this.memory.heard(hint);
    if (hint?.kind === "finished") {
      for (const w of this.waiters) {
        if (w.host.id !== hint.hostId) continue;
        // Never less than the truth; more only costs a claim that finds nothing.
        w.host.load = Math.max(0, w.host.load - hint.weight);
        w.full = false;
      }
    }
    if (hint === undefined || (hint.kind === "finished" && !hint.only)) this.generic++;
    this.schedule();
  }

  /** Claims for one host until it has `max` tasks or a claim finds nothing. */
  private async claimFor(host: HostWithLoad, max: number, got: TaskRow[]): Promise<void> {
    while (got.length < max && host.enabled === 1) {
      const free = host.capacity - host.load;
      // The claim memory's shortcut is kept as bookkeeping only: a skipped claim that would have
      // found a task strands it, and a claim that finds nothing costs one indexed statement.
      if (!(free > 0)) return;
      const ticket = this.memory.ticket(host);
      const task = await claimTask(this.deps, host);
      if (!task) {
        this.memory.missed(ticket, free);
        return;
      }
      this.memory.took(ticket, free);
      host.load += task.weight;
      got.push(task);
    }
  }

  private drop(waiter: Waiter, tasks: TaskRow[] = []): void {
    if (!this.waiters.delete(waiter)) return;
    clearTimeout(waiter.timer);
    waiter.resolve(tasks);
  }

  private async loop(): Promise<void> {
    try {
      do {
        this.again = false;
        await this.round();
      } while (this.again && !this.closed);
    } catch (err) {
      this.deps.log.error({ err }, "dispatch round failed");
    } finally {
      this.running = false;
    }
  }

  private async round(): Promise<void> {
    let waiters = [...this.waiters];
    if (waiters.length === 0) return;
    const generic = this.generic;
    if (waiters.some((w) => w.generic !== generic)) {
      // Hosts may have been edited and loads changed in ways no hint told: read them again.
      const fresh = new Map(
        (await loadHosts(this.deps, [...new Set(waiters.map((w) => w.host.id))])).map((h) => [h.id, h]),
      );
      for (const w of waiters) {
        const host = fresh.get(w.host.id);
        if (!host) this.drop(w);
        else {
          w.host = { ...host };
          w.generic = generic;
        }
      }
      waiters = waiters.filter((w) => this.waiters.has(w));
    }
    const ratio = (w: Waiter) => (w.host.capacity > 0 ? w.host.load / w.host.capacity : Infinity);
    waiters.sort((a, b) => ratio(a) - ratio(b));
    // One task per host and pass, least loaded first; more passes for hosts that asked for more.
    let pending = waiters;
    while (pending.length > 0) {
      const next: Waiter[] = [];
      for (const waiter of pending) {
        if (!this.waiters.has(waiter) || waiter.full) continue;
        const before = waiter.got.length;
        await this.claimFor(waiter.host, before + 1, waiter.got);
        if (waiter.got.length > before && waiter.got.length < waiter.max) next.push(waiter);
      }
      pending = next;
    }
    for (const waiter of waiters) {
      if (waiter.got.length === 0) continue;
      if (this.waiters.has(waiter)) this.drop(waiter, waiter.got);
      // The caller went away (or its wait ran out) while we claimed: hand them straight back.
      else for (const task of waiter.got.splice(0)) await unclaimTask(this.deps, task);
    }
  }
}
