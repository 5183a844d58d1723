import { describe, expect, it } from "vitest";
import {
  formatDependencies,
  formatDeb822,
  formatParagraph,
  getField,
  PACKAGES_FIELD_ORDER,
  paragraphToRecord,
  parseDeb822,
  parseDependencies,
  parseParagraph,
  requireField,
} from "../../src/debian/deb822.js";
import { expectDebianErrorSync } from "./helpers.js";

const DEBIAN_CONTROL = `# debian/control for hello
Source: hello
Section: devel
Priority: optional
Maintainer: Jane Doe <jane@example.org>
Build-Depends: debhelper-compat (= 13),
# a comment between continuation lines
               libfoo-dev (>= 1.2) [amd64 arm64] <!nocheck>,
               python3:any
Standards-Version: 4.6.2

Package: hello
Architecture: any
Depends: \${shlibs:Depends}, \${misc:Depends}
Description: the classic greeting
 GNU hello prints a greeting.
 .
   Indented line kept as is.
`;

describe("parseDeb822", () => {
  it("reads paragraphs, comments, folded and multiline fields", () => {
    const [source, binary, ...rest] = parseDeb822(DEBIAN_CONTROL, { source: "debian/control" });
    expect(rest).toEqual([]);
    expect(source?.line).toBe(2);
    expect(binary?.line).toBe(12);
    expect(getField(source!, "source")).toBe("hello");
    expect(getField(source!, "BUILD-DEPENDS")).toBe(
      "debhelper-compat (= 13),\n              libfoo-dev (>= 1.2) [amd64 arm64] <!nocheck>,\n              python3:any",
    );
    expect(getField(binary!, "Description")).toBe(
      "the classic greeting\nGNU hello prints a greeting.\n.\n  Indented line kept as is.",
    );
    expect(source!.fields.map((f) => f.name)).toEqual([
      "Source",
      "Section",
      "Priority",
      "Maintainer",
      "Build-Depends",
      "Standards-Version",
    ]);
    expect(source!.fields.find((f) => f.name === "Standards-Version")?.line).toBe(10);
    expect(getField(source!, "Missing")).toBeUndefined();
    expect(paragraphToRecord(binary!)).toMatchObject({ Package: "hello", Architecture: "any" });
  });

  it("treats whitespace-only lines as separators and tolerates CRLF and a missing final newline", () => {
    const ps = parseDeb822("A: 1\r\nB:2  \r\n \t\r\n\n\nC:   3\nD:\n x\n y");
    expect(ps.map(paragraphToRecord)).toEqual([
      { A: "1", B: "2" },
      { C: "3", D: "\nx\ny" },
    ]);
    expect(parseDeb822("")).toEqual([]);
    expect(parseDeb822("\n\n# only a comment\n")).toEqual([]);
  });

  it("round-trips through formatParagraph", () => {
    for (const p of parseDeb822(DEBIAN_CONTROL)) {
      const again = parseParagraph(formatParagraph(p));
      expect(paragraphToRecord(again)).toEqual(paragraphToRecord(p));
    }
  });

  it.each([
    ["Package: a\nbroken line\n", "line 2", 'expected "Field: value"'],
    [" leading: continuation\n", "line 1", "continuation line"],
    ["Package: a\npackage: b\n", "line 2", 'duplicate field "package" (first on line 1)'],
    ["A: 1\nB C: 2\n", "line 2", "expected"],
    ["A: 1\n-B: 2\n", "line 2", "invalid field name"],
    ["A: 1\n: 2\n", "line 2", "expected"],
  ])("refuses %j with the line number", (text, line, message) => {
    const err = expectDebianErrorSync(() => parseDeb822(text, { source: "test" }), "CONTROL_INVALID");
    expect(err.message).toContain(`test, ${line}:`);
    expect(err.message).toContain(message);
  });

  it("treats # lines as fields when comments are off", () => {
    expectDebianErrorSync(() => parseDeb822("#A: 1\n", { comments: false }), "CONTROL_INVALID");
  });

  it("enforces its limits", () => {
    const many = Array.from({ length: 50 }, (_, i) => `F${i}: v`).join("\n");
    expect(() => parseDeb822(many, { limits: { maxFieldsPerParagraph: 50 } })).not.toThrow();
    expect(
      expectDebianErrorSync(
        () => parseDeb822(many, { limits: { maxFieldsPerParagraph: 49 } }),
        "CONTROL_INVALID",
      ).message,
    ).toContain("more than 49 fields");
    expect(
      expectDebianErrorSync(() => parseDeb822("A: ééé\n", { limits: { maxBytes: 8 } }), "CONTROL_INVALID")
        .message,
    ).toContain("10 bytes, over the limit of 8");
    expect(
      expectDebianErrorSync(
        () => parseDeb822("A: 1\n\nA: 2\n\nA: 3\n", { limits: { maxParagraphs: 2 } }),
        "CONTROL_INVALID",
      ).message,
    ).toContain("line 5: more than 2 paragraphs");
  });

  it("parseParagraph wants exactly one paragraph", () => {
    expect(getField(parseParagraph("A: 1\n"), "a")).toBe("1");
    expectDebianErrorSync(() => parseParagraph("\n\n"), "CONTROL_INVALID");
    expect(
      expectDebianErrorSync(() => parseParagraph("A: 1\n\nB: 2\n"), "CONTROL_INVALID").message,
    ).toContain("line 3");
  });

  it("requireField names what is missing", () => {
    const p = parseParagraph("Package: a\nVersion:\n");
    expect(requireField(p, "package")).toBe("a");
    expect(expectDebianErrorSync(() => requireField(p, "Version", "x.deb"), "CONTROL_INVALID").message).toBe(
      "x.deb: missing required field Version",
    );
    expectDebianErrorSync(() => requireField(p, "Architecture"), "CONTROL_INVALID");
  });
});

describe("formatParagraph", () => {
  it("puts the ordered fields first, keeps the rest in order and their case", () => {
    const text = formatParagraph(
      {
        description: "short\nlong text\n.\nmore",
        SHA256: "abc",
        "X-Custom": "1",
        Filename: "pool/main/h/hello/hello_1.0_amd64.deb",
        version: "1.0",
        Package: "hello",
        Architecture: "amd64",
      },
      PACKAGES_FIELD_ORDER,
    );
    expect(text).toBe(
      [
        "Package: hello",
        "Architecture: amd64",
        "version: 1.0",
        "Filename: pool/main/h/hello/hello_1.0_amd64.deb",
        "SHA256: abc",
        "description: short",
        " long text",
        " .",
        " more",
        "X-Custom: 1",
        "",
      ].join("\n"),
    );
  });

  it("writes fields whose value starts on the next line, and accepts entry lists", () => {
    expect(formatParagraph([["Files", "\nabc 1 a.dsc\ndef 2 a.tar.xz"]])).toBe(
      "Files:\n abc 1 a.dsc\n def 2 a.tar.xz\n",
    );
    expect(formatDeb822([{ A: "1" }, new Map([["B", "2"]])])).toBe("A: 1\n\nB: 2\n");
  });

  it("refuses what would not parse back", () => {
    expectDebianErrorSync(() => formatParagraph({ "Bad Name": "x" }), "CONTROL_INVALID");
    expectDebianErrorSync(() => formatParagraph({ "-X": "x" }), "CONTROL_INVALID");
    expectDebianErrorSync(
      () =>
        formatParagraph([
          ["A", "1"],
          ["a", "2"],
        ]),
      "CONTROL_INVALID",
    );
    expect(
      expectDebianErrorSync(() => formatParagraph({ Description: "x\n\ny" }), "CONTROL_INVALID").message,
    ).toContain('write "."');
  });
});

describe("parseDependencies", () => {
  it("parses alternatives, versions, architecture lists, qualifiers and build profiles", () => {
    expect(parseDependencies("aa (>= 1.0) [amd64] <!nocheck> | bb, cc:any")).toEqual([
      [
        {
          name: "aa",
          version: { op: ">=", version: "1.0" },
          architectures: { negated: false, names: ["amd64"] },
          restrictions: [[{ name: "nocheck", negated: true }]],
        },
        { name: "bb" },
      ],
      [{ name: "cc", archQualifier: "any" }],
    ]);
  });

  it("accepts dense and folded spellings, trailing commas and every operator", () => {
    const deps = parseDependencies(
      "libc6(>=2.36),\n  libx-dev:native  ( << 2:1.0-1~ )  [ !i386  !armel ]  <stage1 cross> <!nodoc>,\n  dd (= 1), ee (<= 1), ff (>> 1), gg (< 1), hh (> 1),",
    );
    expect(deps).toHaveLength(7);
    expect(deps[0]).toEqual([{ name: "libc6", version: { op: ">=", version: "2.36" } }]);
    expect(deps[1]).toEqual([
      {
        name: "libx-dev",
        archQualifier: "native",
        version: { op: "<<", version: "2:1.0-1~" },
        architectures: { negated: true, names: ["i386", "armel"] },
        restrictions: [
          [
            { name: "stage1", negated: false },
            { name: "cross", negated: false },
          ],
          [{ name: "nodoc", negated: true }],
        ],
      },
    ]);
    expect(deps.slice(2).map((g) => g[0]?.version?.op)).toEqual(["=", "<=", ">>", "<", ">"]);
    expect(parseDependencies("")).toEqual([]);
    expect(parseDependencies(" , ")).toEqual([]);
  });

  it("formats back to the canonical spelling", () => {
    const text = "aa:any (>= 1.0) [!i386 !armel] <!nocheck> <stage1 cross> | bb, cc";
    expect(formatDependencies(parseDependencies(text))).toBe(text);
    expect(formatDependencies(parseDependencies("xx(>=1)[amd64],yy"))).toBe("xx (>= 1) [amd64], yy");
  });

  it.each([
    ["aa | , bb", "empty alternative"],
    ["aa (>= 1.0", "cannot parse"],
    ["aa (=> 1.0)", "cannot parse"],
    ["aa (>= x1)", "invalid version"],
    ["Aa", "invalid package name"],
    ["a", "invalid package name"],
    ["a_b", "invalid package name"],
    ["aa [amd64 !i386]", "mixes negated and plain"],
    ["aa []", "empty architecture list"],
    ["aa [AMD64]", "invalid architecture"],
    ["aa <>", "empty restriction list"],
    ["aa <No_Check>", "invalid build profile"],
    ["aa:", "cannot parse"],
    ["${misc:Depends}", "substitution variables must be replaced first"],
    ["aa bb", "cannot parse"],
  ])("refuses %j (%s)", (text, why) => {
    const err = expectDebianErrorSync(() => parseDependencies(text, "Depends"), "DEPENDS_INVALID");
    expect(err.message).toMatch(/^Depends: /);
    expect(err.message).toContain(why);
  });
});
