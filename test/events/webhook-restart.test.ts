import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import type { EventJson } from "../../src/events/event-json.js";
import { createPgDatabase, DIALECTS, postgresAvailable } from "../helpers/db.js";
import { freePort, startHubProcess, stop, waitFor, type HubProc } from "../helpers/procs.js";
import { Receiver } from "./receiver.js";

const pgOk = await postgresAvailable();
const dialects = DIALECTS.filter((d) => d === "sqlite" || pgOk);

const TOML = `[webhooks]
allow_private = true
timeout = 1
backoff_base = 0.2
backoff_max = 0.5
poll_interval = 0.2
`;

describe.each(dialects)("webhook deliveries across a hub kill -9 on %s", (dialect) => {
  const cleanups: (() => Promise<void>)[] = [];
  afterAll(async () => {
    for (const fn of cleanups.reverse()) await fn().catch(() => undefined);
  });

  it("sends what was pending after the restart, in order, once per delivery id", async () => {
    const dataDir = mkdtempSync(path.join(os.tmpdir(), "kiln-hook-kill-"));
    cleanups.push(() => Promise.resolve(rmSync(dataDir, { recursive: true, force: true })));
    const pgDb = dialect === "postgres" ? await createPgDatabase() : undefined;
    if (pgDb) cleanups.push(() => pgDb.drop());
    const rx = new Receiver();
    rx.answer = () => 500;
    const url = await rx.listen();
    cleanups.push(() => rx.close());
    const port = await freePort();
    const opts = { dataDir, port, worker: false, toml: TOML, ...(pgDb ? { db: pgDb.url } : {}) };

    let hub: HubProc = await startHubProcess(opts);
    cleanups.push(() => stop(hub, "SIGKILL"));
    const hook = await hub.admin.addWebhook({ url, events: ["tag.created"], secret: "k" });
    const names = ["kill-1", "kill-2", "kill-3"];
    for (const name of names) await hub.admin.createTag({ name });
    await waitFor("a refused attempt", () => rx.received.length >= 2, 30_000);
    await stop(hub, "SIGKILL");

    rx.answer = () => 200;
    const refusedBefore = rx.received.length;
    hub = await startHubProcess(opts);
    await waitFor(
      "every delivery after the restart",
      () => rx.received.slice(refusedBefore).length >= 3,
      60_000,
    );
    await new Promise((r) => setTimeout(r, 500));
    const acked = rx.received.slice(refusedBefore);
    // The refused tries before the kill were all of the first event.
    expect(
      rx.received
        .slice(0, refusedBefore)
        .every((r) => (JSON.parse(r.body) as EventJson).data.tag === "kill-1"),
    ).toBe(true);
    expect(acked.map((r) => (JSON.parse(r.body) as EventJson).data.tag)).toEqual(names);
    expect(new Set(acked.map((r) => r.headers["x-kiln-delivery"])).size).toBe(3);
    expect(String(rx.received[0]!.headers["x-kiln-delivery"])).toBe(
      String(acked[0]!.headers["x-kiln-delivery"]),
    );
    const deliveries = await hub.admin.webhookDeliveries(hook.id);
    expect(deliveries.map((d) => d.state)).toEqual(["delivered", "delivered", "delivered"]);
    await stop(hub);
  });
});
