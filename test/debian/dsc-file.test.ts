import { cpSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { getField, paragraphToRecord, parseParagraph } from "../../src/debian/deb822.js";
import { parseDsc, sourcesStanza, type DscInfo } from "../../src/debian/dsc-file.js";
import { hashFile } from "../../src/debian/hash-file.js";
import { expectDebianErrorSync, haveTool, makeTempDir, run } from "./helpers.js";

const FIXTURE = path.resolve("test/fixtures/packages/hello-c");
const tmp = makeTempDir();
afterAll(() => tmp.cleanup());

const dpkgSource = haveTool("dpkg-source");
const gpg = haveTool("gpg");

/** Builds the fixture's source package with dpkg-source in `dir`; optionally as 3.0 (quilt). */
function buildSource(dir: string, quilt = false): string {
  mkdirSync(dir, { recursive: true });
  const tree = path.join(dir, "hello-c");
  cpSync(FIXTURE, tree, { recursive: true });
  if (quilt) {
    writeFileSync(path.join(tree, "debian", "source", "format"), "3.0 (quilt)\n");
    const changelog = readFileSync(path.join(tree, "debian", "changelog"), "utf8");
    writeFileSync(path.join(tree, "debian", "changelog"), changelog.replace("(1.0)", "(1:1.0-1~bpo12+1)"));
    run("tar", ["-czf", "hello-c_1.0.orig.tar.gz", "--exclude=debian", "hello-c"], { cwd: dir });
  }
  run("dpkg-source", ["-b", "hello-c"], { cwd: dir });
  return path.join(dir, quilt ? "hello-c_1.0-1~bpo12+1.dsc" : "hello-c_1.0.dsc");
}

async function expectFilesMatch(dsc: DscInfo, dir: string): Promise<void> {
  for (const f of dsc.files) {
    const h = await hashFile(path.join(dir, f.name));
    expect(f).toEqual({ name: f.name, size: h.size, md5: h.md5, sha1: h.sha1, sha256: h.sha256 });
  }
}

describe.runIf(dpkgSource)("parseDsc on dpkg-source output", () => {
  let native: string;
  let quilt: string;
  beforeAll(() => {
    native = buildSource(path.join(tmp.dir, "native"));
    quilt = buildSource(path.join(tmp.dir, "quilt"), true);
  });

  it("reads a 3.0 (native) .dsc", async () => {
    const text = readFileSync(native, "utf8");
    const dsc = parseDsc(text, "hello-c_1.0.dsc");
    expect(dsc).toMatchObject({
      source: "hello-c",
      version: "1.0",
      format: "3.0 (native)",
      architecture: "any",
      binary: ["hello-c"],
      text,
    });
    expect(dsc.files.map((f) => f.name)).toEqual(["hello-c_1.0.tar.xz"]);
    await expectFilesMatch(dsc, path.dirname(native));
    expect(getField(dsc.paragraph, "Build-Depends")).toBe("debhelper-compat (= 13)");
  });

  it("reads a 3.0 (quilt) .dsc with an epoch and two files", async () => {
    const dsc = parseDsc(readFileSync(quilt, "utf8"));
    expect(dsc.version).toBe("1:1.0-1~bpo12+1");
    expect(dsc.format).toBe("3.0 (quilt)");
    expect(dsc.files.map((f) => f.name).sort()).toEqual([
      "hello-c_1.0-1~bpo12+1.debian.tar.xz",
      "hello-c_1.0.orig.tar.gz",
    ]);
    await expectFilesMatch(dsc, path.dirname(quilt));
  });

  it.runIf(gpg)("strips the armor of a clear-signed .dsc and reads the same data", () => {
    const home = path.join(tmp.dir, "gnupg");
    mkdirSync(home, { mode: 0o700 });
    const env = ["--homedir", home, "--batch", "--pinentry-mode", "loopback", "--passphrase", ""];
    run("gpg", [...env, "--quick-gen-key", "Kiln Test <kiln@example.org>", "ed25519", "sign", "never"]);
    const signed = path.join(tmp.dir, "signed.dsc");
    try {
      run("gpg", [...env, "--clearsign", "--output", signed, native]);
    } finally {
      run("gpgconf", ["--homedir", home, "--kill", "gpg-agent"]);
    }
    const signedText = readFileSync(signed, "utf8");
    expect(signedText).toMatch(/^-----BEGIN PGP SIGNED MESSAGE-----/);

    const plain = parseDsc(readFileSync(native, "utf8"));
    const dsc = parseDsc(signedText, "signed.dsc");
    expect(dsc.text).toBe(plain.text);
    expect(paragraphToRecord(dsc.paragraph)).toEqual(paragraphToRecord(plain.paragraph));
    expect(dsc.files).toEqual(plain.files);
    // CRLF line ends (a .dsc mailed around) read the same
    expect(parseDsc(signedText.replace(/\n/g, "\r\n")).files).toEqual(plain.files);
  });

  it.runIf(haveTool("dpkg-scansources"))("writes the Sources paragraph dpkg-scansources writes", async () => {
    const dir = path.dirname(native);
    const dscFile = { name: path.basename(native), ...(await hashFile(native)) };
    const dsc = parseDsc(readFileSync(native, "utf8"));
    const ours = sourcesStanza(dsc, { directory: "pool/main/h/hello-c", dscFile });
    expect(ours.endsWith("\n")).toBe(true);
    expect(ours.endsWith("\n\n")).toBe(false);

    const pool = path.join(tmp.dir, "repo", "pool", "main", "h", "hello-c");
    mkdirSync(pool, { recursive: true });
    for (const f of [path.basename(native), ...dsc.files.map((x) => x.name)]) {
      cpSync(path.join(dir, f), path.join(pool, f));
    }
    const theirs = run("dpkg-scansources", ["pool"], { cwd: path.join(tmp.dir, "repo") });
    expect(paragraphToRecord(parseParagraph(ours))).toEqual(paragraphToRecord(parseParagraph(theirs)));
    // apt-ftparchive's order: Package first, the .dsc first in each file list
    const lines = ours.split("\n");
    expect(lines[0]).toBe("Package: hello-c");
    expect(lines[lines.indexOf("Files:") + 1]).toBe(` ${dscFile.md5} ${dscFile.size} hello-c_1.0.dsc`);
    expect(lines.indexOf("Directory: pool/main/h/hello-c")).toBeLessThan(lines.indexOf("Files:"));
    expect(lines.indexOf("Files:")).toBeLessThan(lines.indexOf("Checksums-Sha256:"));
  });
});

const MD5 = "0123456789abcdef0123456789abcdef";
const SHA1 = "0123456789abcdef0123456789abcdef01234567";
const SHA256 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

function dscText(overrides: Record<string, string | undefined> = {}): string {
  const fields: Record<string, string | undefined> = {
    Format: "3.0 (quilt)",
    Source: "hello",
    Binary: "hello, hello-doc",
    Architecture: "any all",
    Version: "2.10-3",
    "Checksums-Sha256": `\n ${SHA256} 100 hello_2.10.orig.tar.gz\n ${SHA256} 20 hello_2.10-3.debian.tar.xz`,
    Files: `\n ${MD5} 100 hello_2.10.orig.tar.gz\n ${MD5} 20 hello_2.10-3.debian.tar.xz`,
    ...overrides,
  };
  return Object.entries(fields)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k}: ${v}\n`)
    .join("");
}

describe("parseDsc checks", () => {
  it("reads a hand-written .dsc", () => {
    const dsc = parseDsc(dscText());
    expect(dsc.binary).toEqual(["hello", "hello-doc"]);
    expect(dsc.architecture).toBe("any all");
    expect(dsc.files).toEqual([
      { name: "hello_2.10.orig.tar.gz", size: 100, md5: MD5, sha256: SHA256 },
      { name: "hello_2.10-3.debian.tar.xz", size: 20, md5: MD5, sha256: SHA256 },
    ]);
  });

  it("accepts Checksums-Sha256 alone or Files alone", () => {
    expect(parseDsc(dscText({ Files: undefined })).files[0]).toEqual({
      name: "hello_2.10.orig.tar.gz",
      size: 100,
      sha256: SHA256,
    });
    expect(parseDsc(dscText({ "Checksums-Sha256": undefined })).files).toHaveLength(2);
  });

  it.each([["../evil.tar.gz"], ["a/b.tar.gz"], [".hidden"], ["x..y"]])("refuses the file name %s", (name) => {
    const e = expectDebianErrorSync(
      () => parseDsc(dscText({ Files: undefined, "Checksums-Sha256": `\n ${SHA256} 1 ${name}` })),
      "ARCHIVE_UNSAFE",
    );
    expect(e.message).toContain(JSON.stringify(name));
  });

  it.each<[string, Record<string, string | undefined>, string, RegExp]>([
    ["no checksums", { Files: undefined, "Checksums-Sha256": undefined }, "CONTROL_INVALID", /neither/],
    ["an empty list", { Files: undefined, "Checksums-Sha256": "" }, "CONTROL_INVALID", /lists no files/],
    ["no Source", { Source: undefined }, "CONTROL_INVALID", /missing required field Source/],
    ["no Format", { Format: undefined }, "CONTROL_INVALID", /Format/],
    ["a bad Source", { Source: "Hello" }, "INVALID_PACKAGE_NAME", /Source "Hello"/],
    ["a bad Version", { Version: "1.0 beta" }, "INVALID_VERSION", /Version/],
    ["a bad binary", { Binary: "hello, Hello_Doc" }, "INVALID_PACKAGE_NAME", /Hello_Doc/],
    ["a bad architecture", { Architecture: "amd64 AMD64" }, "INVALID_ARCHITECTURE", /AMD64/],
    ["a short hash", { Files: `\n ${MD5.slice(1)} 100 a.tar.gz` }, "CONTROL_INVALID", /32-digit/],
    ["a bad size", { "Checksums-Sha256": `\n ${SHA256} -1 a.tar.gz` }, "CONTROL_INVALID", /invalid size/],
    ["extra words", { Files: `\n ${MD5} 1 a.tar.gz b` }, "CONTROL_INVALID", /checksum size name/],
    [
      "sizes that disagree",
      { Files: `\n ${MD5} 100 hello_2.10.orig.tar.gz\n ${MD5} 21 hello_2.10-3.debian.tar.xz` },
      "CONTROL_INVALID",
      /size/,
    ],
    [
      "a file missing from one list",
      { Files: `\n ${MD5} 100 hello_2.10.orig.tar.gz` },
      "CONTROL_INVALID",
      /does not list "hello_2.10-3.debian.tar.xz"|lists "hello_2.10-3.debian.tar.xz", which Files does not/,
    ],
    [
      "a file twice",
      { Files: undefined, "Checksums-Sha256": `\n ${SHA256} 1 a.tar.gz\n ${SHA256} 1 a.tar.gz` },
      "CONTROL_INVALID",
      /twice/,
    ],
  ])("refuses %s", (_what, overrides, code, message) => {
    expect(expectDebianErrorSync(() => parseDsc(dscText(overrides)), code).message).toMatch(message);
  });

  it("refuses text around the armor and broken armor", () => {
    const body = dscText();
    const signed = `-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n${body}-----BEGIN PGP SIGNATURE-----\n\nabc\n-----END PGP SIGNATURE-----\n`;
    expect(parseDsc(signed).text).toBe(body);
    expectDebianErrorSync(() => parseDsc(`Source: evil\n${signed}`), "CONTROL_INVALID");
    expectDebianErrorSync(() => parseDsc(`${signed}Source: evil\n`), "CONTROL_INVALID");
    expectDebianErrorSync(
      () => parseDsc(signed.replace("-----END PGP SIGNATURE-----\n", "")),
      "CONTROL_INVALID",
    );
    expectDebianErrorSync(() => parseDsc(signed.replace("\n\nFormat", "\nFormat")), "CONTROL_INVALID");
    expectDebianErrorSync(() => parseDsc(signed.replace("Format:", "-Format:")), "CONTROL_INVALID");
    // dash-escaped lines come back unescaped
    const escaped = signed.replace("Format:", "- Format:");
    expect(parseDsc(escaped).format).toBe("3.0 (quilt)");
  });

  it("writes a Sources paragraph that lists only complete checksum kinds", () => {
    const dsc = parseDsc(dscText({ Files: undefined }));
    const stanza = sourcesStanza(dsc, {
      directory: "pool/main/h/hello",
      dscFile: { name: "hello_2.10-3.dsc", size: 9, md5: MD5, sha1: SHA1, sha256: SHA256 },
    });
    expect(stanza).toContain(
      `Checksums-Sha256:\n ${SHA256} 9 hello_2.10-3.dsc\n ${SHA256} 100 hello_2.10.orig.tar.gz\n`,
    );
    expect(stanza).not.toContain("Files:");
    expect(stanza).not.toContain("Checksums-Sha1:");
    expect(stanza.startsWith("Package: hello\nFormat: 3.0 (quilt)\nBinary: hello, hello-doc\n")).toBe(true);
    for (const directory of ["", "/pool/x", "pool/../x", "pool//x", "pool/a b"]) {
      expectDebianErrorSync(
        () =>
          sourcesStanza(dsc, {
            directory,
            dscFile: { name: "a.dsc", size: 1, md5: MD5, sha1: SHA1, sha256: SHA256 },
          }),
        "ARCHIVE_UNSAFE",
      );
    }
  });
});
