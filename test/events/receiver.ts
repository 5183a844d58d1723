import http from "node:http";
import type { AddressInfo } from "node:net";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { KilnClient } from "../../src/client/client.js";
import { DEFAULT_ENGINE, type HubConfig } from "../../src/config/config.js";
import type { Dialect } from "../../src/db/database.js";
import { DEFAULT_WEBHOOKS, type WebhookConfig } from "../../src/events/webhook-config.js";
import { startHub, type Hub } from "../../src/hub/server.js";
import { createPgDatabase, silentLog } from "../helpers/db.js";

export interface Received {
  headers: http.IncomingHttpHeaders;
  body: string;
}

/**
 * A webhook receiver on loopback. `answer` decides each response: a status, or "hang" to never
 * answer (the hub's timeout must cut it off).
 */
export class Receiver {
  readonly received: Received[] = [];
  answer: (req: Received, n: number) => number | "hang" = () => 200;
  private readonly server: http.Server;
  private readonly hanging = new Set<http.ServerResponse>();

  constructor() {
    this.server = http.createServer((req, res) => {
      let body = "";
      req.setEncoding("utf8");
      req.on("data", (c: string) => (body += c));
      req.on("end", () => {
        const got = { headers: req.headers, body };
        this.received.push(got);
        const a = this.answer(got, this.received.length);
        if (a === "hang") {
          this.hanging.add(res);
          return;
        }
        res.writeHead(a, { "content-type": "text/plain" }).end(a < 300 ? "thanks" : `nope ${a}`);
      });
    });
  }

  async listen(port = 0): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(port, "127.0.0.1", resolve));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/hook`;
  }

  async close(): Promise<void> {
    for (const res of this.hanging) res.destroy();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

export interface WebhookTestHub {
  hub: Hub;
  admin: KilnClient;
  adminToken: string;
  cleanup(): Promise<void>;
}

/** A hub in this process with webhook settings for tests (loopback allowed, fast backoff). */
export async function startWebhookHub(
  dialect: Dialect,
  webhooks: Partial<WebhookConfig>,
): Promise<WebhookTestHub> {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), "kiln-hook-hub-"));
  const pgDb = dialect === "postgres" ? await createPgDatabase() : undefined;
  const config: HubConfig = {
    data: dataDir,
    listen: { host: "127.0.0.1", port: 0 },
    db: pgDb ? pgDb.url : `sqlite://${path.join(dataDir, "kiln.db")}`,
    worker: false,
    workerName: `test-worker-${process.pid}`,
    logLevel: "silent",
    engine: { ...DEFAULT_ENGINE },
    policies: {},
    uploadLimitBytes: 64 * 1024 * 1024,
    webhooks: { ...DEFAULT_WEBHOOKS, allowPrivate: true, pollInterval: 0.1, ...webhooks },
  };
  const hub = await startHub(config, { log: silentLog, lazyArchiveKey: true });
  const token = readFileSync(hub.adminTokenFile, "utf8").trim();
  return {
    hub,
    admin: new KilnClient({ hub: hub.url, token }),
    adminToken: token,
    async cleanup() {
      await hub.close();
      await pgDb?.drop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
