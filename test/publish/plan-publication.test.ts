import { describe, expect, it } from "vitest";
import { KilnError } from "../../src/errors/catalogue.js";
import type { PackageRecord } from "../../src/publish/package-store.js";
import { planPool, planPublication, type PlanInput } from "../../src/publish/plan-publication.js";

const hex = (c: string, n: number) => c.repeat(n);

let nextId = 1;
function deb(name: string, version: string, arch: string, opts: { source?: string; sha?: string } = {}) {
  const sha256 = hex(opts.sha ?? name.charAt(0), 64).replace(/[^0-9a-f]/g, "a");
  const file = {
    name: `${name}_${version}_${arch}.deb`,
    size: 100,
    md5: hex("b", 32),
    sha1: hex("c", 40),
    sha256,
  };
  const record: PackageRecord = {
    id: nextId++,
    key: `P${arch} ${name} ${version} ${sha256.slice(0, 16)}`,
    name,
    version,
    arch,
    kind: "deb",
    source: opts.source ?? name,
    control: `Package: ${name}\nVersion: ${version}\nArchitecture: ${arch}\nDescription: ${name}\n`,
    files: [file],
  };
  return record;
}

/** The KilnError `fn` throws. */
function thrown(fn: () => unknown): KilnError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(KilnError);
    return err as KilnError;
  }
  throw new Error("expected an error");
}

const input = (packages: PackageRecord[], architectures = ["amd64"]): PlanInput => ({
  distribution: "stable",
  components: [{ component: "main", packages }],
  architectures,
});

describe("planPool", () => {
  it("lists each pool file once, sorted by path, `all` packages with the rest", () => {
    const pkgs = [
      deb("zed", "1", "amd64"),
      deb("libfoo1", "2", "amd64", { source: "libfoo" }),
      deb("doc", "1", "all"),
    ];
    expect(planPool(input(pkgs)).map((e) => e.path)).toEqual([
      "pool/main/d/doc/doc_1_all.deb",
      "pool/main/libf/libfoo/libfoo1_2_amd64.deb",
      "pool/main/z/zed/zed_1_amd64.deb",
    ]);
    // Packages of architectures not published have no pool file.
    expect(planPool(input([deb("arm", "1", "arm64")]))).toEqual([]);
  });

  it("takes one file claimed twice with the same content, and refuses two contents under one path", () => {
    const a = deb("same", "1", "amd64", { sha: "a" });
    const twin = { ...a, id: nextId++, key: `${a.key} again` };
    expect(planPool(input([a, twin]))).toHaveLength(1);
    const other = deb("same", "1", "amd64", { sha: "f" });
    const err = thrown(() => planPool(input([a, other])));
    expect(err.code).toBe("POOL_FILE_CONFLICT");
    expect(err.message).toContain(other.key);
  });

  it("refuses a file name that is not a plain name", () => {
    const bad = deb("bad", "1", "amd64");
    bad.files = [{ ...(bad.files[0] as PackageRecord["files"][number]), name: "../x.deb" }];
    expect(thrown(() => planPool(input([bad]))).code).toBe("INVALID_NAME");
  });
});

describe("planPublication", () => {
  it("uses the pool it is given, and makes the same plan as without it", () => {
    const pkgs = [deb("one", "1", "amd64"), deb("two", "1", "all")];
    const pool = planPool(input(pkgs, ["amd64", "i386"]));
    const plan = planPublication(input(pkgs, ["amd64", "i386"]), pool);
    expect(plan.pool).toBe(pool);
    expect(planPublication(input(pkgs, ["amd64", "i386"]))).toEqual(plan);
    expect(plan.indexes.map((i) => i.dir)).toEqual(["binary-amd64", "binary-i386"]);
    expect(plan.indexes[1]?.content).toContain("Package: two\n");
    expect(plan.indexes[1]?.content).not.toContain("Package: one\n");
    expect(plan.packageCount).toBe(2);
  });
});
