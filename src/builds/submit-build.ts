/**
 * Submitting builds, shared by POST /api/v1/builds and chain builds: checking a request (the
 * source's identity, the destination tag's permission, the build policy, the package list) and
 * inserting the `builds` row with its `build` task in one transaction.
 */
import type { Kysely } from "kysely";
import type { TargetJson } from "../client/types.js";
import type { Database } from "../db/schema.js";
import type { Principal } from "../db/tokens.js";
import { KilnError } from "../errors/catalogue.js";
import { recordEvent } from "../events/outbox.js";
import type { BuildTaskArgs } from "../hub/handlers/build.js";
import type { HubDeps } from "../hub/deps.js";
import { enforcePolicy, userPerms } from "../hub/policy-check.js";
import { insertTask } from "../tasks/create-task.js";
import type { TaskRow } from "../tasks/types.js";
import type { BuildRow } from "./build-store.js";
import { identifyDsc, identifyTarball, type SourceIdentity } from "./source-identity.js";
import { assertPackageAllowed, getTagRow, type TagRow } from "./tag-store.js";

/** Where a build's source waits: a file in an upload area. */
export interface UploadedInput {
  upload: string;
  /** `tarball`: a .tar.gz of a directory with debian/; `dsc`: a .dsc whose files are in the same upload. */
  source: { type: "tarball" | "dsc"; file: string };
}

/** A build request that passed every check: what insertBuild needs. */
export interface CheckedBuild extends SourceIdentity {
  upload: string;
  input: UploadedInput["source"];
  target: Pick<TargetJson, "id" | "name" | "buildTag" | "destTag">;
}

/** Reads the source's name and version from its upload area (debian/changelog or the .dsc). */
export async function identifyUpload(deps: HubDeps, input: UploadedInput): Promise<SourceIdentity> {
  const file = deps.uploads.filePath(input.upload, input.source.file);
  try {
    const ident = input.source.type === "dsc" ? await identifyDsc(file) : await identifyTarball(file);
    // The build's tasks read the source from the area later: durable before the build is accepted.
    await deps.uploads.sync(input.upload);
    return { source: ident.source, version: ident.version };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") {
      throw new KilnError("UPLOAD_NOT_FOUND", `no file ${input.source.file} in upload ${input.upload}`);
    }
    throw err;
  }
}

/** Refuses the destination tag to a caller without its permission (outside policy, as Koji does). */
export async function assertDestPermission(deps: HubDeps, principal: Principal, dest: TagRow): Promise<void> {
  if (!dest.perm || principal.role === "admin") return;
  if ((await userPerms(deps.db.kysely, principal)).includes(dest.perm)) return;
  throw new KilnError("POLICY_DENIED", `building into ${dest.name} needs the "${dest.perm}" permission`);
}

/** The `build_from_source` policy, then (unless scratch) the destination tag's package list. */
export async function assertMayBuild(
  deps: HubDeps,
  principal: Principal,
  target: CheckedBuild["target"],
  dest: TagRow,
  ident: SourceIdentity,
  opts: { scratch?: boolean; force?: boolean },
): Promise<void> {
  await enforcePolicy(
    deps,
    "build_from_source",
    principal,
    {
      package: ident.source,
      version: ident.version,
      tag: dest.name,
      buildTag: target.buildTag,
      target: target.name,
      tagPerm: dest.perm,
    },
    opts.force,
  );
  if (!opts.scratch) await assertPackageAllowed(deps.db.kysely, dest.name, ident.source);
}

/**
 * Every check POST /api/v1/builds makes before it writes anything, in its order: the source's
 * identity, the destination tag's permission, the policy and the package list.
 */
export async function checkBuildRequest(
  deps: HubDeps,
  principal: Principal,
  target: CheckedBuild["target"],
  input: UploadedInput,
  opts: { scratch?: boolean; force?: boolean } = {},
): Promise<CheckedBuild> {
  const ident = await identifyUpload(deps, input);
  const dest = await getTagRow(deps.db.kysely, target.destTag);
  await assertDestPermission(deps, principal, dest);
  await assertMayBuild(deps, principal, target, dest, ident, opts);
  return { ...ident, upload: input.upload, input: input.source, target };
}

/** A real (non-scratch) build of SOURCE/VERSION may exist once: refuses one building or built. */
export async function assertNotBuilt(db: Kysely<Database>, ident: SourceIdentity): Promise<void> {
  const existing = await db
    .selectFrom("builds")
    .select(["id", "state"])
    .where("source", "=", ident.source)
    .where("version", "=", ident.version)
    .where("scratch", "=", 0)
    .where("state", "in", ["building", "complete"])
    .executeTakeFirst();
  if (existing) {
    throw new KilnError(
      "BUILD_EXISTS",
      `${ident.source}/${ident.version} is already ${existing.state === "complete" ? "built" : "building"}; bump the version in debian/changelog or use --scratch`,
      { nvr: `${ident.source}/${ident.version}`, buildId: existing.id },
    );
  }
}

export interface InsertBuildInput {
  checked: CheckedBuild;
  owner: string;
  scratch?: boolean;
  archOverride?: string[];
  priority?: number;
  /** As a subtask of a running task (a chain build), found again by its label. */
  parent?: { id: number; label: string };
}

/**
 * Inserts the `builds` row and its `build` task, inside the caller's write transaction (so a
 * build and its task exist together or not at all), and records `build.started`. The caller
 * commits and wakes the workers.
 */
export async function insertBuild(
  deps: HubDeps,
  trx: Kysely<Database>,
  input: InsertBuildInput,
): Promise<{ build: BuildRow; task: TaskRow }> {
  const { checked } = input;
  const scratch = input.scratch === true;
  if (!scratch) await assertNotBuilt(trx, checked);
  const now = deps.clock.now();
  const build = await trx
    .insertInto("builds")
    .values({
      source: checked.source,
      version: checked.version,
      state: "building",
      owner: input.owner,
      target_id: checked.target.id,
      scratch: scratch ? 1 : 0,
      task_id: null,
      created_at: now,
      completed_at: null,
    })
    .returningAll()
    .executeTakeFirstOrThrow();
  const args: BuildTaskArgs = {
    buildId: build.id,
    source: checked.source,
    version: checked.version,
    upload: checked.upload,
    input: checked.input,
    buildTag: checked.target.buildTag,
    destTag: checked.target.destTag,
    scratch,
    archOverride: input.archOverride ?? [],
  };
  const { row } = await insertTask(deps, trx, {
    method: "build",
    args,
    owner: input.owner,
    ...(input.priority !== undefined ? { priority: input.priority } : {}),
    ...(input.parent ? { parentId: input.parent.id, label: input.parent.label } : {}),
  });
  const updated = await trx
    .updateTable("builds")
    .set({ task_id: row.id })
    .where("id", "=", build.id)
    .returningAll()
    .executeTakeFirstOrThrow();
  await recordEvent(
    trx,
    "build.started",
    { buildId: build.id, nvr: `${checked.source}/${checked.version}`, taskId: row.id },
    input.owner,
    now,
  );
  return { build: updated, task: row };
}
