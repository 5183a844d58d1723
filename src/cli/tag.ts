/** `kiln tag …` and `kiln tag-build`/`untag-build`: tags, their inheritance and what is tagged in them. */
import { InvalidArgumentError, Option, type Command } from "commander";
import type { KilnClient } from "../client/client.js";
import type {
  TagDetailJson,
  TaggedBuildJson,
  TagJson,
  TagLinkJson,
  TagWalkEntryJson,
} from "../client/types.js";
import { KilnError } from "../errors/catalogue.js";
import { parseNvr } from "./build.js";
import { clientFor, parseId, parseInteger, parseList } from "./context.js";
import { formatFields, formatTable, formatTime, printJson, printTable } from "./output.js";
import { registerTagRepoCommands } from "./wait-repo.js";

interface JsonFlag {
  json?: boolean;
}

// ---------------------------------------------------------------------------------------------
// extra: KEY=VALUE

/** A value of `--extra K=V`: JSON when it parses (numbers, true/false, "quoted", [..], {..}), else the text. */
export function parseExtraValue(raw: string): unknown {
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    return raw;
  }
  // null is how the API removes a key: saying so takes --remove-extra.
  if (value === null)
    throw new InvalidArgumentError("null is not a value; remove a key with --remove-extra KEY");
  return value;
}

/** `KEY=VALUE` → [KEY, value]; the first `=` splits, so values may hold more. */
export function parseExtraAssignment(text: string): [string, unknown] {
  const eq = text.indexOf("=");
  const key = eq === -1 ? "" : text.slice(0, eq).trim();
  if (eq === -1 || key === "") throw new InvalidArgumentError("expected KEY=VALUE");
  return [key, parseExtraValue(text.slice(eq + 1))];
}

function collectExtra(text: string, previous: Record<string, unknown> | undefined): Record<string, unknown> {
  const [key, value] = parseExtraAssignment(text);
  return { ...previous, [key]: value };
}

function collectKeys(key: string, previous: string[] | undefined): string[] {
  if (key.trim() === "") throw new InvalidArgumentError("expected a key");
  return [...(previous ?? []), key.trim()];
}

/** The value as `--extra K=V` would take it back: plain text when that parses as the same string, else JSON. */
export function formatExtraValue(value: unknown): string {
  if (typeof value === "string") {
    let parsed: unknown;
    try {
      parsed = JSON.parse(value);
    } catch {
      return value;
    }
    return parsed === value ? value : JSON.stringify(value);
  }
  return JSON.stringify(value);
}

function formatExtra(extra: Record<string, unknown>): string | null {
  const keys = Object.keys(extra).sort();
  if (keys.length === 0) return null;
  return keys.map((k) => `${k}=${formatExtraValue(extra[k])}`).join("\n");
}

// ---------------------------------------------------------------------------------------------
// tag edit

export interface TagEditFlags {
  rename?: string;
  /** A list, or false for --no-arches. */
  arches?: string[] | false;
  /** A permission, or false for --no-perm. */
  perm?: string | false;
  lock?: boolean;
  unlock?: boolean;
  extra?: Record<string, unknown>;
  removeExtra?: string[];
  /** A buildroot base's name, or false for --no-buildroot (stored as extra.buildroot). */
  buildroot?: string | false;
}

export type TagPatch = Parameters<KilnClient["editTag"]>[1];

/** The PATCH `kiln tag edit` sends; refuses an edit that changes nothing or contradicts itself. */
export function buildTagPatch(flags: TagEditFlags): TagPatch {
  const patch: TagPatch = {};
  if (flags.rename !== undefined) patch.rename = flags.rename;
  if (flags.arches !== undefined) patch.arches = flags.arches === false ? null : flags.arches;
  if (flags.perm !== undefined) patch.perm = flags.perm === false ? null : flags.perm;
  if (flags.lock) patch.locked = true;
  if (flags.unlock) patch.locked = false;
  const set = { ...flags.extra };
  const removed = [...(flags.removeExtra ?? [])];
  if (flags.buildroot !== undefined) {
    if (Object.hasOwn(set, "buildroot") || removed.includes("buildroot")) {
      throw new KilnError(
        "VALIDATION_FAILED",
        "--buildroot and --extra/--remove-extra buildroot say the same thing twice: give one",
      );
    }
    if (flags.buildroot === false) removed.push("buildroot");
    else set.buildroot = flags.buildroot;
  }
  const both = removed.filter((k) => Object.hasOwn(set, k));
  if (both.length > 0) {
    throw new KilnError(
      "VALIDATION_FAILED",
      `--extra and --remove-extra both name ${both.join(", ")}: which is it?`,
    );
  }
  if (Object.keys(set).length > 0 || removed.length > 0) {
    patch.extra = { ...set, ...Object.fromEntries(removed.map((k) => [k, null])) };
  }
  if (Object.keys(patch).length === 0) {
    throw new KilnError(
      "VALIDATION_FAILED",
      "nothing to change: give --rename, --arches/--no-arches, --perm/--no-perm, --lock/--unlock, --buildroot/--no-buildroot, --extra or --remove-extra",
    );
  }
  return patch;
}

// ---------------------------------------------------------------------------------------------
// tag show

function describeWalkEntry(e: TagWalkEntryJson): string {
  const notes = [`priority ${e.priority}`];
  if (e.maxdepthRemaining !== null) notes.push(`maxdepth ${e.maxdepthRemaining}`);
  if (e.filters.length > 0) notes.push(`filter ${e.filters.join(" and ")}`);
  if (e.noconfig) notes.push("noconfig");
  if (e.intransitive) notes.push("intransitive");
  return `${e.tag}  (${notes.join(", ")})`;
}

/**
 * The inheritance walk as a tree under the tag: each ancestor below the tag that links to it, in
 * walk order (parents by priority, each followed by its own ancestors). `maxdepth` is how many
 * levels the walk may still climb above that tag; `filter` lists every package filter on the path.
 */
export function formatInheritanceTree(root: string, walk: readonly TagWalkEntryJson[]): string {
  const lines = [root];
  // For each depth above the current entry: do more siblings follow (draw │)?
  const open: boolean[] = [];
  walk.forEach((entry, i) => {
    const d = entry.depth;
    const next = walk.slice(i + 1).find((e) => e.depth <= d);
    const isLast = next === undefined || next.depth < d;
    let prefix = "";
    for (let k = 1; k < d; k++) prefix += open[k] ? "│  " : "   ";
    lines.push(`${prefix}${isLast ? "└─ " : "├─ "}${describeWalkEntry(entry)}`);
    open[d] = !isLast;
  });
  return `${lines.join("\n")}\n`;
}

function yesNo(v: boolean): string {
  return v ? "yes" : "no";
}

export function formatParents(parents: readonly TagLinkJson[]): string {
  if (parents.length === 0) return "none\n";
  return formatTable<TagLinkJson>(parents, [
    { header: "priority", value: (l) => l.priority, align: "right" },
    { header: "parent", value: (l) => l.parent },
    { header: "maxdepth", value: (l) => l.maxdepth },
    { header: "intransitive", value: (l) => yesNo(l.intransitive) },
    { header: "noconfig", value: (l) => yesNo(l.noconfig) },
    { header: "pkg filter", value: (l) => l.pkgFilter },
  ]);
}

/** The base builds start from and where the setting comes from; undefined from a hub that does not say. */
function formatBuildroot(tag: TagDetailJson): string | undefined {
  if (tag.buildroot === undefined) return undefined;
  if (tag.buildroot === null) return "none: builds run on the worker's own root";
  const { name, from } = tag.buildroot;
  return from === tag.name ? name : `${name} (inherited from ${from})`;
}

export function formatTagDetail(tag: TagDetailJson, now: number = Date.now()): string {
  const fields = formatFields([
    ["tag", `${tag.name} (id ${tag.id})`],
    ["arches", tag.arches ? tag.arches.join(", ") : "none of its own (inherited)"],
    ["perm", tag.perm ?? "none (anyone allowed by policy)"],
    ["locked", yesNo(tag.locked)],
    ["extra", formatExtra(tag.extra)],
    ["created", formatTime(tag.createdAt, now)],
    ["event", tag.event],
  ]);
  const config = formatFields([
    [
      "arches",
      tag.config.arches ? tag.config.arches.join(", ") : "none: no tag in the inheritance sets arches",
    ],
    ["extra", formatExtra(tag.config.extra) ?? "none"],
    ["buildroot", formatBuildroot(tag)],
  ]);
  return (
    `${fields}\nparents:\n${formatParents(tag.parents)}\n` +
    `inheritance:\n${formatInheritanceTree(tag.name, tag.walk)}\n` +
    `build config (what builds in it use):\n${config}`
  );
}

export function formatTagLine(tag: TagJson): string {
  return `${tag.name}: arches ${tag.arches ? tag.arches.join(", ") : "inherited"}, perm ${tag.perm ?? "none"}, ${tag.locked ? "locked" : "unlocked"}`;
}

function collectArches(value: string, previous: unknown): string[] {
  return parseList(value, Array.isArray(previous) ? (previous as string[]) : undefined);
}

// ---------------------------------------------------------------------------------------------

export function registerTagCommand(program: Command): void {
  const tag = program.command("tag").description("Manage tags: inheritance, build config, what is tagged");

  tag
    .command("create")
    .description("Create a tag (admin)")
    .argument("<name>", "the tag's name")
    .option(
      "--arches <arches>",
      "architectures builds in it are made for, comma-separated (default: inherited)",
      parseList,
    )
    .option("--perm <perm>", "the permission needed to tag builds into it")
    .option("--locked", "create it locked (no changes until unlocked)")
    .option("--json", "print the tag as JSON")
    .action(
      async (
        name: string,
        opts: JsonFlag & { arches?: string[]; perm?: string; locked?: boolean },
        cmd: Command,
      ) => {
        const created = await clientFor(cmd).createTag({
          name,
          ...(opts.arches ? { arches: opts.arches } : {}),
          ...(opts.perm !== undefined ? { perm: opts.perm } : {}),
          ...(opts.locked ? { locked: true } : {}),
        });
        if (opts.json) return printJson(created);
        process.stdout.write(`Created tag ${formatTagLine(created)}.\n`);
      },
    );

  tag
    .command("edit")
    .description("Change a tag (admin); a locked tag takes only --unlock")
    .argument("<name>", "the tag's name")
    .option("--rename <new>", "give it a new name")
    .option("--arches <arches>", "its own architectures, comma-separated", collectArches)
    .option("--no-arches", "drop its own architectures (inherit them)")
    .option("--perm <perm>", "the permission needed to tag builds into it")
    .option("--no-perm", "need no permission")
    .addOption(new Option("--lock", "lock it").conflicts("unlock"))
    .addOption(new Option("--unlock", "unlock it"))
    .option(
      "--extra <key=value>",
      'set an extra build setting; the value is JSON if it parses (3, true, "text"), else text (repeatable)',
      collectExtra,
    )
    .option("--remove-extra <key>", "remove an extra setting (repeatable)", collectKeys)
    .option("--buildroot <name>", "build in this buildroot base (see `kiln buildroot list`); inherited")
    .option("--no-buildroot", "drop its own buildroot setting (inherit one, or build on the host)")
    .option("--json", "print the tag as JSON")
    .action(async (name: string, opts: JsonFlag & TagEditFlags, cmd: Command) => {
      const edited = await clientFor(cmd).editTag(name, buildTagPatch(opts));
      if (opts.json) return printJson(edited);
      process.stdout.write(`Changed tag ${formatTagLine(edited)}.\n`);
    });

  tag
    .command("delete")
    .description("Delete a tag no target uses and no tag inherits from (admin)")
    .argument("<name>", "the tag's name")
    .action(async (name: string, _opts: unknown, cmd: Command) => {
      await clientFor(cmd).deleteTag(name);
      process.stdout.write(`Deleted tag ${name}.\n`);
    });

  tag
    .command("list")
    .description("List tags")
    .option("--json", "print as JSON")
    .action(async (opts: JsonFlag, cmd: Command) => {
      const tags = await clientFor(cmd).listTags();
      if (opts.json) return printJson(tags);
      printTable<TagJson>(tags, [
        { header: "name", value: (t) => t.name },
        { header: "arches", value: (t) => (t.arches ? t.arches.join(",") : "(inherited)") },
        { header: "perm", value: (t) => t.perm },
        { header: "locked", value: (t) => (t.locked ? "locked" : null) },
        { header: "extra", value: (t) => Object.keys(t.extra).length || null, align: "right" },
      ]);
    });

  tag
    .command("show")
    .description("Show a tag: its fields, parents, full inheritance and effective build config")
    .argument("<name>", "the tag's name")
    .option("--event <n>", "as it was at this event", parseId)
    .option("--json", "print as JSON")
    .action(async (name: string, opts: JsonFlag & { event?: number }, cmd: Command) => {
      const detail = await clientFor(cmd).getTag(name, opts.event);
      if (opts.json) return printJson(detail);
      process.stdout.write(formatTagDetail(detail));
    });

  tag
    .command("add-parent")
    .description("Make a tag inherit from another (admin)")
    .argument("<tag>", "the child tag")
    .argument("<parent>", "the tag to inherit from")
    .requiredOption(
      "--priority <n>",
      "order among the tag's parents, lowest first; unique per tag",
      parseInteger(0),
    )
    .option(
      "--maxdepth <n>",
      "levels to follow above the parent (0: the parent alone; default unlimited)",
      parseInteger(0),
    )
    .option("--intransitive", "followed only from this tag, not when it is reached as someone's ancestor")
    .option("--noconfig", "inherit no arches or extra through this link")
    .option("--pkg-filter <regex>", "inherit only packages whose names match (at their start)")
    .option("--json", "print the tag as JSON")
    .action(
      async (
        child: string,
        parent: string,
        opts: JsonFlag & {
          priority: number;
          maxdepth?: number;
          intransitive?: boolean;
          noconfig?: boolean;
          pkgFilter?: string;
        },
        cmd: Command,
      ) => {
        const detail = await clientFor(cmd).addTagParent(child, {
          parent,
          priority: opts.priority,
          ...(opts.maxdepth !== undefined ? { maxdepth: opts.maxdepth } : {}),
          ...(opts.intransitive ? { intransitive: true } : {}),
          ...(opts.noconfig ? { noconfig: true } : {}),
          ...(opts.pkgFilter !== undefined ? { pkgFilter: opts.pkgFilter } : {}),
        });
        if (opts.json) return printJson(detail);
        process.stdout.write(
          `${child} now inherits from ${parent}:\n${formatInheritanceTree(detail.name, detail.walk)}`,
        );
      },
    );

  tag
    .command("remove-parent")
    .description("Stop a tag inheriting from another (admin)")
    .argument("<tag>", "the child tag")
    .argument("<parent>", "the parent tag")
    .option("--json", "print the tag as JSON")
    .action(async (child: string, parent: string, opts: JsonFlag, cmd: Command) => {
      const detail = await clientFor(cmd).removeTagParent(child, parent);
      if (opts.json) return printJson(detail);
      process.stdout.write(
        `${child} no longer inherits from ${parent}:\n${formatInheritanceTree(detail.name, detail.walk)}`,
      );
    });

  tag
    .command("latest")
    .description("The latest build of each package the tag sees, and the tag it comes from")
    .argument("<tag>", "the tag")
    .option("--event <n>", "as it was at this event", parseId)
    .option("--json", "print as JSON")
    .action(async (name: string, opts: JsonFlag & { event?: number }, cmd: Command) => {
      const builds = await clientFor(cmd).latestBuilds(name, opts.event);
      if (opts.json) return printJson(builds);
      printTable<TaggedBuildJson>(builds, [
        { header: "package", value: (b) => b.source },
        { header: "version", value: (b) => b.version },
        { header: "tag", value: (b) => (b.inherited ? `${b.tag} (inherited)` : b.tag) },
      ]);
    });

  registerTagRepoCommands(tag);
}

/** `kiln tag-build` and `kiln untag-build`: top-level, as in Koji. */
export function registerTaggingCommands(program: Command): void {
  program
    .command("tag-build")
    .description("Tag a complete build into a tag (the tag policy decides who may)")
    .argument("<tag>", "the tag")
    .argument("<build>", "the build, as SOURCE/VERSION", parseNvr)
    .option("--force", "override the policy or a lock (admin; the hub records it)")
    .option("--json", "print the tagging as JSON")
    .action(async (tagName: string, nvr: string, opts: JsonFlag & { force?: boolean }, cmd: Command) => {
      const tagged = await clientFor(cmd).tagBuild(tagName, nvr, opts.force ? { force: true } : {});
      if (opts.json) return printJson(tagged);
      process.stdout.write(`Tagged ${tagged.nvr} into ${tagged.tag}.\n`);
    });

  program
    .command("untag-build")
    .description("Remove a build from a tag")
    .argument("<tag>", "the tag")
    .argument("<build>", "the build, as SOURCE/VERSION", parseNvr)
    .option("--force", "override the policy or a lock (admin; the hub records it)")
    .action(async (tagName: string, nvr: string, opts: { force?: boolean }, cmd: Command) => {
      await clientFor(cmd).untagBuild(tagName, nvr, opts.force ? { force: true } : {});
      process.stdout.write(`Removed ${nvr} from ${tagName}.\n`);
    });
}
