import type { Command } from "commander";
import { loadHubConfig } from "../config/config.js";
import { startHub } from "../hub/server.js";

interface ServeOptions {
  data?: string;
  listen?: string;
  db?: string;
  worker: boolean;
  aptlyAnonymous?: boolean;
}

export function registerServeCommand(program: Command): void {
  program
    .command("serve")
    .description("Run the hub (API, web UI, scheduler) with an embedded worker")
    .option("--data <dir>", "data directory (env KILN_DATA, default ./kiln-data)")
    .option("--listen <host:port>", "address to listen on (env KILN_LISTEN, default 127.0.0.1:8471)")
    .option("--db <url>", "database: a SQLite file (default <data>/kiln.db) or postgres://… (env KILN_DB)")
    .option("--no-worker", "do not run the embedded build worker")
    .option("--aptly-anonymous", "serve the Aptly API (/api) without a token (env KILN_APTLY_ANONYMOUS)")
    .action(async (opts: ServeOptions) => {
      const config = loadHubConfig({
        data: opts.data,
        listen: opts.listen,
        db: opts.db,
        // commander sets worker=true unless --no-worker; only the flag's presence may override env/file.
        worker: process.argv.includes("--no-worker") ? false : undefined,
        aptlyAnonymous: opts.aptlyAnonymous === true ? true : undefined,
      });
      const hub = await startHub(config, { announce: (line) => console.log(line) });
      let stopping = false;
      const stop = (signal: string) => {
        if (stopping) return;
        stopping = true;
        hub.deps.log.info({ signal }, "shutting down");
        hub
          .close()
          .then(() => process.exit(0))
          .catch((err: unknown) => {
            hub.deps.log.error({ err }, "shutdown failed");
            process.exit(1);
          });
      };
      process.on("SIGTERM", () => stop("SIGTERM"));
      process.on("SIGINT", () => stop("SIGINT"));
    });
}
