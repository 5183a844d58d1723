/** `kiln snapshot …`: immutable package sets made from a repo, a tag, a merge or a filter. */
import type { Command } from "commander";
import type {
  SnapshotDetailJson,
  SnapshotDiffJson,
  SnapshotJson,
  SnapshotSourceJson,
} from "../client/types.js";
import { KilnError } from "../errors/catalogue.js";
import { clientFor, parseInteger } from "./context.js";
import { formatFields, formatTable, formatTime, printJson } from "./output.js";
import { countPackages, formatPackages, resultOf } from "./repo.js";

interface JsonFlag {
  json?: boolean;
}

export interface SnapshotFromFlags {
  fromRepo?: string;
  fromTag?: string;
  event?: number;
}

/** What `kiln snapshot create` snapshots: exactly one of --from-repo and --from-tag. */
export function snapshotSourceFrom(flags: SnapshotFromFlags): SnapshotSourceJson {
  if ((flags.fromRepo === undefined) === (flags.fromTag === undefined)) {
    throw new KilnError(
      "VALIDATION_FAILED",
      "give one of --from-repo REPO and --from-tag TAG (merge and filter have their own commands)",
    );
  }
  if (flags.fromRepo !== undefined) {
    if (flags.event !== undefined) throw new KilnError("VALIDATION_FAILED", "--event goes with --from-tag");
    return { kind: "repo", repo: flags.fromRepo };
  }
  return {
    kind: "tag",
    tag: flags.fromTag ?? "",
    ...(flags.event !== undefined ? { event: flags.event } : {}),
  };
}

/** Where a snapshot came from, in words. */
export function describeOrigin(origin: SnapshotJson["origin"]): string {
  switch (origin.kind) {
    case "repo":
      return `local repo ${origin.repo}`;
    case "tag":
      return `tag ${origin.tag} at event ${origin.event}`;
    case "merge":
      return `merge of ${origin.sources.join(", ")}${origin.latest ? " (latest versions)" : ""}`;
    case "filter":
      return `${origin.source} filtered by ${origin.query}`;
    case "packages":
      return "a list of packages";
  }
}

export function formatSnapshot(snap: SnapshotDetailJson, now: number = Date.now()): string {
  const fields = formatFields([
    ["snapshot", snap.name],
    ["description", snap.description],
    ["from", describeOrigin(snap.origin)],
    ["packages", snap.packageCount],
    ["created", formatTime(snap.createdAt, now)],
  ]);
  return snap.packages ? `${fields}\n${formatPackages(snap.packages)}` : fields;
}

export function formatSnapshotList(snaps: readonly SnapshotJson[]): string {
  if (snaps.length === 0) return "no snapshots; make one with `kiln snapshot create NAME --from-repo REPO`\n";
  return formatTable<SnapshotJson>(snaps, [
    { header: "name", value: (s) => s.name },
    { header: "packages", value: (s) => s.packageCount, align: "right" },
    { header: "from", value: (s) => describeOrigin(s.origin) },
    { header: "description", value: (s) => s.description },
  ]);
}

/** The version in a package key (`Pamd64 hello 1.0-1 0123abcd…`). */
export function versionOfKey(key: string | null): string | null {
  if (key === null) return null;
  return key.split(" ")[2] ?? key;
}

/**
 * Aptly's diff table: `-` only in A, `+` only in B, `!` in both with other contents (another
 * version, or the same version rebuilt).
 */
export function formatSnapshotDiff(a: string, b: string, diff: readonly SnapshotDiffJson[]): string {
  if (diff.length === 0) return `${a} and ${b} hold the same packages\n`;
  return formatTable<SnapshotDiffJson>(diff, [
    { header: " ", value: (d) => (d.left === null ? "+" : d.right === null ? "-" : "!") },
    { header: "package", value: (d) => d.name },
    { header: "arch", value: (d) => d.arch },
    { header: `in ${a}`, value: (d) => versionOfKey(d.left) },
    { header: `in ${b}`, value: (d) => versionOfKey(d.right) },
  ]);
}

function created(name: string, packageCount: number): string {
  return `Created snapshot ${name} with ${countPackages(packageCount)}; publish it with: kiln publish snapshot ${name} --distribution DIST\n`;
}

export function registerSnapshotCommand(program: Command): void {
  const snapshot = program.command("snapshot").description("Snapshots: package sets that never change");

  snapshot
    .command("create")
    .description("Snapshot a local repo, or a tag's latest builds")
    .argument("<name>")
    .option("--from-repo <repo>", "the local repo's packages now")
    .option("--from-tag <tag>", "the tag's latest builds, through inheritance")
    .option("--event <n>", "with --from-tag: as the tag was at this event", parseInteger(1))
    .option("--description <text>", "what it is")
    .option("--json", "print the task and its result as JSON")
    .action(
      async (name: string, opts: JsonFlag & SnapshotFromFlags & { description?: string }, cmd: Command) => {
        const from = snapshotSourceFrom(opts);
        const answer = await clientFor(cmd).createSnapshot({
          name,
          from,
          ...(opts.description !== undefined ? { description: opts.description } : {}),
        });
        if (opts.json) return printJson(answer);
        process.stdout.write(created(name, resultOf(answer).packageCount));
      },
    );

  snapshot
    .command("list")
    .description("List snapshots")
    .option("--json", "print as JSON")
    .action(async (opts: JsonFlag, cmd: Command) => {
      const snaps = await clientFor(cmd).listSnapshots();
      if (opts.json) return printJson(snaps);
      process.stdout.write(formatSnapshotList(snaps));
    });

  snapshot
    .command("show")
    .description("Show a snapshot (and its packages)")
    .argument("<name>")
    .option("--with-packages", "list its packages")
    .option("--query <q>", "list only the packages an Aptly query matches (implies --with-packages)")
    .option("--json", "print as JSON")
    .action(
      async (name: string, opts: JsonFlag & { withPackages?: boolean; query?: string }, cmd: Command) => {
        const snap = await clientFor(cmd).showSnapshot(name, {
          ...(opts.withPackages ? { withPackages: true } : {}),
          ...(opts.query !== undefined ? { q: opts.query } : {}),
        });
        if (opts.json) return printJson(snap);
        process.stdout.write(formatSnapshot(snap));
      },
    );

  snapshot
    .command("diff")
    .description("What differs between two snapshots")
    .argument("<a>")
    .argument("<b>")
    .option("--json", "print as JSON")
    .action(async (a: string, b: string, opts: JsonFlag, cmd: Command) => {
      const diff = await clientFor(cmd).diffSnapshots(a, b);
      if (opts.json) return printJson(diff);
      process.stdout.write(formatSnapshotDiff(a, b, diff));
    });

  snapshot
    .command("merge")
    .description("Make a snapshot of several: a later source wins a package of the same name and arch")
    .argument("<dest>", "the new snapshot")
    .argument("<sources...>", "the snapshots to merge")
    .option("--latest", "the highest version wins instead of the later source")
    .option("--description <text>", "what it is")
    .option("--json", "print the task and its result as JSON")
    .action(
      async (
        dest: string,
        sources: string[],
        opts: JsonFlag & { latest?: boolean; description?: string },
        cmd: Command,
      ) => {
        const answer = await clientFor(cmd).createSnapshot({
          name: dest,
          from: { kind: "merge", sources, ...(opts.latest ? { latest: true } : {}) },
          ...(opts.description !== undefined ? { description: opts.description } : {}),
        });
        if (opts.json) return printJson(answer);
        process.stdout.write(created(dest, resultOf(answer).packageCount));
      },
    );

  snapshot
    .command("filter")
    .description("Make a snapshot of the packages of another that an Aptly query matches")
    .argument("<src>")
    .argument("<dest>")
    .argument("<query>", "e.g. 'Priority (required)' or 'hello | libhello1'")
    .option("--description <text>", "what it is")
    .option("--json", "print the task and its result as JSON")
    .action(
      async (
        src: string,
        dest: string,
        query: string,
        opts: JsonFlag & { description?: string },
        cmd: Command,
      ) => {
        const answer = await clientFor(cmd).createSnapshot({
          name: dest,
          from: { kind: "filter", source: src, query },
          ...(opts.description !== undefined ? { description: opts.description } : {}),
        });
        if (opts.json) return printJson(answer);
        process.stdout.write(created(dest, resultOf(answer).packageCount));
      },
    );

  snapshot
    .command("drop")
    .description("Delete a snapshot (refused while it is published, unless --force)")
    .argument("<name>")
    .option("--force", "drop it even while a publication uses it")
    .option("--json", "print the task and its result as JSON")
    .action(async (name: string, opts: JsonFlag & { force?: boolean }, cmd: Command) => {
      const answer = await clientFor(cmd).dropSnapshot(name, { force: opts.force === true });
      if (opts.json) return printJson(answer);
      process.stdout.write(`Dropped snapshot ${name}\n`);
    });
}
