import { createHmac } from "node:crypto";
import { describe, expect, it } from "vitest";
import { KilnError } from "../../src/errors/catalogue.js";
import { forbiddenAddressReason, parseWebhookUrl } from "../../src/events/address-policy.js";
import { EVENT_TYPES, matchesPatterns, parseEventPatterns } from "../../src/events/event-types.js";
import { readWebhookConfig } from "../../src/events/webhook-config.js";
import {
  signWebhook,
  summarizeEvent,
  webhookBody,
  webhookHeaders,
} from "../../src/events/webhook-payload.js";

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return err instanceof KilnError ? err.code : `not a KilnError: ${String(err)}`;
  }
  return undefined;
}

describe("event type patterns", () => {
  it("takes exact types, NOUN.* and *, deduplicated", () => {
    expect(parseEventPatterns("build.failed, publish.live,build.failed")).toEqual([
      "build.failed",
      "publish.live",
    ]);
    expect(parseEventPatterns(["build.*", "*"])).toEqual(["build.*", "*"]);
  });
  it("refuses unknown types and families with EVENT_TYPE_UNKNOWN", () => {
    expect(code(() => parseEventPatterns("build.exploded"))).toBe("EVENT_TYPE_UNKNOWN");
    expect(code(() => parseEventPatterns("nothing.*"))).toBe("EVENT_TYPE_UNKNOWN");
    expect(code(() => parseEventPatterns("build.fail*"))).toBe("EVENT_TYPE_UNKNOWN");
    expect(code(() => parseEventPatterns(" , "))).toBe("EVENT_TYPE_UNKNOWN");
  });
  it("matches a family by its noun only", () => {
    expect(matchesPatterns("build.failed", ["build.*"])).toBe(true);
    expect(matchesPatterns("builder.failed", ["build.*"])).toBe(false);
    expect(matchesPatterns("tag.created", ["build.failed", "*"])).toBe(true);
    expect(matchesPatterns("tag.created", ["build.failed"])).toBe(false);
  });
  it("names every type <noun>.<verb>", () => {
    for (const t of EVENT_TYPES) expect(t).toMatch(/^[a-z]+\.[a-z_]+$/);
  });
});

describe("webhook address policy", () => {
  it.each([
    ["127.0.0.1", "loopback"],
    ["10.1.2.3", "private"],
    ["172.31.255.255", "private"],
    ["192.168.0.10", "private"],
    ["169.254.169.254", "link-local / metadata"],
    ["100.64.0.1", "shared (CGNAT)"],
    ["0.0.0.0", "this-network"],
    ["::1", "loopback"],
    ["::", "unspecified"],
    ["fe80::1", "link-local"],
    ["fd00:ec2::254", "unique-local"],
    ["fc12:3456::1", "unique-local"],
    ["::ffff:127.0.0.1", "loopback"],
    ["::ffff:7f00:1", "loopback"],
    ["::ffff:169.254.169.254", "link-local / metadata"],
    ["::ffff:a9fe:a9fe", "link-local / metadata"],
    ["64:ff9b::10.0.0.1", "private"],
    ["2002:7f00:1::", "loopback"],
  ])("refuses %s (%s)", (address, reason) => {
    expect(forbiddenAddressReason(address)).toBe(reason);
  });
  it.each(["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"])("allows %s", (address) => {
    expect(forbiddenAddressReason(address)).toBeUndefined();
  });
  it("refuses URLs that are not absolute http(s) without credentials", () => {
    expect(code(() => parseWebhookUrl("not a url"))).toBe("WEBHOOK_URL_INVALID");
    expect(code(() => parseWebhookUrl("ftp://example.com/x"))).toBe("WEBHOOK_URL_INVALID");
    expect(code(() => parseWebhookUrl("https://user:pw@example.com/x"))).toBe("WEBHOOK_URL_INVALID");
    expect(parseWebhookUrl("https://example.com/hook").href).toBe("https://example.com/hook");
  });
});

describe("webhook payloads", () => {
  const event = {
    id: 42,
    type: "build.failed",
    actor: "alice",
    data: { buildId: 7, nvr: "hello/1.0-1", taskId: 9 },
    createdAt: "2026-01-01T00:00:00.000Z",
  };
  it("signs HMAC-SHA256 of timestamp.body", () => {
    const body = webhookBody("json", event);
    const expected = createHmac("sha256", "s3cret").update(`1700000000.${body}`).digest("hex");
    expect(signWebhook("s3cret", 1700000000, body)).toBe(`sha256=${expected}`);
    const headers = webhookHeaders({ event, delivery: "d-1", timestamp: 1700000000, body, secret: "s3cret" });
    expect(headers["x-kiln-signature"]).toBe(`sha256=${expected}`);
    expect(headers["x-kiln-event"]).toBe("build.failed");
    expect(headers["x-kiln-delivery"]).toBe("d-1");
    expect(headers["x-kiln-timestamp"]).toBe("1700000000");
    expect(
      webhookHeaders({ event, delivery: "d", timestamp: 1, body, secret: null })["x-kiln-signature"],
    ).toBe(undefined);
  });
  it("shapes Slack and Discord messages around a one-line summary", () => {
    expect(summarizeEvent(event)).toBe("[kiln] build.failed: hello/1.0-1 (build 7) by alice — event 42");
    expect(JSON.parse(webhookBody("slack", event))).toEqual({ text: summarizeEvent(event) });
    expect(JSON.parse(webhookBody("discord", event))).toMatchObject({ content: summarizeEvent(event) });
    expect(JSON.parse(webhookBody("json", event))).toEqual(event);
  });
});

describe("webhook config", () => {
  it("reads [webhooks] and the environment", () => {
    const cfg = readWebhookConfig({ timeout: 2, backoff_base: 0.1, allow_private: true }, {});
    expect(cfg).toMatchObject({ timeout: 2, backoffBase: 0.1, allowPrivate: true, maxAge: 86400 });
    expect(readWebhookConfig(undefined, { KILN_WEBHOOKS_ALLOW_PRIVATE: "1" }).allowPrivate).toBe(true);
    expect(code(() => readWebhookConfig({ nope: 1 }, {}))).toBe("CONFIG_INVALID");
    expect(code(() => readWebhookConfig({ timeout: -1 }, {}))).toBe("CONFIG_INVALID");
  });
});
