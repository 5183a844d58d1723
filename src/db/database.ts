import { mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { Worker } from "node:worker_threads";
import SQLite from "better-sqlite3";
import { CompiledQuery, Kysely, Migrator, PostgresDialect, SqliteDialect, type Migration } from "kysely";
import pg from "pg";
import type { Database } from "./schema.js";
import * as m001 from "./migrations/001-core.js";
import * as m002 from "./migrations/002-builds.js";
import * as m003 from "./migrations/003-dispatch-index.js";
import * as m004 from "./migrations/004-repos.js";
import * as m005 from "./migrations/005-webhooks.js";
import * as m006 from "./migrations/006-reliability.js";
import * as m007 from "./migrations/007-buildroots.js";
import * as m008 from "./migrations/008-event-order.js";

export type Dialect = "sqlite" | "postgres";

export interface Db {
  kysely: Kysely<Database>;
  dialect: Dialect;
  url: string;
  close(): Promise<void>;
}

// int8 (bigserial ids, ms timestamps) and numeric come back as strings by default.
pg.types.setTypeParser(20, (v) => Number(v));
pg.types.setTypeParser(1700, (v) => Number(v));

const MIGRATIONS: { name: string; up: typeof m001.up }[] = [
  { name: "001-core", up: m001.up },
  { name: "002-builds", up: m002.up },
  { name: "003-dispatch-index", up: m003.up },
  { name: "004-repos", up: m004.up },
  { name: "005-webhooks", up: m005.up },
  { name: "006-reliability", up: m006.up },
  { name: "007-buildroots", up: m007.up },
  { name: "008-event-order", up: m008.up },
];

export function dialectOf(url: string): Dialect {
  return /^postgres(ql)?:\/\//.test(url) ? "postgres" : "sqlite";
}

export function openDatabase(url: string, opts: { poolSize?: number } = {}): Db {
  const dialect = dialectOf(url);
  if (dialect === "postgres") {
    const pool = new pg.Pool({ connectionString: url, max: opts.poolSize ?? 10 });
    // An idle client that errors (server restart) must not crash the hub.
    pool.on("error", () => undefined);
    const kysely = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
    return { kysely, dialect, url, close: () => kysely.destroy() };
  }
  const file = url.replace(/^sqlite:\/\//, "");
  mkdirSync(path.dirname(file), { recursive: true });
  const sqlite = new SQLite(file);
  sqlite.pragma("journal_mode = WAL");
  sqlite.pragma("synchronous = NORMAL");
  sqlite.pragma("busy_timeout = 10000");
  sqlite.pragma("foreign_keys = ON");
  // The checkpointer below does the work; this is only a backstop should it fall far behind.
  sqlite.pragma(`wal_autocheckpoint = ${BACKSTOP_CHECKPOINT_PAGES}`);
  const checkpointer = startCheckpointer(file);
  const kysely = new Kysely<Database>({
    dialect: new SqliteDialect({ database: withStatementCache(sqlite) }),
  });
  return {
    kysely,
    dialect,
    url,
    close: async () => {
      await kysely.destroy();
      await checkpointer.stop();
    },
  };
}

const BACKSTOP_CHECKPOINT_PAGES = 20_000;
const CHECKPOINT_INTERVAL_MS = 200;

/**
 * SQLite's automatic checkpoint runs inside the commit that crosses its threshold and waits for
 * two fsyncs: on a slow disk that stalls the hub's only thread for tens, even hundreds, of
 * milliseconds, every few dozen tasks. So a background thread with a connection of its own
 * checkpoints instead, a few times a second. PASSIVE never blocks the hub's writers or readers;
 * durability is unchanged (WAL with synchronous=NORMAL: the checkpoint syncs the WAL first).
 */
function startCheckpointer(file: string): { stop(): Promise<void> } {
  const source = `
    const { parentPort, workerData } = require("node:worker_threads");
    const Database = require(workerData.driver);
    const db = new Database(workerData.file);
    db.pragma("busy_timeout = 5000");
    const timer = setInterval(() => {
      try { db.pragma("wal_checkpoint(PASSIVE)"); } catch {}
    }, workerData.intervalMs);
    parentPort.on("message", () => {
      clearInterval(timer);
      db.close();
      parentPort.close();
    });
  `;
  const worker = new Worker(source, {
    eval: true,
    workerData: {
      driver: createRequire(import.meta.url).resolve("better-sqlite3"),
      file,
      intervalMs: CHECKPOINT_INTERVAL_MS,
    },
  });
  worker.unref();
  // Losing the checkpointer only brings back the backstop's stalls: not a reason to stop.
  worker.on("error", () => undefined);
  const exited = new Promise<void>((resolve) => worker.once("exit", () => resolve()));
  return {
    stop: async () => {
      worker.postMessage("stop");
      await exited;
    },
  };
}

/**
 * Kysely prepares every query afresh; the hot queue statements are the same few strings, so
 * keep their prepared statements (a bounded cache; better-sqlite3 statements are reusable).
 */
function withStatementCache(sqlite: SQLite.Database): SQLite.Database {
  const cache = new Map<string, SQLite.Statement>();
  const prepare = sqlite.prepare.bind(sqlite);
  return new Proxy(sqlite, {
    get(target, prop, receiver) {
      if (prop !== "prepare") return Reflect.get(target, prop, receiver) as unknown;
      return (source: string) => {
        let stmt = cache.get(source);
        if (!stmt) {
          stmt = prepare(source);
          if (cache.size >= 500) cache.clear();
          cache.set(source, stmt);
        }
        return stmt;
      };
    },
  });
}

/** Migrates forward to the newest schema; never backward. */
export async function migrateDatabase(db: Db): Promise<void> {
  const migrations: Record<string, Migration> = {};
  for (const m of MIGRATIONS) {
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    migrations[m.name] = { up: (k: Kysely<any>) => m.up(k, db.dialect) };
  }
  const migrator = new Migrator({
    db: db.kysely,
    provider: { getMigrations: () => Promise.resolve(migrations) },
    migrationTableName: "kiln_migrations",
    migrationLockTableName: "kiln_migrations_lock",
  });
  const { error } = await migrator.migrateToLatest();
  if (error) throw error instanceof Error ? error : new Error(`migration failed: ${JSON.stringify(error)}`);
}

/**
 * Runs fn in a write transaction. On SQLite it is BEGIN IMMEDIATE, so the write lock is taken up
 * front and two writers never deadlock on an upgrade; on PostgreSQL a normal transaction.
 */
export async function withWriteTx<T>(db: Db, fn: (trx: Kysely<Database>) => Promise<T>): Promise<T> {
  if (db.dialect === "postgres") return db.kysely.transaction().execute(fn);
  return db.kysely.connection().execute(async (conn) => {
    await conn.executeQuery(BEGIN_IMMEDIATE);
    try {
      const out = await fn(conn);
      await conn.executeQuery(COMMIT);
      return out;
    } catch (err) {
      await conn.executeQuery(ROLLBACK);
      throw err;
    }
  });
}

// Compiled once: these run around every write.
const BEGIN_IMMEDIATE = CompiledQuery.raw("begin immediate");
const COMMIT = CompiledQuery.raw("commit");
const ROLLBACK = CompiledQuery.raw("rollback");
