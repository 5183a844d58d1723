import { readdir } from "node:fs/promises";
import path from "node:path";
import type { BuildSrcArgs, BuildSrcResult, SourceFileRef } from "../../client/types.js";
import {
  ChecksumMismatch,
  isNotFound,
  isPlainFileName,
  NotRegularFile,
  readBuildFile,
  saveResponse,
  uploadBuildFile,
} from "../build-files.js";
import {
  BUILD_LIMITS,
  describeExit,
  guardStopped,
  lastLines,
  requireSandbox,
  runSteps,
} from "../build-steps.js";
import { parseVersion } from "../../debian/version.js";
import { TaskFailure, type TaskContext, type TaskHandler } from "../handler.js";
import { makeBuildDir, SANDBOX_WORKSPACE } from "../sandbox.js";
import {
  controlArchitectures,
  inspectSourceTarball,
  parseDsc,
  upstreamVersion,
  type DscInfo,
} from "../source-files.js";

/** Largest .dsc we read (they are a few KiB). */
const MAX_DSC_BYTES = 1024 * 1024;
/** Where dpkg-source looks for an upstream tarball, in the order it tries them. */
const ORIG_EXTENSIONS = ["xz", "gz", "bz2", "lzma"];

// The workspace (ctx.workDir, /build in the sandbox):
//   upload/  the uploaded .tar.gz (tarball sources)
//   tree/    the unpacked source tree
//   out/     the source package: .dsc, tarballs, diff — what gets uploaded
const inside = (...parts: string[]) => path.posix.join(SANDBOX_WORKSPACE, ...parts);

function parseArgs(args: unknown): BuildSrcArgs {
  const a = (args ?? {}) as Partial<BuildSrcArgs>;
  const type = a.source?.type;
  const file = a.source?.file;
  if (typeof a.upload !== "string" || a.upload === "") {
    throw new TaskFailure("VALIDATION_FAILED", "buildSrc: args.upload must name an upload area");
  }
  if ((type !== "tarball" && type !== "dsc") || typeof file !== "string" || !isPlainFileName(file)) {
    throw new TaskFailure(
      "VALIDATION_FAILED",
      'buildSrc: args.source must be { type: "tarball" | "dsc", file: <a plain file name> }',
    );
  }
  return { buildId: Number(a.buildId), upload: a.upload, source: { type, file } };
}

/**
 * `buildSrc {upload, source}`: makes the Debian source package of an upload — from a .tar.gz of
 * an unpacked tree (`dpkg-source -b`, in the sandbox) or from a .dsc and its files (checked,
 * then test-unpacked with `dpkg-source -x`) — and attaches its files to the task as artifacts.
 */
export const buildSrcHandler: TaskHandler = (ctx) =>
  guardStopped(ctx, async () => {
    const args = parseArgs(ctx.task.args);
    requireSandbox();
    for (const dir of ["", "upload", "tree", "out"]) await makeBuildDir(path.join(ctx.workDir, dir));
    const made = args.source.type === "tarball" ? await fromTarball(ctx, args) : await fromDsc(ctx, args);

    const out = path.join(ctx.workDir, "out");
    ctx.log(`\nkiln: uploading the source package ${made.dsc.source}_${made.dsc.version}\n`);
    const dscRef = await uploadBuildFile(ctx, out, made.dscName, { kind: "dsc" });
    const files: SourceFileRef[] = [dscRef];
    for (const f of made.dsc.files) files.push(await uploadListedFile(ctx, out, made.dscName, f));
    const result: BuildSrcResult = {
      source: made.dsc.source,
      version: made.dsc.version,
      architectures: made.architectures,
      dsc: dscRef,
      files,
    };
    ctx.log(`kiln: ${result.source} ${result.version}, architectures: ${result.architectures.join(" ")}\n`);
    return { result };
  });

interface MadeSource {
  dscName: string;
  dsc: DscInfo;
  architectures: string[];
}

/** Downloads a file of the upload area; a missing one is the source's fault. */
async function fetchUploadFile(
  ctx: TaskContext,
  upload: string,
  name: string,
  dest: string,
  opts: { expect?: { sha256: string; size: number }; maxBytes?: number; why: string },
) {
  let res: Response;
  try {
    res = await ctx.client.downloadUploadFile(upload, name);
  } catch (err) {
    if (isNotFound(err))
      throw new TaskFailure("SOURCE_INVALID", `${opts.why}, but upload ${upload} has no file ${name}`);
    throw err;
  }
  try {
    return await saveResponse(res, dest, { signal: ctx.signal, what: `${name} (upload ${upload})`, ...opts });
  } catch (err) {
    if (err instanceof ChecksumMismatch)
      throw new TaskFailure("SOURCE_INVALID", `${err.message}; ${opts.why}`);
    throw err;
  }
}

async function fromTarball(ctx: TaskContext, args: BuildSrcArgs): Promise<MadeSource> {
  const { upload } = args;
  const file = args.source.file;
  const local = path.join(ctx.workDir, "upload", file);
  await fetchUploadFile(ctx, upload, file, local, { why: "the build names it as its source" });
  ctx.log(`kiln: checking ${file}\n`);
  const tarball = await inspectSourceTarball(local, file);
  const { changelog } = tarball;
  const architectures = controlArchitectures(tarball.control);
  ctx.log(
    `kiln: ${file}: ${tarball.entries} entries, ${changelog.source} ${changelog.version}, format ${tarball.format}\n`,
  );

  // A non-native package is built against its upstream tarball, which must be in the upload too.
  const { upstream, revision } = parseVersion(changelog.version);
  if (tarball.format === "3.0 (quilt)" || (tarball.format === "1.0" && revision !== "")) {
    await fetchOrig(ctx, upload, changelog.source, upstream);
  }

  // Unpacked and packed in one sandbox: each sandbox started costs 10–30 ms more.
  const failed = await runSteps(
    ctx,
    [
      {
        cwd: inside("tree"),
        argv: [
          "tar",
          "-xzf",
          inside("upload", file),
          "--no-same-owner",
          "--no-same-permissions",
          "-C",
          inside("tree"),
        ],
      },
      {
        cwd: inside("out"),
        argv: ["dpkg-source", "-b", inside("tree", tarball.root)],
        env: { SOURCE_DATE_EPOCH: String(changelog.timestamp) },
      },
    ],
    { limits: BUILD_LIMITS },
  );
  if (failed?.index === 0) {
    throw new TaskFailure(
      "SOURCE_INVALID",
      `tar cannot unpack ${file} (it ${describeExit(failed)}): ${lastLines(failed.output)}`,
    );
  }
  if (failed) {
    throw new TaskFailure(
      "SOURCE_INVALID",
      `dpkg-source -b ${describeExit(failed)}: ${lastLines(failed.output, 3)}`,
      {
        exitCode: failed.exitCode,
        signal: failed.signal,
      },
    );
  }
  const out = path.join(ctx.workDir, "out");
  const dscs = (await readdir(out)).filter((n) => n.endsWith(".dsc"));
  const [dscName] = dscs;
  if (dscName === undefined || dscs.length > 1) {
    throw new TaskFailure("SOURCE_INVALID", `dpkg-source -b made ${dscs.length} .dsc files; expected one`);
  }
  const dsc = parseDsc(await readBuildFile(out, dscName, MAX_DSC_BYTES), dscName);
  return { dscName, dsc, architectures };
}

/** Downloads `<source>_<upstream>.orig.tar.*` (and its .asc) from the upload, if it has one. */
async function fetchOrig(ctx: TaskContext, upload: string, source: string, upstream: string): Promise<void> {
  for (const ext of ORIG_EXTENSIONS) {
    const name = `${source}_${upstream}.orig.tar.${ext}`;
    const dest = path.join(ctx.workDir, "out", name);
    try {
      await saveResponse(await ctx.client.downloadUploadFile(upload, name), dest, {
        signal: ctx.signal,
        what: name,
      });
    } catch (err) {
      if (isNotFound(err)) continue;
      throw err;
    }
    ctx.log(`kiln: using the upstream tarball ${name} from the upload\n`);
    try {
      const sig = `${name}.asc`;
      await saveResponse(await ctx.client.downloadUploadFile(upload, sig), `${dest}.asc`, {
        signal: ctx.signal,
        what: sig,
      });
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    return;
  }
  ctx.log(
    `kiln: the upload has no upstream tarball ${source}_${upstream}.orig.tar.{${ORIG_EXTENSIONS.join(",")}}\n`,
  );
}

async function fromDsc(ctx: TaskContext, args: BuildSrcArgs): Promise<MadeSource> {
  const { upload } = args;
  const dscName = args.source.file;
  if (!dscName.endsWith(".dsc")) throw new TaskFailure("SOURCE_INVALID", `${dscName} is not a .dsc file`);
  const out = path.join(ctx.workDir, "out");
  await fetchUploadFile(ctx, upload, dscName, path.join(out, dscName), {
    maxBytes: MAX_DSC_BYTES,
    why: "the build names it as its source",
  });
  const dsc = parseDsc(await readBuildFile(out, dscName, MAX_DSC_BYTES), dscName);
  for (const f of dsc.files) {
    if (f.name === dscName) throw new TaskFailure("SOURCE_INVALID", `${dscName} lists itself`);
    await fetchUploadFile(ctx, upload, f.name, path.join(out, f.name), {
      expect: { sha256: f.sha256, size: f.size },
      why: `${dscName} lists it`,
    });
  }
  ctx.log(`kiln: ${dscName}: ${dsc.files.length} files, sizes and SHA-256 sums match\n`);

  const dir = `${dsc.source}-${upstreamVersion(dsc.version)}`;
  const failed = await runSteps(
    ctx,
    [{ cwd: inside("out"), argv: ["dpkg-source", "--no-copy", "-x", dscName, inside("tree", dir)] }],
    { limits: BUILD_LIMITS },
  );
  if (failed) {
    throw new TaskFailure(
      "SOURCE_INVALID",
      `dpkg-source -x ${describeExit(failed)}: ${lastLines(failed.output, 3)}`,
      {
        exitCode: failed.exitCode,
        signal: failed.signal,
      },
    );
  }
  let control: string;
  try {
    control = await readBuildFile(path.join(ctx.workDir, "tree", dir), "debian/control");
  } catch (err) {
    throw new TaskFailure(
      "SOURCE_INVALID",
      `${dscName} unpacks without a usable debian/control (${(err as Error).message})`,
    );
  }
  return { dscName, dsc, architectures: controlArchitectures(control) };
}

/**
 * Uploads a file the .dsc lists, checking on the way (one read of it) that it is there and is
 * what the .dsc says of it: a broken tool or a race would show here.
 */
async function uploadListedFile(
  ctx: TaskContext,
  out: string,
  dscName: string,
  f: DscInfo["files"][number],
): Promise<SourceFileRef> {
  let ref;
  try {
    ref = await uploadBuildFile(ctx, out, f.name, { kind: "source" });
  } catch (err) {
    // The file's own problems only (missing, a symlink…): the hub's stay what they are.
    if (err instanceof NotRegularFile || (err instanceof Error && "syscall" in err)) {
      throw new TaskFailure(
        "SOURCE_INVALID",
        `${dscName} lists ${f.name}, which dpkg-source did not leave (${err.message})`,
      );
    }
    throw err;
  }
  if (ref.sha256 !== f.sha256 || ref.size !== f.size) {
    throw new TaskFailure("SOURCE_INVALID", `${f.name} does not match what ${dscName} says of it`);
  }
  return ref;
}
