import type { Kysely } from "kysely";
import {
  assertPolicy,
  type PolicyData,
  type PolicyDecision,
  type PolicyTestRegistry,
} from "../builds/policy.js";
import type { Database } from "../db/schema.js";
import type { Principal } from "../db/tokens.js";
import { recordEvent } from "../events/outbox.js";
import type { HubDeps } from "./deps.js";

/** Tests the hub adds to the built-in ones (none yet; the data carries what they need). */
export const HUB_POLICY_TESTS: PolicyTestRegistry = {};

export async function userPerms(db: Kysely<Database>, principal: Principal): Promise<string[]> {
  if (!principal.user) return [];
  const rows = await db
    .selectFrom("user_perms")
    .select("perm")
    .where("user_id", "=", principal.user.id)
    .execute();
  return rows.map((r) => r.perm);
}

/**
 * Checks a policy for the caller; a denial throws POLICY_DENIED with the policy's reason. An
 * admin's force overrides a denial, and the override is recorded as an event.
 */
export async function enforcePolicy(
  deps: HubDeps,
  name: string,
  principal: Principal,
  data: PolicyData,
  force = false,
): Promise<PolicyDecision> {
  const isAdmin = principal.role === "admin";
  const full: PolicyData = {
    isAdmin,
    user: principal.user?.name ?? null,
    perms: await userPerms(deps.db.kysely, principal),
    ...data,
  };
  const decision = assertPolicy(deps.policies, name, full, { force, isAdmin, tests: HUB_POLICY_TESTS });
  if (decision.forced) {
    await recordEvent(
      deps.db.kysely,
      "policy.forced",
      { policy: name, reason: decision.reason, data },
      full.user ?? null,
      deps.clock.now(),
    );
  }
  return decision;
}
