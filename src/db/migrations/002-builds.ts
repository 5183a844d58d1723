import { sql, type Kysely } from "kysely";
import type { Dialect } from "../database.js";
import { columnTypes } from "./column-types.js";

/** Tags, inheritance, package lists, builds, tagging, targets, artifacts and the event log. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>, dialect: Dialect): Promise<void> {
  const { id, big, pk } = columnTypes(dialect);

  // Every change to tags is an event; as in Koji, queries can be asked as of an event id.
  await db.schema
    .createTable("events")
    .addColumn("id", id, pk)
    .addColumn("type", "text", (c) => c.notNull())
    .addColumn("actor", "text")
    .addColumn("data", "text", (c) => c.notNull())
    .addColumn("created_at", big, (c) => c.notNull())
    .execute();
  await db.schema.createIndex("events_type").on("events").columns(["type", "id"]).execute();

  await db.schema
    .createTable("tags")
    .addColumn("id", id, pk)
    .addColumn("name", "text", (c) => c.notNull().unique())
    .addColumn("arches", "text")
    .addColumn("perm", "text")
    .addColumn("locked", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("extra", "text", (c) => c.notNull().defaultTo("{}"))
    .addColumn("created_at", big, (c) => c.notNull())
    .execute();

  await db.schema
    .createTable("tag_inheritance")
    .addColumn("id", id, pk)
    .addColumn("tag_id", big, (c) => c.notNull().references("tags.id").onDelete("cascade"))
    .addColumn("parent_id", big, (c) => c.notNull().references("tags.id").onDelete("cascade"))
    .addColumn("priority", "integer", (c) => c.notNull())
    .addColumn("maxdepth", "integer")
    .addColumn("intransitive", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("noconfig", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("pkg_filter", "text", (c) => c.notNull().defaultTo(""))
    .addColumn("create_event", big, (c) => c.notNull())
    .addColumn("revoke_event", big)
    .execute();
  await db.schema.createIndex("tag_inheritance_tag").on("tag_inheritance").columns(["tag_id"]).execute();

  await db.schema
    .createTable("tag_packages")
    .addColumn("id", id, pk)
    .addColumn("tag_id", big, (c) => c.notNull().references("tags.id").onDelete("cascade"))
    .addColumn("package", "text", (c) => c.notNull())
    .addColumn("owner", "text")
    .addColumn("blocked", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("create_event", big, (c) => c.notNull())
    .addColumn("revoke_event", big)
    .execute();
  await db.schema.createIndex("tag_packages_tag").on("tag_packages").columns(["tag_id", "package"]).execute();

  await db.schema
    .createTable("targets")
    .addColumn("id", id, pk)
    .addColumn("name", "text", (c) => c.notNull().unique())
    .addColumn("build_tag_id", big, (c) => c.notNull().references("tags.id"))
    .addColumn("dest_tag_id", big, (c) => c.notNull().references("tags.id"))
    .addColumn("created_at", big, (c) => c.notNull())
    .execute();

  await db.schema
    .createTable("builds")
    .addColumn("id", id, pk)
    .addColumn("source", "text", (c) => c.notNull())
    .addColumn("version", "text", (c) => c.notNull())
    .addColumn("state", "text", (c) => c.notNull())
    .addColumn("owner", "text", (c) => c.notNull())
    .addColumn("target_id", big, (c) => c.references("targets.id").onDelete("set null"))
    .addColumn("scratch", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("task_id", big, (c) => c.references("tasks.id"))
    .addColumn("created_at", big, (c) => c.notNull())
    .addColumn("completed_at", big)
    .execute();
  // One real build per source/version (a failed or canceled one may be built again).
  await db.schema
    .createIndex("builds_nvr")
    .on("builds")
    .columns(["source", "version"])
    .unique()
    .where(sql<boolean>`scratch = 0 AND state IN (${sql.lit("building")}, ${sql.lit("complete")})`)
    .execute();
  await db.schema.createIndex("builds_source").on("builds").columns(["source", "id"]).execute();

  await db.schema
    .createTable("build_tags")
    .addColumn("id", id, pk)
    .addColumn("tag_id", big, (c) => c.notNull().references("tags.id").onDelete("cascade"))
    .addColumn("build_id", big, (c) => c.notNull().references("builds.id"))
    .addColumn("actor", "text")
    .addColumn("create_event", big, (c) => c.notNull())
    .addColumn("revoke_event", big)
    .execute();
  await db.schema.createIndex("build_tags_tag").on("build_tags").columns(["tag_id", "build_id"]).execute();

  await db.schema
    .createTable("artifacts")
    .addColumn("id", id, pk)
    .addColumn("task_id", big, (c) => c.notNull().references("tasks.id"))
    .addColumn("epoch", "integer", (c) => c.notNull())
    .addColumn("build_id", big, (c) => c.references("builds.id"))
    .addColumn("name", "text", (c) => c.notNull())
    .addColumn("sha256", "text", (c) => c.notNull())
    .addColumn("size", big, (c) => c.notNull())
    .addColumn("kind", "text", (c) => c.notNull())
    .addColumn("arch", "text")
    .addColumn("created_at", big, (c) => c.notNull())
    .execute();
  await db.schema
    .createIndex("artifacts_task")
    .on("artifacts")
    .columns(["task_id", "epoch", "name"])
    .unique()
    .execute();
  await db.schema.createIndex("artifacts_build").on("artifacts").columns(["build_id"]).execute();
  await db.schema.createIndex("artifacts_sha").on("artifacts").columns(["sha256"]).execute();

  await db.schema
    .createTable("user_perms")
    .addColumn("user_id", big, (c) => c.notNull().references("users.id").onDelete("cascade"))
    .addColumn("perm", "text", (c) => c.notNull())
    .addPrimaryKeyConstraint("user_perms_pk", ["user_id", "perm"])
    .execute();
}
