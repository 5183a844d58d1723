import type { Kysely, Selectable } from "kysely";
import type {
  PackageEntryJson,
  TagDetailJson,
  TaggedBuildJson,
  TagJson,
  TargetJson,
} from "../client/types.js";
import { withWriteTx, type Db } from "../db/database.js";
import type { Database, TagsTable } from "../db/schema.js";
import { KilnError } from "../errors/catalogue.js";
import { isValidArchitecture, isValidPackageName } from "../debian/version.js";
import { latestEventId, recordEvent } from "../events/outbox.js";
import { formatRetryPolicy, parseRetryCount, parseRetryOn, parseRetryPolicy } from "./retry-policy.js";
import {
  activeAt,
  buildConfig,
  effectivePackageList,
  latestBuilds,
  validateNewLink,
  walkInheritance,
  type EffectivePackage,
  type InheritanceEntry,
  type InheritanceLink,
  type PackageListEntry,
  type TagConfig,
  type TaggedBuild,
} from "./inheritance.js";

export type TagRow = Selectable<TagsTable>;
export const TAG_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$/;

export interface StoreDeps {
  db: Db;
  clock: { now(): number };
}

/** Who asks, for the records and the lock check. */
export interface Actor {
  name: string;
  isAdmin: boolean;
  force?: boolean;
}

function tagJson(row: TagRow): TagJson {
  return {
    id: row.id,
    name: row.name,
    arches: row.arches ? (JSON.parse(row.arches) as string[]) : null,
    perm: row.perm,
    locked: row.locked === 1,
    extra: JSON.parse(row.extra) as Record<string, unknown>,
    createdAt: new Date(row.created_at).toISOString(),
  };
}

export async function getTagRow(db: Kysely<Database>, name: string): Promise<TagRow> {
  const row = await db.selectFrom("tags").selectAll().where("name", "=", name).executeTakeFirst();
  if (!row) throw new KilnError("TAG_NOT_FOUND", `no tag named "${name}"; see \`kiln tag list\``);
  return row;
}

/** A locked tag refuses changes unless an admin forces them. */
function checkUnlocked(tag: TagRow, actor: Actor): void {
  if (tag.locked === 1 && !(actor.isAdmin && actor.force)) {
    throw new KilnError(
      "TAG_LOCKED",
      `tag "${tag.name}" is locked; unlock it (\`kiln tag edit ${tag.name} --unlock\`) or, as an admin, use --force`,
    );
  }
}

function validateArches(arches: string[] | null | undefined): void {
  for (const a of arches ?? []) {
    if (!isValidArchitecture(a) || a === "all" || a === "any") {
      throw new KilnError("INVALID_ARCHITECTURE", `"${a}" is not an architecture a tag can build for`);
    }
  }
}

function validateExtra(extra: unknown): void {
  if (typeof extra !== "object" || extra === null || Array.isArray(extra)) {
    throw new KilnError("VALIDATION_FAILED", "extra must be an object of keys and values");
  }
}

export async function listTags(deps: StoreDeps): Promise<TagJson[]> {
  const rows = await deps.db.kysely.selectFrom("tags").selectAll().orderBy("name").execute();
  return rows.map(tagJson);
}

export async function createTag(
  deps: StoreDeps,
  input: {
    name: string;
    arches?: string[] | null;
    perm?: string | null;
    locked?: boolean;
    extra?: Record<string, unknown>;
  },
  actor: Actor,
): Promise<TagJson> {
  if (!TAG_NAME_RE.test(input.name))
    throw new KilnError("INVALID_NAME", `"${input.name}" is not a valid tag name`);
  validateArches(input.arches);
  if (input.extra !== undefined) validateExtra(input.extra);
  const now = deps.clock.now();
  return withWriteTx(deps.db, async (trx) => {
    const exists = await trx
      .selectFrom("tags")
      .select("id")
      .where("name", "=", input.name)
      .executeTakeFirst();
    if (exists) throw new KilnError("TAG_EXISTS", `a tag named "${input.name}" already exists`);
    const row = await trx
      .insertInto("tags")
      .values({
        name: input.name,
        arches: input.arches && input.arches.length > 0 ? JSON.stringify(input.arches) : null,
        perm: input.perm ?? null,
        locked: input.locked ? 1 : 0,
        extra: JSON.stringify(input.extra ?? {}),
        created_at: now,
      })
      .returningAll()
      .executeTakeFirstOrThrow();
    await recordEvent(trx, "tag.created", { tag: row.name }, actor.name, now);
    return tagJson(row);
  });
}

export async function editTag(
  deps: StoreDeps,
  name: string,
  patch: {
    rename?: string;
    arches?: string[] | null;
    perm?: string | null;
    locked?: boolean;
    extra?: Record<string, unknown>;
  },
  actor: Actor,
): Promise<TagJson> {
  validateArches(patch.arches);
  if (patch.extra !== undefined) validateExtra(patch.extra);
  if (patch.rename !== undefined && !TAG_NAME_RE.test(patch.rename)) {
    throw new KilnError("INVALID_NAME", `"${patch.rename}" is not a valid tag name`);
  }
  const now = deps.clock.now();
  return withWriteTx(deps.db, async (trx) => {
    const tag = await getTagRow(trx, name);
    // Unlocking is the one change a locked tag takes (from someone allowed to edit it).
    const onlyUnlock = patch.locked === false && Object.keys(patch).length === 1;
    if (!onlyUnlock) checkUnlocked(tag, actor);
    const set: {
      name?: string;
      arches?: string | null;
      perm?: string | null;
      locked?: number;
      extra?: string;
    } = {};
    if (patch.rename !== undefined) set.name = patch.rename;
    if (patch.arches !== undefined)
      set.arches = patch.arches && patch.arches.length > 0 ? JSON.stringify(patch.arches) : null;
    if (patch.perm !== undefined) set.perm = patch.perm;
    if (patch.locked !== undefined) set.locked = patch.locked ? 1 : 0;
    if (patch.extra !== undefined) {
      const extra = JSON.parse(tag.extra) as Record<string, unknown>;
      for (const [k, v] of Object.entries(patch.extra)) {
        if (v === null) delete extra[k];
        else extra[k] = v;
      }
      set.extra = JSON.stringify(extra);
    }
    if (patch.rename !== undefined && patch.rename !== name) {
      const clash = await trx
        .selectFrom("tags")
        .select("id")
        .where("name", "=", patch.rename)
        .executeTakeFirst();
      if (clash) throw new KilnError("TAG_EXISTS", `a tag named "${patch.rename}" already exists`);
    }
    const row =
      Object.keys(set).length === 0
        ? tag
        : await trx
            .updateTable("tags")
            .set(set)
            .where("id", "=", tag.id)
            .returningAll()
            .executeTakeFirstOrThrow();
    await recordEvent(trx, "tag.edited", { tag: row.name, changes: patch }, actor.name, now);
    return tagJson(row);
  });
}

export async function deleteTag(deps: StoreDeps, name: string, actor: Actor): Promise<void> {
  const now = deps.clock.now();
  await withWriteTx(deps.db, async (trx) => {
    const tag = await getTagRow(trx, name);
    checkUnlocked(tag, actor);
    const target = await trx
      .selectFrom("targets")
      .select("name")
      .where((eb) => eb.or([eb("build_tag_id", "=", tag.id), eb("dest_tag_id", "=", tag.id)]))
      .executeTakeFirst();
    if (target)
      throw new KilnError(
        "TAG_IN_USE",
        `target "${target.name}" uses tag "${name}"; delete the target first`,
      );
    const child = await trx
      .selectFrom("tag_inheritance")
      .innerJoin("tags", "tags.id", "tag_inheritance.tag_id")
      .select("tags.name")
      .where("tag_inheritance.parent_id", "=", tag.id)
      .where("tag_inheritance.revoke_event", "is", null)
      .executeTakeFirst();
    if (child)
      throw new KilnError(
        "TAG_IN_USE",
        `tag "${child.name}" inherits from "${name}"; remove that link first`,
      );
    await trx.deleteFrom("build_tags").where("tag_id", "=", tag.id).execute();
    await trx.deleteFrom("tag_packages").where("tag_id", "=", tag.id).execute();
    await trx
      .deleteFrom("tag_inheritance")
      .where((eb) => eb.or([eb("tag_id", "=", tag.id), eb("parent_id", "=", tag.id)]))
      .execute();
    await trx.deleteFrom("tags").where("id", "=", tag.id).execute();
    await recordEvent(trx, "tag.deleted", { tag: name }, actor.name, now);
  });
}

// --- Inheritance -------------------------------------------------------------------------------

interface Graph {
  tags: Map<number, TagRow>;
  linksByChild: Map<number, InheritanceLink[]>;
}

async function loadGraph(db: Kysely<Database>): Promise<Graph> {
  const [tags, links] = await Promise.all([
    db.selectFrom("tags").selectAll().execute(),
    db.selectFrom("tag_inheritance").selectAll().execute(),
  ]);
  const linksByChild = new Map<number, InheritanceLink[]>();
  for (const l of links) {
    const link: InheritanceLink = {
      tagId: l.tag_id,
      parentId: l.parent_id,
      priority: l.priority,
      maxdepth: l.maxdepth,
      intransitive: l.intransitive === 1,
      noconfig: l.noconfig === 1,
      pkgFilter: l.pkg_filter,
      createEvent: l.create_event,
      revokeEvent: l.revoke_event,
    };
    const list = linksByChild.get(l.tag_id) ?? [];
    list.push(link);
    linksByChild.set(l.tag_id, list);
  }
  return { tags: new Map(tags.map((t) => [t.id, t])), linksByChild };
}

function eventOpt(event: number | undefined): { eventId?: number } {
  return event === undefined ? {} : { eventId: event };
}

function tagConfigs(graph: Graph): Map<number, TagConfig> {
  return new Map(
    [...graph.tags.values()].map((t) => [
      t.id,
      {
        id: t.id,
        name: t.name,
        arches: t.arches ? (JSON.parse(t.arches) as string[]) : null,
        extra: JSON.parse(t.extra) as Record<string, unknown>,
      },
    ]),
  );
}

/** The tag's walk and build config (as of an event, if given). */
export async function resolveTag(
  db: Kysely<Database>,
  name: string,
  event?: number,
): Promise<{
  tag: TagRow;
  graph: Graph;
  walk: InheritanceEntry[];
  config: { arches: string[] | null; extra: Record<string, unknown> };
  /** The id of the tag each extra key of `config` comes from. */
  extraOrigin: Record<string, number>;
}> {
  const graph = await loadGraph(db);
  const tag = [...graph.tags.values()].find((t) => t.name === name);
  if (!tag) throw new KilnError("TAG_NOT_FOUND", `no tag named "${name}"; see \`kiln tag list\``);
  const walk = walkInheritance(tag.id, graph.linksByChild, eventOpt(event));
  const cfg = buildConfig(tag.id, walk, tagConfigs(graph));
  return {
    tag,
    graph,
    walk,
    config: { arches: cfg.arches ? [...cfg.arches] : null, extra: cfg.extra },
    extraOrigin: cfg.origin.extra,
  };
}

/** Every tag whose build config has `key` set to `value`, and the tag it comes from. */
export async function tagsWithExtra(
  db: Kysely<Database>,
  key: string,
  value: unknown,
): Promise<{ tag: string; from: string }[]> {
  const graph = await loadGraph(db);
  const configs = tagConfigs(graph);
  const out: { tag: string; from: string }[] = [];
  for (const tag of graph.tags.values()) {
    const cfg = buildConfig(tag.id, walkInheritance(tag.id, graph.linksByChild), configs);
    if (cfg.extra[key] !== value) continue;
    const from = cfg.origin.extra[key];
    out.push({
      tag: tag.name,
      from: (from === undefined ? undefined : graph.tags.get(from)?.name) ?? tag.name,
    });
  }
  return out.sort((a, b) => (a.tag < b.tag ? -1 : a.tag > b.tag ? 1 : 0));
}

export async function describeTag(deps: StoreDeps, name: string, event?: number): Promise<TagDetailJson> {
  const { tag, graph, walk, config, extraOrigin } = await resolveTag(deps.db.kysely, name, event);
  const nameOf = (id: number) => graph.tags.get(id)?.name ?? `#${id}`;
  const buildroot = config.extra.buildroot;
  const buildrootFrom = extraOrigin.buildroot;
  const own = activeAt(graph.linksByChild.get(tag.id) ?? [], event).sort((a, b) => a.priority - b.priority);
  return {
    ...tagJson(tag),
    parents: own.map((l) => ({
      parent: nameOf(l.parentId),
      parentId: l.parentId,
      priority: l.priority,
      maxdepth: l.maxdepth,
      intransitive: l.intransitive,
      noconfig: l.noconfig,
      pkgFilter: l.pkgFilter,
    })),
    walk: walk.map((e) => ({
      tag: nameOf(e.parentId),
      tagId: e.parentId,
      child: nameOf(e.tagId),
      depth: e.depth,
      priority: e.priority,
      filters: [...e.filters],
      noconfig: e.noconfig,
      intransitive: e.intransitive,
      maxdepthRemaining: e.maxdepthRemaining,
    })),
    config,
    buildroot:
      typeof buildroot === "string" && buildrootFrom !== undefined
        ? { name: buildroot, from: nameOf(buildrootFrom) }
        : null,
    event: event ?? (await latestEventId(deps.db.kysely)),
  };
}

export async function addParent(
  deps: StoreDeps,
  name: string,
  input: {
    parent: string;
    priority: number;
    maxdepth?: number | null;
    intransitive?: boolean;
    noconfig?: boolean;
    pkgFilter?: string;
  },
  actor: Actor,
): Promise<void> {
  if (!Number.isInteger(input.priority) || input.priority < 0) {
    throw new KilnError("INHERITANCE_INVALID", "the link priority must be a whole number, 0 or more");
  }
  if (input.maxdepth != null && (!Number.isInteger(input.maxdepth) || input.maxdepth < 0)) {
    throw new KilnError("INHERITANCE_INVALID", "maxdepth must be a whole number, 0 or more");
  }
  const now = deps.clock.now();
  await withWriteTx(deps.db, async (trx) => {
    const tag = await getTagRow(trx, name);
    const parent = await getTagRow(trx, input.parent);
    checkUnlocked(tag, actor);
    const rows = await trx
      .selectFrom("tag_inheritance")
      .selectAll()
      .where("tag_id", "=", tag.id)
      .where("revoke_event", "is", null)
      .execute();
    const link: InheritanceLink = {
      tagId: tag.id,
      parentId: parent.id,
      priority: input.priority,
      maxdepth: input.maxdepth ?? null,
      intransitive: input.intransitive ?? false,
      noconfig: input.noconfig ?? false,
      pkgFilter: input.pkgFilter ?? "",
    };
    validateNewLink(
      rows.map((r) => ({
        tagId: r.tag_id,
        parentId: r.parent_id,
        priority: r.priority,
        maxdepth: r.maxdepth,
        intransitive: r.intransitive === 1,
        noconfig: r.noconfig === 1,
        pkgFilter: r.pkg_filter,
      })),
      link,
    );
    const event = await recordEvent(
      trx,
      "tag.parent_added",
      { ...input, tag: tag.name, parent: parent.name },
      actor.name,
      now,
    );
    await trx
      .insertInto("tag_inheritance")
      .values({
        tag_id: tag.id,
        parent_id: parent.id,
        priority: link.priority,
        maxdepth: link.maxdepth,
        intransitive: link.intransitive ? 1 : 0,
        noconfig: link.noconfig ? 1 : 0,
        pkg_filter: link.pkgFilter,
        create_event: event,
        revoke_event: null,
      })
      .execute();
  });
}

export async function removeParent(
  deps: StoreDeps,
  name: string,
  parentName: string,
  actor: Actor,
): Promise<void> {
  const now = deps.clock.now();
  await withWriteTx(deps.db, async (trx) => {
    const tag = await getTagRow(trx, name);
    const parent = await getTagRow(trx, parentName);
    checkUnlocked(tag, actor);
    const event = await recordEvent(
      trx,
      "tag.parent_removed",
      { tag: tag.name, parent: parent.name },
      actor.name,
      now,
    );
    const res = await trx
      .updateTable("tag_inheritance")
      .set({ revoke_event: event })
      .where("tag_id", "=", tag.id)
      .where("parent_id", "=", parent.id)
      .where("revoke_event", "is", null)
      .executeTakeFirst();
    if (res.numUpdatedRows === 0n) {
      throw new KilnError("INHERITANCE_INVALID", `tag "${name}" does not inherit from "${parentName}"`);
    }
  });
}

// --- Package lists -----------------------------------------------------------------------------

interface PkgEntry extends PackageListEntry {
  rowId: number;
  createEvent: number;
  revokeEvent: number | null;
}

async function loadPackageEntries(db: Kysely<Database>, tagIds: number[]): Promise<Map<number, PkgEntry[]>> {
  const rows =
    tagIds.length === 0
      ? []
      : await db.selectFrom("tag_packages").selectAll().where("tag_id", "in", tagIds).orderBy("id").execute();
  const out = new Map<number, PkgEntry[]>();
  for (const r of rows) {
    const list = out.get(r.tag_id) ?? [];
    list.push({
      rowId: r.id,
      package: r.package,
      blocked: r.blocked === 1,
      owner: r.owner,
      createEvent: r.create_event,
      revokeEvent: r.revoke_event,
    });
    out.set(r.tag_id, list);
  }
  return out;
}

async function effectiveList(
  db: Kysely<Database>,
  name: string,
  event?: number,
): Promise<{
  tag: TagRow;
  graph: Graph;
  walk: InheritanceEntry[];
  list: Map<string, EffectivePackage<PkgEntry>>;
}> {
  const { tag, graph, walk } = await resolveTag(db, name, event);
  const ids = [tag.id, ...walk.map((e) => e.parentId)];
  const entries = await loadPackageEntries(db, [...new Set(ids)]);
  const list = effectivePackageList(tag.id, walk, entries, eventOpt(event));
  return { tag, graph, walk, list };
}

export async function listPackages(
  deps: StoreDeps,
  name: string,
  event?: number,
): Promise<PackageEntryJson[]> {
  const { graph, list } = await effectiveList(deps.db.kysely, name, event);
  return [...list.values()]
    .map((e) => ({
      package: e.package,
      blocked: e.blocked,
      owner: e.owner ?? "",
      tag: graph.tags.get(e.tagId)?.name ?? `#${e.tagId}`,
      inherited: e.inherited,
    }))
    .sort((a, b) => a.package.localeCompare(b.package));
}

/** Is the package listed and not blocked in the tag (its effective list)? Throws why not. */
export async function assertPackageAllowed(
  db: Kysely<Database>,
  tagName: string,
  pkg: string,
): Promise<void> {
  const { list } = await effectiveList(db, tagName);
  const entry = list.get(pkg);
  if (!entry) {
    throw new KilnError(
      "PACKAGE_NOT_LISTED",
      `package ${pkg} is not in tag ${tagName}'s package list; add it with \`kiln package add ${tagName} ${pkg} --owner USER\``,
    );
  }
  if (entry.blocked) throw new KilnError("PACKAGE_BLOCKED", `package ${pkg} is blocked in tag ${tagName}`);
}

export async function changePackages(
  deps: StoreDeps,
  name: string,
  input: { action: "add" | "block" | "unblock" | "remove"; packages: string[]; owner?: string },
  actor: Actor,
): Promise<void> {
  for (const p of input.packages) {
    if (!isValidPackageName(p))
      throw new KilnError("INVALID_PACKAGE_NAME", `"${p}" is not a valid Debian package name`);
  }
  if (input.packages.length === 0) throw new KilnError("VALIDATION_FAILED", "name at least one package");
  if (input.action === "add" && !input.owner)
    throw new KilnError("VALIDATION_FAILED", "adding a package needs --owner USER");
  const now = deps.clock.now();
  await withWriteTx(deps.db, async (trx) => {
    const tag = await getTagRow(trx, name);
    checkUnlocked(tag, actor);
    const { list } = await effectiveList(trx, name);
    const event = await recordEvent(
      trx,
      `package.${input.action}`,
      { tag: name, packages: input.packages, owner: input.owner },
      actor.name,
      now,
    );
    for (const pkg of input.packages) {
      const own = await trx
        .selectFrom("tag_packages")
        .selectAll()
        .where("tag_id", "=", tag.id)
        .where("package", "=", pkg)
        .where("revoke_event", "is", null)
        .executeTakeFirst();
      const revokeOwn = async () => {
        if (own)
          await trx
            .updateTable("tag_packages")
            .set({ revoke_event: event })
            .where("id", "=", own.id)
            .execute();
      };
      const insert = (blocked: boolean, owner: string | null) =>
        trx
          .insertInto("tag_packages")
          .values({
            tag_id: tag.id,
            package: pkg,
            owner,
            blocked: blocked ? 1 : 0,
            create_event: event,
            revoke_event: null,
          })
          .execute();
      const current = list.get(pkg);
      switch (input.action) {
        case "add":
          await revokeOwn();
          await insert(false, input.owner ?? null);
          break;
        case "block":
          await revokeOwn();
          await insert(true, own?.owner ?? current?.owner ?? input.owner ?? null);
          break;
        case "unblock": {
          if (!current?.blocked)
            throw new KilnError("VALIDATION_FAILED", `package ${pkg} is not blocked in ${name}`);
          await revokeOwn();
          // Blocked by an ancestor: an own unblocked entry overrides it.
          if (current.inherited || !own) await insert(false, current.owner ?? input.owner ?? null);
          else {
            const after = await effectiveList(trx, name);
            const inheritedEntry = after.list.get(pkg);
            if (inheritedEntry?.blocked) await insert(false, current.owner ?? null);
          }
          break;
        }
        case "remove":
          if (!own)
            throw new KilnError(
              "VALIDATION_FAILED",
              `package ${pkg} has no entry of tag ${name}'s own to remove`,
            );
          await revokeOwn();
          break;
        default: {
          const never: never = input.action;
          throw new KilnError("VALIDATION_FAILED", `unknown action ${String(never)}`);
        }
      }
    }
  });
}

// --- Tagging -----------------------------------------------------------------------------------

export function parseNvr(nvr: string): { source: string; version: string } {
  const slash = nvr.indexOf("/");
  if (slash <= 0 || slash === nvr.length - 1) {
    throw new KilnError("VALIDATION_FAILED", `"${nvr}" is not SOURCE/VERSION`);
  }
  return { source: nvr.slice(0, slash), version: nvr.slice(slash + 1) };
}

export async function tagBuildInTx(
  trx: Kysely<Database>,
  tagName: string,
  buildId: number,
  actor: Actor,
  now: number,
): Promise<TaggedBuildJson> {
  const tag = await getTagRow(trx, tagName);
  checkUnlocked(tag, actor);
  const build = await trx.selectFrom("builds").selectAll().where("id", "=", buildId).executeTakeFirst();
  if (!build) throw new KilnError("BUILD_NOT_FOUND", `no build ${buildId}`);
  if (build.state !== "complete" || build.scratch === 1) {
    throw new KilnError(
      "BUILD_NOT_COMPLETE",
      `build ${build.source}/${build.version} is ${build.scratch ? "a scratch build" : build.state}`,
    );
  }
  const already = await trx
    .selectFrom("build_tags")
    .select("id")
    .where("tag_id", "=", tag.id)
    .where("build_id", "=", build.id)
    .where("revoke_event", "is", null)
    .executeTakeFirst();
  if (already)
    throw new KilnError("BUILD_ALREADY_TAGGED", `${build.source}/${build.version} is already in ${tag.name}`);
  const event = await recordEvent(
    trx,
    "tag.build_added",
    { tag: tag.name, build: `${build.source}/${build.version}`, buildId: build.id },
    actor.name,
    now,
  );
  await trx
    .insertInto("build_tags")
    .values({
      tag_id: tag.id,
      build_id: build.id,
      actor: actor.name,
      create_event: event,
      revoke_event: null,
    })
    .execute();
  return {
    buildId: build.id,
    source: build.source,
    version: build.version,
    nvr: `${build.source}/${build.version}`,
    tag: tag.name,
    event,
    inherited: false,
  };
}

export async function findBuildByNvr(
  db: Kysely<Database>,
  nvr: string,
): Promise<Selectable<Database["builds"]>> {
  const { source, version } = parseNvr(nvr);
  const build = await db
    .selectFrom("builds")
    .selectAll()
    .where("source", "=", source)
    .where("version", "=", version)
    .where("scratch", "=", 0)
    .orderBy("id", "desc")
    .executeTakeFirst();
  if (!build)
    throw new KilnError("BUILD_NOT_FOUND", `no build ${nvr}; see \`kiln list-builds --package ${source}\``);
  return build;
}

export async function tagBuild(
  deps: StoreDeps,
  tagName: string,
  nvr: string,
  actor: Actor,
): Promise<TaggedBuildJson> {
  return withWriteTx(deps.db, async (trx) => {
    const build = await findBuildByNvr(trx, nvr);
    return tagBuildInTx(trx, tagName, build.id, actor, deps.clock.now());
  });
}

export async function untagBuild(deps: StoreDeps, tagName: string, nvr: string, actor: Actor): Promise<void> {
  const now = deps.clock.now();
  await withWriteTx(deps.db, async (trx) => {
    const tag = await getTagRow(trx, tagName);
    checkUnlocked(tag, actor);
    const build = await findBuildByNvr(trx, nvr);
    const event = await recordEvent(
      trx,
      "tag.build_removed",
      { tag: tag.name, build: nvr, buildId: build.id },
      actor.name,
      now,
    );
    const res = await trx
      .updateTable("build_tags")
      .set({ revoke_event: event })
      .where("tag_id", "=", tag.id)
      .where("build_id", "=", build.id)
      .where("revoke_event", "is", null)
      .executeTakeFirst();
    if (res.numUpdatedRows === 0n) throw new KilnError("BUILD_NOT_TAGGED", `${nvr} is not in ${tagName}`);
  });
}

export async function latestInTag(deps: StoreDeps, name: string, event?: number): Promise<TaggedBuildJson[]> {
  const db = deps.db.kysely;
  const { tag, graph, walk, list } = await effectiveList(db, name, event);
  const ids = [...new Set([tag.id, ...walk.map((e) => e.parentId)])];
  const rows = await db
    .selectFrom("build_tags")
    .innerJoin("builds", "builds.id", "build_tags.build_id")
    .select([
      "build_tags.tag_id as tag_id",
      "build_tags.create_event as create_event",
      "build_tags.revoke_event as revoke_event",
      "builds.id as build_id",
      "builds.source as source",
      "builds.version as version",
    ])
    .where("build_tags.tag_id", "in", ids)
    .where("builds.state", "=", "complete")
    .execute();
  const byTag = new Map<number, (TaggedBuild & { revokeEvent: number | null })[]>();
  for (const r of rows) {
    const l = byTag.get(r.tag_id) ?? [];
    l.push({
      buildId: r.build_id,
      package: r.source,
      version: r.version,
      createEvent: r.create_event,
      revokeEvent: r.revoke_event,
    });
    byTag.set(r.tag_id, l);
  }
  return latestBuilds(tag.id, walk, byTag, list, eventOpt(event)).map((b) => ({
    buildId: b.buildId,
    source: b.package,
    version: b.version,
    nvr: `${b.package}/${b.version}`,
    tag: graph.tags.get(b.tagId)?.name ?? `#${b.tagId}`,
    event: b.createEvent,
    inherited: b.inherited,
  }));
}

// --- Targets -----------------------------------------------------------------------------------

export async function listTargets(deps: StoreDeps): Promise<TargetJson[]> {
  const rows = await deps.db.kysely
    .selectFrom("targets")
    .innerJoin("tags as b", "b.id", "targets.build_tag_id")
    .innerJoin("tags as d", "d.id", "targets.dest_tag_id")
    .select([
      "targets.id as id",
      "targets.name as name",
      "b.name as build",
      "d.name as dest",
      "targets.retry_policy as retry",
    ])
    .orderBy("targets.name")
    .execute();
  return rows.map((r) => ({ id: r.id, name: r.name, buildTag: r.build, destTag: r.dest, retry: r.retry }));
}

export async function getTarget(db: Kysely<Database>, name: string): Promise<TargetJson> {
  const row = await db
    .selectFrom("targets")
    .innerJoin("tags as b", "b.id", "targets.build_tag_id")
    .innerJoin("tags as d", "d.id", "targets.dest_tag_id")
    .select([
      "targets.id as id",
      "targets.name as name",
      "b.name as build",
      "d.name as dest",
      "targets.retry_policy as retry",
    ])
    .where("targets.name", "=", name)
    .executeTakeFirst();
  if (!row)
    throw new KilnError("TARGET_NOT_FOUND", `no build target named "${name}"; see \`kiln target list\``);
  return { id: row.id, name: row.name, buildTag: row.build, destTag: row.dest, retry: row.retry };
}

export async function createTarget(
  deps: StoreDeps,
  input: { name: string; buildTag: string; destTag: string },
  actor: Actor,
): Promise<TargetJson> {
  if (!TAG_NAME_RE.test(input.name))
    throw new KilnError("INVALID_NAME", `"${input.name}" is not a valid target name`);
  const now = deps.clock.now();
  return withWriteTx(deps.db, async (trx) => {
    const build = await getTagRow(trx, input.buildTag);
    const dest = await getTagRow(trx, input.destTag);
    const exists = await trx
      .selectFrom("targets")
      .select("id")
      .where("name", "=", input.name)
      .executeTakeFirst();
    if (exists) throw new KilnError("TARGET_EXISTS", `a target named "${input.name}" already exists`);
    const row = await trx
      .insertInto("targets")
      .values({ name: input.name, build_tag_id: build.id, dest_tag_id: dest.id, created_at: now })
      .returning("id")
      .executeTakeFirstOrThrow();
    await recordEvent(trx, "target.created", { ...input }, actor.name, now);
    return { id: row.id, name: input.name, buildTag: build.name, destTag: dest.name, retry: null };
  });
}

/**
 * Sets a target's retry policy: `retry` (a count) and `retryOn` (exit:75,signal:KILL,infra) edit
 * the stored policy, or the global default when it has none; `retryPolicy: null` resets it.
 */
export async function editTarget(
  deps: StoreDeps,
  name: string,
  input: { retry?: number; retryOn?: string; retryPolicy?: string | null },
  actor: Actor,
  defaultPolicy: string,
): Promise<TargetJson> {
  const now = deps.clock.now();
  return withWriteTx(deps.db, async (trx) => {
    const row = await trx
      .selectFrom("targets")
      .select(["id", "retry_policy"])
      .where("name", "=", name)
      .executeTakeFirst();
    if (!row)
      throw new KilnError("TARGET_NOT_FOUND", `no build target named "${name}"; see \`kiln target list\``);
    let text: string | null;
    if (input.retryPolicy === null) text = null;
    else {
      const base = parseRetryPolicy(input.retryPolicy ?? row.retry_policy ?? defaultPolicy);
      if (input.retry !== undefined) base.retries = parseRetryCount(input.retry);
      if (input.retryOn !== undefined) Object.assign(base, parseRetryOn(input.retryOn));
      text = formatRetryPolicy(base);
    }
    await trx.updateTable("targets").set({ retry_policy: text }).where("id", "=", row.id).execute();
    await recordEvent(trx, "target.edited", { name, retry: text }, actor.name, now);
    return getTarget(trx, name);
  });
}

export async function deleteTarget(deps: StoreDeps, name: string, actor: Actor): Promise<void> {
  const now = deps.clock.now();
  await withWriteTx(deps.db, async (trx) => {
    const res = await trx.deleteFrom("targets").where("name", "=", name).executeTakeFirst();
    if (res.numDeletedRows === 0n) throw new KilnError("TARGET_NOT_FOUND", `no build target named "${name}"`);
    await recordEvent(trx, "target.deleted", { name }, actor.name, now);
  });
}
