import { KilnError } from "../errors/catalogue.js";
import type { EngineDeps } from "./deps.js";
import { TASK_STATES, type TaskRow, type TaskState } from "./types.js";

export async function getTask(deps: EngineDeps, id: number): Promise<TaskRow> {
  const row = await deps.db.kysely.selectFrom("tasks").selectAll().where("id", "=", id).executeTakeFirst();
  if (!row) throw new KilnError("TASK_NOT_FOUND", `no task ${id}`);
  return row;
}

export interface TaskFilter {
  state?: TaskState[];
  method?: string;
  owner?: string;
  parentId?: number;
  hostId?: number;
  /** Keyset pagination: tasks with a smaller id than this. */
  before?: number;
  limit?: number;
}

export function parseStates(text: string | undefined): TaskState[] | undefined {
  if (!text) return undefined;
  const states = text.split(",").map((s) => s.trim());
  for (const s of states) {
    if (!(TASK_STATES as readonly string[]).includes(s)) {
      throw new KilnError("VALIDATION_FAILED", `unknown state "${s}"; states are ${TASK_STATES.join(", ")}`);
    }
  }
  return states as TaskState[];
}

/** Newest first, keyset-paginated so that listing stays fast with any number of tasks. */
export async function listTasks(deps: EngineDeps, filter: TaskFilter): Promise<TaskRow[]> {
  let q = deps.db.kysely.selectFrom("tasks").selectAll();
  if (filter.state) q = q.where("state", "in", filter.state);
  if (filter.method) q = q.where("method", "=", filter.method);
  if (filter.owner) q = q.where("owner", "=", filter.owner);
  if (filter.parentId !== undefined) q = q.where("parent_id", "=", filter.parentId);
  if (filter.hostId !== undefined) q = q.where("host_id", "=", filter.hostId);
  if (filter.before !== undefined) q = q.where("id", "<", filter.before);
  return q
    .orderBy("id", "desc")
    .limit(Math.min(Math.max(filter.limit ?? 100, 1), 1000))
    .execute();
}

export async function countTasksByState(deps: EngineDeps): Promise<Record<string, number>> {
  const rows = await deps.db.kysely
    .selectFrom("tasks")
    .select(["state", (eb) => eb.fn.countAll<number>().as("n")])
    .groupBy("state")
    .execute();
  return Object.fromEntries(rows.map((r) => [r.state, Number(r.n)]));
}
