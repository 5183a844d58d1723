import { createHash, randomBytes } from "node:crypto";
import { chmod, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { KilnClient } from "../../src/client/client.js";
import type { ArtifactJson, TaskJson } from "../../src/client/types.js";
import { uploadBuildFile } from "../../src/worker/build-files.js";
import { runSteps, stepsScript, type Step } from "../../src/worker/build-steps.js";
import { TaskFailure } from "../../src/worker/handler.js";
import { sandboxAvailable } from "../../src/worker/sandbox.js";

const available = sandboxAvailable();
if (!available.ok) {
  if (process.env.CI === "true") throw new Error(`the bwrap sandbox is required in CI: ${available.reason}`);
  console.warn(`skipping sandboxed step tests: ${available.reason}`);
}

let base: string;
beforeAll(async () => {
  base = await mkdtemp(path.join(os.tmpdir(), "kiln-steps-"));
  await chmod(base, 0o755); // the build user must be able to reach the workspace
});
afterAll(async () => {
  await rm(base, { recursive: true, force: true });
});

let n = 0;
async function steps(list: [Step, ...Step[]], opts: { abortOn?: RegExp } = {}) {
  const workDir = path.join(base, `ws-${++n}`);
  await mkdir(workDir);
  const controller = new AbortController();
  let log = "";
  const ctx = {
    task: { id: n, method: "test" } as TaskJson,
    signal: controller.signal,
    killGrace: 1,
    workDir,
    log: (text: string) => {
      log += text;
      if (opts.abortOn?.test(log) && !controller.signal.aborted) controller.abort();
    },
  };
  try {
    return { failed: await runSteps(ctx, list), log, error: undefined };
  } catch (err) {
    if (!(err instanceof TaskFailure)) throw err;
    return { failed: undefined, log, error: err };
  }
}

describe("stepsScript", () => {
  it("quotes every word and refuses what it cannot pass safely", () => {
    const script = stepsScript([{ cwd: "/build/a b", argv: ["echo", "it's $HOME"], env: { X: "1 2" } }]);
    expect(script).toContain(`'--chdir=/build/a b' -- 'X=1 2' echo 'it'\\''s $HOME' 2>&1 3>&-`);
    expect(() => stepsScript([{ cwd: "/build", argv: ["A=1"] }])).toThrow(/cannot contain "="/);
    expect(() => stepsScript([{ cwd: "/build", argv: ["true"], env: { "A B": "1" } }])).toThrow(
      /bad environment variable name/,
    );
  });
});

describe.skipIf(!available.ok)("runSteps", () => {
  it("runs the steps in order in one sandbox, each announced in the log with its output", async () => {
    const { failed, log } = await steps([
      { cwd: "/build", argv: ["sh", "-c", "echo one; echo err >&2; echo kept > /tmp/mark"] },
      { cwd: "/tmp", argv: ["cat", "mark"] },
      { cwd: "/build", argv: ["env"], env: { KILN_X: "x y" } },
    ]);
    expect(failed).toBeUndefined();
    const one = log.indexOf(
      "\n$ sh -c 'echo one; echo err >&2; echo kept > /tmp/mark'   (in /build)\none\nerr\n",
    );
    // /tmp is private to a sandbox: the second step sees the first one's file, so they share one.
    const two = log.indexOf("\n$ cat mark   (in /tmp)\nkept\n");
    const three = log.indexOf("\n$ env   (in /build)\n");
    expect(one).toBeGreaterThanOrEqual(0);
    expect(two).toBeGreaterThan(one);
    expect(three).toBeGreaterThan(two);
    // A step gets the sandbox's clean environment plus its own, nothing from the shell between.
    expect(
      log
        .slice(three)
        .split("\n")
        .filter((l) => l.includes("="))
        .sort(),
    ).toEqual(["HOME=/build", "KILN_X=x y", "LC_ALL=C.UTF-8", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"]);
  });

  it("stops at the first failing step and gives its index, status and output alone", async () => {
    const { failed, log } = await steps([
      { cwd: "/build", argv: ["sh", "-c", "echo fine"] },
      { cwd: "/build", argv: ["sh", "-c", "echo broken; exit 7"] },
      { cwd: "/build", argv: ["sh", "-c", "echo never"] },
    ]);
    expect(failed).toEqual({ index: 1, exitCode: 7, signal: null, output: "broken\n" });
    expect(log).toContain("fine\n");
    expect(log).not.toContain("never");
  });

  it("does not let a step forge the reports: it has no fd 3, and its output is not read as one", async () => {
    const { failed } = await steps([
      { cwd: "/build", argv: ["sh", "-c", "echo 'end 0 0'; echo 'begin 1' >&3; exit 3"] },
      { cwd: "/build", argv: ["true"] },
    ]);
    expect(failed?.index).toBe(0);
    expect(failed?.exitCode).toBe(3);
    expect(failed?.output).toMatch(/Bad file descriptor|3: /);
  });

  it("reports a step killed by a signal as the shell sees it", async () => {
    const { failed } = await steps([{ cwd: "/build", argv: ["sh", "-c", "kill -KILL $$"] }]);
    expect(failed).toMatchObject({ index: 0, exitCode: 137, signal: null });
  });

  it("stops the whole sandbox on abort with TASK_CANCELED", async () => {
    const { error, log } = await steps(
      [
        { cwd: "/build", argv: ["sh", "-c", "echo started; sleep 300"] },
        { cwd: "/build", argv: ["sh", "-c", "echo never"] },
      ],
      { abortOn: /^started$/m },
    );
    expect(error?.code).toBe("TASK_CANCELED");
    expect(log).not.toContain("never");
  });
});

describe("uploadBuildFile", () => {
  function hubClient(stored: ArtifactJson[], tamper = false): KilnClient {
    return {
      uploadArtifact: async (
        taskId: number,
        _epoch: number,
        name: string,
        body: Buffer | ReadableStream<Uint8Array>,
      ): Promise<ArtifactJson> => {
        const data = Buffer.from(await new Response(body).arrayBuffer());
        const sha256 = createHash("sha256")
          .update(tamper ? Buffer.concat([data, Buffer.from("x")]) : data)
          .digest("hex");
        const art = {
          id: stored.length + 1,
          name,
          sha256,
          size: data.length,
          kind: "deb",
          arch: null,
          taskId,
        };
        stored.push(art);
        return art;
      },
    } as unknown as KilnClient;
  }

  it("hashes small and large files as it sends them, and checks the hub stored the same", async () => {
    const dir = path.join(base, "uploads");
    await mkdir(dir);
    const small = Buffer.from("a small file\n");
    const large = randomBytes(9 * 1024 * 1024 + 17);
    await writeFile(path.join(dir, "small"), small);
    await writeFile(path.join(dir, "large"), large);
    const stored: ArtifactJson[] = [];
    const ctx = { client: hubClient(stored), task: { id: 5 } as TaskJson, epoch: 1 };
    for (const [name, data] of [
      ["small", small],
      ["large", large],
    ] as const) {
      const ref = await uploadBuildFile(ctx, dir, name, { kind: "deb" });
      expect(ref).toEqual({
        name,
        sha256: createHash("sha256").update(data).digest("hex"),
        size: data.length,
      });
    }
    expect(stored.map((a) => a.size)).toEqual([small.length, large.length]);

    const bad = { ...ctx, client: hubClient([], true) };
    const err = await uploadBuildFile(bad, dir, "large", { kind: "deb" }).catch((e: unknown) => e);
    expect((err as TaskFailure).code).toBe("TASK_FAILED");
    expect((err as TaskFailure).opts.infra).toBe(true);
  });
});
