/** The `kiln` program: global options, the commands, and how errors end the process. */
import { realpathSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { Command, CommanderError } from "commander";
import { ERRORS, KilnError, type ErrorCode } from "../errors/catalogue.js";
import { VERSION } from "../version.js";
import { registerBuildCommands } from "./build.js";
import { registerBuildrootCommand } from "./buildroot.js";
import { registerChainBuildCommands } from "./chain-build.js";
import { CliExit, DEFAULT_HUB, describeTokenSource, type GlobalOptions } from "./context.js";
import { registerGcCommand } from "./gc.js";
import { registerEventsCommand } from "./events.js";
import { registerHostCommand } from "./host.js";
import { registerKeyCommand } from "./key.js";
import { printJson, type TextSink } from "./output.js";
import { registerPackageCommand } from "./package.js";
import { registerPublishCommand } from "./publish.js";
import { registerRepoCommand } from "./repo.js";
import { registerServeCommand } from "./serve.js";
import { registerSnapshotCommand } from "./snapshot.js";
import { registerStatsCommand } from "./stats.js";
import { registerTagCommand, registerTaggingCommands } from "./tag.js";
import { registerTargetCommand } from "./target.js";
import { registerTaskCommand } from "./task.js";
import { registerTokenCommand } from "./token.js";
import { registerUserCommand } from "./user.js";
import { registerVersionCommand } from "./version.js";
import { registerWaitRepoCommand } from "./wait-repo.js";
import { registerWebhookCommand } from "./webhook.js";
import { registerWorkerCommand } from "./worker.js";

const GLOBALS = ["hub", "token"] as const satisfies readonly (keyof GlobalOptions)[];

/**
 * The program parses --hub and --token wherever they appear, so a command that declares its own
 * (`kiln worker --hub …`) would never see them: hand it what was given on the command line.
 */
function forwardGlobals(program: Command, action: Command): void {
  if (action === program) return;
  for (const name of GLOBALS) {
    const declared = action.options.some((o) => o.attributeName() === name);
    if (!declared || action.getOptionValue(name) !== undefined) continue;
    if (program.getOptionValueSource(name) !== "cli") continue;
    action.setOptionValueWithSource(name, program.getOptionValue(name), "cli");
  }
}

export function buildProgram(): Command {
  const program = new Command("kiln")
    .description("Kiln: a Debian package build farm and APT repository manager")
    .version(VERSION, "-V, --version", "print kiln's version")
    .option("--hub <url>", `the hub's URL (env KILN_HUB, default ${DEFAULT_HUB})`)
    .option("--token <token>", "API token (env KILN_TOKEN, else <KILN_DATA or ./kiln-data>/admin-token)")
    .showHelpAfterError("(add --help for usage)")
    // Set before the commands are added, so that they inherit it: run() decides the exit code.
    .exitOverride();
  program.hook("preAction", (_self, action) => forwardGlobals(program, action));

  registerServeCommand(program);
  registerWorkerCommand(program);
  registerTaskCommand(program);
  registerHostCommand(program);
  registerTokenCommand(program);
  registerUserCommand(program);
  registerTagCommand(program);
  registerPackageCommand(program);
  registerTaggingCommands(program);
  registerWaitRepoCommand(program);
  registerTargetCommand(program);
  registerBuildCommands(program);
  registerBuildrootCommand(program);
  registerChainBuildCommands(program);
  registerStatsCommand(program);
  registerRepoCommand(program);
  registerSnapshotCommand(program);
  registerPublishCommand(program);
  registerKeyCommand(program);
  registerEventsCommand(program);
  registerWebhookCommand(program);
  registerGcCommand(program);
  registerVersionCommand(program);
  return program;
}

/** What to tell the user to do about an error, when the message alone does not say it. */
const HINTS: Partial<Record<ErrorCode, string>> = {
  HUB_UNREACHABLE: "start the hub with `kiln serve`, or point --hub or KILN_HUB at a running one",
  AUTH_REQUIRED:
    "pass --token or set KILN_TOKEN; on the hub's machine an admin token is in <KILN_DATA>/admin-token, " +
    "and an admin makes more with `kiln token create`",
  TOKEN_INVALID: "pass a valid one with --token or KILN_TOKEN; an admin makes one with `kiln token create`",
  ADMIN_REQUIRED: "this needs an admin token: pass --token or set KILN_TOKEN",
  TASK_NOT_FOUND: "`kiln task list` shows the tasks there are",
  HOST_NOT_FOUND: "`kiln host list` shows the hosts there are",
  TOKEN_NOT_FOUND: "`kiln token list` shows the tokens there are",
  KEY_INVALID:
    "give one secret key without a passphrase: `gpg --armor --export-secret-keys FINGERPRINT` " +
    "(remove a passphrase first with `gpg --passwd`)",
  REPO_NOT_FOUND: "`kiln repo list` shows the local repos there are",
  SNAPSHOT_NOT_FOUND: "`kiln snapshot list` shows the snapshots there are",
  PUBLICATION_NOT_FOUND:
    "`kiln publish list` shows what is published (the prefix comes after the distribution)",
  QUERY_INVALID: "queries are Aptly's: `name`, `name (>= 1.0)`, `Field (% glob*)`, joined with `,` `|` `!`",
  PUBLISH_NOT_SERVED:
    "the new generation is live on the hub's disk; a cache or proxy in front of /apt/ may serve an old copy",
  WEBHOOK_NOT_FOUND: "`kiln webhook list` shows the webhooks there are",
  SHUTTING_DOWN: "try again once the hub is back",
  INTERNAL: "the hub's log says more",
};

export function hintFor(err: KilnError): string | undefined {
  if (err.code === "TOKEN_INVALID") {
    const from = describeTokenSource();
    if (from) return `the token came from ${from}; ${HINTS.TOKEN_INVALID}`;
  }
  const hint = HINTS[err.code];
  // The hub's message often names the command already (`see \`kiln host list\``): say it once.
  const command = hint && /`[^`]+`/.exec(hint)?.[0];
  return command && err.message.includes(command) ? undefined : hint;
}

/** Prints an error the way the CLI reports errors and returns the exit code it maps to. */
export function reportError(
  err: unknown,
  json: boolean,
  io: { stdout: TextSink; stderr: TextSink } = { stdout: process.stdout, stderr: process.stderr },
): number {
  if (err instanceof CliExit) return err.code;
  // Commander has already printed its message; usage errors are exit code 2.
  if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
  if (err instanceof KilnError) {
    if (json) {
      printJson({ error: { code: err.code, message: err.message, details: err.details ?? {} } }, io.stdout);
    } else {
      io.stderr.write(`kiln: ${err.message} [${err.code}]\n`);
      const hint = hintFor(err);
      if (hint) io.stderr.write(`hint: ${hint}\n`);
    }
    return ERRORS[err.code].exit;
  }
  const message = err instanceof Error ? err.message : String(err);
  if (json) printJson({ error: { code: "INTERNAL", message, details: {} } }, io.stdout);
  else io.stderr.write(`kiln: ${message}\n`);
  if (process.env.KILN_DEBUG && err instanceof Error && err.stack) io.stderr.write(`${err.stack}\n`);
  return 1;
}

/** Runs `kiln` with these arguments (without node and the script) and returns the exit code. */
export async function run(argv: readonly string[]): Promise<number> {
  const end = argv.indexOf("--");
  const json = (end === -1 ? argv : argv.slice(0, end)).includes("--json");
  try {
    await buildProgram().parseAsync([...argv], { from: "user" });
    return 0;
  } catch (err) {
    return reportError(err, json);
  }
}

/** bin/kiln.js imports this module; so may `node dist/cli/main.js`. Tests import it and call run(). */
function isEntry(): boolean {
  const script = process.argv[1];
  if (!script) return false;
  try {
    const real = realpathSync(script);
    if (real === realpathSync(fileURLToPath(import.meta.url))) return true;
    return real === realpathSync(fileURLToPath(new URL("../../bin/kiln.js", import.meta.url)));
  } catch {
    return false;
  }
}

if (isEntry()) {
  // `kiln task logs 1 | head`: a closed pipe ends the output, not with a stack trace.
  process.stdout.on("error", (err: NodeJS.ErrnoException) => {
    if (err.code === "EPIPE") process.exit(0);
    throw err;
  });
  run(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(`kiln: ${String(err)}\n`);
      process.exitCode = 1;
    },
  );
}
