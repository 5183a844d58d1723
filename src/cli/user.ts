/** `kiln user …`: users and their permissions (admin only), as Koji's grant-permission. */
import type { Command } from "commander";
import { clientFor } from "./context.js";
import { printJson, printTable } from "./output.js";

interface UserJson {
  id: number;
  name: string;
  role: string;
  perms: string[];
}

export function registerUserCommand(program: Command): void {
  const user = program.command("user").description("Users and their permissions (admin)");

  user
    .command("list")
    .description("List users with their roles and permissions")
    .option("--json", "print as JSON")
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      const users = await clientFor(cmd).request<UserJson[]>("GET", "/api/v1/users");
      if (opts.json) return printJson(users);
      printTable<UserJson>(users, [
        { header: "user", value: (u) => u.name },
        { header: "role", value: (u) => u.role },
        { header: "permissions", value: (u) => u.perms.join(", ") },
      ]);
    });

  user
    .command("grant")
    .description("Grant a permission (a tag's --perm names one)")
    .argument("<user>", "the user")
    .argument("<perm>", "the permission")
    .option("--json", "print the user as JSON")
    .action(async (name: string, perm: string, opts: { json?: boolean }, cmd: Command) => {
      const out = await clientFor(cmd).request<UserJson>(
        "POST",
        `/api/v1/users/${encodeURIComponent(name)}/perms`,
        { perm },
      );
      if (opts.json) return printJson(out);
      process.stdout.write(`${name}: ${out.perms.join(", ")}\n`);
    });

  user
    .command("revoke")
    .description("Revoke a permission")
    .argument("<user>", "the user")
    .argument("<perm>", "the permission")
    .option("--json", "print the user as JSON")
    .action(async (name: string, perm: string, opts: { json?: boolean }, cmd: Command) => {
      const out = await clientFor(cmd).request<UserJson>(
        "DELETE",
        `/api/v1/users/${encodeURIComponent(name)}/perms/${encodeURIComponent(perm)}`,
      );
      if (opts.json) return printJson(out);
      process.stdout.write(`${name}: ${out.perms.join(", ") || "(no permissions)"}\n`);
    });
}
