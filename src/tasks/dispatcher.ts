import { claimTask, unclaimTask, type HostRow } from "./claim-task.js";
import type { EngineDeps } from "./deps.js";
import type { TaskRow } from "./types.js";

interface Waiter {
  hostId: number;
  resolve(task: TaskRow | undefined): void;
  timer: NodeJS.Timeout;
}

/**
 * Long-poll claims. A host with nothing to do waits here; whenever something may have become
 * runnable, waiting hosts try to claim in order of load (the least loaded, relative to its
 * capacity, first), which spreads work softly the way Koji's capacity and weight do.
 */
export class Dispatcher {
  private readonly waiters = new Set<Waiter>();
  private running = false;
  private again = false;
  private closed = false;
  private readonly unsubscribe: () => void;

  constructor(private readonly deps: EngineDeps) {
    this.unsubscribe = deps.wake.on(() => this.kick());
  }

  get waiting(): number {
    return this.waiters.size;
  }

  async claim(
    host: HostRow,
    waitSeconds: number,
    onAbort?: (cancel: () => void) => void,
  ): Promise<TaskRow | undefined> {
    const task = await claimTask(this.deps, host);
    if (task || waitSeconds <= 0 || this.closed) return task;
    return new Promise<TaskRow | undefined>((resolve) => {
      const waiter: Waiter = {
        hostId: host.id,
        resolve,
        timer: setTimeout(() => this.drop(waiter, undefined), waitSeconds * 1000),
      };
      this.waiters.add(waiter);
      onAbort?.(() => this.drop(waiter, undefined));
      // Work may have arrived between the claim above and now.
      this.kick();
    });
  }

  private drop(waiter: Waiter, task: TaskRow | undefined): void {
    if (!this.waiters.delete(waiter)) return;
    clearTimeout(waiter.timer);
    waiter.resolve(task);
  }

  /** Something may be runnable: run a dispatch round (coalescing overlapping requests). */
  kick(): void {
    if (this.closed || this.waiters.size === 0) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = true;
    void this.loop();
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
    const waiters = [...this.waiters];
    if (waiters.length === 0) return;
    const hostIds = [...new Set(waiters.map((w) => w.hostId))];
    const hosts = await this.deps.db.kysely
      .selectFrom("hosts")
      .selectAll()
      .where("id", "in", hostIds)
      .execute();
    const loads = await this.deps.db.kysely
      .selectFrom("tasks")
      .select(["host_id", (eb) => eb.fn.sum<number>("weight").as("load")])
      .where("host_id", "in", hostIds)
      .where("state", "in", ["assigned", "open"])
      .groupBy("host_id")
      .execute();
    const hostById = new Map(hosts.map((h) => [h.id, h]));
    const loadById = new Map(loads.map((l) => [l.host_id, Number(l.load)]));
    const ratio = (w: Waiter) => {
      const host = hostById.get(w.hostId);
      return host && host.capacity > 0 ? (loadById.get(w.hostId) ?? 0) / host.capacity : Infinity;
    };
    waiters.sort((a, b) => ratio(a) - ratio(b));
    for (const waiter of waiters) {
      if (!this.waiters.has(waiter)) continue;
      const host = hostById.get(waiter.hostId);
      if (!host) {
        this.drop(waiter, undefined);
        continue;
      }
      const task = await claimTask(this.deps, host);
      if (!task) continue;
      if (this.waiters.has(waiter)) this.drop(waiter, task);
      else {
        // The caller went away while we claimed: hand the task straight back.
        await unclaimTask(this.deps, task);
        this.again = true;
      }
    }
  }

  close(): void {
    this.closed = true;
    this.unsubscribe();
    for (const waiter of [...this.waiters]) this.drop(waiter, undefined);
  }
}
