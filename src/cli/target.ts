/** `kiln target …`: build targets — the tag a build's environment comes from and the tag it lands in. */
import type { Command } from "commander";
import type { TargetJson } from "../client/types.js";
import { clientFor } from "./context.js";
import { printJson, printTable } from "./output.js";

export function registerTargetCommand(program: Command): void {
  const target = program.command("target").description("Manage build targets");

  target
    .command("create")
    .description("Create a build target (admin)")
    .argument("<name>", "the target's name, as `kiln build` takes it")
    .requiredOption("--build-tag <tag>", "the tag that gives builds their arches and settings")
    .requiredOption("--dest-tag <tag>", "the tag finished builds are tagged into")
    .option("--json", "print the target as JSON")
    .action(
      async (name: string, opts: { buildTag: string; destTag: string; json?: boolean }, cmd: Command) => {
        const created = await clientFor(cmd).createTarget({
          name,
          buildTag: opts.buildTag,
          destTag: opts.destTag,
        });
        if (opts.json) return printJson(created);
        process.stdout.write(
          `Created target ${created.name}: builds in ${created.buildTag}, lands in ${created.destTag}.\n`,
        );
      },
    );

  target
    .command("list")
    .description("List build targets")
    .option("--json", "print as JSON")
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      const targets = await clientFor(cmd).listTargets();
      if (opts.json) return printJson(targets);
      printTable<TargetJson>(targets, [
        { header: "name", value: (t) => t.name },
        { header: "build tag", value: (t) => t.buildTag },
        { header: "dest tag", value: (t) => t.destTag },
      ]);
    });

  target
    .command("delete")
    .description("Delete a build target (admin)")
    .argument("<name>", "the target's name")
    .action(async (name: string, _opts: unknown, cmd: Command) => {
      await clientFor(cmd).deleteTarget(name);
      process.stdout.write(`Deleted target ${name}.\n`);
    });
}
