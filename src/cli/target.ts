/** `kiln target …`: build targets — the tag a build's environment comes from and the tag it lands in. */
import type { Command } from "commander";
import type { TargetJson } from "../client/types.js";
import { parseRetryCount, parseRetryOn } from "../builds/retry-policy.js";
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
        { header: "retry", value: (t) => t.retry ?? "default" },
      ]);
    });

  target
    .command("edit")
    .description("Edit a build target's retry policy (admin)")
    .argument("<name>", "the target's name")
    .option("--retry <n>", "how many times a failed build step runs again")
    .option("--retry-on <list>", "which failures are transient: exit:75,exit:80-82,signal:KILL,infra")
    .option("--retry-default", "forget the target's policy: kiln.toml's [retry] default applies")
    .option("--json", "print the target as JSON")
    .action(
      async (
        name: string,
        opts: { retry?: string; retryOn?: string; retryDefault?: boolean; json?: boolean },
        cmd: Command,
      ) => {
        const req: { retry?: number; retryOn?: string; retryPolicy?: string | null } = {};
        // Checked here too, so a typo fails before any call with the same stable code.
        if (opts.retry !== undefined) req.retry = parseRetryCount(opts.retry);
        if (opts.retryOn !== undefined) req.retryOn = formatOn(opts.retryOn);
        if (opts.retryDefault) req.retryPolicy = null;
        const edited = await clientFor(cmd).editTarget(name, req);
        if (opts.json) return printJson(edited);
        process.stdout.write(
          `Target ${edited.name}: retry ${edited.retry ?? "as kiln.toml's default says"}.\n`,
        );
      },
    );

  target
    .command("delete")
    .description("Delete a build target (admin)")
    .argument("<name>", "the target's name")
    .action(async (name: string, _opts: unknown, cmd: Command) => {
      await clientFor(cmd).deleteTarget(name);
      process.stdout.write(`Deleted target ${name}.\n`);
    });
}

/** Validates a --retry-on list locally; the hub parses it again. */
function formatOn(list: string): string {
  parseRetryOn(list);
  return list;
}
