import { randomUUID } from "node:crypto";
import { performance } from "node:perf_hooks";
import { sql } from "kysely";
import type { Logger } from "pino";
import { Agent, request } from "undici";
import { withWriteTx } from "../db/database.js";
import { KilnError } from "../errors/catalogue.js";
import { backoffDelayMs } from "../tasks/retry.js";
import { checkWebhookAddress, guardedLookup, parseWebhookUrl } from "./address-policy.js";
import type { WebhookFormat } from "./event-json.js";
import { matchesPatterns } from "./event-types.js";
import { readEvents, recordEvent, toEventJson, type EventRow } from "./outbox.js";
import { webhookBody, webhookHeaders } from "./webhook-payload.js";
import type { DeliveryRow, WebhookDeps, WebhookRow } from "./webhooks.js";

/** How many events one pass turns into deliveries; a full batch makes the next pass come at once. */
const FAN_OUT_BATCH = 500;
/** The shortest gap between two passes that commits asked for. */
const KICK_GAP_MS = 50;
/** How much of a receiver's answer an attempt keeps. */
const RESPONSE_EXCERPT_BYTES = 1024;

export interface DelivererDeps extends WebhookDeps {
  log: Logger;
}

/** Which events a webhook wants: its patterns, and `webhook.test` only when meant for it. */
function wants(hook: Pick<WebhookRow, "id">, patterns: string[], event: EventRow): boolean {
  if (event.type === "webhook.test") {
    return (JSON.parse(event.data) as { webhookId?: unknown }).webhookId === hook.id;
  }
  return matchesPatterns(event.type, patterns);
}

class CursorMoved extends Error {}

/**
 * Turns new outbox events into deliveries, one per enabled webhook and matching event, and moves
 * each webhook's cursor past what it read. The cursor update is guarded by its old value, so two
 * hubs fanning out at once do it once (the loser rolls back). Returns how many events were read,
 * or -1 when no webhook is enabled.
 */
export async function fanOutEvents(deps: WebhookDeps): Promise<number> {
  const hooks = await deps.db.kysely
    .selectFrom("webhooks")
    .select(["id", "events", "cursor"])
    .where("enabled", "=", 1)
    .execute();
  if (hooks.length === 0) return -1;
  const since = Math.min(...hooks.map((h) => h.cursor));
  const events = await readEvents(deps.db, { since, limit: FAN_OUT_BATCH });
  if (events.length === 0) return 0;
  const now = deps.clock.now();
  for (const hook of hooks) {
    const mine = events.filter((e) => e.id > hook.cursor);
    const last = mine[mine.length - 1];
    if (!last) continue;
    const patterns = JSON.parse(hook.events) as string[];
    const matched = mine.filter((e) => wants(hook, patterns, e));
    try {
      await withWriteTx(deps.db, async (trx) => {
        if (matched.length > 0) {
          await trx
            .insertInto("webhook_deliveries")
            .values(
              matched.map((e) => ({
                uuid: randomUUID(),
                webhook_id: hook.id,
                event_id: e.id,
                event_type: e.type,
                state: "pending",
                attempts: 0,
                next_attempt_at: now,
                created_at: now,
                completed_at: null,
              })),
            )
            .onConflict((oc) => oc.columns(["webhook_id", "event_id"]).doNothing())
            .execute();
        }
        const moved = await trx
          .updateTable("webhooks")
          .set({ cursor: last.id })
          .where("id", "=", hook.id)
          .where("cursor", "=", hook.cursor)
          .executeTakeFirst();
        if (moved.numUpdatedRows === 0n) throw new CursorMoved();
      });
    } catch (err) {
      if (!(err instanceof CursorMoved)) throw err;
    }
  }
  return events.length;
}

/**
 * Enabled webhooks whose oldest pending delivery is due and that no hub holds. Only the oldest
 * counts: a webhook's deliveries go out in order, each waiting for the one before it.
 */
async function dueWebhooks(deps: WebhookDeps, limit: number, skip: number[]): Promise<number[]> {
  const now = deps.clock.now();
  let q = deps.db.kysely
    .selectFrom("webhooks as w")
    .select("w.id")
    .where("w.enabled", "=", 1)
    .where((eb) => eb.or([eb("w.lease_until", "is", null), eb("w.lease_until", "<", now)]))
    .where(
      sql<number>`(SELECT d.next_attempt_at FROM webhook_deliveries d
        WHERE d.webhook_id = w.id AND d.state = 'pending' ORDER BY d.id LIMIT 1)`,
      "<=",
      now,
    );
  if (skip.length > 0) q = q.where("w.id", "not in", skip);
  const rows = await q.orderBy("w.id").limit(limit).execute();
  return rows.map((r) => r.id);
}

/** Outcome of one HTTP attempt. */
interface AttemptResult {
  ok: boolean;
  status: number | null;
  error: string | null;
  response: string | null;
  durationMs: number;
}

/**
 * Delivers webhooks from the hub, apart from the task engine: a slow or dead receiver holds one
 * of `concurrency` slots and nothing else, and builds never wait for it. State lives in the
 * database (deliveries, attempts, a lease per webhook), so a restarted hub carries on where the
 * last one stopped, and several hubs on PostgreSQL each send a webhook's deliveries only while
 * they hold its lease.
 */
export class WebhookDeliverer {
  private readonly owner = `hub-${randomUUID()}`;
  private readonly running = new Map<number, Promise<void>>();
  private readonly abort = new AbortController();
  private readonly agent: Agent;
  private timer: NodeJS.Timeout | undefined;
  private dueAt = 0;
  private passing: Promise<void> | undefined;
  private again = false;
  private stopped = false;

  constructor(private readonly deps: DelivererDeps) {
    const timeoutMs = deps.webhooks.timeout * 1000;
    this.agent = new Agent({
      connect: { lookup: guardedLookup(deps.webhooks.allowPrivate), timeout: timeoutMs },
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
      keepAliveTimeout: 4000,
    });
  }

  /** A lease outlives one attempt by a margin; it is renewed before each. */
  private get leaseMs(): number {
    return (this.deps.webhooks.timeout * 2 + 5) * 1000;
  }

  start(): void {
    this.schedule(0);
  }

  /**
   * Look for work soon (something was committed). Commits come by the thousand under load, so
   * passes are at least KICK_GAP_MS apart.
   */
  kick(): void {
    if (this.stopped) return;
    if (this.passing) this.again = true;
    else this.schedule(KICK_GAP_MS);
  }

  /** Runs a pass in `ms`, unless one is already due sooner. */
  private schedule(ms: number): void {
    if (this.stopped) return;
    const at = Date.now() + ms;
    if (this.timer && this.dueAt <= at) return;
    if (this.timer) clearTimeout(this.timer);
    this.dueAt = at;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.passing = this.pass()
        .catch((err: unknown) => this.deps.log.error({ err }, "webhook delivery pass failed"))
        .finally(() => {
          this.passing = undefined;
          const again = this.again;
          this.again = false;
          this.schedule(again ? KICK_GAP_MS : this.deps.webhooks.pollInterval * 1000);
        });
    }, ms);
    this.timer.unref();
  }

  /** One pass: fan out new events, then start a sender for each due webhook while slots are free. */
  async pass(): Promise<void> {
    const read = await fanOutEvents(this.deps);
    // No webhook enabled: nothing can be due either (the common case, under heavy task load).
    if (read < 0 && this.running.size === 0) return;
    if (read >= FAN_OUT_BATCH) this.again = true;
    const free = this.deps.webhooks.concurrency - this.running.size;
    if (free <= 0) return;
    const due = await dueWebhooks(this.deps, free, [...this.running.keys()]);
    for (const id of due) {
      if (this.stopped) return;
      if (!(await this.takeLease(id))) continue;
      const run = this.send(id)
        .catch((err: unknown) => this.deps.log.error({ err, webhook: id }, "webhook delivery failed"))
        .finally(() => {
          this.running.delete(id);
          this.kick();
        });
      this.running.set(id, run);
    }
  }

  private async takeLease(id: number): Promise<boolean> {
    const now = this.deps.clock.now();
    const taken = await this.deps.db.kysely
      .updateTable("webhooks")
      .set({ lease_owner: this.owner, lease_until: now + this.leaseMs })
      .where("id", "=", id)
      .where("enabled", "=", 1)
      .where((eb) =>
        eb.or([
          eb("lease_until", "is", null),
          eb("lease_until", "<", now),
          eb("lease_owner", "=", this.owner),
        ]),
      )
      .executeTakeFirst();
    return taken.numUpdatedRows > 0n;
  }

  private async releaseLease(id: number): Promise<void> {
    await this.deps.db.kysely
      .updateTable("webhooks")
      .set({ lease_owner: null, lease_until: null })
      .where("id", "=", id)
      .where("lease_owner", "=", this.owner)
      .execute();
  }

  /** Sends a webhook's due deliveries in order until one fails or none is due. */
  private async send(id: number): Promise<void> {
    try {
      while (!this.stopped) {
        if (!(await this.takeLease(id))) return;
        const hook = await this.deps.db.kysely
          .selectFrom("webhooks")
          .selectAll()
          .where("id", "=", id)
          .executeTakeFirst();
        if (!hook || hook.enabled !== 1) return;
        const head = await this.deps.db.kysely
          .selectFrom("webhook_deliveries")
          .selectAll()
          .where("webhook_id", "=", id)
          .where("state", "=", "pending")
          .orderBy("id")
          .limit(1)
          .executeTakeFirst();
        if (!head || head.next_attempt_at > this.deps.clock.now()) return;
        const event = await this.deps.db.kysely
          .selectFrom("events")
          .select(["id", "type", "actor", "data", "created_at"])
          .where("id", "=", head.event_id)
          .executeTakeFirst();
        const started = this.deps.clock.now();
        const result = event
          ? await this.attempt(hook, head, event)
          : { ok: true, status: null, error: "the event is gone", response: null, durationMs: 0 };
        // Stopping cut it short: not the receiver's fault; the next hub sends it again.
        if (this.stopped && !result.ok) return;
        const delivered = await this.record(hook, head, started, result);
        if (!delivered) return;
      }
    } finally {
      await this.releaseLease(id).catch(() => undefined);
    }
  }

  private async attempt(hook: WebhookRow, delivery: DeliveryRow, row: EventRow): Promise<AttemptResult> {
    const event = toEventJson(row);
    const body = webhookBody(hook.format as WebhookFormat, event);
    const timestamp = Math.floor(this.deps.clock.now() / 1000);
    const headers = webhookHeaders({ event, delivery: delivery.uuid, timestamp, body, secret: hook.secret });
    const t0 = performance.now();
    const elapsed = () => Math.round(performance.now() - t0);
    try {
      // Checked again at each delivery: DNS may have changed since the webhook was added.
      await checkWebhookAddress(parseWebhookUrl(hook.url), this.deps.webhooks.allowPrivate);
      const signal = AbortSignal.any([
        this.abort.signal,
        AbortSignal.timeout(this.deps.webhooks.timeout * 1000),
      ]);
      const res = await request(hook.url, { method: "POST", headers, body, dispatcher: this.agent, signal });
      let excerpt = "";
      let bytes = 0;
      for await (const chunk of res.body) {
        const buf = chunk as Buffer;
        if (bytes < RESPONSE_EXCERPT_BYTES)
          excerpt += buf.subarray(0, RESPONSE_EXCERPT_BYTES - bytes).toString("utf8");
        bytes += buf.length;
        if (bytes >= RESPONSE_EXCERPT_BYTES) {
          res.body.destroy();
          break;
        }
      }
      const ok = res.statusCode >= 200 && res.statusCode < 300;
      return {
        ok,
        status: res.statusCode,
        error: ok ? null : `the receiver answered ${res.statusCode}`,
        response: excerpt || null,
        durationMs: elapsed(),
      };
    } catch (err) {
      const e = err as Error & { code?: string };
      const message =
        err instanceof KilnError
          ? `${err.message} [${err.code}]`
          : e.name === "TimeoutError" ||
              e.code === "UND_ERR_HEADERS_TIMEOUT" ||
              e.code === "UND_ERR_BODY_TIMEOUT"
            ? `no answer within ${this.deps.webhooks.timeout} s`
            : `${e.message}${e.code ? ` [${e.code}]` : ""}`;
      return { ok: false, status: null, error: message, response: null, durationMs: elapsed() };
    }
  }

  /**
   * Records an attempt and its outcome in one transaction. A failure is retried after an
   * exponential backoff with full jitter; once a delivery has been failing for `maxAge` it is
   * given up and the webhook disabled, with a `webhook.disabled` event. Returns whether the
   * sender may go on to the next delivery.
   */
  private async record(
    hook: WebhookRow,
    delivery: DeliveryRow,
    started: number,
    result: AttemptResult,
  ): Promise<boolean> {
    const cfg = this.deps.webhooks;
    const now = this.deps.clock.now();
    const attempt = delivery.attempts + 1;
    return withWriteTx(this.deps.db, async (trx) => {
      await trx
        .insertInto("webhook_attempts")
        .values({
          delivery_id: delivery.id,
          attempt,
          started_at: started,
          duration_ms: result.durationMs,
          status: result.status,
          error: result.error,
          response: result.response,
        })
        .execute();
      const base = trx
        .updateTable("webhook_deliveries")
        .where("id", "=", delivery.id)
        .where("state", "=", "pending")
        .where("attempts", "=", delivery.attempts);
      if (result.ok) {
        await base.set({ state: "delivered", attempts: attempt, completed_at: now }).execute();
        return true;
      }
      if (now - delivery.created_at >= cfg.maxAge * 1000) {
        await base.set({ state: "failed", attempts: attempt, completed_at: now }).execute();
        const reason = `delivery ${delivery.uuid} (event ${delivery.event_id}) failed for ${Math.round(
          (now - delivery.created_at) / 1000,
        )} s; last: ${result.error ?? "?"}`;
        const disabled = await trx
          .updateTable("webhooks")
          .set({ enabled: 0, disabled_reason: reason, updated_at: now })
          .where("id", "=", hook.id)
          .where("enabled", "=", 1)
          .executeTakeFirst();
        if (disabled.numUpdatedRows > 0n) {
          await recordEvent(
            trx,
            "webhook.disabled",
            { webhookId: hook.id, url: hook.url, reason },
            null,
            now,
          );
        }
        this.deps.log.warn({ webhook: hook.id, url: hook.url }, "webhook disabled: a delivery kept failing");
        return false;
      }
      const delay = backoffDelayMs(attempt, cfg.backoffBase, cfg.backoffMax);
      await base.set({ attempts: attempt, next_attempt_at: now + delay }).execute();
      return false;
    });
  }

  /** Stops sending: requests in flight are cut off (and sent again later), leases released. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.abort.abort();
    await this.passing?.catch(() => undefined);
    await Promise.all([...this.running.values()]);
    await this.agent.close().catch(() => undefined);
  }
}

/** On a hub that owns its database alone (SQLite), leases left by a killed hub mean nothing. */
export async function clearWebhookLeases(deps: WebhookDeps): Promise<void> {
  await deps.db.kysely
    .updateTable("webhooks")
    .set({ lease_owner: null, lease_until: null })
    .where("lease_owner", "is not", null)
    .execute();
}
