import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { withWriteTx } from "../../src/db/database.js";
import { fanOutEvents, WebhookDeliverer } from "../../src/events/deliver-webhooks.js";
import { recordEvent } from "../../src/events/outbox.js";
import { DEFAULT_WEBHOOKS } from "../../src/events/webhook-config.js";
import { createWebhook, listDeliveries } from "../../src/events/webhooks.js";
import { systemClock } from "../../src/tasks/deps.js";
import { createTestDb, DIALECTS, postgresAvailable, silentLog, type TestDb } from "../helpers/db.js";
import { waitFor } from "../helpers/procs.js";
import { Receiver } from "./receiver.js";

const pgOk = await postgresAvailable();
const dialects = DIALECTS.filter((d) => d === "sqlite" || pgOk);

describe.each(dialects)("webhook delivery loop on %s", (dialect) => {
  let t: TestDb;
  let rx: Receiver;
  beforeAll(async () => {
    t = await createTestDb(dialect);
    rx = new Receiver();
  });
  afterAll(async () => {
    await rx.close();
    await t.cleanup();
  });

  it("checks the address again at delivery time and fans out only what a webhook wants", async () => {
    const url = await rx.listen();
    const lenient = { db: t.db, clock: systemClock, webhooks: { ...DEFAULT_WEBHOOKS, allowPrivate: true } };
    const hook = await createWebhook(lenient, { url, events: ["publish.*"] }, "admin");
    await withWriteTx(t.db, async (trx) => {
      await recordEvent(trx, "tag.created", { tag: "ignored" }, null, Date.now());
      await recordEvent(trx, "publish.live", { prefix: ".", distribution: "stable" }, null, Date.now());
    });
    const pending = await waitFor("the fan-out", async () => {
      await fanOutEvents(lenient);
      const list = await listDeliveries(t.db, hook.id);
      return list.length > 0 ? list : undefined;
    });
    await fanOutEvents(lenient);
    expect(pending.map((d) => [d.eventType, d.state])).toEqual([["publish.live", "pending"]]);

    // The config no longer allows loopback: the receiver is never contacted.
    const strict = { ...lenient, log: silentLog, webhooks: { ...DEFAULT_WEBHOOKS, allowPrivate: false } };
    const deliverer = new WebhookDeliverer(strict);
    try {
      await deliverer.pass();
      const [d] = await waitFor("the refused attempt", async () => {
        const list = await listDeliveries(t.db, hook.id);
        return list[0]?.attempts ? list : undefined;
      });
      expect(d!.attemptLog[0]).toMatchObject({ status: null });
      expect(d!.attemptLog[0]!.error).toContain("WEBHOOK_ADDRESS_FORBIDDEN");
      expect(d!.state).toBe("pending");
      expect(rx.received).toHaveLength(0);
    } finally {
      await deliverer.stop();
    }
  });
});
