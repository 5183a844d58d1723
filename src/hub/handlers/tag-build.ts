import { tagBuildInTx } from "../../builds/tag-store.js";
import { withWriteTx } from "../../db/database.js";
import { KilnError } from "../../errors/catalogue.js";
import { TaskFailure, type TaskHandler } from "../../worker/handler.js";
import type { HubDeps } from "../deps.js";

/** Tags a finished build into the target's destination tag (the policy was checked at submit). */
export function tagBuildHandler(deps: HubDeps): TaskHandler {
  return async (ctx) => {
    const args = ctx.task.args as { tag: string; buildId: number };
    try {
      const tagged = await withWriteTx(deps.db, (trx) =>
        tagBuildInTx(trx, args.tag, args.buildId, { name: ctx.task.owner, isAdmin: false }, deps.clock.now()),
      );
      ctx.log(`tagged ${tagged.nvr} into ${tagged.tag} (event ${tagged.event})\n`);
      return { result: tagged };
    } catch (err) {
      // Re-run after a restart: already tagged is success.
      if (err instanceof KilnError && err.code === "BUILD_ALREADY_TAGGED")
        return { result: { tag: args.tag, buildId: args.buildId } };
      if (err instanceof KilnError) throw new TaskFailure(err.code, err.message);
      throw err;
    }
  };
}
