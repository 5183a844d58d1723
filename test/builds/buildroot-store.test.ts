/**
 * Buildroot bases on the hub: validation, the createBuildroot task the hub queues, the finalizer
 * that follows it (driven through the real worker API with a host token, as a worker would),
 * deletion, the tag setting with inheritance, and garbage collection of deleted bases' tarballs.
 * No debootstrap runs here: the worker side is tested apart.
 */
import { createHash, randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { getReadyBuildroot, validateBuildrootInput } from "../../src/builds/buildroot-store.js";
import type { KilnClient } from "../../src/client/client.js";
import type {
  BuildrootJson,
  CreateBuildrootRequest,
  CreateBuildrootTaskArgs,
  CreateBuildrootTaskResult,
  TaskJson,
} from "../../src/client/types.js";
import { KilnError } from "../../src/errors/catalogue.js";
import type { GcReport } from "../../src/publish/collect-garbage.js";
import { DIALECTS, postgresAvailable } from "../helpers/db.js";
import { startTestHub, type TestHub } from "../helpers/hub.js";

const pgOk = await postgresAvailable();
const dialects = DIALECTS.filter((d) => d === "sqlite" || pgOk);

const MIRROR = "http://deb.debian.org/debian";
const sha256 = (data: Buffer) => createHash("sha256").update(data).digest("hex");

/** The KilnError a call fails with; a call that succeeds fails the test. */
async function errorOf(p: Promise<unknown>): Promise<KilnError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof KilnError) return err;
    throw err;
  }
  throw new Error("expected the call to fail");
}

const code = async (p: Promise<unknown>): Promise<string> => (await errorOf(p)).code;

describe.each(dialects)("buildroot bases on %s", (dialect) => {
  let t: TestHub;
  /** A worker that serves the buildroot channel for every arch the tests use. */
  let worker: KilnClient;

  beforeAll(async () => {
    t = await startTestHub(dialect);
    const host = await t.admin.addHost({
      name: `br-worker-${dialect}`,
      arches: ["amd64", "arm64", "riscv64", "s390x", "ppc64el", "armhf", "i386", "mips64el"],
      channels: ["buildroot"],
      capacity: 4,
    });
    worker = t.client(host.token);
    await worker.hello({ running: [], capabilities: [], version: "test" });
  });
  afterAll(async () => {
    await t?.cleanup();
  });

  const db = () => t.hub.deps.db.kysely;
  const rowCount = async () =>
    Number(
      (
        await db()
          .selectFrom("buildroots")
          .select((eb) => eb.fn.countAll<number>().as("n"))
          .executeTakeFirst()
      )?.n,
    );
  const buildrootTasks = async () =>
    (await t.admin.listTasks({ limit: 1000 })).tasks.filter((x) => x.method === "createBuildroot");

  /** Claims the base's task as the worker would; it must be that task. */
  async function claimFor(base: BuildrootJson): Promise<number> {
    const claimed = await worker.claim(5);
    expect(claimed?.task.id).toBe(base.taskId);
    await worker.startTask(claimed!.task.id, claimed!.epoch);
    return claimed!.epoch;
  }

  /** A fake base tarball, uploaded as the task's artifact; the result a worker would close with. */
  async function uploadBase(base: BuildrootJson, epoch: number, content: Buffer = randomBytes(4096)) {
    await worker.uploadArtifact(base.taskId!, epoch, `${base.name}.tar.zst`, content, { kind: "buildroot" });
    const result: CreateBuildrootTaskResult = {
      sha256: sha256(content),
      size: content.length,
      info: {
        packages: 2,
        debootstrap: "1.0.128+nmu2",
        apt: "2.6.1",
        installed: ["build-essential=12.9", "fakeroot=1.31-1.2"],
      },
    };
    return result;
  }

  /** A base made end to end through the worker API. */
  async function makeReady(
    name: string,
    arch: string,
    content?: Buffer<ArrayBuffer>,
  ): Promise<BuildrootJson> {
    const { buildroot } = await t.admin.createBuildroot({ name, suite: "bookworm", mirror: MIRROR, arch });
    const epoch = await claimFor(buildroot);
    const result = await uploadBase(buildroot, epoch, content);
    await worker.completeTask(buildroot.taskId!, epoch, result);
    const ready = await t.admin.getBuildroot(name);
    expect(ready.state).toBe("ready");
    return ready;
  }

  it("refuses bad input with stable codes and stores nothing", async () => {
    const good: CreateBuildrootRequest = { name: "good", suite: "bookworm", mirror: MIRROR, arch: "amd64" };
    const cases: [Partial<CreateBuildrootRequest> & Record<string, unknown>, string][] = [
      [{ name: "../etc" }, "INVALID_NAME"],
      [{ name: "" }, "INVALID_NAME"],
      [{ name: "x".repeat(129) }, "INVALID_NAME"],
      [{ suite: "Bookworm" }, "INVALID_SUITE"],
      [{ suite: "book worm" }, "INVALID_SUITE"],
      [{ suite: "-rc" }, "INVALID_SUITE"],
      [{ mirror: "ftp://deb.debian.org/debian" }, "INVALID_MIRROR"],
      [{ mirror: "deb.debian.org/debian" }, "INVALID_MIRROR"],
      [{ mirror: "http://deb.debian.org/debian main" }, "INVALID_MIRROR"],
      [{ mirror: "http://deb.debian.org/debian\n" }, "INVALID_MIRROR"],
      [{ mirror: "" }, "INVALID_MIRROR"],
      [{ mirror: `http://x/${"a".repeat(1100)}` }, "INVALID_MIRROR"],
      [{ arch: "AMD64" }, "INVALID_ARCHITECTURE"],
      [{ arch: "all" }, "INVALID_ARCHITECTURE"],
      [{ include: ["Bad_Name"] }, "INVALID_PACKAGE_NAME"],
      [{ include: ["curl", "x"] }, "INVALID_PACKAGE_NAME"],
      [{ include: Array.from({ length: 201 }, (_, i) => `pkg${i}`) }, "VALIDATION_FAILED"],
      [{ suite: undefined }, "VALIDATION_FAILED"],
    ];
    for (const [patch, expected] of cases) {
      const body = { ...good, ...patch };
      expect(await code(t.admin.createBuildroot(body)), JSON.stringify(patch)).toBe(expected);
    }
    const { token } = await t.admin.createToken({ user: "brenda", role: "user" });
    expect(await code(t.client(token).createBuildroot(good))).toBe("ADMIN_REQUIRED");
    expect(await code(t.client(token).deleteBuildroot("good"))).toBe("ADMIN_REQUIRED");
    // The API's schema makes a lone string a list; the store itself refuses anything but a list.
    const notAList = await errorOf(
      Promise.resolve().then(() =>
        validateBuildrootInput({ ...good, arch: "amd64", include: "curl" as unknown as string[] }),
      ),
    );
    expect(notAList.code).toBe("VALIDATION_FAILED");
    expect(await rowCount()).toBe(0);
    expect(await buildrootTasks()).toEqual([]);
  });

  it("records a base as building and queues its task on the buildroot channel with the exact args", async () => {
    const created = await t.admin.createBuildroot({
      name: "queued",
      suite: "trixie",
      mirror: MIRROR,
      arch: "mips64el",
      include: ["curl", "git", "curl"],
    });
    const { buildroot, task } = created;
    expect(buildroot).toMatchObject({
      name: "queued",
      suite: "trixie",
      mirror: MIRROR,
      arch: "mips64el",
      include: ["curl", "git"],
      state: "building",
      sha256: null,
      size: null,
      info: null,
      taskId: task.id,
      error: null,
      owner: "admin",
      readyAt: null,
      deletedAt: null,
    });
    const args: CreateBuildrootTaskArgs = {
      buildrootId: buildroot.id,
      name: "queued",
      suite: "trixie",
      mirror: MIRROR,
      arch: "mips64el",
      include: ["curl", "git"],
    };
    expect(task).toMatchObject({
      method: "createBuildroot",
      state: "free",
      channel: "buildroot",
      arch: "mips64el",
      weight: 1,
      timeout: 3600,
      args,
    } satisfies Partial<TaskJson>);
    // Not something a user queues by hand.
    expect(await code(t.admin.createTask({ method: "createBuildroot", args }))).toBe("FORBIDDEN");

    expect(await code(t.admin.createBuildroot({ name: "queued", suite: "bookworm", mirror: MIRROR }))).toBe(
      "BUILDROOT_EXISTS",
    );
    const notReady = await errorOf(getReadyBuildroot(db(), "queued"));
    expect(notReady.code).toBe("BUILDROOT_NOT_READY");
    expect(notReady.message).toContain(`still being made (task ${task.id})`);
    const events = await t.admin.listEvents({ type: "buildroot.created" });
    expect(events.events.map((e) => e.data)).toContainEqual({
      buildrootId: buildroot.id,
      name: "queued",
      suite: "trixie",
      arch: "mips64el",
      taskId: task.id,
    });

    // Deleting it while it is being made cancels its task; the row is deleted, not failed.
    const deleted = await t.admin.deleteBuildroot("queued");
    expect(deleted.state).toBe("deleted");
    expect((await t.admin.getTask(task.id)).state).toBe("canceled");
    const row = await db()
      .selectFrom("buildroots")
      .selectAll()
      .where("id", "=", buildroot.id)
      .executeTakeFirst();
    expect(row).toMatchObject({ state: "deleted" });
    expect(row?.deleted_at).not.toBeNull();
  });

  it("a task that closes with its tarball makes the base ready; the hub checks the artifact", async () => {
    const { buildroot } = await t.admin.createBuildroot({
      name: "bookworm-base",
      suite: "bookworm",
      mirror: MIRROR,
      arch: "arm64",
    });
    const epoch = await claimFor(buildroot);
    const content = randomBytes(10_000);
    const result = await uploadBase(buildroot, epoch, content);
    await worker.completeTask(buildroot.taskId!, epoch, result);

    const ready = await t.admin.getBuildroot("bookworm-base");
    expect(ready).toMatchObject({
      state: "ready",
      sha256: sha256(content),
      size: 10_000,
      info: result.info,
      error: null,
      tags: [],
    });
    expect(ready.readyAt).not.toBeNull();
    expect(await getReadyBuildroot(db(), "bookworm-base")).toMatchObject({ sha256: sha256(content) });
    expect(await t.hub.deps.blobs.has(sha256(content))).toBe(true);
    const events = await t.admin.listEvents({ type: "buildroot.ready" });
    expect(events.events.map((e) => e.data)).toContainEqual({
      buildrootId: buildroot.id,
      name: "bookworm-base",
      taskId: buildroot.taskId,
      sha256: sha256(content),
      size: 10_000,
    });
    const listed = await t.admin.listBuildroots();
    expect(listed.map((b) => `${b.name}:${b.state}`)).toContain("bookworm-base:ready");
  });

  it("a task that closes without the tarball it claims leaves the base failed, saying why", async () => {
    const { buildroot } = await t.admin.createBuildroot({
      name: "liar",
      suite: "bookworm",
      mirror: MIRROR,
      arch: "riscv64",
    });
    const epoch = await claimFor(buildroot);
    const result = await uploadBase(buildroot, epoch);
    await worker.completeTask(buildroot.taskId!, epoch, { ...result, sha256: "0".repeat(64) });
    const failed = await t.admin.getBuildroot("liar");
    expect(failed.state).toBe("failed");
    expect(failed.sha256).toBeNull();
    expect(failed.error).toContain(`uploaded no buildroot artifact with sha256 ${"0".repeat(64)}`);
  });

  it("a failed task leaves the base failed with its message; a retry that closes makes it ready", async () => {
    const { buildroot } = await t.admin.createBuildroot({
      name: "unreachable",
      suite: "bookworm",
      mirror: "http://mirror.invalid/debian",
      arch: "s390x",
    });
    const epoch = await claimFor(buildroot);
    const why =
      "debootstrap: E: Failed getting release file http://mirror.invalid/debian/dists/bookworm/Release";
    await worker.failTask(buildroot.taskId!, epoch, { code: "BUILDROOT_CREATE_FAILED", message: why });
    const failed = await t.admin.getBuildroot("unreachable");
    expect(failed.state).toBe("failed");
    expect(failed.error).toBe(`${why} [BUILDROOT_CREATE_FAILED]`);
    const notReady = await errorOf(getReadyBuildroot(db(), "unreachable"));
    expect(notReady.code).toBe("BUILDROOT_NOT_READY");
    expect(notReady.message).toContain("failed");
    expect(notReady.message).toContain(why);
    const events = await t.admin.listEvents({ type: "buildroot.failed" });
    expect(events.events.some((e) => e.data.name === "unreachable")).toBe(true);
    // A tag may not name a base that failed.
    await t.admin.createTag({ name: "uses-failed" });
    expect(await code(t.admin.editTag("uses-failed", { extra: { buildroot: "unreachable" } }))).toBe(
      "BUILDROOT_NOT_READY",
    );

    await t.admin.retryTask(buildroot.taskId!);
    const again = await claimFor(buildroot);
    const result = await uploadBase(buildroot, again);
    await worker.completeTask(buildroot.taskId!, again, result);
    expect(await t.admin.getBuildroot("unreachable")).toMatchObject({
      state: "ready",
      sha256: result.sha256,
      error: null,
    });
  });

  it("deletes softly: the name is free again and the old one is history", async () => {
    const first = await makeReady("short-lived", "ppc64el");
    const deleted = await t.admin.deleteBuildroot("short-lived");
    expect(deleted).toMatchObject({ id: first.id, state: "deleted", sha256: first.sha256 });
    expect(deleted.deletedAt).not.toBeNull();
    const gone = await errorOf(t.admin.getBuildroot("short-lived"));
    expect(gone.code).toBe("BUILDROOT_NOT_FOUND");
    expect(gone.message).toContain("was deleted");
    expect((await errorOf(getReadyBuildroot(db(), "short-lived"))).code).toBe("BUILDROOT_NOT_FOUND");
    expect(await code(t.admin.deleteBuildroot("short-lived"))).toBe("BUILDROOT_NOT_FOUND");
    expect((await errorOf(t.admin.getBuildroot("never-was"))).message).toContain("kiln buildroot list");

    expect((await t.admin.listBuildroots()).some((b) => b.name === "short-lived")).toBe(false);
    const all = await t.admin.listBuildroots({ all: true });
    expect(all.find((b) => b.id === first.id)?.state).toBe("deleted");
    const second = await makeReady("short-lived", "ppc64el");
    expect(second.id).not.toBe(first.id);
    const events = await t.admin.listEvents({ type: "buildroot.deleted" });
    expect(events.events.some((e) => e.data.buildrootId === first.id)).toBe(true);
  });

  it("tags name a base, checked at edit time, and child tags inherit it", async () => {
    const base = await makeReady("tag-base", "armhf");
    await t.admin.createTag({ name: "br-parent", arches: ["armhf"] });
    await t.admin.createTag({ name: "br-child" });
    await t.admin.addTagParent("br-child", { parent: "br-parent", priority: 10 });

    expect(await code(t.admin.editTag("br-parent", { extra: { buildroot: "no-such-base" } }))).toBe(
      "BUILDROOT_NOT_FOUND",
    );
    expect(await code(t.admin.editTag("br-parent", { extra: { buildroot: 42 } }))).toBe("VALIDATION_FAILED");
    expect(await code(t.admin.createTag({ name: "br-new", extra: { buildroot: "no-such-base" } }))).toBe(
      "BUILDROOT_NOT_FOUND",
    );
    expect((await t.admin.getTag("br-parent")).extra).toEqual({});
    expect((await t.admin.listTags()).some((x) => x.name === "br-new")).toBe(false);

    await t.admin.editTag("br-parent", { extra: { buildroot: base.name } });
    expect((await t.admin.getTag("br-parent")).buildroot).toEqual({ name: base.name, from: "br-parent" });
    const child = await t.admin.getTag("br-child");
    expect(child.buildroot).toEqual({ name: base.name, from: "br-parent" });
    expect(child.config.extra.buildroot).toBe(base.name);
    expect((await t.admin.getBuildroot(base.name)).tags).toEqual([
      { tag: "br-child", from: "br-parent" },
      { tag: "br-parent", from: "br-parent" },
    ]);

    // Deleting a base tags name is refused unless forced; the build then finds it gone.
    const inUse = await errorOf(t.admin.deleteBuildroot(base.name));
    expect(inUse.code).toBe("BUILDROOT_IN_USE");
    expect(inUse.message).toContain("br-parent");
    expect((await t.admin.getBuildroot(base.name)).state).toBe("ready");
    await t.admin.deleteBuildroot(base.name, { force: true });
    expect((await errorOf(getReadyBuildroot(db(), base.name))).code).toBe("BUILDROOT_NOT_FOUND");

    // Removing the setting (null) needs no base.
    await t.admin.editTag("br-parent", { extra: { buildroot: null } });
    expect((await t.admin.getTag("br-child")).buildroot).toBeNull();
  });

  it("garbage collection drops a deleted or failed base's tarball, unless a ready base has the same", async () => {
    const gc = async (): Promise<GcReport> => {
      const answer = await t.admin.repoTask<GcReport>("POST", "/api/v1/gc?minAge=0");
      expect(answer.task.state).toBe("closed");
      return answer.result as GcReport;
    };
    const shared = randomBytes(3000);
    const kept = await makeReady("gc-kept", "i386");
    const doomed = await makeReady("gc-doomed", "i386");
    const twinA = await makeReady("gc-twin-a", "i386", shared);
    const twinB = await makeReady("gc-twin-b", "i386", shared);
    expect(twinA.sha256).toBe(twinB.sha256);
    // A failed base's upload: the task closed with a result that does not match it.
    const { buildroot: bad } = await t.admin.createBuildroot({
      name: "gc-failed",
      suite: "bookworm",
      mirror: MIRROR,
      arch: "i386",
    });
    const epoch = await claimFor(bad);
    const badResult = await uploadBase(bad, epoch);
    await worker.completeTask(bad.taskId!, epoch, { ...badResult, size: badResult.size + 1 });
    expect((await t.admin.getBuildroot("gc-failed")).state).toBe("failed");

    await gc();
    for (const b of [kept, doomed, twinA]) expect(await t.hub.deps.blobs.has(b.sha256!)).toBe(true);
    expect(await t.hub.deps.blobs.has(badResult.sha256)).toBe(false);

    await t.admin.deleteBuildroot("gc-doomed");
    await t.admin.deleteBuildroot("gc-twin-a");
    const report = await gc();
    expect(report.blobs.removed).toBeGreaterThanOrEqual(1);
    expect(await t.hub.deps.blobs.has(doomed.sha256!)).toBe(false);
    expect(await t.hub.deps.blobs.has(kept.sha256!)).toBe(true);
    expect(await t.hub.deps.blobs.has(twinB.sha256!)).toBe(true);
  });
});
