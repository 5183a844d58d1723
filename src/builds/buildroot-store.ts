/**
 * Buildroot bases (issue 7): minimal debootstrap trees that builds start from, made by a
 * `createBuildroot` task on a worker with the `buildroot` channel and kept in the blob store by
 * content. A row is `building` until its task ends, then `ready` (with the tarball's sha256) or
 * `failed`; deleting one is soft (`deleted`, kept as history: builds name what they used), which
 * frees its name and lets the collector drop its tarball.
 */
import type { Kysely, Selectable } from "kysely";
import type {
  BuildrootInfoJson,
  BuildrootJson,
  BuildrootState,
  CreateBuildrootRequest,
  CreateBuildrootTaskArgs,
  CreateBuildrootTaskResult,
  TaskJson,
} from "../client/types.js";
import { withWriteTx } from "../db/database.js";
import type { BuildrootsTable, Database } from "../db/schema.js";
import { isValidArchitecture, isValidPackageName } from "../debian/version.js";
import { KilnError } from "../errors/catalogue.js";
import { recordEvent } from "../events/outbox.js";
import { cancelIds } from "../tasks/cancel-task.js";
import { queuedHint, insertTask } from "../tasks/create-task.js";
import type { EngineDeps } from "../tasks/deps.js";
import { registerFinalizer } from "../tasks/finalizers.js";
import { toTaskJson, type TaskError, type TaskRow } from "../tasks/types.js";
import { TAG_NAME_RE } from "./tag-store.js";

export type BuildrootRow = Selectable<BuildrootsTable>;

export const BUILDROOT_METHOD = "createBuildroot";
export const BUILDROOT_CHANNEL = "buildroot";
export const BUILDROOT_ARTIFACT_KIND = "buildroot";
/** Default timeout of a createBuildroot task (`[engine.timeouts] createBuildroot` overrides it). */
export const BUILDROOT_TIMEOUT_S = 3600;
/** The tag setting (`extra.buildroot`) that names the base a tag's builds start from. */
export const BUILDROOT_EXTRA_KEY = "buildroot";

export const SUITE_RE = /^[a-z0-9][a-z0-9.+-]{0,63}$/;
const MIRROR_MAX = 1024;
const INCLUDE_MAX = 200;
// Whitespace or a control character would split debootstrap's arguments or a sources.list line.
// eslint-disable-next-line no-control-regex
const UNSAFE_CHAR_RE = /[\s\u0000-\u001f\u007f]/;

// --- Validation ---------------------------------------------------------------------------------

export function validateBuildrootName(name: unknown): string {
  if (typeof name !== "string" || !TAG_NAME_RE.test(name)) {
    throw new KilnError(
      "INVALID_NAME",
      `"${String(name)}" is not a valid buildroot name: letters, digits and ._+- (up to 128), starting with a letter or digit`,
    );
  }
  return name;
}

function validateSuite(suite: unknown): string {
  if (typeof suite !== "string" || !SUITE_RE.test(suite)) {
    throw new KilnError(
      "INVALID_SUITE",
      `"${String(suite)}" is not a Debian suite or codename (bookworm, stable, trixie…): lowercase letters, digits and .+-`,
    );
  }
  return suite;
}

function validateMirror(mirror: unknown): string {
  const bad = (why: string): never => {
    throw new KilnError(
      "INVALID_MIRROR",
      `mirror "${String(mirror)}" ${why}; give an http(s) URL such as http://deb.debian.org/debian`,
    );
  };
  if (typeof mirror !== "string" || mirror === "") return bad("is empty");
  if (mirror.length > MIRROR_MAX) bad(`is longer than ${MIRROR_MAX} characters`);
  if (UNSAFE_CHAR_RE.test(mirror)) bad("holds whitespace or a control character");
  let url: URL;
  try {
    url = new URL(mirror);
  } catch {
    return bad("is not a URL");
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") bad("is not http or https");
  if (url.hostname === "") bad("names no host");
  return mirror;
}

function validateArch(arch: unknown): string {
  if (typeof arch !== "string" || !isValidArchitecture(arch) || arch === "all" || arch === "any") {
    throw new KilnError(
      "INVALID_ARCHITECTURE",
      `"${String(arch)}" is not an architecture a base can be made for (amd64, arm64…)`,
    );
  }
  return arch;
}

function validateInclude(include: unknown): string[] {
  if (include === undefined || include === null) return [];
  if (!Array.isArray(include) || include.length > INCLUDE_MAX) {
    throw new KilnError(
      "VALIDATION_FAILED",
      `include must be a list of at most ${INCLUDE_MAX} package names`,
    );
  }
  for (const p of include) {
    if (typeof p !== "string" || !isValidPackageName(p)) {
      throw new KilnError(
        "INVALID_PACKAGE_NAME",
        `"${String(p)}" in include is not a Debian package name (lowercase letters, digits and +-.)`,
      );
    }
  }
  return [...new Set(include as string[])];
}

/** A create request checked field by field; the first bad field is the error. */
export function validateBuildrootInput(
  input: CreateBuildrootRequest & { arch: string },
): Omit<CreateBuildrootTaskArgs, "buildrootId"> {
  return {
    name: validateBuildrootName(input.name),
    suite: validateSuite(input.suite),
    mirror: validateMirror(input.mirror),
    arch: validateArch(input.arch),
    include: validateInclude(input.include),
  };
}

// --- Rows and JSON ------------------------------------------------------------------------------

const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());

export function toBuildrootJson(row: BuildrootRow): BuildrootJson {
  return {
    id: row.id,
    name: row.name,
    suite: row.suite,
    mirror: row.mirror,
    arch: row.arch,
    include: JSON.parse(row.include) as string[],
    state: row.state as BuildrootState,
    sha256: row.sha256,
    size: row.size === null ? null : Number(row.size),
    info: row.info === null ? null : (JSON.parse(row.info) as BuildrootInfoJson),
    taskId: row.task_id === null ? null : Number(row.task_id),
    error: row.error,
    owner: row.owner,
    createdAt: new Date(Number(row.created_at)).toISOString(),
    readyAt: iso(row.ready_at === null ? null : Number(row.ready_at)),
    deletedAt: iso(row.deleted_at === null ? null : Number(row.deleted_at)),
  };
}

function liveRow(db: Kysely<Database>, name: string): Promise<BuildrootRow | undefined> {
  return db
    .selectFrom("buildroots")
    .selectAll()
    .where("name", "=", name)
    .where("deleted_at", "is", null)
    .executeTakeFirst();
}

/** BUILDROOT_NOT_FOUND, saying whether the name once existed. */
async function notFound(db: Kysely<Database>, name: string): Promise<KilnError> {
  const deleted = await db
    .selectFrom("buildroots")
    .select("id")
    .where("name", "=", name)
    .where("deleted_at", "is not", null)
    .executeTakeFirst();
  const how = `\`kiln buildroot create ${name} --suite SUITE --mirror URL\``;
  return new KilnError(
    "BUILDROOT_NOT_FOUND",
    deleted
      ? `buildroot base "${name}" was deleted; create it again (${how}) or name another base (\`kiln buildroot list\`)`
      : `no buildroot base named "${name}"; see \`kiln buildroot list\`, or create it with ${how}`,
    { name },
  );
}

/** The live (not deleted) base of that name. */
export async function getBuildroot(db: Kysely<Database>, name: string): Promise<BuildrootJson> {
  const row = await liveRow(db, name);
  if (!row) throw await notFound(db, name);
  return toBuildrootJson(row);
}

/** Live bases by name; with `all`, deleted ones too (newest first after the live ones). */
export async function listBuildroots(
  db: Kysely<Database>,
  opts: { all?: boolean } = {},
): Promise<BuildrootJson[]> {
  let q = db.selectFrom("buildroots").selectAll();
  if (!opts.all) q = q.where("deleted_at", "is", null);
  const rows = await q.orderBy("name").orderBy("id", "desc").execute();
  return rows.map(toBuildrootJson);
}

/** Why a base that exists cannot be built in yet, and what to do about it. */
function notReady(row: BuildrootRow): KilnError {
  const details = { name: row.name, state: row.state, taskId: row.task_id };
  if (row.state === "building") {
    return new KilnError(
      "BUILDROOT_NOT_READY",
      `buildroot base "${row.name}" is still being made (task ${row.task_id}); wait for it with \`kiln task watch ${row.task_id}\` and build again`,
      details,
    );
  }
  return new KilnError(
    "BUILDROOT_NOT_READY",
    `making buildroot base "${row.name}" failed (${row.error ?? "see its task's log"}); see \`kiln task logs ${row.task_id}\`, then \`kiln buildroot delete ${row.name}\` and create it again`,
    details,
  );
}

/** The base a build starts from: it must exist and be ready. */
export async function getReadyBuildroot(db: Kysely<Database>, name: string): Promise<BuildrootJson> {
  const row = await liveRow(db, name);
  if (!row) throw await notFound(db, name);
  if (row.state !== "ready") throw notReady(row);
  return toBuildrootJson(row);
}

/**
 * Checks a tag's `extra.buildroot` when it is set: a live base that is ready or still being made
 * (a failed one would fail every build). Deleting the base later is caught when a build starts.
 */
export async function checkBuildrootSetting(db: Kysely<Database>, value: unknown): Promise<void> {
  if (typeof value !== "string") {
    throw new KilnError(
      "VALIDATION_FAILED",
      `extra.${BUILDROOT_EXTRA_KEY} must be the name of a buildroot base (see \`kiln buildroot list\`)`,
    );
  }
  const row = await liveRow(db, value);
  if (!row) throw await notFound(db, value);
  if (row.state === "failed") throw notReady(row);
}

/** Tags whose own extra names the base (those inheriting it get it through one of them). */
export async function tagsNamingBuildroot(db: Kysely<Database>, name: string): Promise<string[]> {
  const rows = await db
    .selectFrom("tags")
    .select(["name", "extra"])
    .where("extra", "like", `%"${BUILDROOT_EXTRA_KEY}"%`)
    .orderBy("name")
    .execute();
  return rows
    .filter((r) => (JSON.parse(r.extra) as Record<string, unknown>)[BUILDROOT_EXTRA_KEY] === name)
    .map((r) => r.name);
}

// --- Create and delete --------------------------------------------------------------------------

function isUniqueViolation(err: unknown): boolean {
  const e = err as { code?: unknown } | null;
  return e?.code === "23505" || e?.code === "SQLITE_CONSTRAINT_UNIQUE";
}

function existsError(name: string, state: string): KilnError {
  return new KilnError(
    "BUILDROOT_EXISTS",
    `a buildroot base named "${name}" already exists (${state}); delete it first (\`kiln buildroot delete ${name}\`) or pick another name`,
    { name, state },
  );
}

/**
 * Records a base (state building) and queues the task that makes it, in one transaction:
 * a refused request stores nothing.
 */
export async function createBuildroot(
  deps: EngineDeps,
  input: CreateBuildrootRequest & { arch: string },
  actor: { name: string },
): Promise<{ buildroot: BuildrootJson; task: TaskJson }> {
  const args = validateBuildrootInput(input);
  const now = deps.clock.now();
  let out: { row: BuildrootRow; task: TaskRow };
  try {
    out = await withWriteTx(deps.db, async (trx) => {
      const existing = await liveRow(trx, args.name);
      if (existing) throw existsError(args.name, existing.state);
      const inserted = await trx
        .insertInto("buildroots")
        .values({
          name: args.name,
          suite: args.suite,
          mirror: args.mirror,
          arch: args.arch,
          include: JSON.stringify(args.include),
          state: "building",
          sha256: null,
          size: null,
          info: null,
          task_id: null,
          error: null,
          owner: actor.name,
          created_at: now,
          ready_at: null,
          deleted_at: null,
        })
        .returning("id")
        .executeTakeFirstOrThrow();
      const taskArgs: CreateBuildrootTaskArgs = { buildrootId: inserted.id, ...args };
      const { row: task } = await insertTask(deps, trx, {
        method: BUILDROOT_METHOD,
        args: taskArgs,
        owner: actor.name,
        arch: args.arch,
        channel: BUILDROOT_CHANNEL,
        weight: 1,
        timeout: deps.engine.timeouts[BUILDROOT_METHOD] ?? BUILDROOT_TIMEOUT_S,
      });
      const row = await trx
        .updateTable("buildroots")
        .set({ task_id: task.id })
        .where("id", "=", inserted.id)
        .returningAll()
        .executeTakeFirstOrThrow();
      await recordEvent(
        trx,
        "buildroot.created",
        { buildrootId: row.id, name: row.name, suite: row.suite, arch: row.arch, taskId: task.id },
        actor.name,
        now,
      );
      return { row, task };
    });
  } catch (err) {
    // Two creates racing past the check meet the unique index on live names.
    if (isUniqueViolation(err)) throw existsError(args.name, "building");
    throw err;
  }
  deps.wake.notify(queuedHint([out.task]));
  return { buildroot: toBuildrootJson(out.row), task: toTaskJson(out.task) };
}

/**
 * Soft-deletes a base. One still being made has its task canceled (the delete is the admin's
 * "stop"). A base that tags name is refused unless forced: their builds would fail until they
 * name another.
 */
export async function deleteBuildroot(
  deps: EngineDeps,
  name: string,
  actor: { name: string; force?: boolean },
): Promise<BuildrootJson> {
  const now = deps.clock.now();
  const row = await withWriteTx(deps.db, async (trx) => {
    const live = await liveRow(trx, name);
    if (!live) throw await notFound(trx, name);
    const users = await tagsNamingBuildroot(trx, name);
    if (users.length > 0 && !actor.force) {
      throw new KilnError(
        "BUILDROOT_IN_USE",
        `tags ${users.join(", ")} build in buildroot base "${name}"; point them elsewhere (\`kiln tag edit TAG --buildroot OTHER\` or --no-buildroot) or delete with --force (their builds then fail until they do)`,
        { name, tags: users },
      );
    }
    const deleted = await trx
      .updateTable("buildroots")
      .set({
        state: "deleted",
        deleted_at: now,
        ...(live.state === "building" ? { error: `deleted by ${actor.name} while being made` } : {}),
      })
      .where("id", "=", live.id)
      .where("deleted_at", "is", null)
      .returningAll()
      .executeTakeFirstOrThrow();
    // Marked deleted first, so the finalizer the cancellation runs leaves the row alone.
    if (live.state === "building" && live.task_id !== null) {
      await cancelIds(deps, trx, [Number(live.task_id)], {
        code: "TASK_CANCELED",
        message: `canceled: buildroot base "${name}" was deleted by ${actor.name}`,
      });
    }
    await recordEvent(
      trx,
      "buildroot.deleted",
      { buildrootId: deleted.id, name, previousState: live.state, tags: users },
      actor.name,
      now,
    );
    return deleted;
  });
  deps.wake.notify();
  return toBuildrootJson(row);
}

// --- The task's end -----------------------------------------------------------------------------

const SHA_RE = /^[0-9a-f]{64}$/;

/** The result's shape, or why it is not the contract's. */
function parseResult(text: string | null): CreateBuildrootTaskResult | string {
  let r: Partial<CreateBuildrootTaskResult> | null;
  try {
    r = text === null ? null : (JSON.parse(text) as Partial<CreateBuildrootTaskResult>);
  } catch {
    return "its result is not JSON";
  }
  if (!r || typeof r !== "object") return "it closed without a result";
  if (typeof r.sha256 !== "string" || !SHA_RE.test(r.sha256)) return "its result has no sha256";
  if (typeof r.size !== "number" || !Number.isSafeInteger(r.size) || r.size <= 0)
    return "its result has no size";
  const info = r.info;
  if (
    !info ||
    typeof info.packages !== "number" ||
    typeof info.debootstrap !== "string" ||
    typeof info.apt !== "string" ||
    !Array.isArray(info.installed) ||
    !info.installed.every((p) => typeof p === "string")
  ) {
    return "its result's info is not {packages, debootstrap, apt, installed}";
  }
  return { sha256: r.sha256, size: r.size, info };
}

/** The result, checked against the artifact the closing attempt uploaded; or why it does not hold. */
async function checkClosedTask(
  trx: Kysely<Database>,
  task: TaskRow,
): Promise<CreateBuildrootTaskResult | string> {
  const result = parseResult(task.result);
  if (typeof result === "string") return result;
  const artifact = await trx
    .selectFrom("artifacts")
    .select(["size"])
    .where("task_id", "=", task.id)
    .where("epoch", "=", task.lease_epoch)
    .where("kind", "=", BUILDROOT_ARTIFACT_KIND)
    .where("sha256", "=", result.sha256)
    .executeTakeFirst();
  if (!artifact) return `it uploaded no ${BUILDROOT_ARTIFACT_KIND} artifact with sha256 ${result.sha256}`;
  if (Number(artifact.size) !== result.size)
    return `its artifact is ${artifact.size} bytes, its result says ${result.size}`;
  return result;
}

function taskErrorMessage(task: TaskRow): string {
  if (task.error === null) return `task ${task.id} ${task.state}`;
  try {
    const e = JSON.parse(task.error) as TaskError;
    return `${e.message} [${e.code}]`;
  } catch {
    return task.error;
  }
}

/**
 * The base follows its task: closed with a tarball that checks out → ready; anything else →
 * failed with the reason. A failed row may still become ready when its task is retried by hand.
 */
registerFinalizer(BUILDROOT_METHOD, async (trx, task, now) => {
  const row = await trx
    .selectFrom("buildroots")
    .selectAll()
    .where("task_id", "=", task.id)
    .where("state", "in", ["building", "failed"])
    .where("deleted_at", "is", null)
    .executeTakeFirst();
  if (!row) return;
  const outcome = task.state === "closed" ? await checkClosedTask(trx, task) : taskErrorMessage(task);
  const base = { buildrootId: row.id, name: row.name, taskId: task.id };
  let change: { set: Partial<BuildrootRow>; type: string; data: Record<string, unknown> };
  if (typeof outcome === "string") {
    const error =
      task.state === "closed" ? `task ${task.id} closed, but ${outcome}; its base was not kept` : outcome;
    change = { set: { state: "failed", error }, type: "buildroot.failed", data: { ...base, error } };
  } else {
    const { sha256, size, info } = outcome;
    change = {
      set: { state: "ready", sha256, size, info: JSON.stringify(info), error: null, ready_at: now },
      type: "buildroot.ready",
      data: { ...base, sha256, size },
    };
  }
  // Guarded again: a delete that committed meanwhile wins, and then nothing is announced.
  const updated = await trx
    .updateTable("buildroots")
    .set(change.set)
    .where("id", "=", row.id)
    .where("state", "in", ["building", "failed"])
    .where("deleted_at", "is", null)
    .returning("id")
    .executeTakeFirst();
  if (updated) await recordEvent(trx, change.type, change.data, row.owner, now);
});
