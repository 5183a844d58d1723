import { createServer, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { watchBuild } from "../../src/cli/build-watch.js";
import { Spinner } from "../../src/cli/output.js";
import { KilnClient } from "../../src/client/client.js";

/** A stand-in hub whose build ends when `finish()` is called; `stream` answers the log stream. */
let server: Server;
let client: KilnClient;
let finished: boolean;
let stream: (res: ServerResponse) => void;
let logRequests: number;

function send(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));
}

const build = () => ({
  id: 4,
  source: "hello",
  version: "1.0-1",
  nvr: "hello/1.0-1",
  state: finished ? "complete" : "building",
  owner: "alice",
  target: "t",
  scratch: false,
  taskId: 9,
  createdAt: "2025-01-01T00:00:00.000Z",
  completedAt: finished ? "2025-01-01T00:01:00.000Z" : null,
  arches: [{ arch: "amd64", taskId: 11, state: finished ? "closed" : "open" }],
  artifacts: [],
  tags: finished ? ["dist"] : [],
});

const task = () => ({
  id: 9,
  method: "build",
  args: {},
  state: finished ? "closed" : "open",
  waiting: !finished,
  parentId: null,
  label: null,
  error: null,
  subtasks: [],
});

beforeEach(async () => {
  finished = false;
  logRequests = 0;
  stream = (res) => send(res, 404, { error: { code: "NOT_FOUND", message: "no route" } });
  server = createServer((req, res) => {
    if (req.url === "/api/v1/builds/4") return send(res, 200, build());
    if (req.url === "/api/v1/tasks/9") return send(res, 200, task());
    if (req.url === "/api/v1/tasks/9/logs?follow=1") {
      logRequests++;
      return stream(res);
    }
    send(res, 404, { error: { code: "NOT_FOUND", message: "no route" } });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  client = new KilnClient({ hub: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, token: "t" });
});

afterEach(async () => {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

const quiet = () => new Spinner({ out: { write: () => true }, tty: false });

describe("watchBuild and the task's log stream", () => {
  it("looks again as soon as the stream says the task ended, not a poll interval later", async () => {
    stream = (res) => {
      res.writeHead(200, { "content-type": "text/event-stream" });
      res.write('event: log\nid: 1:3\ndata: {"epoch":1,"offset":0,"data":"hi\\n"}\n\n');
      setTimeout(() => {
        finished = true;
        res.end('event: end\ndata: {"state":"closed","error":null}\n\n');
      }, 50);
    };
    // With an hour between polls, only the stream's end can make the watch look again.
    const result = await watchBuild(client, 4, 9, { intervalMs: 3_600_000, spinner: quiet() });
    expect(result.ok).toBe(true);
    expect(result.build.tags).toEqual(["dist"]);
    expect(logRequests).toBe(1);
  });

  it("goes on polling when the hub has no log stream for it", async () => {
    setTimeout(() => (finished = true), 50);
    const result = await watchBuild(client, 4, 9, { intervalMs: 10, spinner: quiet() });
    expect(result.ok).toBe(true);
    expect(logRequests).toBe(1);
  });
});
