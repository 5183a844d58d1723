import { mkdirSync } from "node:fs";
import path from "node:path";
import SQLite from "better-sqlite3";
import { Kysely, Migrator, PostgresDialect, SqliteDialect, sql, type Migration } from "kysely";
import pg from "pg";
import type { Database } from "./schema.js";
import * as m001 from "./migrations/001-core.js";
import * as m002 from "./migrations/002-builds.js";
import * as m003 from "./migrations/003-dispatch-index.js";

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
  const kysely = new Kysely<Database>({
    dialect: new SqliteDialect({ database: withStatementCache(sqlite) }),
  });
  return { kysely, dialect, url, close: () => kysely.destroy() };
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
    await sql`begin immediate`.execute(conn);
    try {
      const out = await fn(conn);
      await sql`commit`.execute(conn);
      return out;
    } catch (err) {
      await sql`rollback`.execute(conn);
      throw err;
    }
  });
}
