import { describe, expect, it } from "vitest";
import {
  activeAt,
  buildConfig,
  effectivePackageList,
  findDescendants,
  isActiveAt,
  latestBuilds,
  passesFilters,
  validateNewLink,
  walkInheritance,
  type InheritanceEntry,
  type InheritanceLink,
  type PackageListEntry,
  type TagConfig,
  type TaggedBuild,
} from "../../src/builds/inheritance.js";
import { KilnError } from "../../src/errors/catalogue.js";

function link(
  tagId: number,
  parentId: number,
  priority: number,
  extra: Partial<InheritanceLink> = {},
): InheritanceLink {
  return {
    tagId,
    parentId,
    priority,
    maxdepth: null,
    intransitive: false,
    noconfig: false,
    pkgFilter: "",
    ...extra,
  };
}

function byChild(links: InheritanceLink[]): Map<number, InheritanceLink[]> {
  const map = new Map<number, InheritanceLink[]>();
  for (const l of links) map.set(l.tagId, [...(map.get(l.tagId) ?? []), l]);
  return map;
}

function walk(tagId: number, links: InheritanceLink[], eventId?: number): InheritanceEntry[] {
  return walkInheritance(tagId, byChild(links), eventId === undefined ? {} : { eventId });
}

const parents = (entries: InheritanceEntry[]) => entries.map((e) => e.parentId);

function reasonOf(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    if (err instanceof KilnError) return { code: err.code, reason: err.code };
    throw err;
  }
  return undefined;
}

describe("walkInheritance: order", () => {
  it("visits parents in ascending priority, each one's ancestors before the next parent", () => {
    const links = [link(1, 2, 10), link(1, 3, 5), link(3, 4, 0), link(2, 5, 0)];
    const entries = walk(1, links);
    expect(parents(entries)).toEqual([3, 4, 2, 5]);
    expect(entries.map((e) => [e.tagId, e.depth, e.priority])).toEqual([
      [1, 1, 5],
      [3, 2, 0],
      [1, 1, 10],
      [2, 2, 0],
    ]);
    expect(entries[1]?.path).toEqual([1, 3, 4]);
  });

  it("gives an empty walk for a tag without parents", () => {
    expect(walk(7, [link(1, 2, 0)])).toEqual([]);
  });

  it("cuts loops where a link leads back onto the current path", () => {
    const links = [link(1, 2, 0), link(2, 3, 0), link(3, 1, 0), link(3, 2, 1)];
    expect(parents(walk(1, links))).toEqual([2, 3]);
    expect(parents(walk(2, links))).toEqual([3, 1]);
    expect(parents(walk(3, [link(3, 3, 0)]))).toEqual([]);
  });
});

describe("walkInheritance: maxdepth", () => {
  it("maxdepth 0 takes the parent alone; 1 one level above it", () => {
    const above = [link(2, 3, 0), link(3, 4, 0)];
    expect(parents(walk(1, [link(1, 2, 0, { maxdepth: 0 }), ...above]))).toEqual([2]);
    expect(parents(walk(1, [link(1, 2, 0, { maxdepth: 1 }), ...above]))).toEqual([2, 3]);
    expect(parents(walk(1, [link(1, 2, 0), ...above]))).toEqual([2, 3, 4]);
  });

  it("limits only the path through the limited link", () => {
    const links = [link(1, 2, 0, { maxdepth: 0 }), link(1, 5, 1), link(2, 3, 0), link(5, 6, 0)];
    expect(parents(walk(1, links))).toEqual([2, 5, 6]);
  });

  it("combines an outer limit with a looser inner one to the outer remainder", () => {
    const chain = [link(3, 4, 0), link(4, 5, 0), link(5, 6, 0)];
    const entries = walk(1, [link(1, 2, 0, { maxdepth: 3 }), link(2, 3, 0, { maxdepth: 5 }), ...chain]);
    expect(parents(entries)).toEqual([2, 3, 4, 5]);
    expect(entries.map((e) => e.maxdepthRemaining)).toEqual([3, 2, 1, 0]);
  });

  it("combines a looser outer limit with a tighter inner one to the inner limit", () => {
    const chain = [link(3, 4, 0), link(4, 5, 0), link(5, 6, 0)];
    const entries = walk(1, [link(1, 2, 0, { maxdepth: 5 }), link(2, 3, 0, { maxdepth: 1 }), ...chain]);
    expect(parents(entries)).toEqual([2, 3, 4]);
    expect(entries.map((e) => e.maxdepthRemaining)).toEqual([5, 1, 0]);
  });

  it("reports an unlimited walk as null", () => {
    expect(walk(1, [link(1, 2, 0), link(2, 3, 0)]).map((e) => e.maxdepthRemaining)).toEqual([null, null]);
  });
});

describe("walkInheritance: intransitive links", () => {
  const links = [link(1, 2, 0, { intransitive: true }), link(2, 3, 0), link(0, 1, 0)];

  it("are followed from the tag that owns them, with the parent's own ancestors", () => {
    const entries = walk(1, links);
    expect(parents(entries)).toEqual([2, 3]);
    expect(entries[0]?.intransitive).toBe(true);
  });

  it("are not followed when their tag is reached from a child", () => {
    expect(parents(walk(0, links))).toEqual([1]);
  });
});

describe("walkInheritance: package filters", () => {
  it("accumulate along a path, outermost first", () => {
    const entries = walk(1, [
      link(1, 2, 0, { pkgFilter: "lib" }),
      link(2, 3, 0, { pkgFilter: "libfoo|libbar" }),
      link(1, 4, 1),
    ]);
    expect(entries.map((e) => e.filters)).toEqual([["lib"], ["lib", "libfoo|libbar"], []]);
  });

  it("match at the start of the name only, like Python's re.match", () => {
    expect(passesFilters("libfoo", ["lib", "libfoo|libbar"])).toBe(true);
    expect(passesFilters("libfoo2", ["libfoo|libbar"])).toBe(true);
    expect(passesFilters("xlibfoo", ["libfoo"])).toBe(false);
    expect(passesFilters("libbaz", ["lib", "libfoo|libbar"])).toBe(false);
    // The anchor covers every alternative, not just the first.
    expect(passesFilters("xbar", ["foo|bar"])).toBe(false);
    expect(passesFilters("anything", [])).toBe(true);
  });
});

describe("walkInheritance: a tag reached again", () => {
  it("is not walked again when the earlier visit was unrestricted", () => {
    const links = [link(1, 2, 1), link(1, 3, 2), link(2, 4, 0), link(3, 4, 0), link(4, 5, 0)];
    expect(parents(walk(1, links))).toEqual([2, 4, 5, 3]);
  });

  it("is walked again when the earlier visit had a package filter", () => {
    const links = [
      link(1, 2, 1, { pkgFilter: "foo" }),
      link(1, 3, 2),
      link(2, 4, 0),
      link(3, 4, 0),
      link(4, 5, 0),
    ];
    const entries = walk(1, links);
    expect(parents(entries)).toEqual([2, 4, 5, 3, 4, 5]);
    expect(entries.map((e) => e.filters.length)).toEqual([1, 1, 1, 0, 0, 0]);
  });

  it("is walked again, following Koji, even when the earlier filter was the same", () => {
    const links = [
      link(1, 2, 1, { pkgFilter: "foo" }),
      link(1, 3, 2, { pkgFilter: "foo" }),
      link(2, 4, 0),
      link(3, 4, 0),
    ];
    expect(parents(walk(1, links))).toEqual([2, 4, 3, 4]);
  });

  it("is walked again when the new path allows more levels above it", () => {
    const links = [
      link(1, 2, 1, { maxdepth: 1 }),
      link(1, 3, 2),
      link(2, 4, 0),
      link(3, 4, 0),
      link(4, 5, 0),
      link(5, 6, 0),
    ];
    expect(parents(walk(1, links))).toEqual([2, 4, 3, 4, 5, 6]);
  });

  it("is not walked again when the new path allows fewer levels", () => {
    const links = [
      link(1, 2, 1),
      link(1, 3, 2, { maxdepth: 1 }),
      link(2, 4, 0),
      link(3, 4, 0),
      link(4, 5, 0),
    ];
    expect(parents(walk(1, links))).toEqual([2, 4, 5, 3]);
  });

  it("is walked again when the earlier path was noconfig and the new one is not", () => {
    const links = [link(1, 2, 1, { noconfig: true }), link(1, 3, 2), link(2, 4, 0), link(3, 4, 0)];
    const entries = walk(1, links);
    expect(parents(entries)).toEqual([2, 4, 3, 4]);
    expect(entries.map((e) => e.noconfig)).toEqual([true, true, false, false]);
  });

  it("is not walked again when only the new path is noconfig", () => {
    const links = [link(1, 2, 1), link(1, 3, 2, { noconfig: true }), link(2, 4, 0), link(3, 4, 0)];
    expect(parents(walk(1, links))).toEqual([2, 4, 3]);
  });
});

describe("walkInheritance: noconfig", () => {
  it("marks every entry above a noconfig link, and only those", () => {
    const entries = walk(1, [link(1, 2, 0, { noconfig: true }), link(2, 3, 0), link(1, 4, 1), link(4, 5, 0)]);
    expect(entries.map((e) => [e.parentId, e.noconfig])).toEqual([
      [2, true],
      [3, true],
      [4, false],
      [5, false],
    ]);
  });
});

describe("walkInheritance: as of an event", () => {
  it("uses the links active at the event", () => {
    const links = [
      link(1, 2, 0, { createEvent: 1, revokeEvent: 10 }),
      link(1, 3, 0, { createEvent: 10 }),
      link(1, 4, 1, { createEvent: 20 }),
    ];
    expect(parents(walk(1, links, 5))).toEqual([2]);
    expect(parents(walk(1, links, 10))).toEqual([3]);
    expect(parents(walk(1, links))).toEqual([3, 4]);
  });
});

describe("isActiveAt / activeAt", () => {
  it("is Koji's event condition: create_event <= E < revoke_event", () => {
    const row = { createEvent: 5, revokeEvent: 9 };
    expect([4, 5, 8, 9].map((e) => isActiveAt(row, e))).toEqual([false, true, true, false]);
    expect(isActiveAt(row)).toBe(false);
    expect(isActiveAt({ createEvent: 5, revokeEvent: null })).toBe(true);
    expect(isActiveAt({}, 1)).toBe(true);
    expect(
      activeAt(
        [
          { id: 1, createEvent: 1 },
          { id: 2, createEvent: 3 },
        ],
        2,
      ),
    ).toEqual([{ id: 1, createEvent: 1 }]);
  });
});

describe("validateNewLink", () => {
  const existing = [link(1, 2, 10), link(1, 3, 20), link(9, 4, 30)];

  it("accepts a new parent at a free priority", () => {
    expect(() => validateNewLink(existing, link(1, 4, 30))).not.toThrow();
  });

  it("refuses a tag as its own parent", () => {
    expect(reasonOf(() => validateNewLink([], link(1, 1, 0)))).toEqual({
      code: "INHERITANCE_SELF",
      reason: "INHERITANCE_SELF",
    });
  });

  it("refuses a parent the tag already has", () => {
    expect(reasonOf(() => validateNewLink(existing, link(1, 2, 99)))).toMatchObject({
      reason: "INHERITANCE_DUPLICATE_PARENT",
    });
  });

  it("refuses a priority another link of the tag has", () => {
    expect(reasonOf(() => validateNewLink(existing, link(1, 5, 20)))).toMatchObject({
      reason: "INHERITANCE_PRIORITY_TAKEN",
    });
  });

  it("refuses a bad filter, priority or maxdepth", () => {
    expect(reasonOf(() => validateNewLink([], link(1, 5, 0, { pkgFilter: "lib(" })))).toMatchObject({
      reason: "INHERITANCE_BAD_FILTER",
    });
    expect(reasonOf(() => validateNewLink([], link(1, 5, 0.5)))).toMatchObject({
      reason: "INHERITANCE_INVALID",
    });
    expect(reasonOf(() => validateNewLink([], link(1, 5, 0, { maxdepth: -1 })))).toMatchObject({
      reason: "INHERITANCE_INVALID",
    });
  });
});

describe("findDescendants", () => {
  it("finds exactly the tags whose walk reaches the tag", () => {
    const links = [
      link(2, 1, 0),
      link(3, 2, 0, { intransitive: true }),
      link(4, 3, 0),
      link(5, 2, 0, { maxdepth: 0 }),
      link(6, 9, 0),
    ];
    expect(findDescendants(1, links)).toEqual([2, 3]);
    expect(findDescendants(2, links)).toEqual([3, 5]);
  });
});

// ---------------------------------------------------------------------------------------------

function pkg(name: string, extra: Partial<PackageListEntry> = {}): PackageListEntry {
  return { package: name, blocked: false, owner: "alice", ...extra };
}

describe("effectivePackageList", () => {
  // 1 (child) → 2 (priority 1) → 4 ; 1 → 3 (priority 2)
  const links = [link(1, 2, 1), link(1, 3, 2), link(2, 4, 0)];

  it("lets the tag's own entries override its ancestors' both ways, blocked entries included", () => {
    const entries = new Map([
      [1, [pkg("foo"), pkg("bar", { blocked: true })]],
      [2, [pkg("foo", { blocked: true }), pkg("bar"), pkg("baz", { blocked: true })]],
      [4, [pkg("baz"), pkg("qux", { owner: "carol" })]],
    ]);
    const list = effectivePackageList(1, walk(1, links), entries);
    expect([...list.values()].map((e) => [e.package, e.blocked, e.tagId, e.inherited])).toEqual([
      ["foo", false, 1, false], // unblocked here what a parent blocks
      ["bar", true, 1, false], // blocked here what a parent lists
      ["baz", true, 2, true], // a parent's block hides a grandparent's entry
      ["qux", false, 4, true],
    ]);
  });

  it("takes the first ancestor in walk order", () => {
    const entries = new Map([
      [3, [pkg("qux", { owner: "bob" })]],
      [4, [pkg("qux", { owner: "carol", extraArches: ["riscv64"] })]],
    ]);
    const qux = effectivePackageList(1, walk(1, links), entries).get("qux");
    expect(qux).toMatchObject({ owner: "carol", tagId: 4, extraArches: ["riscv64"] });
  });

  it("keeps a package from an ancestor only if it passes the path's filters", () => {
    const filtered = [link(1, 2, 0, { pkgFilter: "lib" }), link(2, 3, 0, { pkgFilter: "libfoo|libbar" })];
    const entries = new Map([
      [1, [pkg("own-package")]],
      [2, [pkg("libqux"), pkg("bar")]],
      [3, [pkg("libfoo"), pkg("libbaz"), pkg("xlibfoo"), pkg("foo")]],
    ]);
    const list = effectivePackageList(1, walk(1, filtered), entries);
    expect([...list.keys()]).toEqual(["own-package", "libqux", "libfoo"]);
  });

  it("inherits through a second, unfiltered path what a filtered path kept out", () => {
    const twoPaths = [link(1, 2, 1, { pkgFilter: "foo" }), link(1, 3, 2), link(2, 4, 0), link(3, 4, 0)];
    const entries = new Map([[4, [pkg("foo"), pkg("bar")]]]);
    const list = effectivePackageList(1, walk(1, twoPaths), entries);
    expect([...list.keys()]).toEqual(["foo", "bar"]);
  });

  it("reads the lists as of an event", () => {
    const entries = new Map([
      [1, [pkg("foo", { blocked: true, createEvent: 20 })]],
      [2, [pkg("foo", { createEvent: 5 }), pkg("old", { createEvent: 1, revokeEvent: 8 })]],
    ]);
    const w = walk(1, links);
    expect(effectivePackageList(1, w, entries, { eventId: 6 }).get("foo")).toMatchObject({
      blocked: false,
      tagId: 2,
    });
    expect(effectivePackageList(1, w, entries, { eventId: 6 }).has("old")).toBe(true);
    expect(effectivePackageList(1, w, entries).get("foo")).toMatchObject({ blocked: true, tagId: 1 });
    expect(effectivePackageList(1, w, entries).has("old")).toBe(false);
  });
});

// ---------------------------------------------------------------------------------------------

let nextBuildId = 100;
function tagged(
  name: string,
  version: string,
  createEvent: number,
  extra: Partial<TaggedBuild> = {},
): TaggedBuild {
  return { buildId: nextBuildId++, package: name, version, createEvent, ...extra };
}

describe("latestBuilds", () => {
  const links = [link(1, 2, 1), link(1, 3, 2)];
  const w = walk(1, links);

  it("prefers the tag's own build over a newer one in a parent", () => {
    const builds = new Map([
      [1, [tagged("foo", "1.0", 10)]],
      [2, [tagged("foo", "2.0", 20)]],
    ]);
    const list = effectivePackageList(1, w, new Map([[1, [pkg("foo")]]]));
    expect(latestBuilds(1, w, builds, list).map((b) => [b.version, b.tagId, b.inherited])).toEqual([
      ["1.0", 1, false],
    ]);
  });

  it("takes the first parent in walk order that has the package", () => {
    const builds = new Map([
      [2, [tagged("bar", "1.0", 10)]],
      [3, [tagged("bar", "2.0", 30)]],
    ]);
    const list = effectivePackageList(1, w, new Map([[1, [pkg("bar")]]]));
    expect(latestBuilds(1, w, builds, list).map((b) => [b.version, b.tagId, b.inherited])).toEqual([
      ["1.0", 2, true],
    ]);
  });

  it("takes the most recently tagged build, not the highest version", () => {
    const builds = new Map([
      [1, [tagged("foo", "1.0", 5), tagged("foo", "0.9", 7), tagged("foo", "0.8", 6)]],
    ]);
    const list = effectivePackageList(1, [], new Map([[1, [pkg("foo")]]]));
    expect(latestBuilds(1, [], builds, list).map((b) => b.version)).toEqual(["0.9"]);
    expect(latestBuilds(1, [], builds, list, { perPackage: 2 }).map((b) => b.version)).toEqual([
      "0.9",
      "0.8",
    ]);
  });

  it("fills perPackage from later tags when the first has too few", () => {
    const builds = new Map([
      [1, [tagged("foo", "3.0", 30)]],
      [2, [tagged("foo", "2.0", 20), tagged("foo", "1.0", 10)]],
    ]);
    const list = effectivePackageList(1, w, new Map([[2, [pkg("foo")]]]));
    expect(latestBuilds(1, w, builds, list, { perPackage: 2 }).map((b) => b.version)).toEqual(["3.0", "2.0"]);
  });

  it("leaves out packages that are unlisted or blocked in the queried tag", () => {
    const builds = new Map([
      [1, [tagged("unlisted", "1", 1), tagged("blocked-here", "1", 1)]],
      [2, [tagged("blocked-here", "2", 2), tagged("listed", "1", 1)]],
    ]);
    const entries = new Map([
      [1, [pkg("blocked-here", { blocked: true })]],
      [2, [pkg("blocked-here"), pkg("listed")]],
    ]);
    const list = effectivePackageList(1, w, entries);
    expect(latestBuilds(1, w, builds, list).map((b) => b.package)).toEqual(["listed"]);
  });

  it("applies the path's package filters to inherited builds", () => {
    const filtered = [link(1, 2, 0, { pkgFilter: "lib" })];
    const fw = walk(1, filtered);
    const builds = new Map([[2, [tagged("libfoo", "1", 1), tagged("foo", "1", 1)]]]);
    // The child lists foo itself, so only the filter keeps the parent's foo build out.
    const list = effectivePackageList(1, fw, new Map([[1, [pkg("foo"), pkg("libfoo")]]]));
    expect(latestBuilds(1, fw, builds, list).map((b) => b.package)).toEqual(["libfoo"]);
  });

  it("answers as of a past event", () => {
    const builds = new Map([
      [
        1,
        [
          tagged("foo", "1.0", 10),
          tagged("foo", "2.0", 20, { revokeEvent: 28 }), // untagged at 28
          tagged("foo", "3.0", 30),
        ],
      ],
    ]);
    const entries = new Map([[1, [pkg("foo", { createEvent: 1 })]]]);
    const at = (eventId?: number) => {
      const opts = eventId === undefined ? {} : { eventId };
      const list = effectivePackageList(1, [], entries, opts);
      return latestBuilds(1, [], builds, list, opts).map((b) => b.version);
    };
    expect(at(15)).toEqual(["1.0"]);
    expect(at(25)).toEqual(["2.0"]);
    expect(at(29)).toEqual(["1.0"]);
    expect(at()).toEqual(["3.0"]);
    expect(at(0)).toEqual([]); // the package was not listed yet
  });

  it("does not offer one build twice when a tag appears twice in the walk", () => {
    const twice = [link(1, 2, 1, { pkgFilter: "f" }), link(1, 3, 2), link(2, 4, 0), link(3, 4, 0)];
    const tw = walk(1, twice);
    const build = tagged("foo", "1", 1);
    const list = effectivePackageList(1, tw, new Map([[4, [pkg("foo")]]]));
    expect(latestBuilds(1, tw, new Map([[4, [build]]]), list, { perPackage: 3 })).toHaveLength(1);
  });
});

// ---------------------------------------------------------------------------------------------

function tag(
  id: number,
  arches: string[] | null,
  extra: Record<string, unknown> = {},
  more: Partial<TagConfig> = {},
): TagConfig {
  return { id, name: `tag-${id}`, arches, extra, ...more };
}

describe("buildConfig", () => {
  it("takes arches from the first tag that sets them, itself first", () => {
    const tags = new Map([
      [1, tag(1, null)],
      [2, tag(2, ["amd64"])],
      [3, tag(3, ["arm64"])],
    ]);
    const w = walk(1, [link(1, 2, 1), link(1, 3, 2)]);
    expect(buildConfig(1, w, tags)).toMatchObject({ arches: ["amd64"], origin: { arches: 2 } });
    tags.set(1, tag(1, ["riscv64"]));
    expect(buildConfig(1, w, tags)).toMatchObject({ arches: ["riscv64"], origin: { arches: 1 } });
  });

  it("merges extra key by key, the first value found winning", () => {
    const tags = new Map([
      [1, tag(1, null, { a: "child" })],
      [2, tag(2, null, { a: "parent", b: "parent" })],
      [3, tag(3, null, { b: "grandparent", c: { deep: true } })],
    ]);
    const config = buildConfig(1, walk(1, [link(1, 2, 0), link(2, 3, 0)]), tags);
    expect(config.extra).toEqual({ a: "child", b: "parent", c: { deep: true } });
    expect(config.origin.extra).toEqual({ a: 1, b: 2, c: 3 });
  });

  it("drops a key a nearer tag blocks", () => {
    const tags = new Map([
      [1, tag(1, null, {}, { blockedExtra: ["b"] })],
      [2, tag(2, null, { a: 1, b: 2 })],
    ]);
    expect(buildConfig(1, walk(1, [link(1, 2, 0)]), tags).extra).toEqual({ a: 1 });
  });

  it("takes nothing through a noconfig link, nor from anything above it", () => {
    const tags = new Map([
      [1, tag(1, null, { own: 1 })],
      [2, tag(2, ["amd64"], { two: 2 })],
      [3, tag(3, ["arm64"], { three: 3 })],
      [4, tag(4, ["riscv64"], { four: 4 })],
    ]);
    const noconfig = [link(1, 2, 1, { noconfig: true }), link(2, 3, 0)];
    expect(buildConfig(1, walk(1, noconfig), tags)).toMatchObject({ arches: null, extra: { own: 1 } });
    const withOther = [...noconfig, link(1, 4, 2)];
    const config = buildConfig(1, walk(1, withOther), tags);
    expect(config.arches).toEqual(["riscv64"]);
    expect(config.extra).toEqual({ own: 1, four: 4 });
  });

  it("takes config from a tag reached again through a path without noconfig", () => {
    const tags = new Map([
      [1, tag(1, null)],
      [2, tag(2, null)],
      [3, tag(3, null)],
      [4, tag(4, ["s390x"])],
    ]);
    const links = [link(1, 2, 1, { noconfig: true }), link(1, 3, 2), link(2, 4, 0), link(3, 4, 0)];
    expect(buildConfig(1, walk(1, links), tags)).toMatchObject({ arches: ["s390x"], origin: { arches: 4 } });
  });

  it("fails clearly for an unknown tag", () => {
    expect(reasonOf(() => buildConfig(1, [], new Map()))).toMatchObject({ code: "NOT_FOUND" });
  });
});
