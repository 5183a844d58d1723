import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KilnError } from "../../src/errors/catalogue.js";
import { DIALECTS, postgresAvailable } from "../helpers/db.js";
import { startTestHub, type TestHub } from "../helpers/hub.js";

const pgOk = await postgresAvailable();
const dialects = DIALECTS.filter((d) => d === "sqlite" || pgOk);

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    if (err instanceof KilnError) return `${String(err.details?.status)} ${err.code}`;
    throw err;
  }
  return "no error";
}

describe.each(dialects)("hub API on %s", (dialect) => {
  let t: TestHub;
  beforeAll(async () => {
    t = await startTestHub(dialect);
  });
  afterAll(async () => {
    await t?.cleanup();
  });

  it("serves health and an OpenAPI document listing its routes", async () => {
    const health = (await (await fetch(`${t.url}/healthz`)).json()) as { ok: boolean; db: string };
    expect(health).toMatchObject({ ok: true, db: dialect });
    const doc = (await (await fetch(`${t.url}/api/v1/openapi.json`)).json()) as {
      openapi: string;
      paths: Record<string, unknown>;
    };
    expect(doc.openapi).toBe("3.1.0");
    expect(Object.keys(doc.paths)).toEqual(
      expect.arrayContaining([
        "/api/v1/tasks",
        "/api/v1/tasks/{id}",
        "/api/v1/hosts/{host}/claim",
        "/api/v1/tokens",
      ]),
    );
  });

  it("refuses missing, wrong and revoked tokens with stable codes", async () => {
    expect(await code(t.client().listTasks())).toBe("401 AUTH_REQUIRED");
    expect(await code(t.client("kiln_nope").listTasks())).toBe("401 TOKEN_INVALID");
    const { token, info } = await t.admin.createToken({ user: "carol" });
    const carol = t.client(token);
    expect((await carol.whoami()).user).toBe("carol");
    await t.admin.revokeToken(info.id);
    expect(await code(carol.listTasks())).toBe("401 TOKEN_INVALID");
    expect(await code(t.admin.revokeToken(987654))).toBe("404 TOKEN_NOT_FOUND");
  });

  it("keeps roles apart: user vs admin vs host", async () => {
    const { token } = await t.admin.createToken({ user: "dave", role: "user" });
    const dave = t.client(token);
    expect(await code(dave.createTask({ method: "sleep", args: { seconds: 1 } }))).toBe("403 ADMIN_REQUIRED");
    expect(await code(dave.addHost({ name: "x", arches: ["amd64"] }))).toBe("403 ADMIN_REQUIRED");
    expect(await code(dave.listTokens())).toBe("403 ADMIN_REQUIRED");
    expect(await code(dave.claim(0))).toBe("403 HOST_REQUIRED");

    const a = await t.admin.addHost({ name: `builder-a-${dialect}`, arches: ["amd64"] });
    const b = await t.admin.addHost({ name: `builder-b-${dialect}`, arches: ["amd64"] });
    const hostA = t.client(a.token);
    expect(await code(hostA.heartbeat([], b.host.name))).toBe("403 HOST_MISMATCH");
    expect(await code(hostA.claim(0, undefined, b.host.name))).toBe("403 HOST_MISMATCH");
    expect(await code(hostA.createTask({ method: "sleep", args: { seconds: 0 } }))).toBe("403 FORBIDDEN");
    expect((await hostA.heartbeat([], a.host.name)).tasks).toEqual([]);
    expect(await code(t.admin.addHost({ name: a.host.name, arches: ["amd64"] }))).toBe("409 HOST_EXISTS");
    expect(await code(t.admin.addHost({ name: "../etc", arches: ["amd64"] }))).toBe("400 INVALID_NAME");
    // A task claimed by host A cannot be completed by host B, even with the right epoch.
    await t.admin.editHost(a.host.name, { channels: ["only-a"] });
    const task = await t.admin.createTask({ method: "sleep", args: { seconds: 0 }, channel: "only-a" });
    const claimed = await hostA.claim(5);
    expect(claimed?.task.id).toBe(task.id);
    expect(await code(t.client(b.token).completeTask(task.id, claimed!.epoch, null))).toBe(
      "403 HOST_MISMATCH",
    );
    await hostA.completeTask(task.id, claimed!.epoch, { ok: true });
    await t.admin.editHost(a.host.name, { enabled: false });
  });

  it("answers bad input with a clear error and changes nothing", async () => {
    const before = (await t.admin.listTasks({ limit: 1000 })).tasks.length;
    const raw = await fetch(`${t.url}/api/v1/tasks`, {
      method: "POST",
      headers: { authorization: `Bearer ${t.adminToken}`, "content-type": "application/json" },
      body: "{not json",
    });
    expect(raw.status).toBe(400);
    expect(((await raw.json()) as { error: { code: string } }).error.code).toBe("INVALID_JSON");
    expect(await code(t.admin.createTask({ method: "frobnicate" }))).toBe("400 UNKNOWN_METHOD");
    expect(await code(t.admin.createTask({ method: "sleep", args: { seconds: 1 }, priority: 500 }))).toBe(
      "400 INVALID_PRIORITY",
    );
    expect(await code(t.admin.createTask({ method: "sleep", args: { seconds: "x" } }))).toBe(
      "400 VALIDATION_FAILED",
    );
    expect(await code(t.admin.getTask(424242))).toBe("404 TASK_NOT_FOUND");
    expect(await code(t.admin.cancelTask(424242))).toBe("404 TASK_NOT_FOUND");
    expect(await code(t.admin.request("GET", "/api/v1/nowhere"))).toBe("404 NOT_FOUND");
    expect((await t.admin.listTasks({ limit: 1000 })).tasks.length).toBe(before);
  });

  it("wakes a long-polling claim the moment a task it can run appears", async () => {
    const h = await t.admin.addHost({ name: `poller-${dialect}`, arches: ["amd64"], channels: ["poll"] });
    const worker = t.client(h.token);
    await worker.hello({ running: [], capabilities: [], version: "test" });
    const pending = worker.claim(20);
    await new Promise((r) => setTimeout(r, 300));
    const task = await t.admin.createTask({ method: "sleep", args: { seconds: 0 }, channel: "poll" });
    const got = await pending;
    expect(got?.task.id).toBe(task.id);
    expect(got?.epoch).toBe(1);

    // The whole worker protocol: start, log, complete; the log reads back and streams.
    await worker.startTask(task.id, 1);
    await worker.appendLog(task.id, 1, 0, "line one\n");
    await worker.appendLog(task.id, 1, 9, "line two\n");
    const stream = await t.admin.raw("GET", `/api/v1/tasks/${task.id}/logs?follow=1`);
    await worker.completeTask(task.id, 1, { slept: 0 });
    const text = await stream.text();
    expect(text).toContain('"data":"line one\\n"');
    expect(text).toMatch(/event: end\ndata: \{"state":"closed"/);
    expect(await t.admin.taskLog(task.id)).toBe("line one\nline two\n");
    const shown = await t.admin.getTask(task.id);
    expect(shown).toMatchObject({
      state: "closed",
      result: { slept: 0 },
      host: `poller-${dialect}`,
      attempts: 1,
    });
  });

  it("says why a task cannot run", async () => {
    const task = await t.admin.createTask({ method: "sleep", args: { seconds: 0 }, arch: "mips64el" });
    expect((await t.admin.getTask(task.id)).why).toMatch(/no host has arch mips64el/);
    await t.admin.cancelTask(task.id);
  });
});
