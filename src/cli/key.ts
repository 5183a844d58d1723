/** `kiln key …`: the OpenPGP key that signs published repositories. */
import { readFileSync, writeFileSync } from "node:fs";
import type { Command } from "commander";
import { KilnError } from "../errors/catalogue.js";
import { clientFor } from "./context.js";
import { formatFields, formatTime, printJson } from "./output.js";

/** Where apt fetches the public key from this hub. */
function keyringUrl(hub: string): string {
  return `${hub}/apt/kiln-archive-keyring.asc`;
}

function readInput(file: string): string {
  try {
    return readFileSync(file === "-" ? 0 : file, "utf8");
  } catch (err) {
    throw new KilnError("BAD_REQUEST", `cannot read ${file}: ${(err as Error).message}`);
  }
}

export function registerKeyCommand(program: Command): void {
  const key = program.command("key").description("The archive signing key of published repositories");

  key
    .command("show")
    .description("Show the archive key's fingerprint, user ID, algorithm and age")
    .option("--json", "print as JSON (the armored public key included)")
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      const client = clientFor(cmd);
      const info = await client.getArchiveKey();
      if (opts.json) return printJson(info);
      process.stdout.write(
        formatFields([
          ["fingerprint", info.fingerprint],
          ["uid", info.uid],
          ["algorithm", info.algorithm],
          ["created", formatTime(info.created)],
          ["keyring", keyringUrl(client.hub)],
        ]),
      );
    });

  key
    .command("export")
    .description("Print the armored public key (what apt's signed-by keyring needs)")
    .option("-o, --output <file>", "write it to this file instead of stdout")
    .action(async (opts: { output?: string }, cmd: Command) => {
      const info = await clientFor(cmd).getArchiveKey();
      if (!opts.output) {
        process.stdout.write(info.publicKey);
        return;
      }
      try {
        writeFileSync(opts.output, info.publicKey, { mode: 0o644 });
      } catch (err) {
        throw new KilnError("BAD_REQUEST", `cannot write ${opts.output}: ${(err as Error).message}`);
      }
      process.stderr.write(`Wrote the public key ${info.fingerprint} to ${opts.output}.\n`);
    });

  key
    .command("import")
    .description("Replace the archive key by a secret key (admin); the old one is kept but signs no more")
    .argument("<file>", "one armored OpenPGP secret key without a passphrase (`-` for stdin)")
    .option("--json", "print the new key as JSON")
    .action(async (file: string, opts: { json?: boolean }, cmd: Command) => {
      const info = await clientFor(cmd).importArchiveKey(readInput(file));
      if (opts.json) return printJson(info);
      process.stdout.write(
        `Imported key ${info.fingerprint} (${info.uid}); publications are signed with it from now on.\n`,
      );
    });
}
