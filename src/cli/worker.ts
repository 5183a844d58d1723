import { InvalidArgumentError, type Command } from "commander";
import pino from "pino";
import { KilnClient } from "../client/client.js";
import { KilnError } from "../errors/catalogue.js";
import { VERSION } from "../version.js";
import { Worker } from "../worker/daemon.js";
import { defaultWorkerHandlers } from "../worker/handlers/index.js";
import { reachableWorkDir } from "../worker/work-dir.js";
import { detectArches } from "../debian/native-arch.js";
import { detectCapabilities } from "../worker/host-facts.js";
import { DEFAULT_HUB } from "./context.js";

interface WorkerFlags {
  hub?: string;
  token?: string;
  workDir?: string;
  killGrace: number;
  shutdownGrace: number;
}

function seconds(value: string): number {
  const n = Number(value);
  if (value.trim() === "" || !Number.isFinite(n) || n < 0) {
    throw new InvalidArgumentError("expected a number of seconds, 0 or more");
  }
  return n;
}

export function registerWorkerCommand(program: Command): void {
  program
    .command("worker")
    .description("Run a build worker: claim tasks from the hub and run them")
    .option("--hub <url>", `hub URL (env KILN_HUB, default ${DEFAULT_HUB})`)
    .option("--token <token>", "this host's token (env KILN_TOKEN)")
    .option("--work-dir <dir>", "directory for task workspaces (env KILN_WORK_DIR, default ./kiln-work)")
    .option("--kill-grace <s>", "seconds between SIGTERM and SIGKILL when a job is stopped", seconds, 10)
    .option("--shutdown-grace <s>", "seconds to let running tasks finish on shutdown", seconds, 10)
    .action(async (flags: WorkerFlags) => {
      const token = flags.token ?? process.env.KILN_TOKEN;
      if (!token) {
        throw new KilnError(
          "AUTH_REQUIRED",
          "kiln worker needs its host's token: pass --token or set KILN_TOKEN. " +
            "An admin gets one from `kiln host add NAME --arch …`, which prints it.",
        );
      }
      const log = pino({ level: process.env.KILN_LOG_LEVEL ?? "info" }, pino.destination(2));
      const { capabilities, warnings } = detectCapabilities();
      for (const warning of warnings) {
        process.stderr.write(`\nkiln worker: WARNING: ${warning}\n\n`);
        log.warn(warning);
      }
      const worker = new Worker({
        client: new KilnClient({ hub: flags.hub ?? process.env.KILN_HUB ?? DEFAULT_HUB, token }),
        handlers: defaultWorkerHandlers(),
        workDir: reachableWorkDir(flags.workDir ?? process.env.KILN_WORK_DIR ?? "./kiln-work").dir,
        log,
        capabilities,
        arches: detectArches(),
        version: VERSION,
        killGrace: flags.killGrace,
        shutdownGrace: flags.shutdownGrace,
      });

      let signals = 0;
      const onSignal = (signal: NodeJS.Signals) => {
        signals++;
        if (signals > 1) {
          // A second Ctrl-C: do not wait for running tasks; they are killed and handed back.
          log.warn({ signal }, "stopping now");
          void worker.stop({ now: true }).catch(() => undefined);
          return;
        }
        log.info({ signal }, "stopping: running tasks get the shutdown grace to finish");
        worker
          .stop()
          .then(() => process.exit(0))
          .catch((err: unknown) => {
            log.error({ err }, "shutdown failed");
            process.exit(1);
          });
      };
      process.on("SIGTERM", onSignal);
      process.on("SIGINT", onSignal);

      await worker.start();
      await worker.wait();
    });
}
