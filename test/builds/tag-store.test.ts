import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  addParent,
  changePackages,
  createTag,
  createTarget,
  deleteTag,
  describeTag,
  editTag,
  latestInTag,
  listPackages,
  removeParent,
  tagBuild,
  untagBuild,
  assertPackageAllowed,
  type Actor,
} from "../../src/builds/tag-store.js";
import { KilnError } from "../../src/errors/catalogue.js";
import { createTestDb, DIALECTS, ManualClock, postgresAvailable, type TestDb } from "../helpers/db.js";

const pgOk = await postgresAvailable();
const dialects = DIALECTS.filter((d) => d === "sqlite" || pgOk);
const admin: Actor = { name: "admin", isAdmin: true };

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    if (err instanceof KilnError) return err.code;
    throw err;
  }
  return "no error";
}

describe.each(dialects)("tags, packages and tagging on %s", (dialect) => {
  let t: TestDb;
  const clock = new ManualClock();
  const deps = () => ({ db: t.db, clock });
  beforeAll(async () => {
    t = await createTestDb(dialect);
  });
  afterAll(async () => {
    await t.cleanup();
  });

  async function completeBuild(source: string, version: string): Promise<number> {
    const row = await t.db.kysely
      .insertInto("builds")
      .values({
        source,
        version,
        state: "complete",
        owner: "alice",
        target_id: null,
        scratch: 0,
        task_id: null,
        created_at: clock.now(),
        completed_at: clock.now(),
      })
      .returning("id")
      .executeTakeFirstOrThrow();
    return row.id;
  }

  it("creates, edits and refuses duplicate or bad tags", async () => {
    const tag = await createTag(deps(), { name: "base", arches: ["amd64", "arm64"], extra: { a: 1 } }, admin);
    expect(tag).toMatchObject({ name: "base", arches: ["amd64", "arm64"], locked: false, extra: { a: 1 } });
    expect(await code(createTag(deps(), { name: "base" }, admin))).toBe("TAG_EXISTS");
    expect(await code(createTag(deps(), { name: "../x" }, admin))).toBe("INVALID_NAME");
    expect(await code(createTag(deps(), { name: "x", arches: ["all"] }, admin))).toBe("INVALID_ARCHITECTURE");
    const edited = await editTag(deps(), "base", { extra: { b: "two", a: null } }, admin);
    expect(edited.extra).toEqual({ b: "two" });
  });

  it("walks inheritance, merges config through it, and honours noconfig", async () => {
    await createTag(deps(), { name: "mid", extra: { b: "mid", c: 3 } }, admin);
    await createTag(deps(), { name: "leaf" }, admin);
    await addParent(deps(), "mid", { parent: "base", priority: 10 }, admin);
    await addParent(deps(), "leaf", { parent: "mid", priority: 10 }, admin);
    expect(await code(addParent(deps(), "leaf", { parent: "base", priority: 10 }, admin))).toBe(
      "INHERITANCE_PRIORITY_TAKEN",
    );
    expect(await code(addParent(deps(), "leaf", { parent: "leaf", priority: 5 }, admin))).toBe(
      "INHERITANCE_SELF",
    );
    const leaf = await describeTag(deps(), "leaf");
    expect(leaf.walk.map((w) => [w.tag, w.depth])).toEqual([
      ["mid", 1],
      ["base", 2],
    ]);
    expect(leaf.config).toEqual({ arches: ["amd64", "arm64"], extra: { b: "mid", c: 3 } });

    await createTag(deps(), { name: "isolated" }, admin);
    await addParent(deps(), "isolated", { parent: "base", priority: 1, noconfig: true }, admin);
    expect((await describeTag(deps(), "isolated")).config).toEqual({ arches: null, extra: {} });
  });

  it("takes the first package entry along the walk, so children can block and unblock", async () => {
    await changePackages(
      deps(),
      "base",
      { action: "add", packages: ["hello", "world"], owner: "alice" },
      admin,
    );
    await changePackages(deps(), "base", { action: "block", packages: ["world"] }, admin);
    let leaf = await listPackages(deps(), "leaf");
    expect(leaf.map((p) => [p.package, p.blocked, p.tag, p.inherited])).toEqual([
      ["hello", false, "base", true],
      ["world", true, "base", true],
    ]);
    await changePackages(deps(), "leaf", { action: "unblock", packages: ["world"] }, admin);
    await changePackages(deps(), "leaf", { action: "block", packages: ["hello"] }, admin);
    leaf = await listPackages(deps(), "leaf");
    expect(leaf.map((p) => [p.package, p.blocked, p.tag])).toEqual([
      ["hello", true, "leaf"],
      ["world", false, "leaf"],
    ]);
    expect(await code(assertPackageAllowed(t.db.kysely, "leaf", "hello"))).toBe("PACKAGE_BLOCKED");
    expect(await code(assertPackageAllowed(t.db.kysely, "leaf", "nope"))).toBe("PACKAGE_NOT_LISTED");
    await assertPackageAllowed(t.db.kysely, "leaf", "world");
    expect(
      await code(
        changePackages(deps(), "leaf", { action: "add", packages: ["Bad_Name"], owner: "x" }, admin),
      ),
    ).toBe("INVALID_PACKAGE_NAME");
  });

  it("answers latest builds through inheritance, and as of a past event", async () => {
    const w1 = await completeBuild("world", "1.0-1");
    await tagBuild(deps(), "base", "world/1.0-1", admin);
    const before = (await describeTag(deps(), "leaf")).event;
    expect((await latestInTag(deps(), "leaf")).map((b) => [b.nvr, b.tag, b.inherited])).toEqual([
      ["world/1.0-1", "base", true],
    ]);
    await completeBuild("world", "1.1-1");
    await tagBuild(deps(), "leaf", "world/1.1-1", admin);
    expect((await latestInTag(deps(), "leaf")).map((b) => [b.nvr, b.tag])).toEqual([["world/1.1-1", "leaf"]]);
    // As of the earlier event, the leaf still saw the base's build.
    expect((await latestInTag(deps(), "leaf", before)).map((b) => b.nvr)).toEqual(["world/1.0-1"]);
    expect(await code(tagBuild(deps(), "leaf", "world/1.1-1", admin))).toBe("BUILD_ALREADY_TAGGED");
    await untagBuild(deps(), "leaf", "world/1.1-1", admin);
    expect((await latestInTag(deps(), "leaf")).map((b) => b.buildId)).toEqual([w1]);
    expect(await code(untagBuild(deps(), "leaf", "world/1.1-1", admin))).toBe("BUILD_NOT_TAGGED");
    // hello is blocked in leaf: its builds are not "latest" there even when tagged in base.
    await completeBuild("hello", "2.0");
    await tagBuild(deps(), "base", "hello/2.0", admin);
    expect((await latestInTag(deps(), "leaf")).map((b) => b.source)).toEqual(["world"]);
    expect((await latestInTag(deps(), "base")).map((b) => b.source).sort()).toEqual(["hello"]);
  });

  it("refuses changes to a locked tag unless an admin forces them", async () => {
    await editTag(deps(), "mid", { locked: true }, admin);
    const user: Actor = { name: "bob", isAdmin: false };
    expect(
      await code(changePackages(deps(), "mid", { action: "add", packages: ["x1"], owner: "bob" }, user)),
    ).toBe("TAG_LOCKED");
    expect(
      await code(changePackages(deps(), "mid", { action: "add", packages: ["x1"], owner: "bob" }, admin)),
    ).toBe("TAG_LOCKED");
    await changePackages(
      deps(),
      "mid",
      { action: "add", packages: ["x1"], owner: "bob" },
      { ...admin, force: true },
    );
    await editTag(deps(), "mid", { locked: false }, admin);
  });

  it("manages targets and will not delete a tag in use", async () => {
    await createTarget(deps(), { name: "leaf-target", buildTag: "mid", destTag: "leaf" }, admin);
    expect(
      await code(createTarget(deps(), { name: "leaf-target", buildTag: "mid", destTag: "leaf" }, admin)),
    ).toBe("TARGET_EXISTS");
    expect(await code(createTarget(deps(), { name: "t2", buildTag: "nope", destTag: "leaf" }, admin))).toBe(
      "TAG_NOT_FOUND",
    );
    expect(await code(deleteTag(deps(), "leaf", admin))).toBe("TAG_IN_USE");
    expect(await code(deleteTag(deps(), "base", admin))).toBe("TAG_IN_USE");
    await removeParent(deps(), "isolated", "base", admin);
    await deleteTag(deps(), "isolated", admin);
  });
});
