import { readdir, rm, stat } from "node:fs/promises";
import path from "node:path";
import type { Db } from "../db/database.js";

/**
 * After a crash: generations left `staged` by a task that is no longer running failed (their
 * task, requeued, makes a new one), and staging directories nobody writes any more go. The live
 * publication was never touched by them.
 */
export async function recoverInterruptedPublishes(db: Db, stagingDir: string, now: number): Promise<void> {
  const k = db.kysely;
  const staged = await k
    .selectFrom("publication_generations")
    .leftJoin("tasks", "tasks.id", "publication_generations.task_id")
    .select(["publication_generations.id as id", "tasks.state as task_state"])
    .where("publication_generations.state", "=", "staged")
    .execute();
  const dead = staged.filter(
    (g) => g.task_state === null || !["free", "assigned", "open"].includes(g.task_state),
  );
  if (dead.length > 0) {
    await k
      .updateTable("publication_generations")
      .set({ state: "failed", error: "interrupted: the hub stopped while it was being made" })
      .where(
        "id",
        "in",
        dead.map((g) => g.id),
      )
      .execute();
  }
  // Staging directories of other live hubs (PostgreSQL) are young; an hour is far beyond any.
  for (const name of await readdir(stagingDir).catch(() => [] as string[])) {
    const full = path.join(stagingDir, name);
    const st = await stat(full).catch(() => undefined);
    if (st && now - st.mtimeMs > 3_600_000) await rm(full, { recursive: true, force: true });
  }
}
