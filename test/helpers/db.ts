import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import pino from "pino";
import { DEFAULT_ENGINE, type EngineConfig } from "../../src/config/config.js";
import { migrateDatabase, openDatabase, type Db, type Dialect } from "../../src/db/database.js";
import type { Clock, EngineDeps } from "../../src/tasks/deps.js";
import { Waker } from "../../src/tasks/wake.js";

export const DIALECTS: Dialect[] = ["sqlite", "postgres"];
export const PG_ADMIN_URL = process.env.KILN_TEST_PG ?? "postgres://postgres@127.0.0.1:5432/postgres";

let pgAvailable: Promise<boolean> | undefined;

/** Is the PostgreSQL server reachable? In CI a missing server is a failure, not a skip. */
export function postgresAvailable(): Promise<boolean> {
  pgAvailable ??= (async () => {
    const client = new pg.Client({ connectionString: PG_ADMIN_URL, connectionTimeoutMillis: 3000 });
    try {
      await client.connect();
      await client.end();
      return true;
    } catch (err) {
      if (process.env.CI === "true")
        throw new Error(`PostgreSQL is required in CI: ${(err as Error).message}`);
      console.warn(`skipping PostgreSQL tests: ${(err as Error).message}`);
      return false;
    }
  })();
  return pgAvailable;
}

/** A fresh PostgreSQL database for one test file; returns its URL and a dropper. */
export async function createPgDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  const name = `kiln_test_${process.pid}_${Math.random().toString(36).slice(2, 10)}`;
  const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = PG_ADMIN_URL.replace(/\/[^/]*$/, `/${name}`);
  return {
    url,
    async drop() {
      const c = new pg.Client({ connectionString: PG_ADMIN_URL });
      await c.connect();
      await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await c.end();
    },
  };
}

export interface TestDb {
  db: Db;
  url: string;
  cleanup(): Promise<void>;
}

/** A migrated database of the dialect: a temp SQLite file in WAL mode, or a fresh PG database. */
export async function createTestDb(dialect: Dialect): Promise<TestDb> {
  if (dialect === "postgres") {
    const pgDb = await createPgDatabase();
    const url = pgDb.url;
    const db = openDatabase(url);
    await migrateDatabase(db);
    return {
      db,
      url,
      async cleanup() {
        await db.close();
        await pgDb.drop();
      },
    };
  }
  const dir = mkdtempSync(path.join(os.tmpdir(), "kiln-test-db-"));
  const url = `sqlite://${path.join(dir, "kiln.db")}`;
  const db = openDatabase(url);
  await migrateDatabase(db);
  return {
    db,
    url,
    async cleanup() {
      await db.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A clock tests move by hand. */
export class ManualClock implements Clock {
  constructor(public ms = Date.UTC(2026, 0, 1)) {}
  now(): number {
    return this.ms;
  }
  advance(seconds: number): void {
    this.ms += seconds * 1000;
  }
}

export const silentLog = pino({ level: "silent" });

export function engineDeps(db: Db, clock: Clock, engine: Partial<EngineConfig> = {}): EngineDeps {
  return {
    db,
    clock,
    engine: { ...DEFAULT_ENGINE, ...engine },
    wake: new Waker(db, silentLog),
    log: silentLog,
  };
}
