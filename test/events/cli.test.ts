import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { followEvents } from "../../src/cli/events.js";
import { run } from "../../src/cli/main.js";
import type { EventJson, WebhookDeliveryJson, WebhookJson } from "../../src/events/event-json.js";
import { DIALECTS, postgresAvailable } from "../helpers/db.js";
import { waitFor } from "../helpers/procs.js";
import { Receiver, startWebhookHub, type WebhookTestHub } from "./receiver.js";

const pgOk = await postgresAvailable();
const dialects = DIALECTS.filter((d) => d === "sqlite" || pgOk);

describe.each(dialects)("kiln events and kiln webhook on %s", (dialect) => {
  let t: WebhookTestHub;
  let rx: Receiver;
  let url: string;

  beforeAll(async () => {
    t = await startWebhookHub(dialect, { backoffBase: 0.05, backoffMax: 0.1, timeout: 1 });
    rx = new Receiver();
    url = await rx.listen();
  });
  afterAll(async () => {
    await t.cleanup();
    await rx.close();
  });

  async function kiln(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    const out: string[] = [];
    const err: string[] = [];
    const so = vi.spyOn(process.stdout, "write").mockImplementation((c) => (out.push(String(c)), true));
    const se = vi.spyOn(process.stderr, "write").mockImplementation((c) => (err.push(String(c)), true));
    try {
      const code = await run(["--hub", t.hub.url, "--token", t.adminToken, ...args]);
      return { code, stdout: out.join(""), stderr: err.join("") };
    } finally {
      so.mockRestore();
      se.mockRestore();
    }
  }

  it("adds, lists, tests, edits and removes a webhook, showing its deliveries", async () => {
    const added = await kiln(
      "webhook",
      "add",
      url,
      "--events",
      "tag.*,publish.live",
      "--secret",
      "s",
      "--json",
    );
    expect(added.code).toBe(0);
    const hook = JSON.parse(added.stdout) as WebhookJson;
    expect(hook).toMatchObject({ url, events: ["tag.*", "publish.live"], hasSecret: true });

    const list = await kiln("webhook", "list");
    expect(list.stdout).toMatch(new RegExp(`${hook.id}\\s+enabled\\s+json\\s+yes`));

    const tested = await kiln("webhook", "test", String(hook.id));
    expect(tested.code).toBe(0);
    expect(tested.stdout).toMatch(/webhook\.test {2}delivered/);
    expect(tested.stdout).toMatch(/#1 .* HTTP 200/);

    const edited = await kiln("webhook", "edit", String(hook.id), "--no-secret", "--disable", "--json");
    expect(JSON.parse(edited.stdout)).toMatchObject({ hasSecret: false, enabled: false });

    const deliveries = await kiln("webhook", "deliveries", String(hook.id), "--json");
    const parsed = JSON.parse(deliveries.stdout) as WebhookDeliveryJson[];
    expect(parsed[0]).toMatchObject({ eventType: "webhook.test", state: "delivered", attempts: 1 });

    expect((await kiln("webhook", "remove", String(hook.id))).stdout).toContain("removed");
    const gone = await kiln("webhook", "show", String(hook.id));
    expect(gone.code).toBe(3);
    expect(gone.stderr).toContain("[WEBHOOK_NOT_FOUND]");
  });

  it("reports bad input with its code and exit status", async () => {
    const badType = await kiln("webhook", "add", url, "--events", "build.nope");
    expect(badType.code).toBe(2);
    expect(badType.stderr).toContain("[EVENT_TYPE_UNKNOWN]");
    const badUrl = await kiln("webhook", "add", "gopher://x", "--events", "build.failed");
    expect(badUrl.stderr).toContain("[WEBHOOK_URL_INVALID]");
    expect((await kiln("events", "--type", "bogus")).stderr).toContain("[EVENT_TYPE_UNKNOWN]");
  });

  it("lists events and follows them", async () => {
    await t.admin.createTag({ name: "cli-ev-1" });
    // On PostgreSQL an event shows once every older transaction on the server has ended.
    const listed = await waitFor("the event listed", async () => {
      const r = await kiln("events", "--type", "tag.created", "--limit", "5");
      return r.stdout.includes("cli-ev-1") ? r : undefined;
    });
    expect(listed.code).toBe(0);
    expect(listed.stdout).toMatch(/^\d+ {2}.+ {2}tag\.created {2}tag=cli-ev-1 {2}\(by admin\)$/m);
    const json = JSON.parse((await kiln("events", "--since", "0", "--type", "tag.*", "--json")).stdout) as {
      events: EventJson[];
    };
    expect(json.events.map((e) => e.data.tag)).toContain("cli-ev-1");

    const since = json.events.at(-1)!.id;
    const lines: string[] = [];
    const stop = new AbortController();
    const following = followEvents(t.admin, {
      since,
      type: "tag.created",
      json: true,
      out: { write: (s: string) => (lines.push(s), true) },
      err: { write: () => true },
      signal: stop.signal,
    });
    await t.admin.createTag({ name: "cli-ev-2" });
    await waitFor("the followed event", () => lines.length >= 1);
    stop.abort();
    await following;
    expect((JSON.parse(lines[0]!) as EventJson).data.tag).toBe("cli-ev-2");
  });
});
