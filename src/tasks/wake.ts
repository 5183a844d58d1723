import { randomUUID } from "node:crypto";
import { EventEmitter } from "node:events";
import { sql } from "kysely";
import pg from "pg";
import type { Logger } from "pino";
import type { Db } from "../db/database.js";

const CHANNEL = "kiln_wake";

/**
 * What a wake-up is about, so that the dispatcher can leave alone the hosts it cannot concern.
 * No hint means anything may have changed: every waiting host looks again.
 */
export type WakeHint =
  /** These tasks became runnable, and nothing else did. */
  | { kind: "tasks"; tasks: { arch: string; channel: string }[] }
  /**
   * A task ended by its host's own call (complete, fail): its capacity there is free again.
   * `only`: nothing else changed (no locks released, no parent woken, no finalizer run, not
   * queued again); otherwise anything may have become runnable.
   */
  | { kind: "finished"; hostId: number; weight: number; only: boolean };

/**
 * Tells waiting claims that something changed (new work, freed capacity, released locks).
 * In one process an event; across hub processes on PostgreSQL, LISTEN/NOTIFY.
 */
export class Waker {
  private readonly emitter = new EventEmitter();
  private listener: pg.Client | undefined;
  private closed = false;
  private pendingNotify = false;
  /** Tells this hub's own NOTIFYs (already heard in process) from other hubs'. */
  private readonly id = randomUUID();

  constructor(
    private readonly db: Db,
    private readonly log: Logger,
  ) {
    this.emitter.setMaxListeners(0);
  }

  /** On PostgreSQL, also hear other hub processes. */
  async start(): Promise<void> {
    if (this.db.dialect !== "postgres") return;
    await this.connectListener();
  }

  private async connectListener(): Promise<void> {
    const client = new pg.Client({ connectionString: this.db.url });
    client.on("notification", (msg) => {
      if (msg.payload !== this.id) this.emitter.emit("wake");
    });
    client.on("error", (err) => {
      this.log.warn({ err }, "wake listener lost its connection; reconnecting");
      this.listener = undefined;
      void client.end().catch(() => undefined);
      if (!this.closed) setTimeout(() => void this.connectListener().catch(() => undefined), 1000);
    });
    await client.connect();
    await client.query(`LISTEN ${CHANNEL}`);
    this.listener = client;
    // Anything that happened while we were deaf: look again.
    this.emitter.emit("wake");
  }

  /** Call after a commit that may let a task run; other hubs hear it without the hint. */
  notify(hint?: WakeHint): void {
    this.emitter.emit("wake", hint);
    if (this.db.dialect !== "postgres" || this.pendingNotify) return;
    // Coalesce bursts into one NOTIFY per tick.
    this.pendingNotify = true;
    setImmediate(() => {
      this.pendingNotify = false;
      if (this.closed) return;
      sql`SELECT pg_notify(${CHANNEL}, ${this.id})`
        .execute(this.db.kysely)
        .catch((err: unknown) => this.log.warn({ err }, "NOTIFY failed"));
    });
  }

  on(fn: (hint?: WakeHint) => void): () => void {
    this.emitter.on("wake", fn);
    return () => this.emitter.off("wake", fn);
  }

  async close(): Promise<void> {
    this.closed = true;
    this.emitter.removeAllListeners();
    if (this.listener) await this.listener.end().catch(() => undefined);
  }
}
