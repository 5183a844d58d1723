import pg from "pg";

export const PG_SERVER = process.env.BENCH_PG ?? "postgres://postgres@127.0.0.1:5432";

/** The URL of database `name` on the bench's PostgreSQL server. */
export function databaseUrl(name) {
  return `${PG_SERVER}/${name}`;
}

async function withAdmin(fn) {
  const client = new pg.Client({ connectionString: databaseUrl("postgres"), connectionTimeoutMillis: 5000 });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/** Creates a fresh, empty database (dropping a leftover of the same name first). */
export async function createDatabase(name) {
  if (!/^[a-z0-9_]+$/.test(name)) throw new Error(`unsafe database name ${name}`);
  await withAdmin(async (c) => {
    await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await c.query(`CREATE DATABASE ${name}`);
  });
  return databaseUrl(name);
}

export async function dropDatabase(name) {
  if (!/^[a-z0-9_]+$/.test(name)) throw new Error(`unsafe database name ${name}`);
  await withAdmin((c) => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));
}

/** Drops every database this bench process created (for the emergency exit paths). */
export async function dropOwnDatabases() {
  const prefix = `kiln_bench_${process.pid}_`;
  await withAdmin(async (c) => {
    const { rows } = await c.query("SELECT datname FROM pg_database WHERE starts_with(datname, $1)", [
      prefix,
    ]);
    for (const { datname } of rows) await c.query(`DROP DATABASE IF EXISTS ${datname} WITH (FORCE)`);
  });
}
