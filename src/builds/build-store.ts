import type { Kysely, Selectable } from "kysely";
import type { ArtifactJson, BuildBuildrootJson, BuildJson, BuildState } from "../client/types.js";
import type { BuildsTable, Database } from "../db/schema.js";
import { KilnError } from "../errors/catalogue.js";
import { recordEvent } from "../events/outbox.js";
import { registerFinalizer } from "../tasks/finalizers.js";

export type BuildRow = Selectable<BuildsTable>;

export async function getBuildRow(db: Kysely<Database>, ref: string | number): Promise<BuildRow> {
  let q = db.selectFrom("builds").selectAll();
  if (typeof ref === "number") q = q.where("id", "=", ref);
  else {
    const slash = ref.indexOf("/");
    if (slash <= 0) throw new KilnError("VALIDATION_FAILED", `"${ref}" is not SOURCE/VERSION`);
    // A real build wins over scratch builds of the same version; the newest of each.
    q = q
      .where("source", "=", ref.slice(0, slash))
      .where("version", "=", ref.slice(slash + 1))
      .orderBy("scratch")
      .orderBy("id", "desc");
  }
  const row = await q.executeTakeFirst();
  if (!row) throw new KilnError("BUILD_NOT_FOUND", `no build ${String(ref)}; see \`kiln list-builds\``);
  return row;
}

export function artifactJson(a: Selectable<Database["artifacts"]>): ArtifactJson {
  return {
    id: a.id,
    name: a.name,
    sha256: a.sha256,
    size: a.size,
    kind: a.kind,
    arch: a.arch,
    taskId: a.task_id,
  };
}

export async function buildJson(db: Kysely<Database>, row: BuildRow): Promise<BuildJson> {
  const [artifacts, tags, target, archTasks] = await Promise.all([
    db.selectFrom("artifacts").selectAll().where("build_id", "=", row.id).orderBy("name").execute(),
    db
      .selectFrom("build_tags")
      .innerJoin("tags", "tags.id", "build_tags.tag_id")
      .select("tags.name")
      .where("build_tags.build_id", "=", row.id)
      .where("build_tags.revoke_event", "is", null)
      .execute(),
    row.target_id === null
      ? undefined
      : db.selectFrom("targets").select("name").where("id", "=", row.target_id).executeTakeFirst(),
    row.task_id === null
      ? []
      : db
          .selectFrom("tasks")
          .select(["id", "args", "state"])
          .where("parent_id", "=", row.task_id)
          .where("method", "=", "buildArch")
          .orderBy("id")
          .execute(),
  ]);
  return {
    id: row.id,
    source: row.source,
    version: row.version,
    nvr: `${row.source}/${row.version}`,
    state: row.state as BuildState,
    owner: row.owner,
    target: target?.name ?? null,
    scratch: row.scratch === 1,
    taskId: row.task_id,
    createdAt: new Date(row.created_at).toISOString(),
    completedAt: row.completed_at === null ? null : new Date(row.completed_at).toISOString(),
    arches: archTasks.map((t) => ({
      arch: (JSON.parse(t.args) as { arch: string }).arch,
      taskId: t.id,
      state: t.state,
    })),
    artifacts: artifacts.map(artifactJson),
    tags: tags.map((t) => t.name),
    buildroot: row.buildroot ? (JSON.parse(row.buildroot) as BuildBuildrootJson) : null,
  };
}

export async function listBuilds(
  db: Kysely<Database>,
  q: { package?: string; state?: string; limit?: number },
): Promise<BuildJson[]> {
  let query = db.selectFrom("builds").selectAll();
  if (q.package) query = query.where("source", "=", q.package);
  if (q.state) query = query.where("state", "in", q.state.split(","));
  const rows = await query
    .orderBy("id", "desc")
    .limit(Math.min(q.limit ?? 100, 1000))
    .execute();
  return Promise.all(rows.map((r) => buildJson(db, r)));
}

/** Marks the build complete and attaches the artifacts of its tasks' final attempts. */
export async function importBuild(
  trx: Kysely<Database>,
  buildId: number,
  taskIds: number[],
  now: number,
): Promise<void> {
  const build = await trx
    .selectFrom("builds")
    .selectAll()
    .where("id", "=", buildId)
    .executeTakeFirstOrThrow();
  if (build.state === "complete") return;
  const tasks = await trx
    .selectFrom("tasks")
    .select(["id", "lease_epoch", "state"])
    .where("id", "in", taskIds)
    .execute();
  for (const t of tasks) {
    if (t.state !== "closed") throw new KilnError("BUILD_FAILED", `task ${t.id} did not close`);
    // Only the attempt that closed counts; a stale attempt's uploads are never attached.
    await trx
      .updateTable("artifacts")
      .set({ build_id: buildId })
      .where("task_id", "=", t.id)
      .where("epoch", "=", t.lease_epoch)
      .execute();
  }
  await trx
    .updateTable("builds")
    .set({ state: "complete", completed_at: now })
    .where("id", "=", buildId)
    .execute();
  await recordEvent(
    trx,
    "build.completed",
    { buildId, nvr: `${build.source}/${build.version}` },
    build.owner,
    now,
  );
}

/** A build task that ends without importing takes its build with it. */
registerFinalizer("build", async (trx, task, now) => {
  if (task.state === "closed") return;
  const state = task.state === "canceled" ? "canceled" : "failed";
  const updated = await trx
    .updateTable("builds")
    .set({ state, completed_at: now })
    .where("task_id", "=", task.id)
    .where("state", "=", "building")
    .returning(["id", "source", "version", "owner"])
    .executeTakeFirst();
  if (updated) {
    await recordEvent(
      trx,
      `build.${state}`,
      { buildId: updated.id, nvr: `${updated.source}/${updated.version}`, taskId: task.id },
      updated.owner,
      now,
    );
  }
});
