/** `kiln build`, `kiln build-info`, `kiln list-builds` and `kiln download`. */
import { createReadStream } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { InvalidArgumentError, type Command } from "commander";
import type { KilnClient } from "../client/client.js";
import type {
  ArtifactJson,
  BuildArchJson,
  BuildAttemptJson,
  BuildJson,
  CreateBuildRequest,
} from "../client/types.js";
import { KilnError } from "../errors/catalogue.js";
import { reportBuildFailure, waitUntilServed, watchBuild } from "./build-watch.js";
import { ByteProgress, formatBytes } from "./byte-progress.js";
import { CliExit, clientFor, parseInteger, parseList } from "./context.js";
import { downloadArtifacts, selectArtifacts } from "./download-artifacts.js";
import {
  formatDuration,
  formatFields,
  formatRelative,
  formatTable,
  formatTime,
  printJson,
  printTable,
  Spinner,
} from "./output.js";
import { checkSourceDir, classifySource, cloneGit, collectDscFiles, packDirectory } from "./source-pack.js";

interface JsonFlag {
  json?: boolean;
}

/** What a packed directory is called in its upload area. */
export const SOURCE_TARBALL = "source.tar.gz";

/** `SOURCE/VERSION`, as builds are named (`hello/1.0-1`, `hello/2:1.0-1`). */
export function parseNvr(value: string): string {
  const slash = value.indexOf("/");
  if (slash <= 0 || slash === value.length - 1 || value.indexOf("/", slash + 1) !== -1) {
    throw new InvalidArgumentError("expected SOURCE/VERSION, such as hello/1.0-1");
  }
  return value;
}

/** SOURCE/VERSION, or a build's numeric id (which tells scratch builds of one version apart). */
export function parseBuildRef(value: string): string | number {
  return /^\d+$/.test(value) ? Number(value) : parseNvr(value);
}

// ---------------------------------------------------------------------------------------------
// Getting the source to the hub

export interface UploadedSource {
  upload: string;
  source: CreateBuildRequest["source"];
}

/** A Node stream as the body fetch takes. */
function webBody(stream: Readable): ReadableStream<Uint8Array> {
  return Readable.toWeb(stream);
}

/** Packs a checked directory with tar and streams it into a fresh upload area as source.tar.gz. */
async function uploadDirectory(client: KilnClient, dir: string, spinner: Spinner): Promise<UploadedSource> {
  const { id } = await client.createUpload();
  const packed = packDirectory(dir);
  const progress = new ByteProgress(spinner, `packing and uploading ${SOURCE_TARBALL}`);
  const body = packed.stream.pipe(progress.counter());
  const uploading = client.uploadFile(id, SOURCE_TARBALL, webBody(body)).catch((err: unknown) => {
    // Nobody reads tar's output any more: stop it rather than let it block.
    packed.kill();
    throw err;
  });
  const [up, tar] = await Promise.allSettled([uploading, packed.done]);
  if (up.status === "rejected") throw up.reason;
  // A tar that failed half-way ends its output cleanly: the upload succeeded, with a broken file.
  if (tar.status === "rejected") throw tar.reason;
  spinner.log(`uploaded ${SOURCE_TARBALL} (${formatBytes(up.value.size)})`);
  return { upload: id, source: { type: "tarball", file: SOURCE_TARBALL } };
}

/** Uploads a .dsc and every file it lists (all checked to be there first). */
async function uploadDsc(client: KilnClient, dscPath: string, spinner: Spinner): Promise<UploadedSource> {
  const { files } = await collectDscFiles(dscPath);
  const { id } = await client.createUpload();
  for (const file of files) {
    const progress = new ByteProgress(spinner, `uploading ${file.name}`, file.size);
    const counter = progress.counter();
    const reader = createReadStream(file.path);
    reader.on("error", (err) => counter.destroy(err));
    const out = await client.uploadFile(id, file.name, webBody(reader.pipe(counter)));
    if (file.sha256 !== undefined && out.sha256 !== file.sha256) {
      throw new KilnError(
        "VALIDATION_FAILED",
        `${file.path} has SHA-256 ${out.sha256}, but ${path.basename(dscPath)} says ${file.sha256}: is it the right file?`,
        { path: file.path },
      );
    }
    spinner.log(`uploaded ${file.name} (${formatBytes(out.size)})`);
  }
  return { upload: id, source: { type: "dsc", file: path.basename(dscPath) } };
}

/**
 * Gets SOURCE into a fresh upload area: a directory with debian/ is packed, a .dsc is sent with
 * its files, a git URL#REF is cloned into a temporary directory and packed. Everything that can
 * be checked locally is checked before anything is uploaded.
 */
export async function uploadSource(
  client: KilnClient,
  source: string,
  spinner: Spinner,
): Promise<UploadedSource> {
  const spec = classifySource(source);
  switch (spec.kind) {
    case "dir":
      await checkSourceDir(spec.path);
      return uploadDirectory(client, spec.path, spinner);
    case "dsc":
      return uploadDsc(client, spec.path, spinner);
    case "git": {
      const tmp = await mkdtemp(path.join(os.tmpdir(), "kiln-git-"));
      try {
        spinner.update(`cloning ${spec.display}`);
        const dest = path.join(tmp, "source");
        await cloneGit(spec, dest);
        await checkSourceDir(dest, spec.display);
        return await uploadDirectory(client, dest, spinner);
      } finally {
        await rm(tmp, { recursive: true, force: true });
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Output

function archState(arches: readonly BuildArchJson[]): string | null {
  return arches.length === 0 ? null : arches.map((a) => `${a.arch} ${a.state}`).join(", ");
}

export function formatArtifacts(artifacts: readonly ArtifactJson[], withHash: boolean): string {
  return formatTable<ArtifactJson>(artifacts, [
    { header: "name", value: (a) => a.name },
    { header: "kind", value: (a) => a.kind },
    { header: "arch", value: (a) => a.arch },
    { header: "size", value: (a) => formatBytes(a.size), align: "right" },
    ...(withHash ? [{ header: "sha256", value: (a: ArtifactJson) => a.sha256 }] : []),
  ]);
}

export function formatBuildInfo(build: BuildJson, now: number = Date.now()): string {
  const took =
    build.completedAt !== null
      ? formatDuration((new Date(build.completedAt).getTime() - new Date(build.createdAt).getTime()) / 1000)
      : null;
  const fields = formatFields([
    ["build", `${build.nvr} (id ${build.id})`],
    ["state", build.scratch ? `${build.state} (scratch)` : build.state],
    ["owner", build.owner],
    ["target", build.target],
    ["task", build.taskId],
    ["created", formatTime(build.createdAt, now)],
    ["completed", formatTime(build.completedAt, now)],
    ["took", took],
    ["tags", build.tags.length > 0 ? build.tags.join(", ") : "none"],
  ]);
  const arches =
    build.arches.length === 0
      ? "none yet\n"
      : formatTable<BuildArchJson>(build.arches, [
          { header: "arch", value: (a) => a.arch },
          { header: "state", value: (a) => a.state },
          { header: "task", value: (a) => a.taskId, align: "right" },
        ]);
  const artifacts = build.artifacts.length === 0 ? "none\n" : formatArtifacts(build.artifacts, true);
  return `${fields}\narches:\n${arches}\nartifacts:\n${artifacts}${formatBuildroot(build.buildroot)}`;
}

/** The buildroot a build ran in and, per arch, the Build-Depends apt installed (as a .buildinfo lists them). */
export function formatBuildroot(root: BuildJson["buildroot"]): string {
  if (!root) return "";
  const head = `\nbuildroot: ${root.name} (${root.sha256.slice(0, 12)}), Build-Depends from ${root.tag}'s repo ${root.repoId}\n`;
  const parts = Object.entries(root.arches).map(([arch, a]) => {
    const title = `installed for ${arch} (ready in ${formatDuration(a.setupSeconds)}, base ${a.base}):\n`;
    if (a.installed.length === 0) return `${title}nothing beyond the base\n`;
    return (
      title +
      formatTable(a.installed, [
        { header: "package", value: (p) => p.package },
        { header: "version", value: (p) => p.version },
        { header: "arch", value: (p) => p.arch },
      ])
    );
  });
  return head + parts.join("");
}

/** The attempts of a build's steps: every retry and requeue, each with its own log (epoch). */
export function formatAttempts(attempts: BuildAttemptJson[]): string {
  if (attempts.length === 0) return "";
  const table = formatTable<BuildAttemptJson>(attempts, [
    { header: "step", value: (a) => (a.arch ? `${a.method} ${a.arch}` : a.method) },
    { header: "task", value: (a) => a.taskId, align: "right" },
    { header: "attempt", value: (a) => a.attempt, align: "right" },
    { header: "host", value: (a) => a.host },
    { header: "state", value: (a) => a.outcome },
    {
      header: "exit",
      value: (a) => a.signal ?? (a.exitCode !== null ? String(a.exitCode) : (a.errorCode ?? "")),
    },
    { header: "duration", value: (a) => (a.duration === null ? "" : formatDuration(a.duration)) },
  ]);
  return `\nattempts:\n${table}`;
}

/** What a finished, successful `kiln build` prints on stdout. */
export function formatBuildDone(build: BuildJson): string {
  const where = build.scratch
    ? "scratch build, tagged nowhere"
    : build.tags.length > 0
      ? `tagged into ${build.tags.join(", ")}`
      : "in no tag";
  const artifacts = build.artifacts.length === 0 ? "" : formatArtifacts(build.artifacts, false);
  return `${build.nvr} complete (${where})\n${artifacts}`;
}

// ---------------------------------------------------------------------------------------------

interface BuildFlags extends JsonFlag {
  scratch?: boolean;
  nowait?: boolean;
  priority?: number;
  archOverride?: string[];
  force?: boolean;
}

export function buildRequest(
  target: string,
  uploaded: UploadedSource,
  flags: BuildFlags,
): CreateBuildRequest {
  return {
    target,
    upload: uploaded.upload,
    source: uploaded.source,
    ...(flags.scratch ? { scratch: true } : {}),
    ...(flags.priority !== undefined ? { priority: flags.priority } : {}),
    ...(flags.archOverride && flags.archOverride.length > 0 ? { archOverride: flags.archOverride } : {}),
    ...(flags.force ? { force: true } : {}),
  };
}

export function registerBuildCommands(program: Command): void {
  program
    .command("build")
    .description(
      "Build a source package into a target and watch it (a directory with debian/, a .dsc, or a git URL#REF)",
    )
    .argument("<target>", "the build target (`kiln target list`)")
    .argument(
      "<source>",
      "a directory containing debian/, a .dsc file, or a git URL#REF (branch, tag or commit)",
    )
    .option("--scratch", "build it without tagging it (any number of times)")
    .option("--nowait", "print the build and its task, and return at once")
    .option("--priority <n>", "0–100, higher runs first", parseInteger(0, 100))
    .option("--arch-override <arches>", "build only for these architectures, comma-separated", parseList)
    .option("--force", "override the build policy (admin; the hub records it)")
    .option("--json", "print {build, task} as JSON")
    .action(async (target: string, source: string, opts: BuildFlags, cmd: Command) => {
      const client = clientFor(cmd);
      const spinner = new Spinner();
      let created: Awaited<ReturnType<KilnClient["createBuild"]>>;
      try {
        const uploaded = await uploadSource(client, source, spinner);
        spinner.update(`queueing the build in ${target}`);
        created = await client.createBuild(buildRequest(target, uploaded, opts));
      } finally {
        spinner.stop();
      }
      const { build, task } = created;
      if (opts.nowait) {
        if (opts.json) return printJson(created);
        process.stdout.write(`${build.nvr} task ${task.id}\n`);
        process.stderr.write(
          `follow it with: kiln task watch ${task.id}; then: kiln build-info ${build.id}\n`,
        );
        return;
      }
      process.stderr.write(
        `building ${build.nvr}${build.scratch ? " (scratch)" : ""} as task ${task.id}; ` +
          "Ctrl-C stops watching, not the build\n",
      );
      const result = await watchBuild(client, build.id, task.id);
      const served = result.ok ? await waitUntilServed(client, result.build) : [];
      if (opts.json) printJson({ build: result.build, task: result.task, published: served });
      else if (result.ok) {
        process.stdout.write(formatBuildDone(result.build));
        for (const p of served) {
          process.stdout.write(`served by apt at ${client.hub}/apt/${p.path} (generation ${p.generation})\n`);
        }
      } else await reportBuildFailure(client, result);
      if (!result.ok) throw new CliExit(1);
    });

  program
    .command("build-info")
    .description("Show a build: state, owner, target, task, arches, artifacts and tags")
    .argument("<build>", "SOURCE/VERSION (or the build's id)", parseBuildRef)
    .option("--json", "print as JSON")
    .action(async (ref: string | number, opts: JsonFlag, cmd: Command) => {
      const client = clientFor(cmd);
      const build = await client.getBuild(ref);
      const attempts = await client.getBuildAttempts(build.id);
      if (opts.json) return printJson({ ...build, attempts });
      process.stdout.write(formatBuildInfo(build) + formatAttempts(attempts));
    });

  program
    .command("list-builds")
    .description("List builds, newest first")
    .option("--package <name>", "only builds of this source package")
    .option("--state <states>", "only these states, comma-separated (building,complete,failed,canceled)")
    .option("--limit <n>", "at most this many (default 100)", parseInteger(1, 1000))
    .option("--json", "print as JSON")
    .action(async (opts: JsonFlag & { package?: string; state?: string; limit?: number }, cmd: Command) => {
      const builds = await clientFor(cmd).listBuilds({
        ...(opts.package !== undefined ? { package: opts.package } : {}),
        ...(opts.state !== undefined ? { state: opts.state } : {}),
        ...(opts.limit !== undefined ? { limit: opts.limit } : {}),
      });
      if (opts.json) return printJson(builds);
      const now = Date.now();
      printTable<BuildJson>(builds, [
        { header: "id", value: (b) => b.id, align: "right" },
        { header: "build", value: (b) => b.nvr },
        { header: "state", value: (b) => (b.scratch ? `${b.state} (scratch)` : b.state) },
        { header: "arches", value: (b) => archState(b.arches) },
        { header: "owner", value: (b) => b.owner },
        { header: "target", value: (b) => b.target },
        { header: "created", value: (b) => formatRelative(b.createdAt, now) },
      ]);
    });

  program
    .command("download")
    .description("Download a build's files, checking each one's SHA-256")
    .argument("<build>", "SOURCE/VERSION (or the build's id)", parseBuildRef)
    .option(
      "--arch <arch>",
      "only that architecture's files and the Architecture: all packages (`source`: the source package alone)",
    )
    .option("-o, --output-dir <dir>", "where to save them (made if missing)", ".")
    .option("--json", "print the saved files as JSON")
    .action(
      async (ref: string | number, opts: JsonFlag & { arch?: string; outputDir: string }, cmd: Command) => {
        const client = clientFor(cmd);
        const build = await client.getBuild(ref);
        const chosen = selectArtifacts(build.artifacts, opts.arch);
        if (chosen.length === 0) {
          const has = [...new Set(build.artifacts.map((a) => a.arch ?? "source"))].join(", ");
          throw new KilnError(
            "ARTIFACT_NOT_FOUND",
            build.artifacts.length === 0
              ? `${build.nvr} has no files (it is ${build.state})`
              : `${build.nvr} has no files for ${opts.arch ?? "?"}; it has files for: ${has}`,
          );
        }
        const saved = await downloadArtifacts(client, chosen, opts.outputDir);
        if (opts.json) return printJson(saved);
        for (const f of saved) process.stdout.write(`${f.path} (${formatBytes(f.size)})\n`);
      },
    );
}
