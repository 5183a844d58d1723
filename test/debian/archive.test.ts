import { mkdirSync, readFileSync, symlinkSync, linkSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { listArMembers, readArMember } from "../../src/debian/ar.js";
import { bufferSource, openFileSource } from "../../src/debian/byte-source.js";
import { findUnsafePath, readTar, type ReadTarOptions, type TarEntry } from "../../src/debian/tar.js";
import {
  arHeader,
  expectDebianError,
  haveTool,
  makeAr,
  makeTar,
  makeTempDir,
  paxRecords,
  run,
  tarHeader,
  type TarSpec,
} from "./helpers.js";

const tmp = makeTempDir();
afterAll(() => tmp.cleanup());

function* chunked(buf: Buffer, size = 1000): Generator<Buffer> {
  for (let i = 0; i < buf.length; i += size) yield buf.subarray(i, i + size);
}

async function listTar(buf: Buffer, options: ReadTarOptions = {}, chunk = 1000): Promise<TarEntry[]> {
  const out: TarEntry[] = [];
  for await (const entry of readTar(chunked(buf, chunk), options)) out.push(entry);
  return out;
}

describe("ar", () => {
  it("lists members with offsets, sizes and padding, like ar(1)", async () => {
    const archive = makeAr([
      { name: "debian-binary", data: "2.0\n" },
      { name: "odd/", data: "abc" },
      { name: "empty", data: "" },
      { name: "last", data: "xyz" },
    ]);
    const members = await listArMembers(bufferSource(archive));
    expect(members.map((m) => [m.name, m.size, m.mode])).toEqual([
      ["debian-binary", 4, 0o100644],
      ["odd", 3, 0o100644],
      ["empty", 0, 0o100644],
      ["last", 3, 0o100644],
    ]);
    const source = bufferSource(archive);
    expect((await readArMember(source, members[1]!, 10)).toString()).toBe("abc");
    expect((await readArMember(source, members[3]!, 10)).toString()).toBe("xyz");
    await expectDebianError(readArMember(source, members[0]!, 3), "ARCHIVE_TOO_LARGE");
    if (haveTool("ar")) {
      const file = path.join(tmp.dir, "t.a");
      writeFileSync(file, archive);
      expect(run("ar", ["t", file]).trim().split("\n")).toEqual(["debian-binary", "odd", "empty", "last"]);
      const fileSource = await openFileSource(file);
      try {
        expect(await listArMembers(fileSource)).toEqual(members);
      } finally {
        await fileSource.close();
      }
    }
  });

  it("tolerates a missing pad byte after the last member", async () => {
    const archive = makeAr([{ name: "a", data: "odd" }]);
    const members = await listArMembers(bufferSource(archive.subarray(0, archive.length - 1)));
    expect(members).toHaveLength(1);
  });

  it.each([
    ["an empty file", Buffer.alloc(0), "too short (0 bytes)"],
    ["a wrong magic", Buffer.from("!<arch>\r" + "x".repeat(80)), "not an ar archive"],
    ["a tarball", makeTar([{ path: "x", content: "y" }]), "not an ar archive"],
    [
      "a truncated header",
      Buffer.concat([Buffer.from("!<arch>\n"), arHeader("a", 1).subarray(0, 30)]),
      "truncated member header at offset 8",
    ],
    [
      "a truncated member",
      makeAr([{ name: "data.tar", data: "x".repeat(100) }]).subarray(0, 150),
      'member "data.tar" is truncated: it declares 100 bytes but only 82 remain',
    ],
    [
      "a bad size field",
      Buffer.concat([Buffer.from("!<arch>\n"), arHeader("a", 1).fill("1a", 48, 50), Buffer.from("xx")]),
      'bad size field "1a"',
    ],
    [
      "a negative size",
      Buffer.concat([
        Buffer.from("!<arch>\n"),
        Buffer.from(arHeader("a", 1).toString("latin1").replace("1         `", "-1        `"), "latin1"),
      ]),
      'bad size field "-1"',
    ],
    [
      "a bad header terminator",
      Buffer.concat([Buffer.from("!<arch>\n"), arHeader("a", 1).fill("xx", 58), Buffer.from("xx")]),
      'no "`\\n" terminator',
    ],
  ])("refuses %s", async (_what, archive, message) => {
    const err = await expectDebianError(
      listArMembers(bufferSource(archive), { name: "t.deb" }),
      "ARCHIVE_INVALID",
    );
    expect(err.message).toMatch(/^t\.deb: /);
    expect(err.message).toContain(message);
  });

  it("refuses more members than allowed", async () => {
    const archive = makeAr(Array.from({ length: 5 }, (_, i) => ({ name: `m${i}`, data: "x" })));
    await expect(listArMembers(bufferSource(archive), { maxMembers: 5 })).resolves.toHaveLength(5);
    await expectDebianError(listArMembers(bufferSource(archive), { maxMembers: 4 }), "ARCHIVE_INVALID");
  });
});

describe("findUnsafePath", () => {
  it.each([
    ["./usr/bin/x", undefined],
    ["usr/../../x", "'..' component"],
    ["..", "'..' component"],
    ["./..", "'..' component"],
    ["a/..b/c", undefined],
    ["/etc/passwd", "absolute"],
    ["a\0b", "NUL"],
    ["", "empty"],
  ])("%j → %s", (p, want) => {
    const got = findUnsafePath(p);
    if (want === undefined) expect(got).toBeUndefined();
    else expect(got).toContain(want);
  });
});

describe.runIf(haveTool("tar"))("tar: archives made by GNU tar", () => {
  const tree = path.join(tmp.dir, "tree");
  const longDir = `${"d".repeat(60)}/${"e".repeat(60)}`;
  const longName = `${longDir}/${"f".repeat(90)}.txt`;
  mkdirSync(path.join(tree, longDir), { recursive: true });
  writeFileSync(path.join(tree, "hello.txt"), "hello world\n");
  writeFileSync(path.join(tree, longName), "x".repeat(1500));
  writeFileSync(path.join(tree, "ünïcödé"), "");
  symlinkSync("/usr/share/doc/elsewhere", path.join(tree, "abs-link"));
  linkSync(path.join(tree, "hello.txt"), path.join(tree, "hard.txt"));

  it.each(["gnu", "pax", "ustar", "oldgnu"])("lists a %s archive exactly as tar -t does", async (format) => {
    const file = path.join(tmp.dir, `t-${format}.tar`);
    run("tar", ["--format", format, "--sort=name", "-C", tree, "-cf", file, "."]);
    const listed = run("tar", ["-tf", file]).trim().split("\n");
    const entries = await listTar(readFileSync(file), { readContent: (e) => e.path.endsWith(".txt") }, 777);
    expect(entries.map((e) => e.path)).toEqual(listed);
    const byPath = new Map(entries.map((e) => [e.path, e]));
    // Sorted by name, hard.txt comes first and holds the data; hello.txt links to it.
    expect(byPath.get("./hard.txt")).toMatchObject({
      type: "file",
      size: 12,
      content: Buffer.from("hello world\n"),
    });
    expect(byPath.get("./hello.txt")).toMatchObject({ type: "hardlink", size: 0, linkTarget: "./hard.txt" });
    expect(byPath.get(`./${longName}`)).toMatchObject({
      type: "file",
      size: 1500,
      content: Buffer.from("x".repeat(1500)),
    });
    expect(byPath.get("./abs-link")).toMatchObject({
      type: "symlink",
      size: 0,
      linkTarget: "/usr/share/doc/elsewhere",
    });
    expect(byPath.get("./")).toMatchObject({ type: "directory", size: 0 });
    expect(byPath.get("./ünïcödé")).toMatchObject({ type: "file", size: 0 });
  });

  it("reads GNU base-256 sizes", async () => {
    const header = tarHeader({ path: "big", size: 0 });
    header.fill(0, 124, 136);
    header[124] = 0x80;
    header.writeUInt32BE(5, 132);
    header.fill(0x20, 148, 156);
    let sum = 0;
    for (const b of header) sum += b;
    header.write(sum.toString(8).padStart(6, "0") + "\0 ", 148, "latin1");
    const archive = Buffer.concat([header, Buffer.from("12345"), Buffer.alloc(507), Buffer.alloc(1024)]);
    const [entry] = await listTar(archive, { readContent: () => true });
    expect(entry).toMatchObject({ path: "big", size: 5, content: Buffer.from("12345") });
  });
});

describe("tar: hostile archives", () => {
  const unsafe: Array<[string, TarSpec[], string]> = [
    [
      "a ../ path",
      [{ path: "./ok" }, { path: "./../../etc/cron.d/x", content: "boom" }],
      "\"./../../etc/cron.d/x\": it has a '..' component",
    ],
    ["an absolute path", [{ path: "/etc/passwd", content: "root" }], '"/etc/passwd": it is absolute'],
    [
      "a GNU long name with ..",
      [{ path: "././@LongLink", type: "L", content: `${"a/".repeat(60)}../../x\0` }, { path: "short" }],
      "'..' component",
    ],
    [
      "a pax path with ..",
      [{ path: "././@PaxHeader", type: "x", content: paxRecords({ path: "../x" }) }, { path: "innocent" }],
      '"../x"',
    ],
    [
      "a pax path with a NUL",
      [
        { path: "././@PaxHeader", type: "x", content: paxRecords({ path: "a\0/../../b" }) },
        { path: "innocent" },
      ],
      "NUL",
    ],
    [
      "a GNU long name with a NUL inside",
      [{ path: "././@LongLink", type: "L", content: "ok\0../../evil\0" }, { path: "x" }],
      "NUL",
    ],
    [
      "a hard link out of the tree",
      [{ path: "x", type: "1", linkTarget: "../../etc/shadow" }],
      "refused hard link",
    ],
    ["an absolute hard link", [{ path: "x", type: "1", linkTarget: "/etc/shadow" }], "refused hard link"],
  ];
  it.each(unsafe)("refuses %s", async (_what, specs, message) => {
    const err = await expectDebianError(listTar(makeTar(specs), { name: "c.tar" }), "ARCHIVE_UNSAFE");
    expect(err.message).toContain(message);
  });

  it("records absolute symlink targets without refusing them (nothing is extracted)", async () => {
    const [entry] = await listTar(makeTar([{ path: "./lib", type: "2", linkTarget: "/usr/lib" }]));
    expect(entry).toMatchObject({ type: "symlink", linkTarget: "/usr/lib" });
  });

  it("applies pax overrides to the next entry only", async () => {
    const archive = makeTar([
      {
        path: "././@PaxHeader",
        type: "x",
        content: paxRecords({ path: "long/pax/name", uid: "4242", size: "3" }),
      },
      { path: "truncated-name", content: "abc", size: 0 },
      { path: "plain", content: "z" },
    ]);
    const entries = await listTar(archive, { readContent: () => true });
    expect(entries.map((e) => [e.path, e.size, e.uid, e.content?.toString()])).toEqual([
      ["long/pax/name", 3, 4242, "abc"],
      ["plain", 1, 0, "z"],
    ]);
  });

  it.each([
    ["too many entries", { maxEntries: 2 }, "more than 2 entries"],
    ["an entry over the size limit", { maxEntrySize: 1000 }, '"./b" is 2000 bytes, over the limit of 1000'],
    ["a total over the limit", { maxTotalSize: 2500 }, "add up to more than 2500 bytes"],
    ["a long path", { maxPathLength: 2 }, "a path of 3 characters"],
  ])("refuses %s", async (_what, limits, message) => {
    const archive = makeTar([
      { path: "./a", content: "x".repeat(1000) },
      { path: "./b", content: "y".repeat(2000) },
      { path: "./c", content: "z" },
    ]);
    await expect(listTar(archive)).resolves.toHaveLength(3);
    const err = await expectDebianError(listTar(archive, { limits }), "ARCHIVE_TOO_LARGE");
    expect(err.message).toContain(message);
  });

  it("refuses to hold content over maxContentSize, and extended headers over their limit", async () => {
    const archive = makeTar([{ path: "./control", content: "x".repeat(5000) }]);
    await expect(listTar(archive, { limits: { maxContentSize: 4999 } })).resolves.toHaveLength(1);
    await expectDebianError(
      listTar(archive, { readContent: () => true, limits: { maxContentSize: 4999 } }),
      "ARCHIVE_TOO_LARGE",
    );
    const pax = makeTar([
      { path: "p", type: "x", content: paxRecords({ comment: "c".repeat(3000) }) },
      { path: "x" },
    ]);
    await expectDebianError(listTar(pax, { limits: { maxExtendedHeaderSize: 2048 } }), "ARCHIVE_TOO_LARGE");
  });

  it("stops at the end marker and ignores what follows", async () => {
    const archive = Buffer.concat([
      makeTar([{ path: "a", content: "1" }]),
      Buffer.from("garbage".repeat(100)),
    ]);
    expect((await listTar(archive)).map((e) => e.path)).toEqual(["a"]);
    // No end marker at all is accepted too, as GNU tar does.
    expect((await listTar(makeTar([{ path: "a", content: "1" }], false))).map((e) => e.path)).toEqual(["a"]);
  });

  it.each([
    [
      "a checksum mismatch",
      () => {
        const t = makeTar([{ path: "a", content: "1" }]);
        t[0] = 0x62;
        return t;
      },
      "checksum mismatch",
    ],
    ["garbage", () => Buffer.from("x".repeat(1024)), "bad header checksum field"],
    [
      "an entry cut short",
      () => makeTar([{ path: "a", content: "x".repeat(2000) }]).subarray(0, 1500),
      "truncated",
    ],
    ["a header cut short", () => makeTar([{ path: "a", content: "1" }]).subarray(0, 1100), "truncated"],
    ["a sparse file", () => makeTar([{ path: "a", type: "S" }]), 'unsupported entry type "S"'],
    [
      "a bad mode field",
      () => {
        const t = makeTar([{ path: "a" }]);
        t.write("9", 100);
        t.fill(0x20, 148, 156);
        let s = 0;
        for (let i = 0; i < 512; i++) s += t[i]!;
        t.write(s.toString(8).padStart(6, "0") + "\0 ", 148, "latin1");
        return t;
      },
      "bad mode field",
    ],
    [
      "a corrupt pax record",
      () => makeTar([{ path: "p", type: "x", content: "99 path=x\n" }, { path: "x" }]),
      "corrupt pax header",
    ],
    [
      "a pax header without its entry",
      () => makeTar([{ path: "p", type: "x", content: paxRecords({ path: "x" }) }]),
      "ends after an extended header",
    ],
    [
      "a bad pax size",
      () => makeTar([{ path: "p", type: "x", content: paxRecords({ size: "-1" }) }, { path: "x" }]),
      "bad pax size",
    ],
  ])("refuses %s", async (_what, make, message) => {
    const err = await expectDebianError(listTar(make()), "ARCHIVE_INVALID");
    expect(err.message).toContain(message);
  });

  it("does not read the rest of the input once the consumer stops", async () => {
    let pulled = 0;
    function* counting(): Generator<Buffer> {
      const archive = makeTar(
        Array.from({ length: 100 }, (_, i) => ({ path: `f${i}`, content: "x".repeat(1000) })),
      );
      for (let i = 0; i < archive.length; i += 512) {
        pulled += 512;
        yield archive.subarray(i, i + 512);
      }
    }
    for await (const entry of readTar(counting())) if (entry.path === "f2") break;
    expect(pulled).toBeLessThan(10 * 512);
  });
});
