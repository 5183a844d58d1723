import type { Selectable, Updateable } from "kysely";
import { withWriteTx, type Db } from "../db/database.js";
import type { WebhookDeliveriesTable, WebhooksTable } from "../db/schema.js";
import { KilnError } from "../errors/catalogue.js";
import type { Clock } from "../tasks/deps.js";
import { checkWebhookAddress, parseWebhookUrl } from "./address-policy.js";
import type { WebhookDeliveryJson, WebhookFormat, WebhookInput, WebhookJson } from "./event-json.js";
import { parseEventPatterns } from "./event-types.js";
import { latestEventId, recordEvent } from "./outbox.js";
import type { WebhookConfig } from "./webhook-config.js";

export type WebhookRow = Selectable<WebhooksTable>;
export type DeliveryRow = Selectable<WebhookDeliveriesTable>;

/** What the webhook store and the deliverer need. */
export interface WebhookDeps {
  db: Db;
  clock: Clock;
  webhooks: WebhookConfig;
}

export const WEBHOOK_FORMATS: readonly WebhookFormat[] = ["json", "slack", "discord"];

function checkFormat(format: string): WebhookFormat {
  if (!(WEBHOOK_FORMATS as readonly string[]).includes(format)) {
    throw new KilnError("VALIDATION_FAILED", `format must be json, slack or discord, not "${format}"`);
  }
  return format as WebhookFormat;
}

function checkSecret(secret: string | null | undefined): string | null {
  if (secret == null || secret === "") return null;
  if (secret.length > 1024)
    throw new KilnError("VALIDATION_FAILED", "the secret is longer than 1024 characters");
  return secret;
}

async function checkUrl(deps: WebhookDeps, text: string): Promise<string> {
  const url = parseWebhookUrl(text);
  await checkWebhookAddress(url, deps.webhooks.allowPrivate);
  return url.href;
}

/**
 * Adds a webhook. It sees events from now on: its cursor starts at the newest event, so adding
 * one does not replay history at the receiver.
 */
export async function createWebhook(
  deps: WebhookDeps,
  input: WebhookInput & { url: string; events: string[] },
  actor: string | null,
): Promise<WebhookRow> {
  const url = await checkUrl(deps, input.url);
  const events = parseEventPatterns(input.events);
  const format = checkFormat(input.format ?? "json");
  const secret = checkSecret(input.secret);
  const now = deps.clock.now();
  return withWriteTx(deps.db, async (trx) =>
    trx
      .insertInto("webhooks")
      .values({
        url,
        events: JSON.stringify(events),
        secret,
        format,
        description: input.description ?? null,
        enabled: input.enabled === false ? 0 : 1,
        disabled_reason: input.enabled === false ? `disabled by ${actor ?? "?"}` : null,
        cursor: await latestEventId(trx),
        lease_owner: null,
        lease_until: null,
        created_by: actor,
        created_at: now,
        updated_at: now,
      })
      .returningAll()
      .executeTakeFirstOrThrow(),
  );
}

export async function getWebhook(db: Db, id: number): Promise<WebhookRow> {
  const row = await db.kysely.selectFrom("webhooks").selectAll().where("id", "=", id).executeTakeFirst();
  if (!row) throw new KilnError("WEBHOOK_NOT_FOUND", `no webhook ${id}; see \`kiln webhook list\``);
  return row;
}

export async function listWebhooks(db: Db): Promise<WebhookRow[]> {
  return db.kysely.selectFrom("webhooks").selectAll().orderBy("id").execute();
}

/** Pending deliveries per webhook. */
export async function pendingCounts(db: Db): Promise<Map<number, number>> {
  const rows = await db.kysely
    .selectFrom("webhook_deliveries")
    .select(["webhook_id", (eb) => eb.fn.countAll<number>().as("n")])
    .where("state", "=", "pending")
    .groupBy("webhook_id")
    .execute();
  return new Map(rows.map((r) => [r.webhook_id, Number(r.n)]));
}

/**
 * Changes a webhook. Enabling one that was disabled (by hand or after a delivery was given up)
 * makes its waiting deliveries due at once; the ones given up stay given up.
 */
export async function updateWebhook(
  deps: WebhookDeps,
  id: number,
  input: WebhookInput,
  actor: string | null,
): Promise<WebhookRow> {
  const set: Updateable<WebhooksTable> = {};
  if (input.url !== undefined) set.url = await checkUrl(deps, input.url);
  if (input.events !== undefined) set.events = JSON.stringify(parseEventPatterns(input.events));
  if (input.format !== undefined) set.format = checkFormat(input.format);
  if (input.secret !== undefined) set.secret = checkSecret(input.secret);
  if (input.description !== undefined) set.description = input.description;
  const now = deps.clock.now();
  return withWriteTx(deps.db, async (trx) => {
    const before = await trx.selectFrom("webhooks").selectAll().where("id", "=", id).executeTakeFirst();
    if (!before) throw new KilnError("WEBHOOK_NOT_FOUND", `no webhook ${id}; see \`kiln webhook list\``);
    if (input.enabled === true && before.enabled !== 1) {
      set.enabled = 1;
      set.disabled_reason = null;
      await trx
        .updateTable("webhook_deliveries")
        .set({ next_attempt_at: now })
        .where("webhook_id", "=", id)
        .where("state", "=", "pending")
        .execute();
    } else if (input.enabled === false && before.enabled === 1) {
      set.enabled = 0;
      set.disabled_reason = `disabled by ${actor ?? "?"}`;
    }
    return trx
      .updateTable("webhooks")
      .set({ ...set, updated_at: now })
      .where("id", "=", id)
      .returningAll()
      .executeTakeFirstOrThrow();
  });
}

export async function removeWebhook(db: Db, id: number): Promise<WebhookRow> {
  return withWriteTx(db, async (trx) => {
    const row = await trx.selectFrom("webhooks").selectAll().where("id", "=", id).executeTakeFirst();
    if (!row) throw new KilnError("WEBHOOK_NOT_FOUND", `no webhook ${id}; see \`kiln webhook list\``);
    const deliveries = trx.selectFrom("webhook_deliveries").select("id").where("webhook_id", "=", id);
    await trx.deleteFrom("webhook_attempts").where("delivery_id", "in", deliveries).execute();
    await trx.deleteFrom("webhook_deliveries").where("webhook_id", "=", id).execute();
    await trx.deleteFrom("webhooks").where("id", "=", id).execute();
    return row;
  });
}

/**
 * Records a `webhook.test` event meant for this webhook alone; it is delivered in order after
 * whatever the webhook still has pending. Returns the event id.
 */
export async function queueTestEvent(deps: WebhookDeps, id: number, actor: string | null): Promise<number> {
  const hook = await getWebhook(deps.db, id);
  return withWriteTx(deps.db, (trx) =>
    recordEvent(trx, "webhook.test", { webhookId: hook.id, url: hook.url }, actor, deps.clock.now()),
  );
}

/** A webhook's deliveries, newest first, each with its attempts. */
export async function listDeliveries(
  db: Db,
  webhookId: number,
  opts: { limit?: number; eventId?: number } = {},
): Promise<WebhookDeliveryJson[]> {
  await getWebhook(db, webhookId);
  let q = db.kysely.selectFrom("webhook_deliveries").selectAll().where("webhook_id", "=", webhookId);
  if (opts.eventId !== undefined) q = q.where("event_id", "=", opts.eventId);
  const rows = await q
    .orderBy("id", "desc")
    .limit(Math.min(Math.max(opts.limit ?? 20, 1), 500))
    .execute();
  if (rows.length === 0) return [];
  const attempts = await db.kysely
    .selectFrom("webhook_attempts")
    .selectAll()
    .where(
      "delivery_id",
      "in",
      rows.map((r) => r.id),
    )
    .orderBy("attempt")
    .execute();
  return rows.map((r) => ({
    id: r.id,
    uuid: r.uuid,
    webhookId: r.webhook_id,
    eventId: r.event_id,
    eventType: r.event_type,
    state: r.state as WebhookDeliveryJson["state"],
    attempts: r.attempts,
    nextAttemptAt: r.state === "pending" ? new Date(r.next_attempt_at).toISOString() : null,
    createdAt: new Date(r.created_at).toISOString(),
    completedAt: r.completed_at === null ? null : new Date(r.completed_at).toISOString(),
    attemptLog: attempts
      .filter((a) => a.delivery_id === r.id)
      .map((a) => ({
        attempt: a.attempt,
        startedAt: new Date(a.started_at).toISOString(),
        durationMs: a.duration_ms,
        status: a.status,
        error: a.error,
        response: a.response,
      })),
  }));
}

export function toWebhookJson(row: WebhookRow, pending = 0): WebhookJson {
  return {
    id: row.id,
    url: row.url,
    events: JSON.parse(row.events) as string[],
    format: row.format as WebhookFormat,
    hasSecret: row.secret !== null,
    description: row.description,
    enabled: row.enabled === 1,
    disabledReason: row.disabled_reason,
    pending,
    createdBy: row.created_by,
    createdAt: new Date(row.created_at).toISOString(),
    updatedAt: new Date(row.updated_at).toISOString(),
  };
}
