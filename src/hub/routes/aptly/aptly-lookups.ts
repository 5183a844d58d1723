/**
 * Existence checks with Aptly's wording, made before a task is queued so that a typo answers
 * 404 at once (the task checks again under its locks).
 */
import type { Kysely } from "kysely";
import type { Database } from "../../../db/schema.js";
import { KilnError } from "../../../errors/catalogue.js";
import { findPublication, type PublicationRow } from "../../../publish/publication-store.js";
import { assertRepoName, type RepoRow } from "../../../publish/repo-store.js";
import type { SnapshotRow } from "../../../publish/snapshot-store.js";

export async function findAptlyRepo(db: Kysely<Database>, name: string): Promise<RepoRow> {
  const row = await db.selectFrom("repos").selectAll().where("name", "=", name).executeTakeFirst();
  if (!row) throw new KilnError("REPO_NOT_FOUND", `local repo with name ${name} not found`, { name });
  return row;
}

export async function findAptlySnapshot(db: Kysely<Database>, name: string): Promise<SnapshotRow> {
  const row = await db.selectFrom("snapshots").selectAll().where("name", "=", name).executeTakeFirst();
  if (!row) throw new KilnError("SNAPSHOT_NOT_FOUND", `snapshot with name ${name} not found`, { name });
  return row;
}

export async function findAptlyPublication(
  db: Kysely<Database>,
  prefix: string,
  distribution: string,
): Promise<PublicationRow> {
  const row = await findPublication(db, prefix, distribution);
  if (!row) {
    throw new KilnError(
      "PUBLICATION_NOT_FOUND",
      `published repo with storage:prefix/distribution ${prefix}/${distribution} not found`,
      { prefix, distribution },
    );
  }
  return row;
}

/** Every key must name a package Kiln knows: Aptly answers 404 for the first one that does not. */
export async function assertPackageKeys(db: Kysely<Database>, keys: readonly string[]): Promise<void> {
  const wanted = [...new Set(keys)];
  const found = new Set<string>();
  for (let i = 0; i < wanted.length; i += 500) {
    const rows = await db
      .selectFrom("packages")
      .select("key")
      .where("key", "in", wanted.slice(i, i + 500))
      .execute();
    for (const r of rows) found.add(r.key);
  }
  const missing = wanted.find((k) => !found.has(k));
  if (missing !== undefined) {
    throw new KilnError("PACKAGE_NOT_FOUND", `packages ${missing}: key not found`, { key: missing });
  }
}

/** Aptly's JSON binding: the body must be an object. */
export function bodyObject(body: unknown): Record<string, unknown> {
  if (body === undefined || body === null) return {};
  if (typeof body !== "object" || Array.isArray(body)) {
    throw new KilnError("BAD_REQUEST", "the request body must be a JSON object");
  }
  return body as Record<string, unknown>;
}

/** A string field of a body (optional unless `required`), with Aptly-style binding errors. */
export function stringField(
  body: Record<string, unknown>,
  key: string,
  required = false,
): string | undefined {
  const v = body[key];
  if (v === undefined || v === null || v === "") {
    if (required) throw new KilnError("BAD_REQUEST", `field ${key} is required`);
    return v === "" ? "" : undefined;
  }
  if (typeof v !== "string") throw new KilnError("BAD_REQUEST", `field ${key} must be a string`);
  return v;
}

/** A list-of-strings field of a body. */
export function stringListField(body: Record<string, unknown>, key: string): string[] {
  const v = body[key];
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v) || v.some((x) => typeof x !== "string")) {
    throw new KilnError("BAD_REQUEST", `field ${key} must be a list of strings`);
  }
  return v as string[];
}

/** A valid snapshot name not taken yet (Aptly: 409 "snapshot with name X already exists"). */
export async function assertNewSnapshotName(db: Kysely<Database>, name: string): Promise<void> {
  assertRepoName(name, "snapshot");
  const row = await db.selectFrom("snapshots").select("id").where("name", "=", name).executeTakeFirst();
  if (row) throw new KilnError("SNAPSHOT_EXISTS", `snapshot with name ${name} already exists`, { name });
}
