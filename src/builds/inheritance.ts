/**
 * Tag inheritance as Koji does it (kojihub `readFullInheritance`, `readPackageList`,
 * `readTaggedBuilds`, `getBuildConfig`), as pure functions over plain data: the database layer
 * loads the rows and calls these; nothing here does I/O.
 *
 * History: every row may carry `createEvent`/`revokeEvent`. With an `eventId` a row counts when
 * it was created at or before that event and not revoked by then (Koji's `eventCondition`);
 * without one only unrevoked rows count. Rows without `createEvent` count as always created, so
 * callers that load only current rows need not fill in either field.
 */
import { KilnError } from "../errors/catalogue.js";

/** Stable codes for inheritance errors (in the catalogue). */
export type InheritanceErrorCode =
  | "INHERITANCE_SELF"
  | "INHERITANCE_DUPLICATE_PARENT"
  | "INHERITANCE_PRIORITY_TAKEN"
  | "INHERITANCE_INVALID"
  | "INHERITANCE_BAD_FILTER";

function inheritanceError(
  code: InheritanceErrorCode,
  message: string,
  details?: Record<string, unknown>,
): KilnError {
  return new KilnError(code, message, details);
}

/** A row that may have history. */
export interface Versioned {
  createEvent?: number;
  revokeEvent?: number | null;
}

/** One link from a child tag to a parent tag. */
export interface InheritanceLink extends Versioned {
  /** The child. */
  tagId: number;
  parentId: number;
  /** Lower is visited first; unique among one child's links. */
  priority: number;
  /** Levels walked above the parent through this link; 0 is the parent alone, null is unlimited. */
  maxdepth: number | null;
  /** Followed only when walking from the child itself, never when the child is reached as an ancestor. */
  intransitive: boolean;
  /** Arches and extra are not inherited through this link (nor from anything above it). */
  noconfig: boolean;
  /** A regular expression a package name must match at its start to pass; "" for none. */
  pkgFilter: string;
}

/** One step of a walk: the ancestor `parentId`, reached from `tagId` through `link`. */
export interface InheritanceEntry {
  /** The link's child. */
  tagId: number;
  /** The ancestor this entry reaches. */
  parentId: number;
  /** 1 for the start tag's own parents, 2 for theirs, … */
  depth: number;
  /** The link's priority. */
  priority: number;
  /** The link's own flag (only links of the start tag are ever followed when set). */
  intransitive: boolean;
  /** True when any link on the path from the start tag is noconfig. */
  noconfig: boolean;
  /** Every pkgFilter on the path from the start tag, outermost first; a package must match all. */
  filters: readonly string[];
  /** How many more levels may be walked above `parentId`; null is unlimited. */
  maxdepthRemaining: number | null;
  /** Tag ids from the start tag to `parentId`, both included. */
  path: readonly number[];
  link: InheritanceLink;
}

export interface EventOption {
  /** Read the data as it was at this event; omitted for now. */
  eventId?: number;
}

/** Koji's event condition: created at or before `eventId` and not yet revoked then. */
export function isActiveAt(row: Versioned, eventId?: number): boolean {
  if (eventId === undefined) return row.revokeEvent === undefined || row.revokeEvent === null;
  const created = row.createEvent ?? Number.NEGATIVE_INFINITY;
  return (
    created <= eventId &&
    (row.revokeEvent === undefined || row.revokeEvent === null || row.revokeEvent > eventId)
  );
}

/** The rows active at `eventId` (or now, when omitted), in their order. */
export function activeAt<T extends Versioned>(rows: readonly T[], eventId?: number): T[] {
  return rows.filter((row) => isActiveAt(row, eventId));
}

/**
 * The full inheritance of `tagId`, depth first: a tag's parents in ascending link priority, each
 * followed by its own ancestors before the next parent. The start tag itself is not an entry.
 *
 * - A loop is cut where a link leads back to a tag already on the current path.
 * - An intransitive link is followed only from the start tag.
 * - `maxdepth` limits the levels walked above a link's parent; limits met along a path combine to
 *   the smallest remaining (a link with maxdepth m under a remaining limit L leaves min(m, L-1)).
 * - A tag reached again by another path is walked again only when no earlier visit was at least
 *   as permissive: an earlier visit suffices when it had no package filters, had at least as many
 *   levels left (unlimited beats any number) and was not noconfig where this path is not (Koji's
 *   rule; any filter on the earlier visit forces a re-walk). A re-walk repeats the entries.
 */
export function walkInheritance(
  tagId: number,
  linksByChild: ReadonlyMap<number, readonly InheritanceLink[]>,
  options: EventOption = {},
): InheritanceEntry[] {
  const order: InheritanceEntry[] = [];
  const visits = new Map<number, InheritanceEntry[]>();

  const visit = (
    child: number,
    path: readonly number[],
    remaining: number | null,
    noconfig: boolean,
    filters: readonly string[],
  ): void => {
    if (remaining !== null && remaining < 1) return;
    const links = activeAt(linksByChild.get(child) ?? [], options.eventId)
      .filter((l) => l.tagId === child)
      .sort((a, b) => a.priority - b.priority || a.parentId - b.parentId);
    for (const link of links) {
      const parent = link.parentId;
      if (path.includes(parent)) continue; // loop
      if (link.intransitive && path.length > 1) continue;
      const next =
        link.maxdepth === null
          ? remaining === null
            ? null
            : remaining - 1
          : remaining === null
            ? link.maxdepth
            : Math.min(link.maxdepth, remaining - 1);
      const entry: InheritanceEntry = {
        tagId: child,
        parentId: parent,
        depth: path.length,
        priority: link.priority,
        intransitive: link.intransitive,
        noconfig: noconfig || link.noconfig,
        filters: link.pkgFilter === "" ? filters : [...filters, link.pkgFilter],
        maxdepthRemaining: next,
        path: [...path, parent],
        link,
      };
      const earlier = visits.get(parent);
      if (earlier?.some((prev) => isAtLeastAsOpen(prev, entry))) continue;
      if (earlier) earlier.push(entry);
      else visits.set(parent, [entry]);
      order.push(entry);
      visit(parent, entry.path, entry.maxdepthRemaining, entry.noconfig, entry.filters);
    }
  };

  visit(tagId, [tagId], null, false, []);
  return order;
}

function isAtLeastAsOpen(prev: InheritanceEntry, now: InheritanceEntry): boolean {
  if (prev.filters.length > 0) return false;
  if (prev.noconfig && !now.noconfig) return false;
  if (prev.maxdepthRemaining === null) return true;
  return now.maxdepthRemaining !== null && prev.maxdepthRemaining >= now.maxdepthRemaining;
}

/**
 * Refuses a new link for its child: a tag may not be its own parent, may not list one parent
 * twice, and two links of one tag may not share a priority. `existing` holds the child's current
 * links (other tags' links are ignored); to change a link, validate without its old row.
 */
export function validateNewLink(existing: readonly InheritanceLink[], link: InheritanceLink): void {
  const details = { tagId: link.tagId, parentId: link.parentId, priority: link.priority };
  if (!Number.isInteger(link.priority)) {
    throw inheritanceError("INHERITANCE_INVALID", "The link's priority must be an integer", details);
  }
  if (link.maxdepth !== null && !(Number.isInteger(link.maxdepth) && link.maxdepth >= 0)) {
    throw inheritanceError("INHERITANCE_INVALID", "maxdepth must be empty or a whole number", details);
  }
  compileFilter(link.pkgFilter);
  if (link.tagId === link.parentId) {
    throw inheritanceError("INHERITANCE_SELF", "A tag cannot be its own parent", details);
  }
  const siblings = existing.filter((l) => l.tagId === link.tagId);
  if (siblings.some((l) => l.parentId === link.parentId)) {
    throw inheritanceError(
      "INHERITANCE_DUPLICATE_PARENT",
      "The tag already inherits from that parent",
      details,
    );
  }
  const clash = siblings.find((l) => l.priority === link.priority);
  if (clash) {
    throw inheritanceError(
      "INHERITANCE_PRIORITY_TAKEN",
      `Priority ${link.priority} is already used by the link to tag ${clash.parentId}`,
      { ...details, takenBy: clash.parentId },
    );
  }
}

/**
 * The tags whose inheritance reaches `tagId` (so a change in `tagId` can change what they see),
 * nearest first. Exact: each candidate is confirmed by its own forward walk, so intransitive links
 * and depth limits count as they do for that tag.
 */
export function findDescendants(
  tagId: number,
  links: readonly InheritanceLink[],
  options: EventOption = {},
): number[] {
  const active = activeAt(links, options.eventId);
  const byChild = new Map<number, InheritanceLink[]>();
  const byParent = new Map<number, number[]>();
  for (const l of active) {
    const links = byChild.get(l.tagId);
    if (links) links.push(l);
    else byChild.set(l.tagId, [l]);
    const children = byParent.get(l.parentId);
    if (children) children.push(l.tagId);
    else byParent.set(l.parentId, [l.tagId]);
  }
  const candidates: number[] = [];
  const seen = new Set([tagId]);
  for (let i = -1; i < candidates.length; i++) {
    const from = i < 0 ? tagId : (candidates[i] as number);
    for (const child of byParent.get(from) ?? []) {
      if (seen.has(child)) continue;
      seen.add(child);
      candidates.push(child);
    }
  }
  return candidates.filter((c) => walkInheritance(c, byChild, options).some((e) => e.parentId === tagId));
}

// ---------------------------------------------------------------------------------------------
// Package filters

const filterCache = new Map<string, RegExp>();

/** Compiles a pkgFilter so that it matches at the start of the name only, like Python's re.match. */
function compileFilter(source: string): RegExp {
  let re = filterCache.get(source);
  if (re) return re;
  try {
    re = new RegExp(`^(?:${source})`);
  } catch (err) {
    throw inheritanceError("INHERITANCE_BAD_FILTER", `Invalid package filter ${JSON.stringify(source)}`, {
      filter: source,
      error: (err as Error).message,
    });
  }
  filterCache.set(source, re);
  return re;
}

/** The tag itself (unfiltered), then every tag of the walk with its path's filters. */
function sourcesOf(
  tagId: number,
  walk: readonly InheritanceEntry[],
): { tagId: number; filters: readonly string[] }[] {
  return [{ tagId, filters: [] }, ...walk.map((e) => ({ tagId: e.parentId, filters: e.filters }))];
}

/** True when `pkg` matches every filter (each anchored at the start of the name). */
export function passesFilters(pkg: string, filters: readonly string[]): boolean {
  return filters.every((f) => compileFilter(f).test(pkg));
}

// ---------------------------------------------------------------------------------------------
// Package lists

/** One row of a tag's own package list. */
export interface PackageListEntry extends Versioned {
  package: string;
  blocked: boolean;
  owner: string | null;
  extraArches?: readonly string[] | null;
}

/** A package as a tag sees it, with the tag whose entry won. */
export type EffectivePackage<E extends PackageListEntry = PackageListEntry> = E & {
  /** The tag whose entry this is. */
  tagId: number;
  /** False when the entry is the queried tag's own. */
  inherited: boolean;
};

/**
 * The package list `tagId` sees: its own entries first, then each walk entry's parent in walk
 * order; the first entry for a package wins, blocked ones included, so a child's entry overrides
 * whatever its ancestors say (unblocking what a parent blocks, blocking what a parent lists). An
 * ancestor's entry counts only if the package passes that path's filters. Keyed by package name,
 * in the order the packages were first found.
 */
export function effectivePackageList<E extends PackageListEntry>(
  tagId: number,
  walk: readonly InheritanceEntry[],
  entriesByTag: ReadonlyMap<number, readonly E[]>,
  options: EventOption = {},
): Map<string, EffectivePackage<E>> {
  const result = new Map<string, EffectivePackage<E>>();
  const sources = sourcesOf(tagId, walk);
  for (const [index, source] of sources.entries()) {
    for (const entry of activeAt(entriesByTag.get(source.tagId) ?? [], options.eventId)) {
      if (result.has(entry.package)) continue;
      if (!passesFilters(entry.package, source.filters)) continue;
      result.set(entry.package, { ...entry, tagId: source.tagId, inherited: index > 0 });
    }
  }
  return result;
}

/** True when `pkg` is listed and not blocked in an effective list. */
export function isPackageAllowed(
  list: ReadonlyMap<string, EffectivePackage<PackageListEntry>>,
  pkg: string,
): boolean {
  const entry = list.get(pkg);
  return entry !== undefined && !entry.blocked;
}

// ---------------------------------------------------------------------------------------------
// Tagged builds

/** One tagging of a build into a tag; `createEvent` is the tagging event (later is newer). */
export interface TaggedBuild extends Versioned {
  buildId: number;
  package: string;
  version: string;
  createEvent: number;
}

export type InheritedBuild<B extends TaggedBuild = TaggedBuild> = B & {
  /** The tag the build was found in. */
  tagId: number;
  inherited: boolean;
};

export interface LatestOptions extends EventOption {
  /** How many builds per package (newest first); 1 by default. */
  perPackage?: number;
}

/**
 * The latest builds `tagId` sees: per package, the most recently tagged build of the first tag
 * that has the package — the tag itself first, then its ancestors in walk order (with
 * `perPackage` N, later tags fill up to N, as Koji's `latest=N` does). Only packages
 * listed and unblocked in `packageList` (the queried tag's effective list, read at the same
 * event) count, and a build found in an ancestor only if its package passes that path's filters.
 * Callers pass only completed builds. Results come in tag order, newest first within a tag.
 */
export function latestBuilds<B extends TaggedBuild>(
  tagId: number,
  walk: readonly InheritanceEntry[],
  taggedByTag: ReadonlyMap<number, readonly B[]>,
  packageList: ReadonlyMap<string, EffectivePackage<PackageListEntry>>,
  options: LatestOptions = {},
): InheritedBuild<B>[] {
  const perPackage = options.perPackage ?? 1;
  const sources = sourcesOf(tagId, walk);
  const counts = new Map<string, number>();
  const taken = new Set<number>();
  const result: InheritedBuild<B>[] = [];
  for (const [index, source] of sources.entries()) {
    const builds = activeAt(taggedByTag.get(source.tagId) ?? [], options.eventId).sort(
      (a, b) => b.createEvent - a.createEvent || b.buildId - a.buildId,
    );
    for (const build of builds) {
      if (!isPackageAllowed(packageList, build.package)) continue;
      if (!passesFilters(build.package, source.filters)) continue;
      const count = counts.get(build.package) ?? 0;
      // A tag reached twice in the walk would offer the same build twice.
      if (count >= perPackage || taken.has(build.buildId)) continue;
      counts.set(build.package, count + 1);
      taken.add(build.buildId);
      result.push({ ...build, tagId: source.tagId, inherited: index > 0 });
    }
  }
  return result;
}

// ---------------------------------------------------------------------------------------------
// Build configuration

export interface TagConfig {
  id: number;
  name: string;
  /** null: not set here, inherit. */
  arches: readonly string[] | null;
  extra: Readonly<Record<string, unknown>>;
  /** Extra keys this tag blocks: neither its ancestors' values nor its own are used. */
  blockedExtra?: readonly string[];
}

export interface BuildConfig {
  tagId: number;
  name: string;
  arches: readonly string[] | null;
  extra: Record<string, unknown>;
  /** Which tag each value came from. */
  origin: { arches: number | null; extra: Record<string, number> };
}

/**
 * The configuration builds in `tagId` use: arches from the first tag (itself first, then the walk)
 * that sets them; extra merged key by key, the first value found winning (a blocked key counts as
 * found and is then dropped). Ancestors reached through a noconfig link contribute nothing.
 */
export function buildConfig(
  tagId: number,
  walk: readonly InheritanceEntry[],
  tagsById: ReadonlyMap<number, TagConfig>,
): BuildConfig {
  const lookup = (id: number): TagConfig => {
    const tag = tagsById.get(id);
    if (!tag) throw new KilnError("NOT_FOUND", `No such tag: ${id}`, { tagId: id });
    return tag;
  };
  const self = lookup(tagId);
  const config: BuildConfig = {
    tagId,
    name: self.name,
    arches: null,
    extra: {},
    origin: { arches: null, extra: {} },
  };
  const blocked = new Set<string>();
  const seen = new Set<string>();
  for (const id of [tagId, ...walk.filter((e) => !e.noconfig).map((e) => e.parentId)]) {
    const tag = lookup(id);
    if (config.arches === null && tag.arches !== null) {
      config.arches = [...tag.arches];
      config.origin.arches = id;
    }
    for (const key of tag.blockedExtra ?? []) {
      if (seen.has(key)) continue;
      seen.add(key);
      blocked.add(key);
    }
    for (const [key, value] of Object.entries(tag.extra)) {
      if (seen.has(key)) continue;
      seen.add(key);
      config.extra[key] = value;
      config.origin.extra[key] = id;
    }
  }
  for (const key of blocked) delete config.extra[key];
  return config;
}
