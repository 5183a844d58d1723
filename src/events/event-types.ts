import { KilnError } from "../errors/catalogue.js";

/**
 * Every event type the outbox holds, `<noun>.<verb>`. Webhook subscriptions are checked against
 * this list, so a typo is an error at `kiln webhook add` rather than a webhook that never fires.
 * docs/events.md describes each one.
 */
export const EVENT_TYPES = [
  "task.started",
  "task.closed",
  "task.failed",
  "task.canceled",
  "build.started",
  "build.completed",
  "build.failed",
  "build.canceled",
  "tag.created",
  "tag.edited",
  "tag.deleted",
  "tag.parent_added",
  "tag.parent_removed",
  "tag.build_added",
  "tag.build_removed",
  "target.created",
  "target.edited",
  "target.deleted",
  "tagrepo.ready",
  "tagrepo.expired",
  "tagrepo.deleted",
  "tagrepo.failed",
  "buildroot.created",
  "buildroot.ready",
  "buildroot.failed",
  "buildroot.deleted",
  "package.add",
  "package.block",
  "package.unblock",
  "package.remove",
  "policy.forced",
  "user.perm_granted",
  "user.perm_revoked",
  "repo.changed",
  "repo.dropped",
  "snapshot.created",
  "snapshot.dropped",
  "publish.started",
  "publish.live",
  "publish.failed",
  "publish.rolled_back",
  "publish.dropped",
  "host.online",
  "host.offline",
  "host.disabled",
  "host.enabled",
  "host.quarantined",
  "webhook.disabled",
  "webhook.test",
] as const;

export type EventType = (typeof EVENT_TYPES)[number];

const KNOWN = new Set<string>(EVENT_TYPES);
const NOUNS = new Set<string>(EVENT_TYPES.map((t) => t.slice(0, t.indexOf("."))));

/**
 * Checks a list of subscriptions: exact types, `noun.*`, or `*` for everything. Returns them
 * deduplicated in the order given.
 */
export function parseEventPatterns(input: string | readonly string[]): string[] {
  const items = (typeof input === "string" ? input.split(",") : input).map((s) => s.trim()).filter(Boolean);
  if (items.length === 0) {
    throw new KilnError("EVENT_TYPE_UNKNOWN", "name at least one event type (build.failed, build.*, or *)");
  }
  for (const item of items) {
    if (item === "*" || KNOWN.has(item)) continue;
    const noun = /^([a-z]+)\.\*$/.exec(item)?.[1];
    if (noun !== undefined && NOUNS.has(noun)) continue;
    throw new KilnError(
      "EVENT_TYPE_UNKNOWN",
      `"${item}" is not an event type or NOUN.* pattern; types are ${EVENT_TYPES.join(", ")}`,
      { type: item },
    );
  }
  return [...new Set(items)];
}

/** Does an event of this type match one of the patterns? */
export function matchesPatterns(type: string, patterns: readonly string[]): boolean {
  for (const p of patterns) {
    if (p === "*" || p === type) return true;
    if (p.endsWith(".*") && type.startsWith(p.slice(0, -1))) return true;
  }
  return false;
}

/** Checks a `--type` filter for listing events: an exact type or `noun.*`. */
export function parseTypeFilter(input: string): string[] {
  return parseEventPatterns(input);
}
