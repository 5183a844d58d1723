import { sql, type Kysely } from "kysely";
import type { Dialect } from "../database.js";
import { columnTypes } from "./column-types.js";

/**
 * Buildroot bases (debootstrap trees stored as blobs), the internal APT repository of each build
 * tag (Koji's kojira repos) and, per build, what it was built in.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>, dialect: Dialect): Promise<void> {
  const { id, big, pk } = columnTypes(dialect);

  await db.schema
    .createTable("buildroots")
    .addColumn("id", id, pk)
    .addColumn("name", "text", (c) => c.notNull())
    .addColumn("suite", "text", (c) => c.notNull())
    .addColumn("mirror", "text", (c) => c.notNull())
    .addColumn("arch", "text", (c) => c.notNull())
    // JSON list of extra packages debootstrap includes (build-essential and fakeroot always are).
    .addColumn("include", "text", (c) => c.notNull())
    // building | ready | failed | deleted
    .addColumn("state", "text", (c) => c.notNull())
    // The base's tarball in the blob store, once ready.
    .addColumn("sha256", "text")
    .addColumn("size", big)
    // JSON: what the base holds (dpkg's package list, debootstrap's and apt's versions).
    .addColumn("info", "text")
    .addColumn("task_id", big)
    .addColumn("error", "text")
    .addColumn("owner", "text", (c) => c.notNull())
    .addColumn("created_at", big, (c) => c.notNull())
    .addColumn("ready_at", big)
    .addColumn("deleted_at", big)
    .execute();
  // One live base per name; deleted ones stay as history (builds name what they used).
  await db.schema
    .createIndex("buildroots_live_name")
    .on("buildroots")
    .column("name")
    .unique()
    .where(sql.ref("deleted_at"), "is", null)
    .execute();

  await db.schema
    .createTable("tag_repos")
    .addColumn("id", id, pk)
    .addColumn("tag_id", big, (c) => c.notNull())
    // init | ready | expired | deleted | failed
    .addColumn("state", "text", (c) => c.notNull())
    // The newest event the repo's contents reflect.
    .addColumn("event_id", big, (c) => c.notNull())
    // JSON [{buildId, nvr}] of the builds it holds.
    .addColumn("builds", "text", (c) => c.notNull())
    .addColumn("package_count", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("task_id", big)
    .addColumn("error", "text")
    .addColumn("created_at", big, (c) => c.notNull())
    .addColumn("ready_at", big)
    .addColumn("expired_at", big)
    .addColumn("deleted_at", big)
    .execute();
  await db.schema.createIndex("tag_repos_tag").on("tag_repos").columns(["tag_id", "state"]).execute();

  // What a build ran in: the tag repo it installed from (kept while the build runs) and, per
  // architecture, the base and the Build-Depends apt resolved (JSON, as a .buildinfo records them).
  await db.schema.alterTable("builds").addColumn("tag_repo_id", big).execute();
  await db.schema.alterTable("builds").addColumn("buildroot", "text").execute();
}
