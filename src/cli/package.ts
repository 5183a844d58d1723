/** `kiln package …`: a tag's package list — which packages may be built and tagged into it, and who owns them. */
import type { Command } from "commander";
import type { PackageEntryJson } from "../client/types.js";
import { clientFor, parseId } from "./context.js";
import { printJson, printTable } from "./output.js";

type Action = "add" | "block" | "unblock" | "remove";

interface ChangeFlags {
  owner?: string;
  force?: boolean;
  json?: boolean;
}

/** `Added hello, world to dist (owner alice).` */
export function describeChange(
  action: Action,
  tag: string,
  packages: readonly string[],
  owner?: string,
): string {
  const names = packages.join(", ");
  switch (action) {
    case "add":
      return `Added ${names} to ${tag}${owner ? ` (owner ${owner})` : ""}.`;
    case "block":
      return `Blocked ${names} in ${tag}.`;
    case "unblock":
      return `Unblocked ${names} in ${tag}.`;
    case "remove":
      return `Removed ${names} from ${tag}'s own list.`;
  }
}

/** Where an entry of the effective list comes from: the tag itself, or an ancestor. */
export function entrySource(entry: PackageEntryJson): string {
  return entry.inherited ? `${entry.tag} (inherited)` : entry.tag;
}

export function registerPackageCommand(program: Command): void {
  const pkg = program.command("package").description("Manage the packages a tag allows");

  const changing: { action: Action; description: string }[] = [
    { action: "add", description: "Add packages to a tag's list, owned by a user" },
    { action: "block", description: "Block packages in a tag (and so in the tags that inherit it)" },
    { action: "unblock", description: "Lift a block this tag set" },
    {
      action: "remove",
      description: "Remove packages from the tag's own list (inherited entries then show again)",
    },
  ];
  for (const { action, description } of changing) {
    const cmd = pkg
      .command(action)
      .description(description)
      .argument("<tag>", "the tag")
      .argument("<packages...>", "source package names");
    if (action === "add") cmd.requiredOption("--owner <user>", "the user who owns them in this tag");
    cmd
      .option("--force", "override the package_list policy or a lock (admin; the hub records it)")
      .option("--json", "print the tag's effective package list as JSON")
      .action(async (tag: string, packages: string[], opts: ChangeFlags, self: Command) => {
        const list = await clientFor(self).changePackages(tag, {
          action,
          packages,
          ...(opts.owner !== undefined ? { owner: opts.owner } : {}),
          ...(opts.force ? { force: true } : {}),
        });
        if (opts.json) return printJson(list);
        process.stdout.write(`${describeChange(action, tag, packages, opts.owner)}\n`);
      });
  }

  pkg
    .command("list")
    .description("A tag's effective package list: its own entries and those it inherits")
    .argument("<tag>", "the tag")
    .option("--event <n>", "as it was at this event", parseId)
    .option("--json", "print as JSON")
    .action(async (tag: string, opts: { event?: number; json?: boolean }, cmd: Command) => {
      const list = await clientFor(cmd).listPackages(tag, opts.event);
      if (opts.json) return printJson(list);
      printTable<PackageEntryJson>(list, [
        { header: "package", value: (e) => e.package },
        { header: "owner", value: (e) => e.owner },
        { header: "blocked", value: (e) => (e.blocked ? "blocked" : null) },
        { header: "from", value: entrySource },
      ]);
    });
}
