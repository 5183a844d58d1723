import { spawnSync } from "node:child_process";
import { cpSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { userInfo } from "node:os";
import path from "node:path";
import zlib from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { paragraphToRecord, parseParagraph } from "../../src/debian/deb822.js";
import { readDebControl } from "../../src/debian/deb-file.js";
import { parseDsc, sourcesStanza } from "../../src/debian/dsc-file.js";
import {
  compressIndex,
  compressIndexChunks,
  componentReleaseFile,
  indexChunks,
  formatReleaseDate,
  hashBytes,
  packagesStanza,
  poolDirectory,
  releaseFile,
  type IndexFileEntry,
} from "../../src/debian/index-writers.js";
import { KilnError } from "../../src/errors/catalogue.js";
import { expectDebianErrorSync, haveTool, makeTempDir, run } from "./helpers.js";

const tmp = makeTempDir();
afterAll(() => tmp.cleanup());

const MD5 = "0123456789abcdef0123456789abcdef";
const SHA1 = "0123456789abcdef0123456789abcdef01234567";
const SHA256 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const SHA512 = SHA256 + SHA256;
const FILE = {
  filename: "pool/main/h/hello/hello_1.0-1_amd64.deb",
  size: 1234,
  md5: MD5,
  sha1: SHA1,
  sha256: SHA256,
};

const CONTROL = `Package: hello
Version: 1.0-1
Architecture: amd64
Maintainer: A <a@example.org>
Installed-Size: 12
Depends: libc6 (>= 2.34),
  libfoo
Section: misc
Priority: optional
X-Custom: kept
Homepage: https://example.org
Description: says hello
 A longer text.
 .
 Second paragraph.
`;

describe("poolDirectory", () => {
  it.each([
    ["main", "hello", "pool/main/h/hello"],
    ["main", "libfoo", "pool/main/libf/libfoo"],
    ["contrib", "libc6", "pool/contrib/libc/libc6"],
    ["main", "lib", "pool/main/l/lib"],
    ["main", "lib3ds", "pool/main/lib3/lib3ds"],
    ["main", "0ad", "pool/main/0/0ad"],
    ["updates/main", "nginx", "pool/updates/main/n/nginx"],
  ])("%s %s → %s", (component, source, expected) => {
    expect(poolDirectory(component, source)).toBe(expected);
  });

  it("refuses names that are not Debian names", () => {
    for (const component of ["", "..", "../x", "/main", "main/", "a b"]) {
      expect(() => poolDirectory(component, "hello")).toThrow(KilnError);
    }
    expectDebianErrorSync(() => poolDirectory("main", "Hello"), "INVALID_PACKAGE_NAME");
    expectDebianErrorSync(() => poolDirectory("main", "../x"), "INVALID_PACKAGE_NAME");
  });
});

describe("packagesStanza", () => {
  it("adds the file fields in apt-ftparchive's order and keeps the rest as written", () => {
    expect(packagesStanza(CONTROL, FILE)).toBe(`Package: hello
Architecture: amd64
Version: 1.0-1
Priority: optional
Section: misc
Maintainer: A <a@example.org>
Installed-Size: 12
Depends: libc6 (>= 2.34),
  libfoo
Filename: pool/main/h/hello/hello_1.0-1_amd64.deb
Size: 1234
MD5sum: ${MD5}
SHA1: ${SHA1}
SHA256: ${SHA256}
Homepage: https://example.org
Description: says hello
 A longer text.
 .
 Second paragraph.
X-Custom: kept
`);
  });

  it("gives the same output for the text and the parsed paragraph, and replaces old file fields", () => {
    const withOld = `${CONTROL}Filename: old/x.deb\nSize: 1\nMD5Sum: ${MD5}\nSHA256: ${SHA256}\nSHA512:\n ${SHA512}\n`;
    const expected = packagesStanza(CONTROL, { ...FILE, sha512: SHA512 });
    expect(packagesStanza(withOld, { ...FILE, sha512: SHA512 })).toBe(expected);
    expect(packagesStanza(parseParagraph(withOld), { ...FILE, sha512: SHA512 })).toBe(expected);
    expect(expected).toContain(`SHA256: ${SHA256}\nSHA512: ${SHA512}\nHomepage:`);
    // CRLF, trailing blank lines and a tab continuation are normalised as parseDeb822 reads them
    const messy = `${CONTROL.replace(" A longer", "\tA longer").replace(/\n/g, "\r\n")}\r\n\r\n`;
    expect(packagesStanza(messy, FILE)).toBe(packagesStanza(CONTROL, FILE));
    // Spacing around values and continuation lines, and field names in other cases, are
    // normalised too (a line already in Packages form is taken as it is).
    const spaced = CONTROL.replace("Version: 1.0-1", "version:1.0-1")
      .replace("Section: misc", "Section:    misc \t")
      .replace("Homepage: https://example.org", "Homepage: https://example.org  ")
      .replace(" Second paragraph.", " Second paragraph.   ");
    expect(packagesStanza(spaced, FILE)).toBe(
      packagesStanza(CONTROL, FILE).replace("Version: 1.0-1", "version: 1.0-1"),
    );
    expectDebianErrorSync(() => packagesStanza(`${CONTROL}VERSION: 2\n`, FILE), "CONTROL_INVALID");
  });

  it("refuses control text that is not one well-formed paragraph, and bad file data", () => {
    const bad = [
      `${CONTROL}\nPackage: evil\n`,
      `${CONTROL}Package: again\n`,
      ` leading continuation\n${CONTROL}`,
      "no colon here\n",
      "",
      "\n\n",
    ];
    for (const text of bad) expectDebianErrorSync(() => packagesStanza(text, FILE), "CONTROL_INVALID");
    for (const file of [
      { ...FILE, filename: "/etc/passwd" },
      { ...FILE, filename: "pool/../x.deb" },
      { ...FILE, filename: "pool/x y.deb" },
      { ...FILE, filename: "pool/x.deb\nPackage: evil" },
      { ...FILE, size: -1 },
      { ...FILE, md5: MD5.toUpperCase() },
      { ...FILE, sha256: SHA1 },
      { ...FILE, sha512: SHA256 },
    ]) {
      expectDebianErrorSync(() => packagesStanza(CONTROL, file), "CONTROL_INVALID");
    }
  });
});

describe("releaseFile", () => {
  const files: IndexFileEntry[] = [
    { path: "main/binary-amd64/Packages.xz", size: 1024, md5: MD5, sha1: SHA1, sha256: SHA256 },
    { path: "main/binary-amd64/Packages", size: 123456789, md5: MD5, sha1: SHA1, sha256: SHA256 },
  ];

  it("writes the fields and the checksum lists with sizes right-aligned, files sorted", () => {
    const text = releaseFile({
      origin: "Kiln",
      label: "Kiln test",
      suite: "stable",
      codename: "bookworm",
      version: "12.1",
      date: new Date(Date.UTC(2023, 5, 3, 8, 5, 7)),
      validUntil: new Date(Date.UTC(2023, 5, 10, 8, 5, 7)),
      architectures: ["amd64", "arm64"],
      components: ["main", "contrib"],
      description: "Test repository",
      acquireByHash: true,
      signedBy: "0123456789ABCDEF0123456789ABCDEF01234567",
      files,
    });
    const pad = (n: number) => String(n).padStart(16);
    expect(text).toBe(`Origin: Kiln
Label: Kiln test
Suite: stable
Version: 12.1
Codename: bookworm
Date: Sat, 03 Jun 2023 08:05:07 UTC
Valid-Until: Sat, 10 Jun 2023 08:05:07 UTC
Acquire-By-Hash: yes
Signed-By: 0123456789ABCDEF0123456789ABCDEF01234567
Architectures: amd64 arm64
Components: main contrib
Description: Test repository
MD5Sum:
 ${MD5} ${pad(123456789)} main/binary-amd64/Packages
 ${MD5} ${pad(1024)} main/binary-amd64/Packages.xz
SHA1:
 ${SHA1} ${pad(123456789)} main/binary-amd64/Packages
 ${SHA1} ${pad(1024)} main/binary-amd64/Packages.xz
SHA256:
 ${SHA256} ${pad(123456789)} main/binary-amd64/Packages
 ${SHA256} ${pad(1024)} main/binary-amd64/Packages.xz
`);
  });

  it("leaves out optional fields, and adds SHA512 when files have it", () => {
    const text = releaseFile({
      suite: "kiln",
      codename: "kiln",
      date: new Date(0),
      architectures: ["amd64"],
      components: ["main"],
      acquireByHash: false,
      files: [{ ...files[0]!, sha512: SHA512 }],
    });
    expect(text.split("\n").slice(0, 5)).toEqual([
      "Suite: kiln",
      "Codename: kiln",
      "Date: Thu, 01 Jan 1970 00:00:00 UTC",
      "Architectures: amd64",
      "Components: main",
    ]);
    expect(text).toContain(`SHA512:\n ${SHA512}             1024 main/binary-amd64/Packages.xz\n`);
    expect(text).not.toContain("Acquire-By-Hash");
  });

  it("refuses values that would break the format", () => {
    const base = {
      suite: "kiln",
      codename: "kiln",
      date: new Date(0),
      architectures: ["amd64"],
      components: ["main"],
      acquireByHash: false,
      files,
    };
    for (const input of [
      { ...base, suite: "a b" },
      { ...base, codename: "" },
      { ...base, description: "two\nlines" },
      { ...base, origin: "x\nSHA256:" },
      { ...base, components: ["../main"] },
      { ...base, files: [{ ...files[0]!, path: "../../etc/passwd" }] },
      { ...base, files: [{ ...files[0]!, size: 1.5 }] },
      { ...base, files: [{ ...files[0]!, sha256: "xyz" }] },
      { ...base, files: [files[0]!, files[0]!] },
    ]) {
      expect(() => releaseFile(input)).toThrow(KilnError);
    }
    expectDebianErrorSync(() => releaseFile({ ...base, architectures: ["AMD64"] }), "INVALID_ARCHITECTURE");
    expect(() => formatReleaseDate(new Date(Number.NaN))).toThrow(KilnError);
  });

  it("writes the per-component Release files", () => {
    expect(
      componentReleaseFile({
        archive: "stable",
        codename: "bookworm",
        component: "main",
        architecture: "amd64",
        origin: "Kiln",
        label: "Kiln",
        acquireByHash: true,
      }),
    ).toBe(
      "Archive: stable\nCodename: bookworm\nOrigin: Kiln\nLabel: Kiln\nAcquire-By-Hash: yes\nComponent: main\nArchitecture: amd64\n",
    );
    expect(componentReleaseFile({ archive: "kiln", component: "main", architecture: "source" })).toBe(
      "Archive: kiln\nComponent: main\nArchitecture: source\n",
    );
  });
});

describe("hashBytes and compressIndex", () => {
  const data = Buffer.from(
    Array.from({ length: 2000 }, (_, i) => `Package: p${i}\nVersion: 1.${i}\nArchitecture: amd64\n`).join(
      "\n",
    ),
  );

  it.runIf(haveTool("sha512sum"))("hashes as md5sum, sha1sum, sha256sum and sha512sum do", () => {
    const file = path.join(tmp.dir, "hash-me");
    writeFileSync(file, data);
    const tool = (name: string) => run(name, [file]).split(" ")[0];
    expect(hashBytes(data)).toEqual({
      size: data.length,
      md5: tool("md5sum"),
      sha1: tool("sha1sum"),
      sha256: tool("sha256sum"),
      sha512: tool("sha512sum"),
    });
    expect(hashBytes(new Uint8Array()).size).toBe(0);
  });

  it.runIf(haveTool("xz"))(
    "makes .gz and .xz copies that decompress to the input, the same each time",
    async () => {
      const { gz, xz } = await compressIndex(data);
      expect(zlib.gunzipSync(gz).equals(data)).toBe(true);
      const back = spawnSync("xz", ["-dc"], { input: xz, maxBuffer: 1 << 26 });
      expect(back.status).toBe(0);
      expect(back.stdout.equals(data)).toBe(true);
      expect(xz.length).toBeLessThan(data.length / 5);
      const again = await compressIndex(data);
      expect(again.gz.equals(gz)).toBe(true);
      expect(again.xz.equals(xz)).toBe(true);
      const empty = await compressIndex(new Uint8Array());
      expect(zlib.gunzipSync(empty.gz).length).toBe(0);
    },
  );
});

describe("indexChunks and compressIndexChunks", () => {
  const paragraph = (i: number) =>
    `Package: pkg${i}\nVersion: 1.${i}\nArchitecture: amd64\nDescription: package ${i}\n a longer line to make the paragraph ${"x".repeat(i % 97)}\n`;
  const paragraphs = Array.from({ length: 6000 }, (_, i) => paragraph(i));

  it("cuts an index at paragraph boundaries the paragraphs choose, joining back to the index", () => {
    const chunks = indexChunks(paragraphs);
    expect(chunks.length).toBeGreaterThan(2);
    expect(chunks.join("")).toBe(paragraphs.join("\n"));
    for (const c of chunks.slice(0, -1)) expect(c.endsWith("\n\n")).toBe(true);
    expect(indexChunks([])).toEqual([""]);
    expect(indexChunks(["Package: a\n"])).toEqual(["Package: a\n"]);
    // One more package changes the piece it falls in and no other.
    const more = [...paragraphs];
    more.splice(3000, 0, paragraph(99999));
    const after = indexChunks(more);
    expect(after.filter((c) => !chunks.includes(c)).length).toBe(1);
  });

  it.runIf(haveTool("xz") && haveTool("/usr/lib/apt/apt-helper"))(
    "makes one .gz and one single-stream .xz that gzip, xz and apt read whole, the same each time",
    async () => {
      const chunks = indexChunks(paragraphs);
      const text = Buffer.from(chunks.join(""));
      const { gz, xz } = await compressIndexChunks(chunks);
      expect(zlib.gunzipSync(gz).equals(text)).toBe(true);
      const back = spawnSync("xz", ["-dc"], { input: xz, maxBuffer: 1 << 26 });
      expect(back.status).toBe(0);
      expect(back.stdout.equals(text)).toBe(true);
      const xzFile = path.join(tmp.dir, "list-me.xz");
      writeFileSync(xzFile, xz);
      const list = spawnSync("xz", ["--robot", "-l", xzFile]);
      const streams = /^totals\t(\d+)\t(\d+)/m.exec(list.stdout.toString());
      expect(streams?.slice(1, 3)).toEqual(["1", String(chunks.length)]);
      // apt stops at the end of the first xz stream: it must get everything.
      for (const [name, data] of [
        ["Packages.xz", xz],
        ["Packages.gz", gz],
      ] as const) {
        const file = path.join(tmp.dir, name);
        writeFileSync(file, data);
        const cat = spawnSync("/usr/lib/apt/apt-helper", ["cat-file", file], { maxBuffer: 1 << 26 });
        expect(cat.status).toBe(0);
        expect(cat.stdout.equals(text), name).toBe(true);
      }
      const again = await compressIndexChunks(chunks.map((c) => ` ${c}`.slice(1)));
      expect(again.xz.equals(xz)).toBe(true);
      expect(again.gz.equals(gz)).toBe(true);
      const empty = await compressIndexChunks([""]);
      expect(zlib.gunzipSync(empty.gz).length).toBe(0);
      expect(spawnSync("xz", ["-dc"], { input: empty.xz }).stdout.length).toBe(0);
    },
  );
});

// ---------------------------------------------------------------------------------------------
// A repository written by hand with these writers, read by the real apt.

const haveApt = haveTool("apt-get") && haveTool("dpkg-deb") && haveTool("dpkg-source") && haveTool("xz");

interface BuiltDeb {
  file: string;
  control: string;
  source: string;
}

function buildDeb(dir: string, control: string): string {
  const root = path.join(dir, "tree");
  mkdirSync(path.join(root, "DEBIAN"), { recursive: true });
  mkdirSync(path.join(root, "usr", "share", "doc"), { recursive: true });
  writeFileSync(path.join(root, "DEBIAN", "control"), control);
  writeFileSync(path.join(root, "usr", "share", "doc", `${dir.length}.txt`), control);
  const out = path.join(dir, "out.deb");
  run("dpkg-deb", ["--root-owner-group", "--build", root, out]);
  return out;
}

const DEB_CONTROLS: Array<{ control: string; source: string }> = [
  {
    source: "kiln-hello",
    control:
      "Package: kiln-hello\nVersion: 1.0-1\nArchitecture: amd64\nMaintainer: K <k@example.org>\n" +
      "Depends: libkiln1 (>= 1.0)\nSection: misc\nPriority: optional\nDescription: hello\n from Kiln\n",
  },
  {
    source: "libkiln",
    control:
      "Package: libkiln1\nSource: libkiln (1.0-1)\nVersion: 1.0-1+b1\nArchitecture: amd64\n" +
      "Maintainer: K <k@example.org>\nMulti-Arch: same\nDescription: library\n",
  },
  {
    source: "kiln-data",
    control:
      "Package: kiln-data\nVersion: 2:0.1~rc1\nArchitecture: all\nMaintainer: K <k@example.org>\nDescription: data\n",
  },
];

interface Repo {
  root: string;
  debs: Array<BuiltDeb & { poolFile: string; name: string }>;
  dscFiles: string[];
}

/** Writes pool/ and dists/kiln/ under `root`. `tamper` may change the Release entries. */
async function writeRepo(
  root: string,
  options: { acquireByHash: boolean; tamper?: (files: IndexFileEntry[]) => void },
): Promise<Repo> {
  const debs: Repo["debs"] = [];
  const stanzas: string[] = [];
  for (const [i, { control, source }] of DEB_CONTROLS.entries()) {
    const built = buildDeb(path.join(tmp.dir, `deb-${path.basename(root)}-${i}`), control);
    const info = await readDebControl(built);
    const name = `${info.package}_${info.version.replace(/^\d+:/, "")}_${info.architecture}.deb`;
    const poolFile = `${poolDirectory("main", source)}/${name}`;
    mkdirSync(path.join(root, path.dirname(poolFile)), { recursive: true });
    cpSync(built, path.join(root, poolFile));
    const h = hashBytes(readFileSync(built));
    // alternate the two input forms
    const input = i % 2 === 0 ? info.controlText : info.control;
    stanzas.push(packagesStanza(input, { filename: poolFile, ...h }));
    debs.push({ file: built, control, source, poolFile, name: info.package });
  }

  const srcDir = path.join(tmp.dir, `src-${path.basename(root)}`);
  mkdirSync(srcDir, { recursive: true });
  cpSync(path.resolve("test/fixtures/packages/hello-c"), path.join(srcDir, "hello-c"), { recursive: true });
  run("dpkg-source", ["-b", "hello-c"], { cwd: srcDir });
  const dscName = "hello-c_1.0.dsc";
  const dsc = parseDsc(readFileSync(path.join(srcDir, dscName), "utf8"), dscName);
  const directory = poolDirectory("main", dsc.source);
  mkdirSync(path.join(root, directory), { recursive: true });
  for (const f of [dscName, ...dsc.files.map((x) => x.name)]) {
    cpSync(path.join(srcDir, f), path.join(root, directory, f));
  }
  const sources = sourcesStanza(dsc, {
    directory,
    dscFile: { name: dscName, ...hashBytes(readFileSync(path.join(srcDir, dscName))) },
  });

  const dist = path.join(root, "dists", "kiln");
  const entries: IndexFileEntry[] = [];
  const writeIndex = (rel: string, data: Buffer): void => {
    const file = path.join(dist, rel);
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, data);
    const h = hashBytes(data);
    entries.push({ path: rel, ...h });
    if (options.acquireByHash && !rel.endsWith("/Release")) {
      for (const [kind, hash] of [
        ["SHA256", h.sha256],
        ["SHA512", h.sha512],
      ] as const) {
        const byHash = path.join(path.dirname(file), "by-hash", kind, hash);
        mkdirSync(path.dirname(byHash), { recursive: true });
        writeFileSync(byHash, data);
      }
    }
  };
  for (const [dir, name, text, arch] of [
    ["main/binary-amd64", "Packages", stanzas.join("\n"), "amd64"],
    ["main/source", "Sources", sources, "source"],
  ] as const) {
    const data = Buffer.from(text);
    const { gz, xz } = await compressIndex(data);
    writeIndex(`${dir}/${name}`, data);
    writeIndex(`${dir}/${name}.gz`, gz);
    writeIndex(`${dir}/${name}.xz`, xz);
    const release = componentReleaseFile({
      archive: "kiln",
      codename: "kiln",
      component: "main",
      architecture: arch,
      origin: "Kiln",
      label: "Kiln",
      acquireByHash: options.acquireByHash,
    });
    writeIndex(`${dir}/Release`, Buffer.from(release));
  }
  options.tamper?.(entries);
  writeFileSync(
    path.join(dist, "Release"),
    releaseFile({
      origin: "Kiln",
      label: "Kiln",
      suite: "kiln",
      codename: "kiln",
      date: new Date(),
      architectures: ["amd64"],
      components: ["main"],
      description: "Kiln test repository",
      acquireByHash: options.acquireByHash,
      files: entries,
    }),
  );
  return { root, debs, dscFiles: [dscName, ...dsc.files.map((x) => x.name)] };
}

/** Runs apt-get with all of its state in `dir`, isolated from the machine's configuration. */
function aptGet(
  dir: string,
  repoRoot: string,
  args: string[],
  cwd = dir,
): { status: number | null; output: string } {
  const etc = path.join(dir, "etc");
  if (!readdirSafe(etc)) {
    for (const d of [
      "etc/apt.conf.d",
      "etc/sources.list.d",
      "etc/preferences.d",
      "etc/trusted.gpg.d",
      "state",
      "cache",
      "log",
    ]) {
      mkdirSync(path.join(dir, d), { recursive: true });
    }
    writeFileSync(path.join(dir, "status"), "");
    writeFileSync(
      path.join(etc, "sources.list"),
      `deb [trusted=yes] file:${repoRoot} kiln main\ndeb-src [trusted=yes] file:${repoRoot} kiln main\n`,
    );
    const conf = {
      "Dir::Etc": `${etc}/`,
      "Dir::Etc::main": "apt.conf",
      "Dir::Etc::Parts": "apt.conf.d",
      "Dir::Etc::SourceList": "sources.list",
      "Dir::Etc::SourceParts": "sources.list.d",
      "Dir::Etc::Preferences": "preferences",
      "Dir::Etc::PreferencesParts": "preferences.d",
      "Dir::Etc::Trusted": "trusted.gpg",
      "Dir::Etc::TrustedParts": "trusted.gpg.d",
      "Dir::State": `${dir}/state/`,
      "Dir::State::status": `${dir}/status`,
      "Dir::Cache": `${dir}/cache/`,
      "Dir::Log": `${dir}/log/`,
      "Debug::NoLocking": "1",
      "APT::Architecture": "amd64",
      "APT::Architectures": "amd64",
      "APT::Sandbox::User": userInfo().username,
      "Acquire::Languages": "none",
    };
    writeFileSync(
      path.join(dir, "apt.conf"),
      Object.entries(conf)
        .map(([k, v]) => `${k} "${v}";\n`)
        .join(""),
    );
  }
  const result = spawnSync("apt-get", ["-q", ...args], {
    cwd,
    env: { ...process.env, APT_CONFIG: path.join(dir, "apt.conf"), LC_ALL: "C" },
    encoding: "utf8",
  });
  return { status: result.status, output: `${result.stdout}\n${result.stderr}` };
}

function readdirSafe(dir: string): boolean {
  try {
    readdirSync(dir);
    return true;
  } catch {
    return false;
  }
}

describe.runIf(haveApt)("a repository written with these writers", () => {
  let repo: Repo;
  beforeAll(async () => {
    repo = await writeRepo(path.join(tmp.dir, "repo"), { acquireByHash: true });
  });

  it("has Packages paragraphs with the fields dpkg-scanpackages writes", () => {
    const theirs = run("dpkg-scanpackages", ["-m", "pool"], { cwd: repo.root });
    const ours = readFileSync(path.join(repo.root, "dists/kiln/main/binary-amd64/Packages"), "utf8");
    const byName = (text: string) =>
      new Map(
        text
          .split(/\n\n+/)
          .filter((p) => p.trim() !== "")
          .map((p) => {
            const record = paragraphToRecord(parseParagraph(p));
            return [record.Package, record] as const;
          }),
      );
    const withoutSha512 = new Map(
      [...byName(ours)].map(([name, record]) => {
        const { SHA512: sha512, ...rest } = record;
        expect(sha512).toMatch(/^[0-9a-f]{128}$/); // dpkg-scanpackages writes no SHA512
        return [name, rest] as const;
      }),
    );
    expect(withoutSha512).toEqual(byName(theirs));
  });

  it("is accepted by apt-get update, by hash, and apt-get download fetches matching packages", () => {
    const aptDir = path.join(tmp.dir, "apt-ok");
    mkdirSync(aptDir);
    const update = aptGet(aptDir, repo.root, ["update", "-o", "Debug::pkgAcquire::Worker=1"]);
    expect(update.status, update.output).toBe(0);
    expect(update.output).not.toMatch(/^(W|E):/m);
    // With SHA512 in Release, apt asks for by-hash/SHA512/<hash>, never the file by name.
    const fetched = [
      ...update.output.matchAll(/URI%20Acquire%0aURI:%20file:[^%]*\/dists\/kiln\/([^%]+)/g),
    ].map((m) => m[1]);
    expect(fetched.filter((f) => f?.includes("/")).sort()).toEqual([
      expect.stringMatching(/^main\/binary-amd64\/by-hash\/SHA512\/[0-9a-f]{128}$/),
      expect.stringMatching(/^main\/source\/by-hash\/SHA512\/[0-9a-f]{128}$/),
    ]);

    const downloads = path.join(aptDir, "downloads");
    mkdirSync(downloads);
    for (const deb of repo.debs) {
      const got = aptGet(aptDir, repo.root, ["download", deb.name], downloads);
      expect(got.status, got.output).toBe(0);
    }
    const files = readdirSync(downloads).sort();
    expect(files).toHaveLength(repo.debs.length);
    for (const deb of repo.debs) {
      const file = files.find((f) => f.startsWith(`${deb.name}_`));
      expect(file, deb.name).toBeDefined();
      expect(hashBytes(readFileSync(path.join(downloads, file!))).sha256).toBe(
        hashBytes(readFileSync(deb.file)).sha256,
      );
    }
    // apt parsed the versions and fields as written
    const show = aptGet(aptDir, repo.root, ["-s", "install", "kiln-hello"]);
    expect(show.output).toMatch(/Inst libkiln1 \(1\.0-1\+b1 /);
    expect(show.output).toMatch(/Inst kiln-hello \(1\.0-1 /);
  });

  it("serves the source package to apt-get source --download-only", () => {
    const aptDir = path.join(tmp.dir, "apt-src");
    mkdirSync(aptDir);
    expect(aptGet(aptDir, repo.root, ["update"]).status).toBe(0);
    const out = path.join(aptDir, "source");
    mkdirSync(out);
    const got = aptGet(aptDir, repo.root, ["source", "--download-only", "hello-c"], out);
    expect(got.status, got.output).toBe(0);
    expect(readdirSync(out).sort()).toEqual([...repo.dscFiles].sort());
  });

  it("makes apt-get update fail with a hash mismatch when Release has a wrong SHA256", async () => {
    const bad = await writeRepo(path.join(tmp.dir, "repo-bad"), {
      acquireByHash: false,
      tamper: (files) => {
        for (const f of files) {
          if (f.path.includes("binary-amd64/Packages")) {
            f.sha256 = f.sha256.replace(/^./, (c) => (c === "0" ? "1" : "0"));
          }
        }
      },
    });
    const aptDir = path.join(tmp.dir, "apt-bad");
    mkdirSync(aptDir);
    const update = aptGet(aptDir, bad.root, ["update"]);
    expect(update.status).not.toBe(0);
    expect(update.output).toMatch(/Hash Sum mismatch/);
  });
});
