import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { buildRequest, formatBuildInfo, parseBuildRef, uploadSource } from "../../src/cli/build.js";
import {
  describeBuildProgress,
  findCulprit,
  lastLines,
  reportBuildFailure,
  watchBuild,
} from "../../src/cli/build-watch.js";
import { formatBytes } from "../../src/cli/byte-progress.js";
import { downloadArtifact, downloadArtifacts, selectArtifacts } from "../../src/cli/download-artifacts.js";
import { Spinner, type TextSink } from "../../src/cli/output.js";
import { KilnClient } from "../../src/client/client.js";
import type { ArtifactJson, BuildJson, TaskDetailJson } from "../../src/client/types.js";
import { KilnError } from "../../src/errors/catalogue.js";

function sink(): TextSink & { text: string } {
  const out = {
    text: "",
    write(chunk: string) {
      out.text += chunk;
      return true;
    },
  };
  return out;
}

function quietSpinner(): Spinner {
  return new Spinner({ out: sink(), tty: false });
}

function sha256(data: Buffer | string): string {
  return createHash("sha256").update(data).digest("hex");
}

function artifact(name: string, over: Partial<ArtifactJson> = {}): ArtifactJson {
  return {
    id: 1,
    name,
    sha256: sha256(name),
    size: name.length,
    kind: "deb",
    arch: null,
    taskId: 1,
    ...over,
  };
}

function build(over: Partial<BuildJson> = {}): BuildJson {
  return {
    buildroot: null,
    id: 4,
    source: "hello",
    version: "1.0-1",
    nvr: "hello/1.0-1",
    state: "building",
    owner: "alice",
    target: "dist-target",
    scratch: false,
    taskId: 9,
    createdAt: "2025-01-01T00:00:00.000Z",
    completedAt: null,
    arches: [],
    artifacts: [],
    tags: [],
    ...over,
  };
}

function task(over: Partial<TaskDetailJson> = {}): TaskDetailJson {
  return {
    id: 9,
    method: "build",
    args: {},
    state: "open",
    waiting: true,
    priority: 20,
    arch: "noarch",
    channel: "hub",
    weight: 0.2,
    parentId: null,
    label: null,
    hostId: null,
    owner: "alice",
    attempts: 1,
    infraFailures: 0,
    leaseEpoch: 1,
    timeout: 86400,
    runAt: "2025-01-01T00:00:00.000Z",
    createdAt: "2025-01-01T00:00:00.000Z",
    startedAt: null,
    completedAt: null,
    result: null,
    error: null,
    why: null,
    host: null,
    locks: [],
    subtasks: [],
    ...over,
  };
}

/** A stand-in hub on 127.0.0.1: each test installs its own handler. */
let server: Server;
let handle: (req: IncomingMessage, body: Buffer, res: ServerResponse) => void;
let requests: string[];
let client: KilnClient;
let dir: string;

function send(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));
}

beforeEach(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), "kiln-cli-build-"));
  requests = [];
  handle = (_req, _body, res) => send(res, 404, { error: { code: "NOT_FOUND", message: "no route" } });
  server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      requests.push(`${req.method} ${req.url}`);
      handle(req, Buffer.concat(chunks), res);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  client = new KilnClient({ hub: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, token: "t" });
});

afterEach(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
  rmSync(dir, { recursive: true, force: true });
});

describe("selectArtifacts", () => {
  const all = [
    artifact("hello_1.0-1.dsc", { kind: "dsc" }),
    artifact("hello_1.0-1.tar.xz", { kind: "source" }),
    artifact("hello_1.0-1_amd64.deb", { arch: "amd64" }),
    artifact("hello_1.0-1_arm64.deb", { arch: "arm64" }),
    artifact("hello-doc_1.0-1_all.deb", { arch: "all" }),
    artifact("hello_1.0-1_amd64.buildinfo", { kind: "buildinfo", arch: "amd64" }),
  ];
  const names = (list: ArtifactJson[]) => list.map((a) => a.name);

  it("takes everything without --arch; that arch plus all with it; the source alone for source", () => {
    expect(names(selectArtifacts(all))).toEqual(names(all));
    expect(names(selectArtifacts(all, "amd64"))).toEqual([
      "hello_1.0-1_amd64.deb",
      "hello-doc_1.0-1_all.deb",
      "hello_1.0-1_amd64.buildinfo",
    ]);
    expect(names(selectArtifacts(all, "source"))).toEqual(["hello_1.0-1.dsc", "hello_1.0-1.tar.xz"]);
    expect(names(selectArtifacts(all, "all"))).toEqual(["hello-doc_1.0-1_all.deb"]);
  });

  it("refuses an arch the build was not made for, unless it has only Architecture: all binaries", () => {
    expect(() => selectArtifacts(all, "armhf")).toThrow(/not made for armhf, only for amd64, arm64/);
    const indep = [all[0]!, all[4]!];
    expect(names(selectArtifacts(indep, "armhf"))).toEqual(["hello-doc_1.0-1_all.deb"]);
  });

  it("fetches one file of a name once, and refuses two different files of one name", () => {
    const twice = [artifact("x.log", { arch: "amd64" }), artifact("x.log", { arch: "arm64" })];
    expect(selectArtifacts(twice)).toHaveLength(1);
    const clash = [twice[0]!, { ...twice[1]!, sha256: sha256("other") }];
    expect(() => selectArtifacts(clash)).toThrow(/two different files named x\.log/);
  });
});

describe("downloading artifacts", () => {
  function serveBlobs(blobs: Record<string, Buffer>): void {
    handle = (req, _body, res) => {
      const sha = /^\/api\/v1\/blobs\/([0-9a-f]{64})$/.exec(req.url ?? "")?.[1];
      const data = sha === undefined ? undefined : blobs[sha];
      if (!data) return send(res, 404, { error: { code: "ARTIFACT_NOT_FOUND", message: "no blob" } });
      res.writeHead(200, { "content-type": "application/octet-stream" }).end(data);
    };
  }

  it("saves each file under its name when its SHA-256 matches", async () => {
    const deb = Buffer.alloc(200_000, 3);
    const dsc = Buffer.from("Source: hello\n");
    serveBlobs({ [sha256(deb)]: deb, [sha256(dsc)]: dsc });
    const wanted = [
      artifact("hello_1.0-1_amd64.deb", { sha256: sha256(deb), size: deb.length }),
      artifact("hello_1.0-1.dsc", { sha256: sha256(dsc), size: dsc.length, kind: "dsc" }),
    ];
    const out = path.join(dir, "new/sub");
    const saved = await downloadArtifacts(client, wanted, out, { spinner: quietSpinner() });
    expect(saved.map((s) => [s.name, s.size])).toEqual([
      ["hello_1.0-1_amd64.deb", 200_000],
      ["hello_1.0-1.dsc", dsc.length],
    ]);
    expect(readFileSync(path.join(out, "hello_1.0-1_amd64.deb")).equals(deb)).toBe(true);
    expect(readdirSync(out).sort()).toEqual(["hello_1.0-1.dsc", "hello_1.0-1_amd64.deb"]);
  });

  it("deletes a file whose SHA-256 is not the listed one and fails", async () => {
    const listed = Buffer.from("the real package");
    const served = Buffer.from("something else!!");
    // The hub answers for the listed hash with other bytes (a damaged blob, a bad proxy).
    serveBlobs({ [sha256(listed)]: served });
    const a = artifact("hello_1.0-1_amd64.deb", { sha256: sha256(listed), size: listed.length });
    writeFileSync(path.join(dir, "keep.txt"), "x");
    let caught: unknown;
    try {
      await downloadArtifact(client, a, dir);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(KilnError);
    expect((caught as KilnError).message).toMatch(
      new RegExp(
        `hello_1\\.0-1_amd64\\.deb came with SHA-256 ${sha256(served)} .* not the ${sha256(listed)}`,
      ),
    );
    expect((caught as KilnError).details).toMatchObject({ expected: sha256(listed), actual: sha256(served) });
    // Neither the file nor its partial copy is left.
    expect(readdirSync(dir)).toEqual(["keep.txt"]);
  });

  it("refuses a size that differs even with the hash right, and names that are paths", async () => {
    const data = Buffer.from("data");
    serveBlobs({ [sha256(data)]: data });
    await expect(
      downloadArtifact(client, artifact("a.deb", { sha256: sha256(data), size: 99 }), dir),
    ).rejects.toThrow(/not the .* \(99 bytes\)/);
    expect(existsSync(path.join(dir, "a.deb"))).toBe(false);
    await expect(
      downloadArtifact(client, artifact("../evil", { sha256: sha256(data), size: 4 }), dir),
    ).rejects.toThrow(/not a plain file name/);
    expect(requests).toHaveLength(1);
  });
});

describe("uploadSource", () => {
  function makeSourceDir(): string {
    const top = path.join(dir, "hello");
    mkdirSync(path.join(top, "debian"), { recursive: true });
    writeFileSync(path.join(top, "debian/changelog"), "hello (1.0-1) unstable; urgency=medium\n");
    writeFileSync(path.join(top, "debian/control"), "Source: hello\n");
    writeFileSync(path.join(top, "main.c"), "int main(void) { return 0; }\n");
    return top;
  }

  function acceptUploads(received: Map<string, Buffer>): void {
    handle = (req, body, res) => {
      if (req.method === "POST" && req.url === "/api/v1/uploads") return send(res, 201, { id: "u1" });
      const name = /^\/api\/v1\/uploads\/u1\/files\/(.+)$/.exec(req.url ?? "")?.[1];
      if (req.method === "PUT" && name) {
        received.set(decodeURIComponent(name), body);
        return send(res, 201, { name, size: body.length, sha256: sha256(body) });
      }
      send(res, 404, { error: { code: "NOT_FOUND", message: "no route" } });
    };
  }

  it("streams a packed directory as source.tar.gz", async () => {
    const received = new Map<string, Buffer>();
    acceptUploads(received);
    const got = await uploadSource(client, makeSourceDir(), quietSpinner());
    expect(got).toEqual({ upload: "u1", source: { type: "tarball", file: "source.tar.gz" } });
    const tarball = path.join(dir, "got.tar.gz");
    writeFileSync(tarball, received.get("source.tar.gz") ?? Buffer.alloc(0));
    const names = execFileSync("tar", ["-tzf", tarball], { encoding: "utf8" }).trim().split("\n").sort();
    expect(names).toEqual(["./", "./debian/", "./debian/changelog", "./debian/control", "./main.c"]);
  });

  it("uploads a .dsc and its files, and checks them against the .dsc", async () => {
    const received = new Map<string, Buffer>();
    acceptUploads(received);
    const tar = Buffer.from("tarball");
    writeFileSync(path.join(dir, "hello_1.0.tar.xz"), tar);
    const dsc = path.join(dir, "hello_1.0.dsc");
    writeFileSync(
      dsc,
      `Source: hello\nVersion: 1.0\nChecksums-Sha256:\n ${sha256(tar)} ${tar.length} hello_1.0.tar.xz\n`,
    );
    const got = await uploadSource(client, dsc, quietSpinner());
    expect(got).toEqual({ upload: "u1", source: { type: "dsc", file: "hello_1.0.dsc" } });
    expect([...received.keys()]).toEqual(["hello_1.0.dsc", "hello_1.0.tar.xz"]);
    expect(received.get("hello_1.0.tar.xz")?.equals(tar)).toBe(true);

    writeFileSync(path.join(dir, "hello_1.0.tar.xz"), "TARBALL");
    await expect(uploadSource(client, dsc, quietSpinner())).rejects.toThrow(
      /has SHA-256 .*, but hello_1\.0\.dsc says/,
    );
  });

  it("refuses a directory without debian/ before asking the hub anything", async () => {
    const plain = path.join(dir, "plain");
    mkdirSync(plain);
    await expect(uploadSource(client, plain, quietSpinner())).rejects.toMatchObject({
      code: "VALIDATION_FAILED",
    });
    expect(requests).toEqual([]);
  });
});

describe("watching a build", () => {
  it("shows each arch's state and ends when the build task does", async () => {
    let polls = 0;
    let taskPolls = 0;
    const done = build({
      state: "complete",
      arches: [{ arch: "amd64", taskId: 11, state: "closed" }],
      tags: ["dist"],
      completedAt: "2025-01-01T00:01:00.000Z",
    });
    handle = (req, _body, res) => {
      if (req.url === "/api/v1/builds/4") {
        polls++;
        if (polls === 1) return send(res, 200, build());
        if (polls === 2)
          return send(res, 200, build({ arches: [{ arch: "amd64", taskId: 11, state: "open" }] }));
        return send(res, 200, done);
      }
      if (req.url === "/api/v1/tasks/9") {
        taskPolls++;
        return send(res, 200, taskPolls < 3 ? task() : task({ state: "closed", waiting: false }));
      }
      send(res, 404, { error: { code: "NOT_FOUND", message: "no route" } });
    };
    const out = sink();
    const result = await watchBuild(client, 4, 9, {
      intervalMs: 5,
      spinner: new Spinner({ out, tty: false }),
    });
    expect(result.ok).toBe(true);
    expect(result.build.tags).toEqual(["dist"]);
    expect(out.text).toBe(
      "hello/1.0-1: building the source package (task 9 open)\nhello/1.0-1: amd64 open\nhello/1.0-1: amd64 closed\n",
    );
  });

  it("reports a failure with the failing arch's task and the end of its log", async () => {
    const failed = build({
      state: "failed",
      arches: [
        { arch: "amd64", taskId: 11, state: "canceled" },
        { arch: "arm64", taskId: 12, state: "failed" },
      ],
    });
    const log =
      Array.from({ length: 50 }, (_, i) => `line ${i + 1}`).join("\n") + "\nmain.c:1: error: oops\n";
    handle = (req, _body, res) => {
      if (req.url === "/api/v1/tasks?parent=9&limit=1000") return send(res, 200, { tasks: [], next: null });
      if (req.url === "/api/v1/tasks/12/logs") return res.writeHead(200).end(log);
      send(res, 404, { error: { code: "NOT_FOUND", message: "no route" } });
    };
    const err = sink();
    const t = task({
      state: "failed",
      error: { code: "BUILD_FAILED", message: "buildArch for arm64 failed" },
    });
    await reportBuildFailure(client, { build: failed, task: t, ok: false }, { err });
    const lines = err.text.split("\n");
    expect(lines[0]).toBe("build hello/1.0-1 failed: buildArch for arm64 failed [BUILD_FAILED]");
    expect(lines[1]).toBe("the arm64 build (task 12) failed; the end of its log:");
    expect(lines[2]).toBe("  line 22");
    expect(lines[31]).toBe("  main.c:1: error: oops");
    expect(lines[32]).toBe("the whole log: kiln task logs 12");
  });
});

describe("build helpers", () => {
  it("describe the progress before, during and after the arches", () => {
    expect(describeBuildProgress(build({ scratch: true }), task())).toBe(
      "hello/1.0-1 (scratch): building the source package (task 9 open)",
    );
    const arches = [
      { arch: "amd64", taskId: 11, state: "closed" },
      { arch: "arm64", taskId: 12, state: "open" },
    ];
    expect(describeBuildProgress(build({ arches }), task())).toBe("hello/1.0-1: amd64 closed, arm64 open");
    const closed = arches.map((a) => ({ ...a, state: "closed" }));
    expect(describeBuildProgress(build({ arches: closed }), task())).toBe(
      "hello/1.0-1: amd64 closed, arm64 closed; importing and tagging",
    );
  });

  it("blame a failed arch, else a failed subtask, else the build task", () => {
    const b = build({ arches: [{ arch: "amd64", taskId: 11, state: "closed" }] });
    const src = { ...task({ id: 10, method: "buildSrc", label: "buildSrc", state: "failed" }) };
    expect(findCulprit(b, task(), [src])).toEqual({ taskId: 10, what: "buildSrc (task 10) failed" });
    expect(findCulprit(b, task({ state: "failed" }), [])).toEqual({
      taskId: 9,
      what: "the build task (9) failed",
    });
  });

  it("take the last lines of a log", () => {
    expect(lastLines("a\nb\nc\n", 2)).toEqual(["b", "c"]);
    expect(lastLines("a\nb", 5)).toEqual(["a", "b"]);
    expect(lastLines("", 5)).toEqual([]);
  });

  it("format sizes, build requests and build refs", () => {
    expect([0, 512, 1536, 10 * 1024 * 1024, 3.25 * 1024 ** 3].map(formatBytes)).toEqual([
      "0 B",
      "512 B",
      "1.5 KiB",
      "10 MiB",
      "3.3 GiB",
    ]);
    const uploaded = { upload: "u1", source: { type: "tarball" as const, file: "source.tar.gz" } };
    expect(buildRequest("t", uploaded, {})).toEqual({ target: "t", upload: "u1", source: uploaded.source });
    expect(
      buildRequest("t", uploaded, { scratch: true, priority: 50, archOverride: ["amd64"], force: true }),
    ).toEqual({
      target: "t",
      upload: "u1",
      source: uploaded.source,
      scratch: true,
      priority: 50,
      archOverride: ["amd64"],
      force: true,
    });
    expect(parseBuildRef("12")).toBe(12);
    expect(parseBuildRef("hello/1.0-1")).toBe("hello/1.0-1");
  });

  it("show a build's fields, arches and artifacts", () => {
    const text = formatBuildInfo(
      build({
        state: "complete",
        completedAt: "2025-01-01T00:01:05.000Z",
        arches: [{ arch: "amd64", taskId: 11, state: "closed" }],
        artifacts: [artifact("hello_1.0-1_amd64.deb", { arch: "amd64", size: 2048 })],
        tags: ["dist"],
      }),
    );
    expect(text).toMatch(/^build +hello\/1\.0-1 \(id 4\)$/m);
    expect(text).toMatch(/^took +1m 05s$/m);
    expect(text).toMatch(/^tags +dist$/m);
    expect(text).toMatch(/^amd64 +closed +11$/m);
    expect(text).toMatch(
      new RegExp(
        `^hello_1\\.0-1_amd64\\.deb +deb +amd64 +2\\.0 KiB +${sha256("hello_1.0-1_amd64.deb")}$`,
        "m",
      ),
    );
  });
});
