import { readFileSync } from "node:fs";
import path from "node:path";
import type { HubDeps } from "../../src/hub/deps.js";
import { createTask } from "../../src/tasks/create-task.js";

/**
 * A completed build with the given files as artifacts, as if workers had built it: for tests of
 * what comes after building (tagging, snapshots, publishing) without running dpkg-buildpackage.
 */
export async function seedBuild(
  deps: HubDeps,
  input: { source: string; version: string; files: { path: string; kind: string; arch?: string | null }[] },
): Promise<number> {
  const db = deps.db.kysely;
  const now = deps.clock.now();
  const task = await createTask(deps, {
    method: "sleep",
    args: { seconds: 0 },
    owner: "admin",
    channel: "nowhere",
  });
  await db.updateTable("tasks").set({ state: "closed" }).where("id", "=", task.id).execute();
  const build = await db
    .insertInto("builds")
    .values({
      source: input.source,
      version: input.version,
      state: "complete",
      owner: "admin",
      target_id: null,
      scratch: 0,
      task_id: task.id,
      created_at: now,
      completed_at: now,
    })
    .returning("id")
    .executeTakeFirstOrThrow();
  for (const f of input.files) {
    const put = await deps.blobs.putBuffer(readFileSync(f.path));
    await db
      .insertInto("artifacts")
      .values({
        task_id: task.id,
        epoch: 0,
        build_id: build.id,
        name: path.basename(f.path),
        sha256: put.sha256,
        size: put.size,
        kind: f.kind,
        arch: f.arch ?? null,
        created_at: now,
      })
      .execute();
  }
  return build.id;
}
