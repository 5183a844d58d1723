/**
 * Kiln's kojira: keeps tag repos current. When tags change (events `tag.*`, `package.*`, a new
 * target) it queues one deduplicated newRepo for each tracked tag whose inheritance includes a
 * changed tag; tracked tags are the build tags of targets and any tag that has a ready repo.
 * When builds end (`build.*`) it deletes expired repos no running build uses any more. On its
 * first tick (hub start) it does all of that for every tracked tag, so a change made just before
 * a crash gets its repo, and removes what a crash left on disk.
 */
import { readEvents, type EventRow } from "../events/outbox.js";
import { walkInheritance } from "./inheritance.js";
import { cleanupTagRepos, queueNewRepo, sweepTagRepoDirs, type TagRepoDeps } from "./tag-repos.js";
import { resolveTag } from "./tag-store.js";

const WATCHED = ["tag.*", "package.*", "target.created", "build.*"];
const PAGE = 1000;

/** What a batch of events asks for: repos of these tags (or of every tracked tag), a cleanup. */
interface Changes {
  tags: Set<string>;
  everything: boolean;
  cleanup: boolean;
}

export function classifyEvents(rows: readonly Pick<EventRow, "type" | "data">[]): Changes {
  const out: Changes = { tags: new Set(), everything: false, cleanup: false };
  for (const r of rows) {
    if (r.type.startsWith("build.")) {
      if (r.type !== "build.started") out.cleanup = true;
      continue;
    }
    if (r.type === "target.created") {
      out.everything = true;
      continue;
    }
    if (r.type === "tag.deleted") out.cleanup = true;
    let tag: unknown;
    try {
      tag = (JSON.parse(r.data) as { tag?: unknown }).tag;
    } catch {
      tag = undefined;
    }
    if (typeof tag === "string") out.tags.add(tag);
    else out.everything = true;
  }
  return out;
}

export class TagRepoTracker {
  private lastEvent: number | undefined;
  private running: Promise<number> | undefined;

  constructor(private readonly deps: TagRepoDeps) {}

  /** Looks at what changed since the last look; returns how many newRepo tasks it queued. */
  tick(): Promise<number> {
    // One look at a time: a tick while one runs has nothing to add (the next one sees it all).
    if (this.running) return Promise.resolve(0);
    this.running = this.check().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private async check(): Promise<number> {
    if (this.lastEvent === undefined) {
      // readEvents' newest is one no transaction still running can come in below.
      const [newest] = await readEvents(this.deps.db, { newest: true, limit: 1 });
      await sweepTagRepoDirs(this.deps);
      await cleanupTagRepos(this.deps);
      const queued = await this.queueFor({ tags: new Set(), everything: true, cleanup: false });
      this.lastEvent = newest?.id ?? 0;
      return queued;
    }
    const rows: EventRow[] = [];
    for (;;) {
      const page = await readEvents(this.deps.db, { since: this.lastEvent, types: WATCHED, limit: PAGE });
      rows.push(...page);
      const last = page[page.length - 1];
      if (last) this.lastEvent = last.id;
      if (page.length < PAGE) break;
    }
    if (rows.length === 0) return 0;
    const changes = classifyEvents(rows);
    const queued = await this.queueFor(changes);
    if (changes.cleanup) await cleanupTagRepos(this.deps);
    return queued;
  }

  private async queueFor(changes: Changes): Promise<number> {
    if (!changes.everything && changes.tags.size === 0) return 0;
    const tags = await this.affectedTags(changes);
    for (const tag of tags) await queueNewRepo(this.deps, tag);
    if (tags.length > 0) this.deps.log.info({ tags }, "tags changed: new tag repos queued");
    return tags.length;
  }

  /** Tracked tags whose inheritance (the tag itself included) has a changed tag. */
  private async affectedTags(changes: Changes): Promise<string[]> {
    const db = this.deps.db.kysely;
    const [buildTags, withRepo] = await Promise.all([
      db
        .selectFrom("targets")
        .innerJoin("tags", "tags.id", "targets.build_tag_id")
        .select("tags.name as name")
        .execute(),
      db
        .selectFrom("tag_repos")
        .innerJoin("tags", "tags.id", "tag_repos.tag_id")
        .select("tags.name as name")
        .where("tag_repos.state", "=", "ready")
        .execute(),
    ]);
    const tracked = [...new Set([...buildTags, ...withRepo].map((r) => r.name))].sort();
    const first = tracked[0];
    if (first === undefined || changes.everything) return tracked;
    const { graph } = await resolveTag(db, first);
    const idOf = new Map([...graph.tags.values()].map((t) => [t.name, t.id]));
    const changed = new Set([...changes.tags].map((name) => idOf.get(name)).filter((id) => id !== undefined));
    return tracked.filter((name) => {
      const id = idOf.get(name);
      if (id === undefined) return false;
      if (changed.has(id)) return true;
      return walkInheritance(id, graph.linksByChild).some((e) => changed.has(e.parentId));
    });
  }
}
