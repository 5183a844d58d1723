/** `kiln repo …`: local repositories, and getting .deb/.udeb/.dsc files into them. */
import { createReadStream } from "node:fs";
import { readdir, readFile, stat } from "node:fs/promises";
import path from "node:path";
import { Readable } from "node:stream";
import type { Command } from "commander";
import type { KilnClient } from "../client/client.js";
import type {
  FileReport,
  PackageJson,
  RepoAddResultJson,
  RepoDetailJson,
  RepoJson,
  RepoTaskAnswer,
  TaskJson,
} from "../client/types.js";
import { parseDsc } from "../debian/dsc-file.js";
import { ERRORS, isErrorCode, KilnError } from "../errors/catalogue.js";
import { ByteProgress, formatBytes } from "./byte-progress.js";
import { CliExit, clientFor, parseInteger } from "./context.js";
import { formatFields, formatTable, formatTime, printJson, Spinner } from "./output.js";

interface JsonFlag {
  json?: boolean;
}

const PACKAGE_EXTENSIONS = [".deb", ".udeb", ".dsc"];

export function isPackageFile(name: string): boolean {
  return PACKAGE_EXTENSIONS.some((ext) => name.endsWith(ext));
}

// ---------------------------------------------------------------------------------------------
// Finding the files to upload

export interface LocalFile {
  /** Its name in the upload area. */
  name: string;
  path: string;
  size: number;
  /** A package file (.deb/.udeb/.dsc) rather than a file a .dsc lists. */
  package: boolean;
}

function invalid(message: string, details?: Record<string, unknown>): KilnError {
  return new KilnError("VALIDATION_FAILED", message, details);
}

/** The package files under a directory, sorted; hidden entries (.git, …) are skipped. */
async function walkPackages(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    if (e.name.startsWith(".")) continue;
    const full = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...(await walkPackages(full)));
    else if (e.isFile() && isPackageFile(e.name)) out.push(full);
  }
  return out.sort();
}

/** A .dsc and the files it lists, which must be beside it with the sizes it says. */
async function dscWithFiles(dscPath: string): Promise<{ path: string; size: number }[]> {
  const name = path.basename(dscPath);
  const dsc = parseDsc(await readFile(dscPath, "utf8"), name);
  const out = [{ path: dscPath, size: (await stat(dscPath)).size }];
  for (const f of dsc.files) {
    const p = path.join(path.dirname(dscPath), f.name);
    const st = await stat(p).catch(() => undefined);
    if (!st?.isFile()) {
      throw invalid(
        `${name} lists ${f.name}, but ${p} does not exist; put the files a .dsc lists beside it`,
        {
          path: p,
        },
      );
    }
    if (st.size !== f.size) {
      throw invalid(`${p} is ${st.size} bytes, but ${name} says ${f.size}: is it the right file?`, {
        path: p,
      });
    }
    out.push({ path: p, size: st.size });
  }
  return out;
}

/**
 * Every .deb/.udeb/.dsc named or found (recursively) in the directories named, with the files
 * each .dsc lists. The upload area is flat, so two different files of one name are refused.
 * Everything is checked before anything is sent.
 */
export async function collectPackageFiles(args: readonly string[]): Promise<LocalFile[]> {
  const packages: string[] = [];
  for (const arg of args) {
    const st = await stat(arg).catch(() => undefined);
    if (!st) throw invalid(`${arg} does not exist`, { path: arg });
    if (st.isDirectory()) {
      const found = await walkPackages(arg);
      if (found.length === 0) throw invalid(`${arg} holds no .deb, .udeb or .dsc files`, { path: arg });
      packages.push(...found);
    } else if (isPackageFile(arg)) {
      packages.push(arg);
    } else {
      throw invalid(`${arg} is not a .deb, .udeb or .dsc file, nor a directory of them`, { path: arg });
    }
  }
  const byName = new Map<string, LocalFile>();
  const add = (p: string, size: number, isPackage: boolean) => {
    const name = path.basename(p);
    const there = byName.get(name);
    if (there) {
      if (path.resolve(there.path) === path.resolve(p)) {
        there.package ||= isPackage;
        return;
      }
      throw invalid(`${there.path} and ${p} have the same name: add them one at a time`, { name });
    }
    byName.set(name, { name, path: p, size, package: isPackage });
  };
  for (const p of packages) {
    if (p.endsWith(".dsc")) {
      const [dsc, ...listed] = await dscWithFiles(p);
      if (dsc) add(dsc.path, dsc.size, true);
      for (const f of listed) add(f.path, f.size, false);
    } else {
      add(p, (await stat(p)).size, true);
    }
  }
  return [...byName.values()];
}

/** Streams the files into a fresh upload area, one byte count for them all; returns its id. */
async function uploadFiles(
  client: KilnClient,
  files: readonly LocalFile[],
  spinner: Spinner,
): Promise<string> {
  const { id } = await client.createUpload();
  const total = files.reduce((n, f) => n + f.size, 0);
  const progress = new ByteProgress(
    spinner,
    `uploading ${files.length} file${files.length === 1 ? "" : "s"}`,
    total,
  );
  for (const file of files) {
    const counter = progress.counter();
    const reader = createReadStream(file.path);
    reader.on("error", (err) => counter.destroy(err));
    await client.uploadFile(
      id,
      file.name,
      Readable.toWeb(reader.pipe(counter)) as ReadableStream<Uint8Array>,
    );
  }
  spinner.log(`uploaded ${files.length} file${files.length === 1 ? "" : "s"} (${formatBytes(total)})`);
  return id;
}

// ---------------------------------------------------------------------------------------------
// Output

/** One line per file: `added`, `already there`, `replaced`, `failed`, with what it became. */
export function formatAddReport(result: RepoAddResultJson): string {
  const lines = result.files.map((f: FileReport) => {
    switch (f.outcome) {
      case "added":
        return `added          ${f.file} (${f.key})`;
      case "exists":
        return `already there  ${f.file} (${f.key})`;
      case "replaced":
        return `replaced       ${f.file} (${f.replaced} → ${f.key})`;
      case "failed":
        return `failed         ${f.file}: ${f.error} [${f.code}]`;
    }
  });
  const summary = `${result.repo}: ${result.added} added, ${result.existing} already there, ${result.failed} failed`;
  return [...lines, summary].map((l) => `${l}\n`).join("");
}

/** The exit code of an add: 0, or that of the first failed file's error code. */
export function addExitCode(result: RepoAddResultJson): number {
  const failed = result.files.find((f) => f.outcome === "failed");
  if (!failed || failed.outcome !== "failed") return 0;
  return isErrorCode(failed.code) ? ERRORS[failed.code].exit || 1 : 1;
}

export function formatPackages(packages: readonly PackageJson[]): string {
  if (packages.length === 0) return "no packages\n";
  return formatTable<PackageJson>(packages, [
    { header: "name", value: (p) => p.name },
    { header: "version", value: (p) => p.version },
    { header: "arch", value: (p) => p.architecture },
    { header: "type", value: (p) => p.type },
    { header: "source", value: (p) => p.source },
  ]);
}

export function formatRepo(repo: RepoDetailJson, now: number = Date.now()): string {
  const fields = formatFields([
    ["repo", repo.name],
    ["comment", repo.comment],
    ["distribution", repo.distribution || "(none: give --distribution when publishing)"],
    ["component", repo.component],
    ["packages", repo.packageCount],
    ["created", formatTime(repo.createdAt, now)],
  ]);
  return repo.packages ? `${fields}\n${formatPackages(repo.packages)}` : fields;
}

export function formatRepoList(repos: readonly RepoJson[]): string {
  if (repos.length === 0) return "no local repos; make one with `kiln repo create NAME`\n";
  return formatTable<RepoJson>(repos, [
    { header: "name", value: (r) => r.name },
    { header: "packages", value: (r) => r.packageCount, align: "right" },
    { header: "distribution", value: (r) => r.distribution },
    { header: "component", value: (r) => r.component },
    { header: "comment", value: (r) => r.comment },
  ]);
}

/** `N packages` / `1 package`. */
export function countPackages(n: number): string {
  return `${n} package${n === 1 ? "" : "s"}`;
}

export interface RepoEditFlags {
  comment?: string;
  distribution?: string;
  component?: string;
}

/** The PATCH of `kiln repo edit`; an edit that changes nothing is refused. */
export function buildRepoPatch(flags: RepoEditFlags): RepoEditFlags {
  const patch: RepoEditFlags = {};
  if (flags.comment !== undefined) patch.comment = flags.comment;
  if (flags.distribution !== undefined) patch.distribution = flags.distribution;
  if (flags.component !== undefined) patch.component = flags.component;
  if (Object.keys(patch).length === 0) {
    throw invalid("nothing to change: give --comment, --distribution or --component");
  }
  return patch;
}

/** What `--nowait` prints: the task id on stdout, how to follow it on stderr. */
export function reportQueued(answer: { task: TaskJson }, json: boolean | undefined): void {
  if (json) return printJson(answer);
  process.stdout.write(`task ${answer.task.id}\n`);
  process.stderr.write(`queued; follow it with: kiln task watch ${answer.task.id}\n`);
}

/** The result of a waited-for task (the API always has one then). */
export function resultOf<R>(answer: RepoTaskAnswer<R>): R {
  if (answer.result === undefined) {
    throw new KilnError("INTERNAL", `task ${answer.task.id} ended without a result`);
  }
  return answer.result;
}

// ---------------------------------------------------------------------------------------------

export function registerRepoCommand(program: Command): void {
  const repo = program
    .command("repo")
    .description("Local repositories: package sets to snapshot and publish");

  repo
    .command("create")
    .description("Create an empty local repo")
    .argument("<name>", "letters, digits and . _ + ~ -")
    .option("--distribution <dist>", "the distribution it is published as by default")
    .option("--component <component>", "the component it is published as by default (main)")
    .option("--comment <text>", "what it is for")
    .option("--json", "print it as JSON")
    .action(async (name: string, opts: JsonFlag & RepoEditFlags, cmd: Command) => {
      const created = await clientFor(cmd).createRepo({
        name,
        ...(opts.comment !== undefined ? { comment: opts.comment } : {}),
        ...(opts.distribution !== undefined ? { distribution: opts.distribution } : {}),
        ...(opts.component !== undefined ? { component: opts.component } : {}),
      });
      if (opts.json) return printJson(created);
      process.stdout.write(
        `Created local repo ${created.name}; add packages with: kiln repo add ${created.name} FILE|DIR…\n`,
      );
    });

  repo
    .command("list")
    .description("List local repos")
    .option("--json", "print as JSON")
    .action(async (opts: JsonFlag, cmd: Command) => {
      const repos = await clientFor(cmd).listRepos();
      if (opts.json) return printJson(repos);
      process.stdout.write(formatRepoList(repos));
    });

  repo
    .command("show")
    .description("Show a local repo (and its packages)")
    .argument("<name>")
    .option("--with-packages", "list its packages")
    .option("--query <q>", "list only the packages an Aptly query matches (implies --with-packages)")
    .option("--json", "print as JSON")
    .action(
      async (name: string, opts: JsonFlag & { withPackages?: boolean; query?: string }, cmd: Command) => {
        const shown = await clientFor(cmd).showRepo(name, {
          ...(opts.withPackages ? { withPackages: true } : {}),
          ...(opts.query !== undefined ? { q: opts.query } : {}),
        });
        if (opts.json) return printJson(shown);
        process.stdout.write(formatRepo(shown));
      },
    );

  repo
    .command("edit")
    .description("Change a local repo's comment, default distribution or component")
    .argument("<name>")
    .option("--comment <text>", 'the new comment ("" clears it)')
    .option("--distribution <dist>", "the new default distribution")
    .option("--component <component>", "the new default component")
    .option("--json", "print it as JSON")
    .action(async (name: string, opts: JsonFlag & RepoEditFlags, cmd: Command) => {
      const edited = await clientFor(cmd).editRepo(name, buildRepoPatch(opts));
      if (opts.json) return printJson(edited);
      process.stdout.write(formatRepo(edited));
    });

  repo
    .command("drop")
    .description("Delete a local repo (refused while it is published, unless --force)")
    .argument("<name>")
    .option("--force", "drop it even while a publication uses it")
    .option("--json", "print the task and its result as JSON")
    .action(async (name: string, opts: JsonFlag & { force?: boolean }, cmd: Command) => {
      const answer = await clientFor(cmd).dropRepo(name, { force: opts.force === true });
      if (opts.json) return printJson(answer);
      process.stdout.write(`Dropped local repo ${name}\n`);
    });

  repo
    .command("add")
    .description("Upload .deb/.udeb/.dsc files (or directories of them) and add them to a local repo")
    .argument("<name>", "the local repo")
    .argument(
      "<files...>",
      "package files, or directories searched for them (a .dsc brings the files it lists)",
    )
    .option(
      "--force-replace",
      "replace a package of the same name, version and architecture with other content",
    )
    .option("--nowait", "queue the add and print its task id")
    .option("--json", "print the task and the per-file result as JSON")
    .action(
      async (
        name: string,
        args: string[],
        opts: JsonFlag & { forceReplace?: boolean; nowait?: boolean },
        cmd: Command,
      ) => {
        const client = clientFor(cmd);
        // Fail early on an unknown repo, before uploading anything.
        await client.showRepo(name);
        const files = await collectPackageFiles(args);
        const spinner = new Spinner();
        let answer: RepoTaskAnswer<RepoAddResultJson>;
        try {
          const upload = await uploadFiles(client, files, spinner);
          spinner.update(`adding to ${name}`);
          answer = await client.addToRepo(
            name,
            {
              upload,
              files: files.filter((f) => f.package).map((f) => f.name),
              removeUpload: "all",
              ...(opts.forceReplace ? { forceReplace: true } : {}),
            },
            opts.nowait === true,
          );
        } finally {
          spinner.stop();
        }
        if (opts.nowait) return reportQueued(answer, opts.json);
        const result = resultOf(answer);
        if (opts.json) printJson(answer);
        else process.stdout.write(formatAddReport(result));
        const code = addExitCode(result);
        if (code !== 0) throw new CliExit(code);
      },
    );

  repo
    .command("remove")
    .description("Remove the packages an Aptly query matches from a local repo")
    .argument("<name>")
    .argument("<query>", "e.g. 'hello (<< 2.0)' or 'Name (% lib*)'")
    .option("--json", "print the task and the removed package keys as JSON")
    .action(async (name: string, query: string, opts: JsonFlag, cmd: Command) => {
      const answer = await clientFor(cmd).removeFromRepo(name, query);
      if (opts.json) return printJson(answer);
      const { keys } = resultOf(answer);
      process.stdout.write(`Removed ${countPackages(keys.length)} from ${name}\n`);
      for (const k of keys) process.stdout.write(`  ${k}\n`);
    });

  for (const move of [false, true]) {
    repo
      .command(move ? "move" : "copy")
      .description(`${move ? "Move" : "Copy"} the packages an Aptly query matches into another local repo`)
      .argument("<src>")
      .argument("<dst>")
      .argument("<query>")
      .option("--force-replace", "replace packages of the same name, version and architecture in DST")
      .option("--json", "print the task and the package keys as JSON")
      .action(
        async (
          src: string,
          dst: string,
          query: string,
          opts: JsonFlag & { forceReplace?: boolean },
          cmd: Command,
        ) => {
          const answer = await clientFor(cmd).copyPackages(src, {
            to: dst,
            query,
            ...(move ? { move: true } : {}),
            ...(opts.forceReplace ? { forceReplace: true } : {}),
          });
          if (opts.json) return printJson(answer);
          const { keys } = resultOf(answer);
          process.stdout.write(
            `${move ? "Moved" : "Copied"} ${countPackages(keys.length)} from ${src} to ${dst}\n`,
          );
          for (const k of keys) process.stdout.write(`  ${k}\n`);
        },
      );
  }

  repo
    .command("import-tag")
    .description("Add a tag's latest builds (through inheritance) to a local repo")
    .argument("<name>")
    .argument("<tag>")
    .option("--event <n>", "as the tag was at this event", parseInteger(1))
    .option("--force-replace", "replace packages of the same name, version and architecture")
    .option("--json", "print the task and its result as JSON")
    .action(
      async (
        name: string,
        tag: string,
        opts: JsonFlag & { event?: number; forceReplace?: boolean },
        cmd: Command,
      ) => {
        const answer = await clientFor(cmd).importTag(name, {
          tag,
          ...(opts.event !== undefined ? { event: opts.event } : {}),
          ...(opts.forceReplace ? { forceReplace: true } : {}),
        });
        if (opts.json) return printJson(answer);
        const result = resultOf(answer);
        const outcomes = result.outcomes ?? [];
        const added = outcomes.filter((o) => o.outcome === "added" || o.outcome === "replaced").length;
        process.stdout.write(
          `Imported ${tag} as of event ${result.event} into ${name}: ${added} added, ` +
            `${outcomes.length - added} already there\n`,
        );
      },
    );
}
