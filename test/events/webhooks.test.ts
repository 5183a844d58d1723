import { createHmac } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readSse } from "../../src/client/sse.js";
import { KilnError } from "../../src/errors/catalogue.js";
import type { EventJson } from "../../src/events/event-json.js";
import { createWebhook } from "../../src/events/webhooks.js";
import { DEFAULT_WEBHOOKS } from "../../src/events/webhook-config.js";
import { DIALECTS, postgresAvailable } from "../helpers/db.js";
import { waitFor } from "../helpers/procs.js";
import { Receiver, startWebhookHub, type Received, type WebhookTestHub } from "./receiver.js";

const pgOk = await postgresAvailable();
const dialects = DIALECTS.filter((d) => d === "sqlite" || pgOk);

async function expectCode(p: Promise<unknown>, code: string): Promise<void> {
  await expect(p).rejects.toSatisfy((e: unknown) => e instanceof KilnError && e.code === code);
}

const eventOf = (r: Received) => JSON.parse(r.body) as EventJson;
const header = (r: Received, name: string) => String(r.headers[name] ?? "");

describe.each(dialects)("webhooks on %s", (dialect) => {
  let t: WebhookTestHub;
  const receivers: Receiver[] = [];

  beforeAll(async () => {
    t = await startWebhookHub(dialect, { backoffBase: 0.05, backoffMax: 0.2, timeout: 0.5 });
  });
  afterAll(async () => {
    await t.cleanup();
    for (const r of receivers) await r.close();
  });

  async function receiver(): Promise<[Receiver, string]> {
    const r = new Receiver();
    receivers.push(r);
    return [r, await r.listen()];
  }

  it("delivers every event once per delivery id, in order, signed, through a run of 500s", async () => {
    const [rx, url] = await receiver();
    rx.answer = (_req, n) => (n <= 4 ? 500 : 200);
    const hook = await t.admin.addWebhook({ url, events: ["tag.created"], secret: "s3cret" });
    expect(hook).toMatchObject({ enabled: true, hasSecret: true, format: "json", events: ["tag.created"] });
    const names = ["ord-1", "ord-2", "ord-3", "ord-4", "ord-5"];
    for (const name of names) await t.admin.createTag({ name });

    const ok = () => rx.received.filter((_r, i) => i >= 4);
    await waitFor("five deliveries acknowledged", () => ok().length >= 5, 60_000);
    // Let any stray retry arrive before counting.
    await new Promise((r) => setTimeout(r, 500));

    for (const r of rx.received) {
      const ts = header(r, "x-kiln-timestamp");
      expect(ts).toMatch(/^\d+$/);
      const expected = createHmac("sha256", "s3cret").update(`${ts}.${r.body}`).digest("hex");
      expect(header(r, "x-kiln-signature")).toBe(`sha256=${expected}`);
      expect(header(r, "x-kiln-event")).toBe("tag.created");
      expect(header(r, "content-type")).toBe("application/json");
    }
    // Acknowledged in order, each delivery id once.
    expect(ok().map((r) => eventOf(r).data.tag)).toEqual(names);
    const ackIds = ok().map((r) => header(r, "x-kiln-delivery"));
    expect(new Set(ackIds).size).toBe(5);
    // The refused tries were all of the first event, with the same delivery id each time.
    const refused = rx.received.slice(0, 4);
    expect(refused.map((r) => eventOf(r).data.tag)).toEqual(["ord-1", "ord-1", "ord-1", "ord-1"]);
    expect(new Set(refused.map((r) => header(r, "x-kiln-delivery")))).toEqual(new Set([ackIds[0]]));

    const deliveries = await t.admin.webhookDeliveries(hook.id);
    expect(deliveries).toHaveLength(5);
    expect(deliveries.every((d) => d.state === "delivered")).toBe(true);
    const first = deliveries.at(-1)!;
    expect(first.uuid).toBe(ackIds[0]);
    expect(first.attemptLog.map((a) => a.status)).toEqual([500, 500, 500, 500, 200]);
    expect(first.attemptLog[0]?.response).toBe("nope 500");
    expect(first.attemptLog[4]?.response).toBe("thanks");
    expect(first.attemptLog.every((a) => a.durationMs >= 0)).toBe(true);
  });

  it("cuts off a receiver that hangs and retries it, while other webhooks carry on", async () => {
    const [slow, slowUrl] = await receiver();
    const [fast, fastUrl] = await receiver();
    slow.answer = (_req, n) => (n === 1 ? "hang" : 200);
    const hook = await t.admin.addWebhook({ url: slowUrl, events: ["tag.*"] });
    await t.admin.addWebhook({ url: fastUrl, events: ["tag.created"], format: "slack" });
    await t.admin.createTag({ name: "hang-1" });
    await waitFor("the fast receiver", () => fast.received.some((r) => r.body.includes("hang-1")), 30_000);
    const chat = JSON.parse(fast.received.find((r) => r.body.includes("hang-1"))!.body) as unknown;
    expect(chat).toEqual({
      text: expect.stringContaining("[kiln] tag.created: hang-1") as unknown,
    });
    await waitFor("the slow receiver's retry", () => slow.received.length >= 2, 30_000);
    await waitFor("the delivery recorded", async () => {
      const [d] = await t.admin.webhookDeliveries(hook.id);
      return d?.state === "delivered" ? d : undefined;
    });
    const [d] = await t.admin.webhookDeliveries(hook.id);
    expect(d!.attemptLog[0]).toMatchObject({ status: null, error: "no answer within 0.5 s" });
    expect(d!.attemptLog[1]).toMatchObject({ status: 200 });
    expect(header(slow.received[0]!, "x-kiln-delivery")).toBe(header(slow.received[1]!, "x-kiln-delivery"));
  });

  it("sends a test event to one webhook only", async () => {
    const [a, aUrl] = await receiver();
    const [b, bUrl] = await receiver();
    const hookA = await t.admin.addWebhook({ url: aUrl, events: ["*"] });
    await t.admin.addWebhook({ url: bUrl, events: ["*"] });
    const { eventId } = await t.admin.testWebhook(hookA.id);
    await waitFor("the test delivery", () => a.received.some((r) => eventOf(r).id === eventId));
    const got = a.received.find((r) => eventOf(r).id === eventId)!;
    expect(eventOf(got)).toMatchObject({ type: "webhook.test", data: { webhookId: hookA.id } });
    await new Promise((r) => setTimeout(r, 500));
    expect(b.received.some((r) => eventOf(r).id === eventId)).toBe(false);
  });

  it("refuses bad input with stable codes", async () => {
    await expectCode(
      t.admin.addWebhook({ url: "not a url", events: ["build.failed"] }),
      "WEBHOOK_URL_INVALID",
    );
    await expectCode(
      t.admin.addWebhook({ url: "ftp://x.example/", events: ["build.failed"] }),
      "WEBHOOK_URL_INVALID",
    );
    await expectCode(
      t.admin.addWebhook({ url: "http://127.0.0.1:9/", events: ["build.exploded"] }),
      "EVENT_TYPE_UNKNOWN",
    );
    await expectCode(
      t.admin.addWebhook({ url: "http://127.0.0.1:9/", events: ["build.failed"], format: "xml" as never }),
      "VALIDATION_FAILED",
    );
    await expectCode(t.admin.editWebhook(999_999, { enabled: true }), "WEBHOOK_NOT_FOUND");
    await expectCode(t.admin.listEvents({ type: "nope.*" }), "EVENT_TYPE_UNKNOWN");
    // Where private addresses are not allowed (the default):
    const strict = { db: t.hub.deps.db, clock: t.hub.deps.clock, webhooks: { ...DEFAULT_WEBHOOKS } };
    for (const url of [
      "http://127.0.0.1:8080/x",
      "http://localhost/x",
      "http://[::1]/x",
      "http://[::ffff:127.0.0.1]/x",
      "http://169.254.169.254/latest/meta-data",
      "http://10.0.0.5/x",
      "http://[fd00::1]/x",
    ]) {
      await expectCode(
        createWebhook(strict, { url, events: ["build.failed"] }, "admin"),
        "WEBHOOK_ADDRESS_FORBIDDEN",
      );
    }
  });

  it("serves events as a list and as a resumable stream", async () => {
    const start = (await t.admin.listEvents({ newest: true, limit: 1 })).next;
    await t.admin.createTag({ name: "sse-1" });
    await t.admin.createTag({ name: "sse-2" });
    // On PostgreSQL an event shows once every older transaction on the server has ended.
    const page = await waitFor("both events listed", async () => {
      const p = await t.admin.listEvents({ since: start, type: "tag.*" });
      return p.events.length >= 2 ? p : undefined;
    });
    expect(page.events.map((e) => e.data.tag)).toEqual(["sse-1", "sse-2"]);
    expect(page.next).toBe(page.events[1]!.id);

    const read = async (headers: Record<string, string>, query: string, n: number) => {
      const controller = new AbortController();
      const res = await t.admin.raw("GET", `/api/v1/events/stream${query}`, undefined, {
        headers: { accept: "text/event-stream", ...headers },
        signal: controller.signal,
      });
      const got: { event: string; id: string; data: EventJson }[] = [];
      for await (const m of readSse(res.body!)) {
        got.push({ event: m.event, id: m.id, data: JSON.parse(m.data) as EventJson });
        if (got.length === n) break;
      }
      controller.abort();
      return got;
    };
    const first = await read({}, `?since=${start}&type=tag.created`, 1);
    expect(first[0]).toMatchObject({ event: "tag.created", data: { data: { tag: "sse-1" } } });
    const resumed = await read({ "last-event-id": first[0]!.id }, "?type=tag.created", 1);
    expect(resumed[0]!.data.data.tag).toBe("sse-2");
    // Something recorded after the stream opened arrives too.
    const live = read({ "last-event-id": resumed[0]!.id }, "?type=tag.created", 1);
    await t.admin.createTag({ name: "sse-3" });
    expect((await live)[0]!.data.data.tag).toBe("sse-3");
  });
});

describe.each(dialects)("webhooks giving up on %s", (dialect) => {
  let t: WebhookTestHub;
  let rx: Receiver;

  beforeAll(async () => {
    t = await startWebhookHub(dialect, { backoffBase: 0.05, backoffMax: 0.1, timeout: 0.5, maxAge: 0.5 });
    rx = new Receiver();
  });
  afterAll(async () => {
    await t.cleanup();
    await rx.close();
  });

  it("disables a webhook whose delivery failed for its whole max age, says so, and resumes when enabled", async () => {
    const url = await rx.listen();
    rx.answer = () => 503;
    const hook = await t.admin.addWebhook({ url, events: ["tag.created"] });
    await t.admin.createTag({ name: "doomed-1" });
    await t.admin.createTag({ name: "doomed-2" });
    const disabled = await waitFor("the webhook disabled", async () => {
      const h = await t.admin.getWebhook(hook.id);
      return h.enabled ? undefined : h;
    });
    expect(disabled.disabledReason).toMatch(/failed for/);
    await waitFor("the webhook.disabled event", async () => {
      const events = await t.admin.listEvents({ type: "webhook.disabled" });
      return events.events.some((e) => e.data.webhookId === hook.id);
    });
    // In order: the second event was never sent while the first kept failing.
    expect(rx.received.every((r) => eventOf(r).data.tag === "doomed-1")).toBe(true);
    const deliveries = await t.admin.webhookDeliveries(hook.id);
    expect(deliveries.map((d) => d.state)).toEqual(["pending", "failed"]);

    rx.answer = () => 200;
    await t.admin.editWebhook(hook.id, { enabled: true });
    await waitFor("the waiting delivery", () => rx.received.some((r) => eventOf(r).data.tag === "doomed-2"));
    expect((await t.admin.getWebhook(hook.id)).enabled).toBe(true);
  });
});
