import { withWriteTx } from "../../db/database.js";
import { cancelIds } from "../../tasks/cancel-task.js";
import { isFinal } from "../../tasks/types.js";
import { TaskFailure, type TaskHandler } from "../../worker/handler.js";
import type { HubDeps } from "../deps.js";

interface GroupArgs {
  tasks: {
    method: string;
    args?: unknown;
    arch?: string;
    channel?: string;
    weight?: number;
    timeout?: number;
  }[];
}

/**
 * Runs its subtasks in parallel and closes when they all closed. Re-entrant: after waiting it
 * runs again from the top, and labels give it back the same subtasks. One failure cancels the
 * rest and fails the group — the shape of every orchestration method.
 */
export function groupHandler(deps: HubDeps): TaskHandler {
  return async (ctx) => {
    const args = ctx.task.args as GroupArgs;
    await ctx.client.createSubtasks(
      ctx.task.id,
      ctx.epoch,
      args.tasks.map((t, i) => ({
        label: `task-${i}`,
        method: t.method,
        args: t.args,
        ...(t.arch ? { arch: t.arch } : {}),
        ...(t.channel ? { channel: t.channel } : {}),
        ...(t.weight ? { weight: t.weight } : {}),
        ...(t.timeout ? { timeout: t.timeout } : {}),
      })),
    );
    const waited = await ctx.client.waitSubtasks(ctx.task.id, ctx.epoch);
    if (!waited.done) return { suspend: true };
    const bad = waited.subtasks.find((s) => s.state === "failed" || s.state === "canceled");
    if (bad) {
      const active = waited.subtasks.filter((s) => !isFinal(s.state)).map((s) => s.id);
      await withWriteTx(deps.db, (trx) =>
        cancelIds(deps, trx, active, {
          code: "TASK_CANCELED",
          message: `sibling task ${bad.id} ${bad.state}`,
        }),
      );
      deps.wake.notify();
      ctx.log(`subtask ${bad.id} (${bad.method}) ${bad.state}: ${bad.error?.message ?? "no message"}\n`);
      throw new TaskFailure(
        "SUBTASK_FAILED",
        `subtask ${bad.id} (${bad.method}) ${bad.state}: ${bad.error?.message ?? ""}`,
      );
    }
    ctx.log(`all ${waited.subtasks.length} subtasks closed\n`);
    return { result: { subtasks: waited.subtasks.map((s) => ({ id: s.id, result: s.result })) } };
  };
}
