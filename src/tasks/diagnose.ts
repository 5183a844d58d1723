import type { EngineDeps } from "./deps.js";
import type { TaskRow } from "./types.js";

/**
 * Why a free task is not running yet, in words: no host with its arch and channel, weight above
 * every capacity, hosts offline or disabled, a lock held by an earlier task, or backoff.
 */
export async function explainWaiting(deps: EngineDeps, task: TaskRow): Promise<string | null> {
  if (task.state !== "free") return null;
  const now = deps.clock.now();
  if (task.run_at > now) {
    return `backing off after a failure until ${new Date(task.run_at).toISOString()}`;
  }
  const hosts = await deps.db.kysely.selectFrom("hosts").selectAll().execute();
  const matching = hosts.filter((h) => {
    const arches = JSON.parse(h.arches) as string[];
    const channels = JSON.parse(h.channels) as string[];
    return (task.arch === "noarch" || arches.includes(task.arch)) && channels.includes(task.channel);
  });
  if (matching.length === 0) {
    return `no host has arch ${task.arch} and channel ${task.channel}; add one with \`kiln host add\``;
  }
  const fits = matching.filter((h) => h.capacity >= task.weight);
  if (fits.length === 0) {
    const max = Math.max(...matching.map((h) => h.capacity));
    return `its weight ${task.weight} is above every matching host's capacity (largest ${max})`;
  }
  const locks = await deps.db.kysely
    .selectFrom("task_locks as mine")
    .innerJoin("task_locks as other", (join) =>
      join.onRef("other.resource", "=", "mine.resource").onRef("other.id", "<", "mine.id"),
    )
    .select([
      "other.task_id as holder",
      "mine.resource as resource",
      "mine.exclusive",
      "other.exclusive as otherExclusive",
    ])
    .where("mine.task_id", "=", task.id)
    .where("other.task_id", "<>", task.id)
    .execute();
  const blocking = locks.find(
    (l) => (l.exclusive === 1 || l.otherExclusive === 1) && l.holder !== task.parent_id,
  );
  if (blocking) return `waiting for lock ${blocking.resource}, queued earlier by task ${blocking.holder}`;
  const enabled = fits.filter((h) => h.enabled === 1);
  if (enabled.length === 0)
    return `every host that could run it is disabled: ${fits.map((h) => h.name).join(", ")}`;
  const ready = enabled.filter((h) => h.ready === 1);
  if (ready.length === 0)
    return `every host that could run it is offline: ${enabled.map((h) => h.name).join(", ")}`;
  return `queued; ${ready.length} matching host(s) are busy`;
}
