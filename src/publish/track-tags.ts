import type { Logger } from "pino";
import type { Db } from "../db/database.js";
import { readEvents } from "../events/outbox.js";
import type { CreateTaskInput } from "../tasks/create-task.js";
import type { TaskRow } from "../tasks/types.js";
import { poolLock, publishLock } from "./methods.js";

export interface TrackerDeps {
  db: Db;
  log: Logger;
  queue(input: CreateTaskInput): Promise<TaskRow>;
}

/** Event types that can change what a tag's latest builds are. */
const TAG_EVENTS = ["tag.*", "package.*"];

/**
 * Koji's kojira, for publications that track a tag: when tags change, every such publication
 * gets one `publishUpdate` task — not one per change: a task still queued for it absorbs the
 * rest, since it reads the tag when it runs. The task makes no new generation when the tag's
 * latest builds turn out unchanged. After a restart everything is looked at once, so a change
 * made just before a crash is published too.
 */
export class TagPublicationTracker {
  private lastEvent = 0;
  private running = false;

  constructor(private readonly deps: TrackerDeps) {}

  async tick(): Promise<number> {
    if (this.running) return 0;
    this.running = true;
    try {
      return await this.check();
    } finally {
      this.running = false;
    }
  }

  private async check(): Promise<number> {
    const db = this.deps.db.kysely;
    const [newest] = await readEvents(this.deps.db, {
      since: this.lastEvent,
      types: TAG_EVENTS,
      newest: true,
      limit: 1,
    });
    if (!newest) return 0;
    const publications = await db
      .selectFrom("publications")
      .select(["prefix", "distribution"])
      .where("source_kind", "=", "tag")
      .execute();
    let queued = 0;
    if (publications.length > 0) {
      const waiting = await db
        .selectFrom("tasks")
        .select("args")
        .where("method", "=", "publishUpdate")
        .where("state", "=", "free")
        .execute();
      const pending = new Set(
        waiting.map((t) => {
          const a = JSON.parse(t.args) as { prefix?: string; distribution?: string };
          return `${a.prefix}\u0000${a.distribution}`;
        }),
      );
      for (const p of publications) {
        if (pending.has(`${p.prefix}\u0000${p.distribution}`)) continue;
        await this.deps.queue({
          method: "publishUpdate",
          args: { prefix: p.prefix, distribution: p.distribution, skipIfUnchanged: true },
          owner: "kiln",
          locks: [publishLock(p.prefix, p.distribution), poolLock(p.prefix)],
        });
        queued++;
      }
    }
    this.lastEvent = newest.id;
    if (queued > 0)
      this.deps.log.info({ queued, event: newest.id }, "tags changed: republishing what tracks them");
    return queued;
  }
}
