/** `kiln version`: this program's version and, when it answers, the hub's. */
import type { Command } from "commander";
import { KilnError } from "../errors/catalogue.js";
import { VERSION } from "../version.js";
import { KilnClient } from "../client/client.js";
import { resolveHub } from "./context.js";
import { printJson } from "./output.js";

export function registerVersionCommand(program: Command): void {
  program
    .command("version")
    .description("Print the version of kiln and of the hub")
    .option("--json", "print as JSON")
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      // The version needs no token, and a wrong one must not hide the hub's answer.
      const client = new KilnClient({ hub: resolveHub(cmd.optsWithGlobals()), timeoutMs: 5000 });
      let hub: { url: string; version: string | null; error?: { code: string; message: string } };
      try {
        hub = { url: client.hub, version: (await client.version()).version };
      } catch (err) {
        if (!(err instanceof KilnError)) throw err;
        hub = { url: client.hub, version: null, error: { code: err.code, message: err.message } };
      }
      if (opts.json) return printJson({ version: VERSION, hub });
      process.stdout.write(`kiln ${VERSION}\n`);
      process.stdout.write(
        hub.version !== null
          ? `hub  ${hub.version} at ${hub.url}\n`
          : `hub  not reachable at ${hub.url} (${hub.error?.message})\n`,
      );
    });
}
