import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  addExitCode,
  buildRepoPatch,
  collectPackageFiles,
  formatAddReport,
  formatRepo,
  formatRepoList,
} from "../../src/cli/repo.js";
import type { RepoAddResultJson } from "../../src/client/types.js";
import { KilnError } from "../../src/errors/catalogue.js";

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return err instanceof KilnError ? err.code : String(err);
  }
  return undefined;
}

async function asyncCodeOf(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p;
  } catch (err) {
    return err instanceof KilnError ? err.code : String(err);
  }
  return undefined;
}

const DSC = (files: { name: string; size: number }[]) =>
  [
    "Format: 3.0 (quilt)",
    "Source: hello",
    "Version: 1.0-1",
    "Architecture: any",
    "Maintainer: T <t@example.org>",
    "Checksums-Sha256:",
    ...files.map((f) => ` ${"a".repeat(64)} ${f.size} ${f.name}`),
    "Files:",
    ...files.map((f) => ` ${"b".repeat(32)} ${f.size} ${f.name}`),
    "",
  ].join("\n");

describe("collectPackageFiles", () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), "kiln-repo-cli-"));
    mkdirSync(path.join(dir, "debs", "sub"), { recursive: true });
    mkdirSync(path.join(dir, "debs", ".git"), { recursive: true });
    writeFileSync(path.join(dir, "debs", "a_1_amd64.deb"), "aa");
    writeFileSync(path.join(dir, "debs", "sub", "b_1_all.udeb"), "bbb");
    writeFileSync(path.join(dir, "debs", "README"), "not a package");
    writeFileSync(path.join(dir, "debs", ".git", "hidden_1_amd64.deb"), "x");
    mkdirSync(path.join(dir, "src"));
    writeFileSync(path.join(dir, "src", "hello_1.0.orig.tar.gz"), "12345");
    writeFileSync(path.join(dir, "src", "hello_1.0-1.debian.tar.xz"), "123");
    writeFileSync(
      path.join(dir, "src", "hello_1.0-1.dsc"),
      DSC([
        { name: "hello_1.0.orig.tar.gz", size: 5 },
        { name: "hello_1.0-1.debian.tar.xz", size: 3 },
      ]),
    );
    mkdirSync(path.join(dir, "badsrc"));
    writeFileSync(path.join(dir, "badsrc", "hello_1.0-1.dsc"), DSC([{ name: "gone.tar.gz", size: 5 }]));
    mkdirSync(path.join(dir, "dup"));
    writeFileSync(path.join(dir, "dup", "a_1_amd64.deb"), "other");
    mkdirSync(path.join(dir, "empty"));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("finds .deb/.udeb files in directories, recursively, skipping hidden ones", async () => {
    const files = await collectPackageFiles([path.join(dir, "debs")]);
    expect(files.map((f) => [f.name, f.size, f.package])).toEqual([
      ["a_1_amd64.deb", 2, true],
      ["b_1_all.udeb", 3, true],
    ]);
  });

  it("brings the files a .dsc lists, as uploads that are not packages themselves", async () => {
    const files = await collectPackageFiles([path.join(dir, "src", "hello_1.0-1.dsc")]);
    expect(files.map((f) => [f.name, f.package])).toEqual([
      ["hello_1.0-1.dsc", true],
      ["hello_1.0.orig.tar.gz", false],
      ["hello_1.0-1.debian.tar.xz", false],
    ]);
  });

  it("takes the same file twice once", async () => {
    const deb = path.join(dir, "debs", "a_1_amd64.deb");
    expect(await collectPackageFiles([deb, path.join(dir, "debs")])).toHaveLength(2);
  });

  it("refuses what cannot be uploaded, before anything is sent", async () => {
    expect(await asyncCodeOf(collectPackageFiles([path.join(dir, "badsrc")]))).toBe("VALIDATION_FAILED");
    await expect(collectPackageFiles([path.join(dir, "badsrc")])).rejects.toThrow(/gone\.tar\.gz/);
    await expect(collectPackageFiles([path.join(dir, "debs"), path.join(dir, "dup")])).rejects.toThrow(
      /same name/,
    );
    await expect(collectPackageFiles([path.join(dir, "empty")])).rejects.toThrow(/no \.deb, \.udeb or \.dsc/);
    await expect(collectPackageFiles([path.join(dir, "debs", "README")])).rejects.toThrow(/not a \.deb/);
    await expect(collectPackageFiles([path.join(dir, "nowhere")])).rejects.toThrow(/does not exist/);
  });
});

describe("repo add output", () => {
  const result: RepoAddResultJson = {
    repo: "main",
    added: 2,
    existing: 1,
    failed: 1,
    files: [
      { file: "a.deb", outcome: "added", key: "Pamd64 a 1 x" },
      { file: "b.deb", outcome: "exists", key: "Pamd64 b 1 y" },
      { file: "c.deb", outcome: "replaced", key: "Pamd64 c 1 new", replaced: "Pamd64 c 1 old" },
      { file: "d.deb", outcome: "failed", code: "PACKAGE_CONFLICT", error: "d.deb: conflict" },
    ],
  };

  it("says per file what happened, then sums up", () => {
    expect(formatAddReport(result)).toBe(
      [
        "added          a.deb (Pamd64 a 1 x)",
        "already there  b.deb (Pamd64 b 1 y)",
        "replaced       c.deb (Pamd64 c 1 old → Pamd64 c 1 new)",
        "failed         d.deb: d.deb: conflict [PACKAGE_CONFLICT]",
        "main: 2 added, 1 already there, 1 failed",
        "",
      ].join("\n"),
    );
  });

  it("exits with the first failure's code, 0 when nothing failed", () => {
    expect(addExitCode(result)).toBe(4);
    expect(addExitCode({ ...result, failed: 0, files: result.files.slice(0, 3) })).toBe(0);
    const odd = { ...result, files: [{ file: "x", outcome: "failed" as const, code: "WEIRD", error: "?" }] };
    expect(addExitCode(odd)).toBe(1);
  });
});

describe("repo edit and display", () => {
  it("sends only the flags given, and refuses an edit that changes nothing", () => {
    expect(buildRepoPatch({ comment: "" })).toEqual({ comment: "" });
    expect(buildRepoPatch({ distribution: "bookworm", component: "contrib" })).toEqual({
      distribution: "bookworm",
      component: "contrib",
    });
    expect(codeOf(() => buildRepoPatch({}))).toBe("VALIDATION_FAILED");
  });

  it("lists repos in a table, and says how to make one when there is none", () => {
    expect(formatRepoList([])).toMatch(/kiln repo create/);
    const text = formatRepoList([
      {
        name: "main",
        comment: "",
        distribution: "stable",
        component: "main",
        packageCount: 3,
        createdAt: "",
      },
    ]);
    expect(text.split("\n")[0]).toBe("NAME  PACKAGES  DISTRIBUTION  COMPONENT  COMMENT");
    expect(text.split("\n")[1]).toBe("main         3  stable        main       -");
  });

  it("shows a repo's fields and packages", () => {
    const text = formatRepo({
      name: "main",
      comment: "ours",
      distribution: "",
      component: "main",
      packageCount: 1,
      createdAt: new Date().toISOString(),
      packages: [
        {
          key: "Pamd64 hello 1.0 x",
          name: "hello",
          version: "1.0",
          architecture: "amd64",
          type: "deb",
          source: "hello",
          files: [],
        },
      ],
    });
    expect(text).toMatch(/^repo +main$/m);
    expect(text).toMatch(/distribution +\(none: give --distribution when publishing\)/);
    expect(text).toMatch(/^hello +1\.0 +amd64 +deb +hello$/m);
  });
});
