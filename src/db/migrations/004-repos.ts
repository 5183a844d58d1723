import type { Kysely } from "kysely";
import type { Dialect } from "../database.js";
import { columnTypes } from "./column-types.js";

/**
 * Packages, local repositories, snapshots and publications (Aptly's model).
 *
 * A package row is one file set (a .deb/.udeb, or a .dsc with its source files) identified by
 * Aptly's key `P<arch> <name> <version> <files hash>`; repos and snapshots only refer to rows,
 * so the same package in many places is stored once. The files live in the blob store.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>, dialect: Dialect): Promise<void> {
  const { id, big, pk } = columnTypes(dialect);

  await db.schema
    .createTable("packages")
    .addColumn("id", id, pk)
    .addColumn("key", "text", (c) => c.notNull().unique())
    .addColumn("name", "text", (c) => c.notNull())
    .addColumn("version", "text", (c) => c.notNull())
    .addColumn("arch", "text", (c) => c.notNull())
    .addColumn("kind", "text", (c) => c.notNull())
    .addColumn("source", "text", (c) => c.notNull())
    .addColumn("sha256", "text", (c) => c.notNull())
    .addColumn("control", "text", (c) => c.notNull())
    .addColumn("files", "text", (c) => c.notNull())
    .addColumn("created_at", big, (c) => c.notNull())
    .execute();
  await db.schema.createIndex("packages_sha256").on("packages").columns(["sha256"]).execute();
  await db.schema.createIndex("packages_nva").on("packages").columns(["name", "version", "arch"]).execute();

  await db.schema
    .createTable("repos")
    .addColumn("id", id, pk)
    .addColumn("name", "text", (c) => c.notNull().unique())
    .addColumn("comment", "text", (c) => c.notNull().defaultTo(""))
    .addColumn("distribution", "text", (c) => c.notNull().defaultTo(""))
    .addColumn("component", "text", (c) => c.notNull().defaultTo("main"))
    .addColumn("created_at", big, (c) => c.notNull())
    .execute();
  await db.schema
    .createTable("repo_packages")
    .addColumn("repo_id", big, (c) => c.notNull().references("repos.id").onDelete("cascade"))
    .addColumn("package_id", big, (c) => c.notNull().references("packages.id"))
    .addPrimaryKeyConstraint("repo_packages_pk", ["repo_id", "package_id"])
    .execute();
  await db.schema.createIndex("repo_packages_package").on("repo_packages").columns(["package_id"]).execute();

  await db.schema
    .createTable("snapshots")
    .addColumn("id", id, pk)
    .addColumn("name", "text", (c) => c.notNull().unique())
    .addColumn("description", "text", (c) => c.notNull().defaultTo(""))
    .addColumn("origin", "text", (c) => c.notNull())
    .addColumn("created_at", big, (c) => c.notNull())
    .execute();
  await db.schema
    .createTable("snapshot_packages")
    .addColumn("snapshot_id", big, (c) => c.notNull().references("snapshots.id").onDelete("cascade"))
    .addColumn("package_id", big, (c) => c.notNull().references("packages.id"))
    .addPrimaryKeyConstraint("snapshot_packages_pk", ["snapshot_id", "package_id"])
    .execute();
  await db.schema
    .createIndex("snapshot_packages_package")
    .on("snapshot_packages")
    .columns(["package_id"])
    .execute();

  // A publication is one prefix/distribution; its generations are what was (or is) served.
  await db.schema
    .createTable("publications")
    .addColumn("id", id, pk)
    .addColumn("prefix", "text", (c) => c.notNull())
    .addColumn("distribution", "text", (c) => c.notNull())
    .addColumn("source_kind", "text", (c) => c.notNull())
    .addColumn("sources", "text", (c) => c.notNull())
    .addColumn("architectures", "text", (c) => c.notNull())
    .addColumn("origin", "text", (c) => c.notNull().defaultTo(""))
    .addColumn("label", "text", (c) => c.notNull().defaultTo(""))
    .addColumn("skip_signing", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("live_generation", "integer")
    .addColumn("next_generation", "integer", (c) => c.notNull().defaultTo(1))
    .addColumn("created_at", big, (c) => c.notNull())
    .addColumn("updated_at", big, (c) => c.notNull())
    .execute();
  await db.schema
    .createIndex("publications_key")
    .on("publications")
    .columns(["prefix", "distribution"])
    .unique()
    .execute();
  await db.schema
    .createTable("publication_generations")
    .addColumn("id", id, pk)
    .addColumn("publication_id", big, (c) => c.notNull().references("publications.id").onDelete("cascade"))
    .addColumn("generation", "integer", (c) => c.notNull())
    .addColumn("state", "text", (c) => c.notNull())
    .addColumn("sources", "text", (c) => c.notNull())
    .addColumn("package_count", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("release_sha256", "text")
    .addColumn("task_id", big)
    .addColumn("error", "text")
    .addColumn("created_at", big, (c) => c.notNull())
    .addColumn("live_at", big)
    .execute();
  await db.schema
    .createIndex("publication_generations_key")
    .on("publication_generations")
    .columns(["publication_id", "generation"])
    .unique()
    .execute();
}
