import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { KilnClient } from "../../src/client/client.js";
import { DEFAULT_ENGINE, type EngineConfig, type HubConfig } from "../../src/config/config.js";
import type { Dialect } from "../../src/db/database.js";
import { startHub, type Hub } from "../../src/hub/server.js";
import { createPgDatabase, silentLog } from "./db.js";

export interface TestHub {
  hub: Hub;
  url: string;
  admin: KilnClient;
  adminToken: string;
  dataDir: string;
  /** A client with a given token against this hub. */
  client(token?: string): KilnClient;
  cleanup(): Promise<void>;
}

/** A real hub in this process on a random loopback port, on a fresh database of the dialect. */
export async function startTestHub(
  dialect: Dialect,
  opts: {
    worker?: boolean;
    engine?: Partial<EngineConfig>;
    policies?: Record<string, string>;
    uploadLimitBytes?: number;
  } = {},
): Promise<TestHub> {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), "kiln-hub-"));
  const pgDb = dialect === "postgres" ? await createPgDatabase() : undefined;
  const config: HubConfig = {
    data: dataDir,
    listen: { host: "127.0.0.1", port: 0 },
    db: pgDb ? pgDb.url : `sqlite://${path.join(dataDir, "kiln.db")}`,
    worker: opts.worker ?? false,
    workerName: `test-worker-${process.pid}`,
    logLevel: "silent",
    engine: { ...DEFAULT_ENGINE, ...opts.engine },
    policies: opts.policies ?? {},
    uploadLimitBytes: opts.uploadLimitBytes ?? 64 * 1024 * 1024,
  };
  // Most test hubs never sign: their archive key is made on first use.
  const hub = await startHub(config, { log: silentLog, lazyArchiveKey: true });
  const adminToken = readFileSync(hub.adminTokenFile, "utf8").trim();
  return {
    hub,
    url: hub.url,
    admin: new KilnClient({ hub: hub.url, token: adminToken }),
    adminToken,
    dataDir,
    client: (token) => new KilnClient({ hub: hub.url, token }),
    async cleanup() {
      await hub.close();
      await pgDb?.drop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
