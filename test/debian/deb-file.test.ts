import { chmodSync, mkdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import path from "node:path";
import { Readable } from "node:stream";
import zlib from "node:zlib";
import { afterAll, describe, expect, it } from "vitest";
import { listArMembers } from "../../src/debian/ar.js";
import { bufferSource } from "../../src/debian/byte-source.js";
import { getField, paragraphToRecord, parseParagraph } from "../../src/debian/deb822.js";
import { readDebControl } from "../../src/debian/deb-file.js";
import { hashFile } from "../../src/debian/hash-file.js";
import {
  expectDebianError,
  GOOD_CONTROL,
  gzipZeros,
  haveTool,
  makeAr,
  makeDeb,
  makeTar,
  makeTempDir,
  run,
  tarHeader,
} from "./helpers.js";

const MB = 1024 * 1024;
const tmp = makeTempDir();
afterAll(() => tmp.cleanup());
const dpkgDeb = haveTool("dpkg-deb");

const CONTROL = `Package: kiln-hello
Version: 1:2.10-3~bpo1
Architecture: amd64
Maintainer: Jane Doe <jane@example.org>
Installed-Size: 12
Depends: libc6 (>= 2.36), python3:any | python3-minimal
Section: devel
Priority: optional
Homepage: https://example.org/hello
Description: a greeting for the test suite
 The long description has two paragraphs.
 .
 This is the second.
X-Custom-Field: kept as is
`;

let counter = 0;

/** Builds a real .deb with dpkg-deb from a small tree; returns its path. */
function buildDeb(control: string, compression: string, extraArgs: string[] = []): string {
  const root = path.join(tmp.dir, `pkg${++counter}`);
  mkdirSync(path.join(root, "DEBIAN"), { recursive: true });
  writeFileSync(path.join(root, "DEBIAN", "control"), control);
  writeFileSync(path.join(root, "DEBIAN", "postinst"), "#!/bin/sh\nset -e\n");
  chmodSync(path.join(root, "DEBIAN", "postinst"), 0o755);
  const deep = path.join(root, "usr", "share", "kiln-hello", "a".repeat(80), "b".repeat(80));
  mkdirSync(deep, { recursive: true });
  writeFileSync(path.join(deep, `${"c".repeat(60)}.txt`), "deep\n");
  mkdirSync(path.join(root, "usr", "bin"), { recursive: true });
  writeFileSync(path.join(root, "usr", "bin", "hello"), "#!/bin/sh\necho hello\n");
  chmodSync(path.join(root, "usr", "bin", "hello"), 0o755);
  symlinkSync("hello", path.join(root, "usr", "bin", "hi"));
  const out = path.join(tmp.dir, `pkg${counter}.deb`);
  run("dpkg-deb", ["--root-owner-group", `-Z${compression}`, ...extraArgs, "--build", root, out]);
  return out;
}

const COMPRESSIONS = [
  ["xz", "xz"],
  ["gzip", "gzip"],
  ["none", "none"],
  ["zstd", "zstd"],
] as const;

describe.runIf(dpkgDeb)("readDebControl on packages built by dpkg-deb", () => {
  it.each(COMPRESSIONS)("-Z%s: matches dpkg-deb -f, --ctrl-tarfile and --fsys-tarfile", async (z, want) => {
    if (z === "zstd" && !haveTool("zstd")) return;
    const deb = buildDeb(CONTROL, z);
    const members = run("ar", ["t", deb]).trim().split("\n");
    expect(members[0]).toBe("debian-binary");

    const info = await readDebControl(deb, { listFiles: true });
    expect(info).toMatchObject({
      package: "kiln-hello",
      version: "1:2.10-3~bpo1",
      architecture: "amd64",
      formatVersion: "2.0",
      controlCompression: want,
      dataCompression: want,
    });
    const dpkgFields = parseParagraph(run("dpkg-deb", ["-f", deb]));
    expect(paragraphToRecord(info.control)).toEqual(paragraphToRecord(dpkgFields));
    expect(getField(info.control, "description")).toBe(
      "a greeting for the test suite\nThe long description has two paragraphs.\n.\nThis is the second.",
    );
    expect(run("dpkg-deb", ["-f", deb, "Version"]).trim()).toBe(info.version);
    expect(info.controlText).toBe(
      run("sh", ["-c", 'dpkg-deb --ctrl-tarfile "$1" | tar -xOf - ./control', "sh", deb]),
    );

    const controlList = run("sh", ["-c", 'dpkg-deb --ctrl-tarfile "$1" | tar -tf -', "sh", deb])
      .trim()
      .split("\n");
    expect(info.controlMembers).toEqual(controlList);
    expect(info.controlMembers).toContain("./postinst");

    const dataList = run("sh", ["-c", 'dpkg-deb --fsys-tarfile "$1" | tar -tf -', "sh", deb])
      .trim()
      .split("\n");
    expect(info.files?.map((f) => f.path)).toEqual(dataList);
    const byPath = new Map(info.files?.map((f) => [f.path, f]));
    expect(byPath.get("./usr/bin/hello")).toMatchObject({
      type: "file",
      size: 21,
      mode: 0o755,
      uname: "root",
    });
    expect(byPath.get("./usr/bin/hi")).toMatchObject({ type: "symlink", linkTarget: "hello" });
    expect([...byPath.keys()].some((p) => p.length > 200)).toBe(true); // the GNU long name was read

    // The same from a buffer, and without the data listing.
    const fromBuffer = await readDebControl(readFileSync(deb));
    expect(fromBuffer.files).toBeUndefined();
    expect(fromBuffer.controlText).toBe(info.controlText);
  });

  it("reads the Source field and tolerates _ members dpkg would skip", async () => {
    const deb = buildDeb(
      CONTROL.replace("Section: devel\n", "Section: devel\nSource: hello (2.10-3)\n"),
      "gzip",
    );
    const buf = readFileSync(deb);
    const list = await listArMembers(bufferSource(buf));
    const part = (i: number) => buf.subarray(list[i]!.offset, list[i]!.offset + list[i]!.size);
    const withSignature = makeAr([
      { name: "debian-binary", data: part(0) },
      { name: "_gpgbuilder", data: "signature" },
      { name: list[1]!.name, data: part(1) },
      { name: list[2]!.name, data: part(2) },
    ]);
    const info = await readDebControl(withSignature);
    expect(getField(info.control, "Source")).toBe("hello (2.10-3)");
  });

  it("hashes files like md5sum, sha1sum and sha256sum", async () => {
    const deb = buildDeb(CONTROL, "xz");
    const hashes = await hashFile(deb);
    const first = (cmd: string) => run(cmd, [deb]).split(" ")[0];
    expect(hashes).toEqual({
      size: statSync(deb).size,
      md5: first("md5sum"),
      sha1: first("sha1sum"),
      sha256: first("sha256sum"),
    });
    const empty = path.join(tmp.dir, "empty");
    writeFileSync(empty, "");
    expect(await hashFile(empty)).toEqual({
      size: 0,
      md5: "d41d8cd98f00b204e9800998ecf8427e",
      sha1: "da39a3ee5e6b4b0d3255bfef95601890afd80709",
      sha256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    });
  });

  it("refuses a truncated package", async () => {
    const deb = readFileSync(buildDeb(CONTROL, "xz"));
    for (const cut of [deb.length - 1, deb.length >> 1, 70, 8]) {
      const err = await expectDebianError(
        readDebControl(deb.subarray(0, cut), { name: "cut.deb" }),
        "DEB_INVALID",
      );
      expect(err.message).toMatch(/^cut\.deb is not a valid Debian package: /);
      expect(err.message).toMatch(cut === 8 ? /the archive is empty/ : /truncated/);
    }
  });

  it("refuses a bad name or version in the control file", async () => {
    const badName = buildDeb(CONTROL.replace("Package: kiln-hello", "Package: Kiln_Hello"), "gzip", [
      "--nocheck",
    ]);
    const e1 = await expectDebianError(readDebControl(badName), "INVALID_PACKAGE_NAME");
    expect(e1.message).toContain('Invalid package name "Kiln_Hello"');
    expect((e1 as { details?: unknown }).details).toMatchObject({ field: "Package" });
    const badVersion = buildDeb(CONTROL.replace("Version: 1:2.10-3~bpo1", "Version: v2.10"), "gzip", [
      "--nocheck",
    ]);
    const e2 = await expectDebianError(readDebControl(badVersion), "INVALID_VERSION");
    expect(e2.message).toContain("must start with a digit");
  });
});

describe("readDebControl on hand-made packages", () => {
  it("reads a minimal package", async () => {
    const info = await readDebControl(makeDeb());
    expect(info).toMatchObject({
      package: "hello",
      version: "1.0-1",
      architecture: "amd64",
      controlMembers: ["./control"],
    });
  });

  it("refuses a file with the wrong ar magic", async () => {
    const deb = makeDeb();
    deb.write("!<arch>X", 0, "latin1");
    const err = await expectDebianError(readDebControl(deb, { name: "x.deb" }), "DEB_INVALID");
    expect(err.message).toBe(
      'x.deb is not a valid Debian package: not an ar archive (it does not start with "!<arch>\\n")',
    );
    await expectDebianError(readDebControl(Buffer.from("PK\x03\x04 a zip file")), "DEB_INVALID");
  });

  it.each([
    [
      "a ../ path",
      [
        { path: "./control", content: GOOD_CONTROL },
        { path: "./../postinst", content: "rm -rf /" },
      ],
      "'..' component",
    ],
    [
      "an absolute path",
      [
        { path: "/etc/cron.d/evil", content: "* * * * * root sh" },
        { path: "./control", content: GOOD_CONTROL },
      ],
      "it is absolute",
    ],
  ])("refuses a control archive holding %s", async (_what, control, why) => {
    const err = await expectDebianError(
      readDebControl(makeDeb({ control }), { name: "evil.deb" }),
      "ARCHIVE_UNSAFE",
    );
    expect(err.message).toMatch(/^evil\.deb: control\.tar\.gz: refused entry/);
    expect(err.message).toContain(why);
  });

  it("refuses an unsafe path in data.tar when listing files", async () => {
    const deb = makeDeb({ data: [{ path: "./usr/../../etc/passwd", content: "x" }] });
    await expect(readDebControl(deb)).resolves.toBeDefined();
    await expectDebianError(readDebControl(deb, { listFiles: true }), "ARCHIVE_UNSAFE");
  });

  it("refuses a control file over the limit", async () => {
    const huge = GOOD_CONTROL + " " + "x".repeat(2 * MB) + "\n";
    const err = await expectDebianError(
      readDebControl(makeDeb({ control: [{ path: "./control", content: huge }] })),
      "ARCHIVE_TOO_LARGE",
    );
    expect(err.message).toContain(`over the limit of ${MB}`);
    const ok = await readDebControl(makeDeb({ control: [{ path: "./control", content: huge }] }), {
      limits: { maxControlFileSize: 3 * MB },
    });
    expect(ok.package).toBe("hello");
  });

  it("refuses a control archive that decompresses past its limit, without inflating it all", async () => {
    // control.tar.gz: ./control, then a 200 MiB ./postinst of zeros, gzip'd on the fly to ~200 KiB.
    const head = Buffer.concat([
      makeTar([{ path: "./control", content: GOOD_CONTROL }], false),
      tarHeader({ path: "./postinst", size: 200 * MB }),
    ]);
    const bomb = await gzipZeros(200, head);
    expect(bomb.length).toBeLessThan(2 * MB);
    const deb = makeDeb({ controlMember: { name: "control.tar.gz", data: bomb } });
    const err = await expectDebianError(
      readDebControl(deb, { limits: { maxControlTarSize: 50 * MB } }),
      "ARCHIVE_TOO_LARGE",
    );
    expect(err.message).toContain("control.tar.gz");
  });

  it("refuses a small control archive that decompresses past its limit", async () => {
    // Under 64 KiB of gzip, inflated at once rather than streamed: the same limit holds.
    const head = makeTar([{ path: "./control", content: GOOD_CONTROL }], false);
    const small = zlib.gzipSync(
      Buffer.concat([head, tarHeader({ path: "./postinst", size: 8 * MB }), Buffer.alloc(8 * MB)]),
    );
    expect(small.length).toBeLessThan(64 * 1024);
    const deb = makeDeb({ controlMember: { name: "control.tar.gz", data: small } });
    const err = await expectDebianError(
      readDebControl(deb, { limits: { maxControlTarSize: 4 * MB } }),
      "ARCHIVE_TOO_LARGE",
    );
    expect(err.message).toContain("control.tar.gz");
  });

  it("refuses a data archive that decompresses past its limit", async () => {
    // Five honest 12 MiB entries: the running total stops it at the fifth header, ~48 MiB in,
    // without inflating the rest.
    const size = 12 * MB;
    const tar = function* () {
      for (let i = 0; i < 5; i++) {
        yield tarHeader({ path: `./f${i}`, size });
        for (let j = 0; j < 12; j++) yield Buffer.alloc(MB);
      }
      yield Buffer.alloc(1024);
    };
    const gz: Buffer[] = [];
    for await (const c of Readable.from(tar()).pipe(zlib.createGzip({ level: 1 }))) gz.push(c as Buffer);
    const deb = makeDeb({ dataMember: { name: "data.tar.gz", data: Buffer.concat(gz) } });
    const limits = { maxDataTarSize: 50 * MB, maxDataEntrySize: 50 * MB };
    await expect(readDebControl(deb, { limits })).resolves.toBeDefined(); // data.tar untouched
    const err = await expectDebianError(
      readDebControl(deb, { listFiles: true, limits }),
      "ARCHIVE_TOO_LARGE",
    );
    expect(err.message).toContain("data.tar.gz");
  });

  it.each([
    ["a wrong format version", { binary: "3.0\n" }, 'debian-binary says "3.0"'],
    [
      "a missing debian-binary",
      { raw: [{ name: "control.tar.gz", data: "x" }] },
      'the first member is "control.tar.gz"',
    ],
    [
      "no control member",
      {
        raw: [
          { name: "debian-binary", data: "2.0\n" },
          { name: "data.tar.gz", data: "x" },
        ],
      },
      'member "data.tar.gz" comes before control.tar',
    ],
    [
      "no data member",
      {
        raw: [
          { name: "debian-binary", data: "2.0\n" },
          {
            name: "control.tar.gz",
            data: zlib.gzipSync(makeTar([{ path: "./control", content: GOOD_CONTROL }])),
          },
        ],
      },
      "no data.tar member",
    ],
    [
      "an unknown control compression",
      { controlMember: { name: "control.tar.bz2", data: "x" } },
      'unknown compression in member "control.tar.bz2"',
    ],
    [
      "two control members",
      { dataMember: { name: "control.tar", data: makeTar([]) } },
      "two control members",
    ],
    [
      "no ./control file",
      { control: [{ path: "./postinst", content: "#!/bin/sh" }] },
      "has no ./control file",
    ],
    [
      "a control symlink",
      { control: [{ path: "./control", type: "2", linkTarget: "/etc/passwd" }] },
      '"./control" is a symlink, not a file',
    ],
    [
      "two control files",
      {
        control: [
          { path: "./control", content: GOOD_CONTROL },
          { path: "control", content: GOOD_CONTROL },
        ],
      },
      "holds the control file twice",
    ],
    [
      "a malformed Source field",
      { control: [{ path: "./control", content: GOOD_CONTROL + "Source: hello 2.0\n" }] },
      'the Source field "hello 2.0" is malformed',
    ],
    [
      "a control file that is not UTF-8",
      { control: [{ path: "./control", content: Buffer.from("Package: h\xe9llo\n", "latin1") }] },
      "not valid UTF-8",
    ],
  ])("refuses %s", async (_what, opts, message) => {
    const deb = "raw" in opts ? makeAr(opts.raw) : makeDeb(opts);
    const err = await expectDebianError(readDebControl(deb), "DEB_INVALID");
    expect(err.message).toContain(message);
  });

  it.each([
    [
      "a missing Architecture",
      GOOD_CONTROL.replace("Architecture: amd64\n", ""),
      "CONTROL_INVALID",
      "missing required field Architecture",
    ],
    [
      "an empty Version",
      GOOD_CONTROL.replace("Version: 1.0-1", "Version:"),
      "CONTROL_INVALID",
      "missing required field Version",
    ],
    ["a broken control file", "Package hello\n", "CONTROL_INVALID", "line 1"],
    ["two paragraphs", GOOD_CONTROL + "\nPackage: other\n", "CONTROL_INVALID", "expected one paragraph"],
    ["a bad architecture", GOOD_CONTROL.replace("amd64", "AMD64"), "INVALID_ARCHITECTURE", "AMD64"],
    ["a bad Source", GOOD_CONTROL + "Source: Hello\n", "INVALID_PACKAGE_NAME", "source package name"],
    ["a bad Source version", GOOD_CONTROL + "Source: hello (x)\n", "INVALID_VERSION", '"x"'],
  ])("refuses a control file with %s", async (_what, control, code, message) => {
    const err = await expectDebianError(
      readDebControl(makeDeb({ control: [{ path: "./control", content: control }] }), { name: "p.deb" }),
      code,
    );
    expect(err.message).toContain(message);
    expect(err.message).toMatch(/^p\.deb: control/);
  });

  it("refuses corrupt compressed data", async () => {
    const gz = zlib.gzipSync(makeTar([{ path: "./control", content: GOOD_CONTROL }]));
    const broken = Buffer.concat([gz.subarray(0, 30), Buffer.alloc(40, 0x41)]);
    await expectDebianError(
      readDebControl(makeDeb({ controlMember: { name: "control.tar.gz", data: broken } })),
      "ARCHIVE_INVALID",
    );
    if (haveTool("xz")) {
      const xz = makeDeb({ controlMember: { name: "control.tar.xz", data: "definitely not xz" } });
      const err = await expectDebianError(readDebControl(xz), "ARCHIVE_INVALID");
      expect(err.message).toMatch(/control\.tar\.xz: corrupt xz data/);
    }
  });

  it("refuses more ar members than allowed", async () => {
    const deb = makeAr([
      { name: "debian-binary", data: "2.0\n" },
      ...Array.from({ length: 20 }, (_, i) => ({ name: `_sig${i}`, data: "x" })),
    ]);
    const err = await expectDebianError(readDebControl(deb), "DEB_INVALID");
    expect(err.message).toContain("more than 16 members");
  });
});
