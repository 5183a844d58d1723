/** `kiln token …`: API tokens of users (admin only). */
import { Option, type Command } from "commander";
import type { TokenJson } from "../client/types.js";
import { clientFor, parseId } from "./context.js";
import { formatRelative, printJson, printTable } from "./output.js";

interface JsonFlag {
  json?: boolean;
}

export function registerTokenCommand(program: Command): void {
  const token = program.command("token").description("Manage API tokens (admin)");

  token
    .command("create")
    .description("Create a token for a user; prints it once, alone on stdout")
    .requiredOption("--user <name>", "the user the token acts as")
    .addOption(new Option("--role <role>", "the token's role").choices(["admin", "user"]).default("user"))
    .option("--description <text>", "what the token is for")
    .option("--json", "print {token, info} as JSON")
    .action(
      async (
        opts: JsonFlag & { user: string; role: "admin" | "user"; description?: string },
        cmd: Command,
      ) => {
        const created = await clientFor(cmd).createToken({
          user: opts.user,
          role: opts.role,
          ...(opts.description !== undefined ? { description: opts.description } : {}),
        });
        if (opts.json) return printJson(created);
        process.stdout.write(`${created.token}\n`);
        process.stderr.write(
          `Token ${created.info.id} for ${opts.user} (${created.info.role}). It is shown only this once: store it now.\n`,
        );
      },
    );

  token
    .command("list")
    .description("List tokens")
    .option("--json", "print as JSON")
    .action(async (opts: JsonFlag, cmd: Command) => {
      const tokens = await clientFor(cmd).listTokens();
      if (opts.json) return printJson(tokens);
      printTable<TokenJson>(tokens, [
        { header: "id", value: (t) => t.id, align: "right" },
        { header: "role", value: (t) => t.role },
        { header: "user/host", value: (t) => t.user ?? t.host },
        { header: "description", value: (t) => t.description },
        { header: "created", value: (t) => formatRelative(t.createdAt) },
        { header: "last used", value: (t) => formatRelative(t.lastUsedAt) },
        { header: "revoked", value: (t) => (t.revokedAt ? formatRelative(t.revokedAt) : null) },
      ]);
    });

  token
    .command("revoke")
    .description("Revoke a token; calls made with it are refused from now on")
    .argument("<id>", "the token's id (see `kiln token list`)", parseId)
    .option("--json", "print the revoked token as JSON")
    .action(async (id: number, opts: JsonFlag, cmd: Command) => {
      const revoked = await clientFor(cmd).revokeToken(id);
      if (opts.json) return printJson(revoked);
      process.stdout.write(
        `Revoked token ${revoked.id} (${revoked.role} ${revoked.user ?? revoked.host ?? ""}).\n`,
      );
    });
}
