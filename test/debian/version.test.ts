import { writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  assertValidArchitecture,
  assertValidPackageName,
  compareVersions,
  formatVersion,
  isValidArchitecture,
  isValidPackageName,
  isValidVersion,
  parseVersion,
  satisfies,
} from "../../src/debian/version.js";
import { expectDebianErrorSync, haveTool, makeTempDir, run } from "./helpers.js";

const dpkgOk = haveTool("dpkg");
const tmp = makeTempDir();
afterAll(() => tmp.cleanup());

describe("parseVersion", () => {
  it("splits epoch, upstream and revision", () => {
    expect(parseVersion("1.0")).toEqual({ epoch: 0, upstream: "1.0", revision: "" });
    expect(parseVersion("2:1.0-3")).toEqual({ epoch: 2, upstream: "1.0", revision: "3" });
    expect(parseVersion("1.0-2-3")).toEqual({ epoch: 0, upstream: "1.0-2", revision: "3" });
    expect(parseVersion("0:1.0~rc1+dfsg-0ubuntu1")).toEqual({
      epoch: 0,
      upstream: "1.0~rc1+dfsg",
      revision: "0ubuntu1",
    });
    expect(parseVersion("1.2.3A")).toEqual({ epoch: 0, upstream: "1.2.3A", revision: "" });
  });

  it("writes the canonical form back", () => {
    expect(formatVersion(parseVersion("0:1.0"))).toBe("1.0");
    expect(formatVersion(parseVersion("3:1.0-1"))).toBe("3:1.0-1");
  });

  it.each([
    ["", "empty"],
    ["1.0-", "revision after '-' is empty"],
    [":1.0", "epoch before ':' is empty"],
    ["a:1.0", "epoch is not a number"],
    ["-1:1.0", "epoch is not a number"],
    ["99999999999:1.0", "epoch is too big"],
    ["1:", "upstream version is empty"],
    ["-1", "upstream version is empty"],
    ["a1.0", "must start with a digit"],
    ["~1", "must start with a digit"],
    ["1.0_1", "may hold only"],
    ["1.0-1_2", "revision may hold only"],
    ["1.0-1:2", "epoch is not a number"],
    ["1:2:3", "upstream version may hold only"],
    ["1.0 1", "whitespace"],
    [" 1.0", "whitespace"],
    ["1.0\n", "whitespace"],
    ["1.0é", "may hold only"],
  ])("refuses %j (%s)", (version, why) => {
    const err = expectDebianErrorSync(() => parseVersion(version), "INVALID_VERSION");
    expect(err.message).toContain(why);
    expect(isValidVersion(version)).toBe(false);
  });
});

describe("compareVersions", () => {
  it.each([
    ["1.0~rc1", "1.0", -1],
    ["1.0~~", "1.0~", -1],
    ["1.0~~a", "1.0~~", 1],
    ["1.0", "1.0+", -1],
    ["1.0a", "1.0+", -1],
    ["1.0a", "1.0", 1],
    ["1:0.1", "2.0", 1],
    ["1.0-1", "1.0", 1],
    ["1.0", "1.0-0", 0],
    ["0:1.0", "1.0", 0],
    ["1.001", "1.1", 0],
    ["1.0010", "1.10", 0],
    ["9007199254740993", "9007199254740992", 1],
    ["18446744073709551617", "18446744073709551616", 1],
    ["123456789012345678901234567890", "99999999999999999999999999999", 1],
    ["1.2.3", "1.2.10", -1],
    ["1.0-1ubuntu1", "1.0-1", 1],
    ["1.0-1~bpo1", "1.0-1", -1],
    ["2.30-A", "2.30-a", -1],
  ] as const)("%s vs %s → %d", (a, b, want) => {
    expect(compareVersions(a, b)).toBe(want);
    expect(compareVersions(b, a)).toBe(-want || 0);
  });

  it("accepts parsed versions", () => {
    expect(compareVersions(parseVersion("1.0"), "1.1")).toBe(-1);
  });

  it("refuses an invalid version", () => {
    expectDebianErrorSync(() => compareVersions("x", "1"), "INVALID_VERSION");
  });
});

describe("satisfies", () => {
  it("implements every relation operator, with < and > meaning <= and >=", () => {
    const table: Array<[string, Parameters<typeof satisfies>[1], string, boolean]> = [
      ["1.0", "<<", "1.1", true],
      ["1.1", "<<", "1.1", false],
      ["1.1", "<=", "1.1", true],
      ["1.2", "<=", "1.1", false],
      ["1.1", "=", "1.1-0", true],
      ["1.1", "=", "1.1-1", false],
      ["1.1", ">=", "1.1", true],
      ["1.0", ">=", "1.1", false],
      ["1.2", ">>", "1.1", true],
      ["1.1", ">>", "1.1", false],
      ["1.1", "<", "1.1", true],
      ["1.2", "<", "1.1", false],
      ["1.1", ">", "1.1", true],
      ["1.0", ">", "1.1", false],
    ];
    for (const [v, op, ref, want] of table) expect(satisfies(v, op, ref), `${v} ${op} ${ref}`).toBe(want);
  });
});

/** A deterministic stream of version strings that stress every comparison rule. */
function* generateVersions(seed: number): Generator<string> {
  // mulberry32: small, seedable, and good enough in its low bits.
  let state = seed >>> 0;
  const rnd = (n: number): number => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) % n;
  };
  const pick = <T>(xs: readonly T[]): T => xs[rnd(xs.length)] as T;
  const numbers = [
    "0",
    "00",
    "1",
    "01",
    "001",
    "2",
    "9",
    "10",
    "010",
    "99",
    "100",
    "9007199254740993",
    "18446744073709551616",
  ];
  const separators = [".", "+", "~", "~~", "-", ".~", "+~", "a", "b", "z", "A", "Z", "rc", "beta", ""];
  for (;;) {
    let upstream = pick(numbers);
    const parts = rnd(4);
    for (let i = 0; i < parts; i++) upstream += pick(separators) + (rnd(3) ? pick(numbers) : "");
    upstream = upstream.replace(/-+$/, "");
    let version = rnd(4) === 0 ? `${pick(["0", "1", "2", "10"])}:${upstream}` : upstream;
    if (rnd(2)) {
      let revision = pick(["1", "0", "2", "1ubuntu1", "1~bpo1", "0.1", "1+b1", "a", "1~", "10"]);
      if (rnd(3) === 0) revision += pick([".", "+", "~"]) + pick(numbers);
      version += `-${revision}`;
    } else if (upstream.includes("-")) {
      version += "-1";
    }
    if (isValidVersion(version)) yield version;
  }
}

describe.runIf(dpkgOk)("agreement with dpkg --compare-versions", () => {
  it("orders a few hundred tricky pairs exactly as dpkg does", () => {
    const pairs: Array<[string, string]> = [
      ["1.0~rc1", "1.0"],
      ["1:0.1", "2.0"],
      ["1.0-1", "1.0"],
      ["1.0a", "1.0+"],
      ["1.0~~", "1.0~"],
      ["1.0~", "1.0"],
      ["1.01", "1.1"],
      ["1.0", "1.0-0"],
      ["9007199254740993", "9007199254740992"],
      ["18446744073709551617", "18446744073709551616"],
      ["1.0.0", "1.0"],
      ["1.0+", "1.0."],
      ["1a", "1A"],
      ["1.0-a", "1.0-+"],
    ];
    const gen = generateVersions(20240601);
    const take = (): string => gen.next().value as string;
    while (pairs.length < 420) {
      const a = take();
      // A third each: near-misses (one digit up, maybe a tilde), equal spellings (a leading zero,
      // an explicit 0: epoch) and unrelated versions.
      const kind = pairs.length % 3;
      let b =
        kind === 0
          ? a.replace(/[0-9](?=[^0-9]*$)/, (d) => String((Number(d) + 1) % 10)) +
            (pairs.length % 2 ? "" : "~")
          : kind === 1
            ? a.replace(/([0-9]+)(?=[^0-9]*$)/, "0$1")
            : take();
      if (kind === 1 && !a.includes(":") && pairs.length % 2) b = `0:${b}`;
      pairs.push([a, isValidVersion(b) ? b : take()]);
    }
    const file = path.join(tmp.dir, "pairs");
    writeFileSync(file, pairs.map(([a, b]) => `${a} ${b}\n`).join(""));
    const script = `
      while read -r a b; do
        if dpkg --compare-versions "$a" lt "$b"; then echo -1
        elif dpkg --compare-versions "$a" eq "$b"; then echo 0
        else echo 1; fi
      done < "$1"`;
    const dpkgSays = run("sh", ["-c", script, "sh", file]).trim().split("\n").map(Number);
    expect(dpkgSays).toHaveLength(pairs.length);
    const mismatches = pairs
      .map(([a, b], i) => ({ a, b, dpkg: dpkgSays[i], kiln: compareVersions(a, b) }))
      .filter((r) => r.dpkg !== r.kiln);
    expect(mismatches).toEqual([]);
    // The sample is worth something only if it has all three outcomes in quantity.
    for (const outcome of [-1, 0, 1])
      expect(dpkgSays.filter((x) => x === outcome).length).toBeGreaterThan(10);
  });

  it("refuses only versions dpkg also complains about", () => {
    // dpkg allows ':' in the upstream part ("1:2:3"); policy no longer does, and neither do we.
    const invalid = [
      "1.0-",
      ":1.0",
      "a:1.0",
      "1:",
      "-1",
      "a1.0",
      "~1",
      "1.0_1",
      "1.0-1_2",
      "1.0 1",
      "1!",
      "1.0-a:b",
    ];
    const file = path.join(tmp.dir, "invalid");
    writeFileSync(file, invalid.map((v) => `${v}\n`).join(""));
    const script = `
      while IFS= read -r v; do
        if out=$(dpkg --compare-versions "$v" eq "$v" 2>&1) && [ -z "$out" ]; then echo quiet; else echo complains; fi
      done < "$1"`;
    const verdicts = run("sh", ["-c", script, "sh", file]).trim().split("\n");
    expect(verdicts).toEqual(invalid.map(() => "complains"));
    for (const v of invalid) expect(isValidVersion(v), v).toBe(false);
  });
});

describe("package and architecture names", () => {
  it.each(["hello", "libc6", "g++", "lib32z1-dev", "a0", "0ad", "x.y+z-1"])("accepts package %s", (name) => {
    expect(isValidPackageName(name)).toBe(true);
    expect(assertValidPackageName(name)).toBe(name);
  });

  it.each(["", "a", "Hello", "-a", ".a", "+a", "a_b", "a b", "a/b", "ä1", "a\n"])(
    "refuses package %j",
    (name) => {
      expect(isValidPackageName(name)).toBe(false);
      expectDebianErrorSync(() => assertValidPackageName(name), "INVALID_PACKAGE_NAME");
    },
  );

  it.each([
    "amd64",
    "arm64",
    "i386",
    "all",
    "any",
    "linux-any",
    "any-amd64",
    "hurd-i386",
    "ppc64el",
    "s390x",
  ])("accepts architecture %s", (arch) => {
    expect(isValidArchitecture(arch)).toBe(true);
    expect(assertValidArchitecture(arch)).toBe(arch);
  });

  it.each(["", "AMD64", "-amd64", "amd_64", "amd64 ", "../x", "!amd64"])(
    "refuses architecture %j",
    (arch) => {
      expect(isValidArchitecture(arch)).toBe(false);
      expectDebianErrorSync(() => assertValidArchitecture(arch), "INVALID_ARCHITECTURE");
    },
  );
});
