import { sql, type Kysely } from "kysely";
import type { Dialect } from "../database.js";

/**
 * On PostgreSQL, event ids come from a sequence at insert but become visible at commit, so a
 * smaller id can appear after a larger one. A follower that moved its cursor past the larger id
 * would skip the smaller for good. Every transaction writing events announces, in a shared
 * advisory lock taken just before its id is drawn, a number below every id it will get; readers
 * stop below the smallest such number still held in this database (and below the ids drawn so
 * far). Shared locks never wait on each other, so writers are not serialized; and unlike a
 * snapshot's xmin, which is cluster-wide, only this database's writers hold a reader back.
 *
 * The single-bigint advisory key space is the event order's alone (its locks show in pg_locks
 * with objsubid 1); Kiln's other advisory locks use the two-key form (see db/advisory.ts).
 * SQLite has one writer at a time, so ids commit in order and nothing is needed there.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>, dialect: Dialect): Promise<void> {
  if (dialect !== "postgres") return;
  await sql`
    CREATE FUNCTION kiln_next_event_id() RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
    DECLARE
      below bigint;
    BEGIN
      -- Once a transaction: its first lock is below every id it draws later too (and a lock an
      -- event could cost would run a transaction of thousands out of lock table space).
      IF current_setting('kiln.event_writer', true) IS DISTINCT FROM 'yes' THEN
        SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END INTO below FROM events_id_seq;
        PERFORM pg_advisory_xact_lock_shared(below);
        PERFORM set_config('kiln.event_writer', 'yes', true);
      END IF;
      RETURN nextval('events_id_seq');
    END $$`.execute(db);
  await sql`
    CREATE FUNCTION kiln_event_horizon() RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
    DECLARE
      drawn bigint;
      held bigint;
    BEGIN
      -- Drawn first: a writer whose lock is not seen below takes its id after this read.
      SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END INTO drawn FROM events_id_seq;
      SELECT min((l.classid::bigint << 32) | l.objid::bigint) INTO held
        FROM pg_locks l
       WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.pid <> pg_backend_pid()
         AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database());
      RETURN least(drawn, held);
    END $$`.execute(db);
  await sql`ALTER TABLE events ALTER COLUMN id SET DEFAULT kiln_next_event_id()`.execute(db);
  // The writer's transaction id bounded readers by the oldest transaction in the whole cluster.
  await sql`ALTER TABLE events DROP COLUMN txid`.execute(db);
}
