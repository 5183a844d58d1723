import { describe, expect, it } from "vitest";
import {
  buildPublicationSpec,
  formatAptInstructions,
  formatOutcome,
  formatPublication,
  pairSources,
  publicationName,
  splitPrefixAndSnapshots,
  splitSourcesAndPrefix,
} from "../../src/cli/publish.js";
import type { PublicationJson } from "../../src/client/types.js";
import { KilnError } from "../../src/errors/catalogue.js";

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return err instanceof KilnError ? err.code : String(err);
  }
  return undefined;
}

describe("publish arguments", () => {
  it("reads SOURCE… [PREFIX], one source per component", () => {
    expect(splitSourcesAndPrefix(["main"], undefined)).toEqual({ names: ["main"], prefix: "." });
    expect(splitSourcesAndPrefix(["main", "ppa"], undefined)).toEqual({ names: ["main"], prefix: "ppa" });
    expect(splitSourcesAndPrefix(["a", "b"], ["main", "contrib"])).toEqual({
      names: ["a", "b"],
      prefix: ".",
    });
    expect(splitSourcesAndPrefix(["a", "b", "x/y"], ["main", "contrib"])).toEqual({
      names: ["a", "b"],
      prefix: "x/y",
    });
    expect(codeOf(() => splitSourcesAndPrefix(["a", "b", "c"], undefined))).toBe("VALIDATION_FAILED");
    expect(codeOf(() => splitSourcesAndPrefix(["a"], ["main", "contrib"]))).toBe("VALIDATION_FAILED");
  });

  it("reads switch's [PREFIX] SNAPSHOT…, prefix first as in Aptly", () => {
    expect(splitPrefixAndSnapshots(["s2"], undefined)).toEqual({ prefix: ".", names: ["s2"] });
    expect(splitPrefixAndSnapshots(["ppa", "s2"], undefined)).toEqual({ prefix: "ppa", names: ["s2"] });
    expect(splitPrefixAndSnapshots(["ppa", "m", "c"], ["main", "contrib"])).toEqual({
      prefix: "ppa",
      names: ["m", "c"],
    });
    expect(codeOf(() => splitPrefixAndSnapshots(["a", "b", "c"], undefined))).toBe("VALIDATION_FAILED");
  });

  it("pairs sources with components, main by default", () => {
    expect(pairSources(["a"], undefined)).toEqual([{ component: "main", name: "a" }]);
    expect(pairSources(["a"], undefined, "contrib")).toEqual([{ component: "contrib", name: "a" }]);
    expect(pairSources(["a", "b"], ["main", "non-free"])).toEqual([
      { component: "main", name: "a" },
      { component: "non-free", name: "b" },
    ]);
    expect(codeOf(() => pairSources(["a", "b"], undefined))).toBe("VALIDATION_FAILED");
  });

  it("builds the spec from the flags given, and needs a distribution", () => {
    const sources = [{ component: "main", name: "s1" }];
    expect(buildPublicationSpec("snapshot", sources, ".", { distribution: "stable" })).toEqual({
      prefix: ".",
      distribution: "stable",
      sourceKind: "snapshot",
      sources,
    });
    expect(
      buildPublicationSpec("tag", sources, "ppa", {
        distribution: "stable",
        architectures: ["amd64", "arm64"],
        origin: "Us",
        label: "Ours",
        skipSigning: true,
      }),
    ).toEqual({
      prefix: "ppa",
      distribution: "stable",
      sourceKind: "tag",
      sources,
      architectures: ["amd64", "arm64"],
      origin: "Us",
      label: "Ours",
      skipSigning: true,
    });
    expect(codeOf(() => buildPublicationSpec("local", sources, ".", {}))).toBe("VALIDATION_FAILED");
  });
});

const PUB: PublicationJson = {
  prefix: "ppa",
  distribution: "stable",
  sourceKind: "snapshot",
  sources: [
    { component: "main", name: "s-main" },
    { component: "contrib", name: "s-contrib" },
  ],
  architectures: [],
  origin: "",
  label: "",
  skipSigning: false,
  liveGeneration: 2,
  path: "ppa/dists/stable",
  createdAt: new Date().toISOString(),
  updatedAt: new Date().toISOString(),
  history: [
    {
      generation: 2,
      state: "live",
      sources: {},
      packageCount: 5,
      releaseSha256: "b",
      taskId: 12,
      error: null,
      createdAt: new Date().toISOString(),
      liveAt: new Date().toISOString(),
    },
    {
      generation: 1,
      state: "retired",
      sources: {},
      packageCount: 4,
      releaseSha256: "a",
      taskId: 7,
      error: null,
      createdAt: new Date().toISOString(),
      liveAt: new Date().toISOString(),
    },
  ],
};

describe("publish output", () => {
  it("names publications as prefix/distribution, the root prefix left out", () => {
    expect(publicationName(".", "stable")).toBe("stable");
    expect(publicationName("ppa/x", "stable")).toBe("ppa/x/stable");
  });

  it("prints the apt line with every component and the key command", () => {
    expect(formatAptInstructions(PUB, "http://hub:8471")).toBe(
      "apt source:  deb [signed-by=/usr/share/keyrings/kiln-archive-keyring.gpg] http://hub:8471/apt/ppa stable main contrib\n" +
        "archive key: curl -fsSL http://hub:8471/apt/kiln-archive-keyring.asc | sudo gpg --dearmor -o /usr/share/keyrings/kiln-archive-keyring.gpg\n",
    );
    const unsigned = { ...PUB, prefix: ".", skipSigning: true, sources: [{ component: "main", name: "x" }] };
    expect(formatAptInstructions(unsigned, "http://hub/")).toBe(
      "apt source:  deb [trusted=yes] http://hub/apt stable main\n",
    );
  });

  it("shows the history of generations, marking the live one", () => {
    const text = formatPublication(PUB, "http://hub");
    expect(text).toMatch(/^sources +main: snapshot s-main, contrib: snapshot s-contrib$/m);
    expect(text).toMatch(/^ +\*2 +live +5 /m);
    expect(text).toMatch(/^ +1 +retired +4 /m);
    expect(text).not.toMatch(/ERROR/);
    const failed = {
      ...PUB,
      history: [{ ...PUB.history![1]!, generation: 3, state: "failed", error: "boom\nmore" }],
    };
    expect(formatPublication(failed, "http://hub")).toMatch(/ERROR[\s\S]*boom$/m);
  });

  it("says what a command did", () => {
    const outcome = {
      prefix: ".",
      distribution: "stable",
      generation: 3,
      releaseSha256: "x",
      packageCount: 1,
    };
    expect(formatOutcome("publish", outcome)).toBe("Published stable (generation 3, 1 package)\n");
    expect(formatOutcome("rollback", { ...outcome, packageCount: 2 })).toBe(
      "Rolled stable back to generation 3, 2 packages\n",
    );
    expect(formatOutcome("update", { ...outcome, unchanged: true })).toBe(
      "stable is unchanged: generation 3, 1 package stays live\n",
    );
  });
});
