import { describe, expect, it } from "vitest";
import {
  describeOrigin,
  formatSnapshotDiff,
  snapshotSourceFrom,
  versionOfKey,
} from "../../src/cli/snapshot.js";
import { KilnError } from "../../src/errors/catalogue.js";

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return err instanceof KilnError ? err.code : String(err);
  }
  return undefined;
}

describe("snapshot create --from-repo | --from-tag", () => {
  it("takes exactly one source", () => {
    expect(snapshotSourceFrom({ fromRepo: "main" })).toEqual({ kind: "repo", repo: "main" });
    expect(snapshotSourceFrom({ fromTag: "bookworm" })).toEqual({ kind: "tag", tag: "bookworm" });
    expect(snapshotSourceFrom({ fromTag: "bookworm", event: 12 })).toEqual({
      kind: "tag",
      tag: "bookworm",
      event: 12,
    });
    expect(codeOf(() => snapshotSourceFrom({}))).toBe("VALIDATION_FAILED");
    expect(codeOf(() => snapshotSourceFrom({ fromRepo: "a", fromTag: "b" }))).toBe("VALIDATION_FAILED");
    expect(codeOf(() => snapshotSourceFrom({ fromRepo: "a", event: 3 }))).toBe("VALIDATION_FAILED");
  });
});

describe("snapshot output", () => {
  it("says where a snapshot came from", () => {
    expect(describeOrigin({ kind: "repo", repo: "main" })).toBe("local repo main");
    expect(describeOrigin({ kind: "tag", tag: "t", event: 4 })).toBe("tag t at event 4");
    expect(describeOrigin({ kind: "merge", sources: ["a", "b"], latest: true })).toBe(
      "merge of a, b (latest versions)",
    );
    expect(describeOrigin({ kind: "filter", source: "a", query: "hello" })).toBe("a filtered by hello");
  });

  it("reads the version out of a package key", () => {
    expect(versionOfKey("Pamd64 hello 2:1.0-1 0123456789abcdef")).toBe("2:1.0-1");
    expect(versionOfKey(null)).toBeNull();
  });

  it("marks a diff the way Aptly does: - only in A, + only in B, ! changed", () => {
    const text = formatSnapshotDiff("old", "new", [
      { name: "a", arch: "amd64", left: "Pamd64 a 1.0 x", right: null },
      { name: "b", arch: "all", left: null, right: "Pall b 2.0 y" },
      { name: "c", arch: "amd64", left: "Pamd64 c 1.0 x", right: "Pamd64 c 1.1 z" },
    ]);
    expect(text.split("\n")).toEqual([
      "   PACKAGE  ARCH   IN OLD  IN NEW",
      "-  a        amd64  1.0     -",
      "+  b        all    -       2.0",
      "!  c        amd64  1.0     1.1",
      "",
    ]);
    expect(formatSnapshotDiff("a", "b", [])).toBe("a and b hold the same packages\n");
  });
});
