import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { cpSync, existsSync, readdirSync, readFileSync } from "node:fs";
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { KilnClient } from "../../src/client/client.js";
import type {
  ArtifactJson,
  BuildArchArgs,
  BuildArchResult,
  BuildSrcResult,
  TaskJson,
} from "../../src/client/types.js";
import { KilnError } from "../../src/errors/catalogue.js";
import { TaskFailure, type TaskContext, type TaskHandler } from "../../src/worker/handler.js";
import { buildArchHandler } from "../../src/worker/handlers/build-arch.js";
import { buildSrcHandler } from "../../src/worker/handlers/build-src.js";
import { sandboxAvailable } from "../../src/worker/sandbox.js";

const FIXTURES = path.resolve(import.meta.dirname, "../fixtures/packages");

const available = sandboxAvailable();
const tools = [
  "dpkg-buildpackage",
  "dpkg-source",
  "dpkg-checkbuilddeps",
  "dh",
  "fakeroot",
  "gcc",
  "make",
].filter((t) => spawnSync("sh", ["-c", `command -v ${t}`]).status !== 0);
const skipReason = !available.ok
  ? `the bwrap sandbox is not available: ${available.reason}`
  : tools.length > 0
    ? `missing build tools: ${tools.join(", ")}`
    : undefined;
if (skipReason !== undefined) {
  if (process.env.CI === "true") throw new Error(`build handler tests need their tools in CI: ${skipReason}`);
  console.warn(`skipping build handler tests: ${skipReason}`);
}
const HOST_ARCH = spawnSync("dpkg", ["--print-architecture"], { encoding: "utf8" }).stdout?.trim() ?? "amd64";

/**
 * A stand-in for the hub's side of KilnClient: upload areas are directories, artifacts are kept
 * in memory and double as the blob store that buildArch downloads from.
 */
class FakeHub {
  readonly uploads = new Map<string, string>();
  readonly blobs = new Map<string, Buffer>();
  readonly artifacts: (ArtifactJson & { epoch: number })[] = [];
  private nextId = 1;

  client(): KilnClient {
    const fake = {
      downloadUploadFile: (upload: string, name: string) => {
        const dir = this.uploads.get(upload);
        const file = dir === undefined ? undefined : path.join(dir, name);
        if (file === undefined || name.includes("/") || !existsSync(file)) {
          return Promise.reject(new KilnError("UPLOAD_NOT_FOUND", `no file ${name} in upload ${upload}`));
        }
        return Promise.resolve(new Response(readFileSync(file)));
      },
      downloadBlob: (sha256: string) => {
        const blob = this.blobs.get(sha256);
        if (!blob) return Promise.reject(new KilnError("ARTIFACT_NOT_FOUND", `no blob ${sha256}`));
        return Promise.resolve(new Response(blob));
      },
      uploadArtifact: async (
        taskId: number,
        epoch: number,
        name: string,
        body: Buffer | ReadableStream<Uint8Array>,
        meta: { kind: string; arch?: string | null },
      ): Promise<ArtifactJson> => {
        const data = Buffer.from(await new Response(body).arrayBuffer());
        const sha256 = createHash("sha256").update(data).digest("hex");
        this.blobs.set(sha256, data);
        const artifact = {
          id: this.nextId++,
          name,
          sha256,
          size: data.length,
          kind: meta.kind,
          arch: meta.arch ?? null,
          taskId,
        };
        this.artifacts.push({ ...artifact, epoch });
        return artifact;
      },
    };
    return fake as unknown as KilnClient;
  }

  artifactsOf(taskId: number) {
    return this.artifacts.filter((a) => a.taskId === taskId);
  }
}

let base: string;
let hub: FakeHub;
let nextTask = 1;

beforeAll(async () => {
  base = await mkdtemp(path.join(os.tmpdir(), "kiln-build-"));
  await chmod(base, 0o755); // the build user must be able to reach the workspaces
  hub = new FakeHub();
});
afterAll(async () => {
  await rm(base, { recursive: true, force: true });
});

interface Ran<T> {
  taskId: number;
  result?: T;
  error?: TaskFailure;
  log: string;
}

async function runTask<T>(
  handler: TaskHandler,
  method: string,
  args: unknown,
  opts: { onLog?: (log: string, controller: AbortController) => void } = {},
): Promise<Ran<T>> {
  const id = nextTask++;
  const workDir = path.join(base, `task-${id}-1`);
  await mkdir(workDir);
  const controller = new AbortController();
  let log = "";
  const ctx: TaskContext = {
    task: { id, method, args } as TaskJson,
    epoch: 1,
    signal: controller.signal,
    log: (text) => {
      log += text;
      opts.onLog?.(log, controller);
    },
    workDir,
    client: hub.client(),
    logger: pino({ level: "silent" }),
    killGrace: 1,
  };
  try {
    const out = await handler(ctx);
    if (!("result" in out)) throw new Error("the handler suspended");
    return { taskId: id, result: out.result as T, log };
  } catch (err) {
    if (!(err instanceof TaskFailure)) throw err;
    return { taskId: id, error: err, log };
  }
}

/** Packs a directory as the CLI does (`tar -czf - -C DIR .`) into a fresh upload area. */
async function uploadTree(
  dir: string,
  files: Record<string, string | Buffer> = {},
): Promise<{ upload: string; file: string }> {
  const upload = `up-${nextTask}-${Math.random().toString(36).slice(2)}`;
  const area = path.join(base, "uploads", upload);
  await mkdir(area, { recursive: true });
  const file = "source.tar.gz";
  execFileSync("tar", ["-czf", path.join(area, file), "--exclude-vcs", "-C", dir, "."]);
  for (const [name, content] of Object.entries(files)) await writeFile(path.join(area, name), content);
  hub.uploads.set(upload, area);
  return { upload, file };
}

async function uploadFiles(files: Record<string, string | Buffer>): Promise<string> {
  const upload = `up-${nextTask}-${Math.random().toString(36).slice(2)}`;
  const area = path.join(base, "uploads", upload);
  await mkdir(area, { recursive: true });
  for (const [name, content] of Object.entries(files)) await writeFile(path.join(area, name), content);
  hub.uploads.set(upload, area);
  return upload;
}

async function buildSource(dir: string): Promise<Ran<BuildSrcResult>> {
  const { upload, file } = await uploadTree(dir);
  return runTask<BuildSrcResult>(buildSrcHandler, "buildSrc", {
    buildId: 1,
    upload,
    source: { type: "tarball", file },
  });
}

function archArgs(src: BuildSrcResult, arch: string, dep: boolean, indep: boolean): BuildArchArgs {
  return {
    buildId: 1,
    source: src.source,
    version: src.version,
    arch,
    dep,
    indep,
    dsc: src.dsc,
    files: src.files,
  };
}

async function buildBoth(fixture: string, arch: string, dep: boolean, indep: boolean) {
  const src = await buildSource(path.join(FIXTURES, fixture));
  expect(src.error, src.log).toBeUndefined();
  const bin = await runTask<BuildArchResult>(
    buildArchHandler,
    "buildArch",
    archArgs(src.result!, arch, dep, indep),
  );
  return { src: src.result!, bin };
}

/** Writes an artifact (from the fake hub's blobs) to disk. */
async function saveArtifact(name: string, taskId: number): Promise<string> {
  const art = hub.artifactsOf(taskId).find((a) => a.name === name);
  if (!art) throw new Error(`task ${taskId} has no artifact ${name}`);
  const file = path.join(base, `out-${taskId}-${name}`);
  await writeFile(file, hub.blobs.get(art.sha256)!);
  return file;
}

/** A minimal ustar writer, to make archives `tar` itself refuses to create. */
function tarArchive(
  entries: { name: string; type?: "0" | "2" | "5"; content?: string; link?: string }[],
): Buffer {
  const blocks: Buffer[] = [];
  for (const e of entries) {
    const content = Buffer.from(e.content ?? "");
    const h = Buffer.alloc(512);
    h.write(e.name, 0, 100, "utf8");
    h.write(`${(e.type === "5" ? 0o755 : 0o644).toString(8).padStart(7, "0")}\0`, 100);
    h.write("0000000\0", 108);
    h.write("0000000\0", 116);
    h.write(`${content.length.toString(8).padStart(11, "0")}\0`, 124);
    h.write(`${(1700000000).toString(8).padStart(11, "0")}\0`, 136);
    h.write("        ", 148);
    h.write(e.type ?? "0", 156);
    h.write(e.link ?? "", 157, 100, "utf8");
    h.write("ustar\0", 257);
    h.write("00", 263);
    let sum = 0;
    for (const b of h) sum += b;
    h.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148);
    blocks.push(h, content, Buffer.alloc((512 - (content.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  return execFileSync("gzip", ["-c"], { input: Buffer.concat(blocks) });
}

const fixtureText = (pkg: string, rel: string) => readFileSync(path.join(FIXTURES, pkg, rel), "utf8");

describe.skipIf(skipReason !== undefined)("buildSrc and buildArch", () => {
  let helloSrc: BuildSrcResult;
  let helloSrcTask: number;

  it("builds hello-c (Architecture: any) from a tarball into a working .deb", async () => {
    const src = await buildSource(path.join(FIXTURES, "hello-c"));
    expect(src.error, src.log).toBeUndefined();
    helloSrc = src.result!;
    helloSrcTask = src.taskId;
    expect(helloSrc).toMatchObject({ source: "hello-c", version: "1.0", architectures: ["any"] });
    expect(helloSrc.dsc.name).toBe("hello-c_1.0.dsc");
    expect(helloSrc.files.map((f) => f.name).sort()).toEqual(["hello-c_1.0.dsc", "hello-c_1.0.tar.xz"]);
    expect(src.log).toContain("dpkg-source: info: building hello-c in hello-c_1.0.dsc");
    const uploaded = hub.artifactsOf(src.taskId);
    expect(uploaded.map((a) => [a.name, a.kind]).sort()).toEqual([
      ["hello-c_1.0.dsc", "dsc"],
      ["hello-c_1.0.tar.xz", "source"],
    ]);
    for (const f of helloSrc.files) expect(uploaded.find((a) => a.name === f.name)?.sha256).toBe(f.sha256);

    const bin = await runTask<BuildArchResult>(
      buildArchHandler,
      "buildArch",
      archArgs(helloSrc, HOST_ARCH, true, false),
    );
    expect(bin.error, bin.log).toBeUndefined();
    const names = bin.result!.artifacts.map((a) => a.name);
    expect(names).toContain(`hello-c_1.0_${HOST_ARCH}.deb`);
    expect(names).toContain(`hello-c_1.0_${HOST_ARCH}.buildinfo`);
    expect(names).toContain(`hello-c_1.0_${HOST_ARCH}.changes`);
    const deb = hub.artifactsOf(bin.taskId).find((a) => a.name === `hello-c_1.0_${HOST_ARCH}.deb`);
    expect(deb).toMatchObject({ kind: "deb", arch: HOST_ARCH });
    expect(hub.artifactsOf(bin.taskId).find((a) => a.name.endsWith(".changes"))?.kind).toBe("changes");

    const file = await saveArtifact(`hello-c_1.0_${HOST_ARCH}.deb`, bin.taskId);
    const info = execFileSync("dpkg-deb", ["-I", file], { encoding: "utf8" });
    expect(info).toContain("Package: hello-c");
    expect(info).toContain(`Architecture: ${HOST_ARCH}`);
    expect(info).toMatch(/Depends: .*libc6/);
    const root = path.join(base, `x-${bin.taskId}`);
    execFileSync("dpkg", ["-x", file, root]);
    expect(execFileSync(path.join(root, "usr/bin/hello-c"), { encoding: "utf8" })).toBe("Hello from Kiln!\n");
  });

  it("builds hello-all (Architecture: all) with -A into an _all.deb", async () => {
    const { src, bin } = await buildBoth("hello-all", "all", false, true);
    expect(src.architectures).toEqual(["all"]);
    expect(bin.error, bin.log).toBeUndefined();
    expect(bin.log).toContain("dpkg-buildpackage -us -uc -rfakeroot -A");
    const deb = hub.artifactsOf(bin.taskId).find((a) => a.name === "hello-all_1.0_all.deb");
    expect(deb).toMatchObject({ kind: "deb", arch: "all" });
    const file = await saveArtifact("hello-all_1.0_all.deb", bin.taskId);
    expect(execFileSync("dpkg-deb", ["-I", file], { encoding: "utf8" })).toContain("Architecture: all");
    expect(execFileSync("dpkg-deb", ["-c", file], { encoding: "utf8" })).toContain("./usr/bin/hello-all");
  });

  it("takes a .dsc and its files, checks their sums and test-unpacks it", async () => {
    const files: Record<string, Buffer> = {};
    for (const f of helloSrc.files) files[f.name] = readFileSync(await saveArtifact(f.name, helloSrcTask));
    const upload = await uploadFiles(files);
    const ok = await runTask<BuildSrcResult>(buildSrcHandler, "buildSrc", {
      buildId: 2,
      upload,
      source: { type: "dsc", file: "hello-c_1.0.dsc" },
    });
    expect(ok.error, ok.log).toBeUndefined();
    expect(ok.result).toEqual(helloSrc);
    expect(ok.log).toContain("dpkg-source: info: extracting hello-c in /build/tree/hello-c-1.0");

    const tampered = {
      ...files,
      "hello-c_1.0.tar.xz": Buffer.concat([files["hello-c_1.0.tar.xz"]!, Buffer.from("x")]),
    };
    const bad = await runTask(buildSrcHandler, "buildSrc", {
      buildId: 3,
      upload: await uploadFiles(tampered),
      source: { type: "dsc", file: "hello-c_1.0.dsc" },
    });
    expect(bad.error?.code).toBe("SOURCE_INVALID");
    expect(bad.error?.message).toMatch(/hello-c_1\.0\.tar\.xz.*expected \d+ bytes with sha256/);

    const missing = await runTask(buildSrcHandler, "buildSrc", {
      buildId: 4,
      upload: await uploadFiles({ "hello-c_1.0.dsc": files["hello-c_1.0.dsc"]! }),
      source: { type: "dsc", file: "hello-c_1.0.dsc" },
    });
    expect(missing.error?.code).toBe("SOURCE_INVALID");
    expect(missing.error?.message).toContain("has no file hello-c_1.0.tar.xz");
  });

  it("builds a 3.0 (quilt) package against the upstream tarball in the upload, and says when it is missing", async () => {
    const upstream = path.join(base, "quilt-upstream");
    await mkdir(path.join(upstream, "hello-quilt-1.0"), { recursive: true });
    await writeFile(
      path.join(upstream, "hello-quilt-1.0", "hello-quilt"),
      '#!/bin/sh\necho "Hello, quilt"\n',
    );
    const orig = execFileSync("tar", ["-czf", "-", "-C", upstream, "hello-quilt-1.0"]);
    const tree = path.join(base, "quilt-tree");
    cpSync(path.join(upstream, "hello-quilt-1.0"), tree, { recursive: true });
    cpSync(path.join(FIXTURES, "hello-all", "debian"), path.join(tree, "debian"), { recursive: true });
    const rename = (text: string) => text.replaceAll("hello-all", "hello-quilt");
    await writeFile(path.join(tree, "debian/source/format"), "3.0 (quilt)\n");
    await writeFile(path.join(tree, "debian/install"), "hello-quilt usr/bin\n");
    await writeFile(path.join(tree, "debian/control"), rename(fixtureText("hello-all", "debian/control")));
    await writeFile(
      path.join(tree, "debian/changelog"),
      rename(fixtureText("hello-all", "debian/changelog")).replace("(1.0)", "(1.0-1)"),
    );

    const withOrig = await uploadTree(tree, { "hello-quilt_1.0.orig.tar.gz": orig });
    const ok = await runTask<BuildSrcResult>(buildSrcHandler, "buildSrc", {
      buildId: 5,
      upload: withOrig.upload,
      source: { type: "tarball", file: withOrig.file },
    });
    expect(ok.error, ok.log).toBeUndefined();
    expect(ok.result?.version).toBe("1.0-1");
    expect(ok.result?.files.map((f) => f.name).sort()).toEqual([
      "hello-quilt_1.0-1.debian.tar.xz",
      "hello-quilt_1.0-1.dsc",
      "hello-quilt_1.0.orig.tar.gz",
    ]);
    expect(ok.result?.files.find((f) => f.name.endsWith(".orig.tar.gz"))?.sha256).toBe(
      createHash("sha256").update(orig).digest("hex"),
    );

    const without = await uploadTree(tree);
    const bad = await runTask(buildSrcHandler, "buildSrc", {
      buildId: 6,
      upload: without.upload,
      source: { type: "tarball", file: without.file },
    });
    expect(bad.error?.code).toBe("SOURCE_INVALID");
    expect(bad.error?.message).toContain("dpkg-source -b exited with");
    expect(bad.error?.message).toMatch(/no upstream tarball found/);
  });

  it("fails a compile error with BUILD_FAILED and the compiler's message in the log", async () => {
    const { bin } = await buildBoth("broken-c", HOST_ARCH, true, false);
    expect(bin.error?.code).toBe("BUILD_FAILED");
    expect(bin.error?.message).toMatch(/^dpkg-buildpackage exited with \d+; see the log$/);
    expect(bin.error?.opts.exitCode).toBeGreaterThan(0);
    expect(bin.log).toMatch(/hello\.c:\d+:\d+: error: .kiln_undeclared_identifier. undeclared/);
  });

  it("fails a missing build dependency with BUILD_DEPS_MISSING, naming it", async () => {
    const { bin } = await buildBoth("needs-missing-dep", "all", false, true);
    expect(bin.error?.code).toBe("BUILD_DEPS_MISSING");
    expect(bin.error?.message).toBe("missing build dependencies: libdoesnotexist-dev");
    expect(bin.log).toContain("Unmet build dependencies: libdoesnotexist-dev");
    expect(bin.log).not.toContain("dpkg-buildpackage -us");
  });

  it("fails a build that needs the network", async () => {
    const { bin } = await buildBoth("net-escape", "all", false, true);
    expect(bin.error?.code).toBe("BUILD_FAILED");
    // make echoes the recipe first, so only whole output lines count.
    expect(bin.log).toMatch(/^kiln-net-escape: no network$/m);
    expect(bin.log).not.toMatch(/^kiln-net-escape: CONNECTED$/m);
  });

  it("fails a build that writes outside its workspace", async () => {
    const { bin } = await buildBoth("write-escape", "all", false, true);
    expect(bin.error?.code).toBe("BUILD_FAILED");
    expect(bin.log).toMatch(/touch: cannot touch '\/etc\/kiln-escape': Read-only file system/);
    expect(existsSync("/etc/kiln-escape")).toBe(false);
  });

  it("stops a running build on cancel and reports TASK_CANCELED", async () => {
    const tree = path.join(base, "slow");
    cpSync(path.join(FIXTURES, "hello-all"), tree, { recursive: true });
    await writeFile(
      path.join(tree, "debian/rules"),
      "#!/usr/bin/make -f\n\n%:\n\tdh $@\n\noverride_dh_auto_build:\n\tsleep 313\n",
      { mode: 0o755 },
    );
    const src = await buildSource(tree);
    expect(src.error, src.log).toBeUndefined();
    const bin = await runTask(buildArchHandler, "buildArch", archArgs(src.result!, "all", false, true), {
      onLog: (log, controller) => {
        if (/^\s*sleep 313$/m.test(log) && !controller.signal.aborted)
          setTimeout(() => controller.abort(), 200);
      },
    });
    expect(bin.error?.code).toBe("TASK_CANCELED");
    const sleepers = readdirSync("/proc")
      .filter((p) => /^\d+$/.test(p))
      .filter((p) => {
        try {
          return readFileSync(`/proc/${p}/cmdline`, "utf8") === "sleep\u0000313\u0000";
        } catch {
          return false;
        }
      });
    expect(sleepers).toEqual([]);
  });

  it("refuses source tarballs without debian/control or with unsafe paths", async () => {
    const run = async (tgz: Buffer) =>
      runTask(buildSrcHandler, "buildSrc", {
        buildId: 9,
        upload: await uploadFiles({ "src.tar.gz": tgz }),
        source: { type: "tarball", file: "src.tar.gz" },
      });
    const changelog = fixtureText("hello-all", "debian/changelog");
    const noControl = await run(
      tarArchive([
        { name: "./debian/", type: "5" },
        { name: "./debian/changelog", content: changelog },
      ]),
    );
    expect(noControl.error?.code).toBe("SOURCE_INVALID");
    expect(noControl.error?.message).toContain("has no debian/control");

    const noChangelog = await run(tarArchive([{ name: "pkg/debian/control", content: "Source: x\n" }]));
    expect(noChangelog.error?.code).toBe("SOURCE_INVALID");
    expect(noChangelog.error?.message).toContain("has no debian/changelog");

    const dotdot = await run(tarArchive([{ name: "../evil", content: "x" }]));
    expect(dotdot.error?.code).toBe("ARCHIVE_UNSAFE");

    const absolute = await run(tarArchive([{ name: "/etc/evil", content: "x" }]));
    expect(absolute.error?.code).toBe("ARCHIVE_UNSAFE");

    const throughLink = await run(
      tarArchive([
        { name: "debian", type: "2", link: "/etc" },
        { name: "debian/changelog", content: changelog },
      ]),
    );
    expect(throughLink.error?.code).toBe("ARCHIVE_UNSAFE");
    expect(throughLink.error?.message).toContain("beyond a symbolic link");

    const badChangelog = await run(
      tarArchive([
        { name: "debian/changelog", content: "this is not a changelog\n" },
        { name: "debian/control", content: fixtureText("hello-all", "debian/control") },
      ]),
    );
    expect(badChangelog.error?.code).toBe("CHANGELOG_INVALID");
  });

  it("does not upload a result the build replaced with a symlink to a host file", async () => {
    const tree = path.join(base, "sneaky");
    cpSync(path.join(FIXTURES, "hello-all"), tree, { recursive: true });
    await writeFile(
      path.join(tree, "debian/rules"),
      "#!/usr/bin/make -f\n\n%:\n\tdh $@\n\noverride_dh_builddeb:\n\tdh_builddeb\n\tln -s /etc/shadow ../stolen_1.0_all.deb\n",
      { mode: 0o755 },
    );
    const src = await buildSource(tree);
    const bin = await runTask<BuildArchResult>(
      buildArchHandler,
      "buildArch",
      archArgs(src.result!, "all", false, true),
    );
    expect(bin.error, bin.log).toBeUndefined();
    expect(bin.result?.artifacts.map((a) => a.name)).not.toContain("stolen_1.0_all.deb");
    expect(bin.log).toContain("kiln: not uploading stolen_1.0_all.deb: it is not a regular file");
    const shadow = await readFile("/etc/shadow").catch(() => undefined);
    if (shadow) {
      const sum = createHash("sha256").update(shadow).digest("hex");
      expect(hub.artifacts.some((a) => a.sha256 === sum)).toBe(false);
    }
  });
});
