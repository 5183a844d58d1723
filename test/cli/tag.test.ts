import { InvalidArgumentError } from "commander";
import { describe, expect, it } from "vitest";
import { parseNvr } from "../../src/cli/build.js";
import { describeChange, entrySource } from "../../src/cli/package.js";
import {
  buildTagPatch,
  formatExtraValue,
  formatInheritanceTree,
  formatTagDetail,
  parseExtraAssignment,
  parseExtraValue,
} from "../../src/cli/tag.js";
import type { TagDetailJson, TagWalkEntryJson } from "../../src/client/types.js";
import { KilnError } from "../../src/errors/catalogue.js";

describe("--extra KEY=VALUE", () => {
  it("takes JSON when the value parses, else the text", () => {
    expect(parseExtraValue("4")).toBe(4);
    expect(parseExtraValue("-1.5")).toBe(-1.5);
    expect(parseExtraValue("true")).toBe(true);
    expect(parseExtraValue("false")).toBe(false);
    expect(parseExtraValue('"12"')).toBe("12");
    expect(parseExtraValue("[1,2]")).toEqual([1, 2]);
    expect(parseExtraValue('{"a":1}')).toEqual({ a: 1 });
    expect(parseExtraValue("bookworm")).toBe("bookworm");
    expect(parseExtraValue("")).toBe("");
    expect(parseExtraValue("1.2.3")).toBe("1.2.3");
    expect(parseExtraValue("True")).toBe("True");
  });

  it("refuses null, which would remove the key", () => {
    expect(() => parseExtraValue("null")).toThrow(/--remove-extra/);
  });

  it("splits at the first =", () => {
    expect(parseExtraAssignment("jobs=4")).toEqual(["jobs", 4]);
    expect(parseExtraAssignment("opts=a=b")).toEqual(["opts", "a=b"]);
    expect(parseExtraAssignment("empty=")).toEqual(["empty", ""]);
    for (const bad of ["novalue", "=3", " =3"]) {
      expect(() => parseExtraAssignment(bad), bad).toThrow(InvalidArgumentError);
    }
  });

  it("prints values so that --extra takes them back unchanged", () => {
    for (const value of [4, true, "bookworm", "12", "true", "", "a b", { a: [1, "x"] }, [1], "null"]) {
      const shown = formatExtraValue(value);
      expect(parseExtraValue(shown), shown).toEqual(value);
    }
    expect(formatExtraValue("bookworm")).toBe("bookworm");
    expect(formatExtraValue("12")).toBe('"12"');
  });
});

describe("buildTagPatch", () => {
  it("turns the flags into the PATCH body", () => {
    expect(
      buildTagPatch({
        rename: "new",
        arches: ["amd64"],
        perm: "release",
        lock: true,
        extra: { jobs: 4 },
        removeExtra: ["old"],
      }),
    ).toEqual({
      rename: "new",
      arches: ["amd64"],
      perm: "release",
      locked: true,
      extra: { jobs: 4, old: null },
    });
  });

  it("maps --no-arches, --no-perm and --unlock to null, null and false", () => {
    expect(buildTagPatch({ arches: false, perm: false, unlock: true })).toEqual({
      arches: null,
      perm: null,
      locked: false,
    });
  });

  it("refuses an edit that changes nothing, or sets and removes one key", () => {
    expect(() => buildTagPatch({})).toThrow(KilnError);
    expect(() => buildTagPatch({ extra: {}, removeExtra: [] })).toThrow(/nothing to change/);
    expect(() => buildTagPatch({ extra: { a: 1 }, removeExtra: ["a"] })).toThrow(/both name a/);
  });
});

function entry(
  tag: string,
  child: string,
  depth: number,
  priority: number,
  over: Partial<TagWalkEntryJson> = {},
): TagWalkEntryJson {
  return {
    tag,
    tagId: 0,
    child,
    depth,
    priority,
    filters: [],
    noconfig: false,
    intransitive: false,
    maxdepthRemaining: null,
    ...over,
  };
}

describe("formatInheritanceTree", () => {
  it("draws the walk as a tree with each link's options", () => {
    const walk = [
      entry("mid", "dist", 1, 10),
      entry("base", "mid", 2, 0, { maxdepthRemaining: 1, filters: ["^lib"] }),
      entry("deep", "base", 3, 5, { maxdepthRemaining: 0, filters: ["^lib", "^libz"] }),
      entry("other", "mid", 2, 7),
      entry("side", "dist", 1, 20, { noconfig: true, intransitive: true }),
      entry("base", "side", 2, 1, { noconfig: true }),
    ];
    expect(formatInheritanceTree("dist", walk)).toBe(
      [
        "dist",
        "├─ mid  (priority 10)",
        "│  ├─ base  (priority 0, maxdepth 1, filter ^lib)",
        "│  │  └─ deep  (priority 5, maxdepth 0, filter ^lib and ^libz)",
        "│  └─ other  (priority 7)",
        "└─ side  (priority 20, noconfig, intransitive)",
        "   └─ base  (priority 1, noconfig)",
        "",
      ].join("\n"),
    );
  });

  it("is the tag alone when it inherits nothing", () => {
    expect(formatInheritanceTree("lonely", [])).toBe("lonely\n");
  });
});

describe("formatTagDetail", () => {
  it("shows the fields, parents, walk and effective build config", () => {
    const tag: TagDetailJson = {
      id: 3,
      name: "dist",
      arches: null,
      perm: null,
      locked: true,
      extra: { jobs: 4 },
      createdAt: "2025-01-01T00:00:00.000Z",
      parents: [
        {
          parent: "base",
          parentId: 1,
          priority: 10,
          maxdepth: 2,
          intransitive: false,
          noconfig: true,
          pkgFilter: "^lib",
        },
      ],
      walk: [entry("base", "dist", 1, 10, { noconfig: true, maxdepthRemaining: 2, filters: ["^lib"] })],
      config: { arches: ["amd64", "arm64"], extra: { jobs: 4, distribution: "bookworm" } },
      event: 42,
    };
    const text = formatTagDetail(tag, Date.parse("2025-01-01T00:01:00Z"));
    expect(text).toMatch(/^tag +dist \(id 3\)$/m);
    expect(text).toMatch(/^arches +none of its own \(inherited\)$/m);
    expect(text).toMatch(/^locked +yes$/m);
    expect(text).toMatch(/^event +42$/m);
    expect(text).toMatch(/^ +10 +base +2 +no +yes +\^lib$/m);
    expect(text).toContain("dist\n└─ base  (priority 10, maxdepth 2, filter ^lib, noconfig)\n");
    expect(text).toMatch(/^arches +amd64, arm64$/m);
    expect(text).toMatch(/^extra +distribution=bookworm\n +jobs=4$/m);
  });
});

describe("package helpers", () => {
  it("say what changed and where an entry comes from", () => {
    expect(describeChange("add", "dist", ["a", "b"], "alice")).toBe("Added a, b to dist (owner alice).");
    expect(describeChange("block", "dist", ["a"])).toBe("Blocked a in dist.");
    expect(entrySource({ package: "a", blocked: false, owner: "x", tag: "base", inherited: true })).toBe(
      "base (inherited)",
    );
    expect(entrySource({ package: "a", blocked: false, owner: "x", tag: "dist", inherited: false })).toBe(
      "dist",
    );
  });
});

describe("parseNvr", () => {
  it("takes SOURCE/VERSION and nothing else", () => {
    expect(parseNvr("hello/1.0-1")).toBe("hello/1.0-1");
    expect(parseNvr("hello/2:1.0~rc1-1")).toBe("hello/2:1.0~rc1-1");
    for (const bad of ["hello", "/1.0", "hello/", "a/b/c", ""]) {
      expect(() => parseNvr(bad), bad).toThrow(InvalidArgumentError);
    }
  });
});
