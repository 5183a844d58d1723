import { spawnSync } from "node:child_process";
import { describe, expect, it } from "vitest";
import { KilnError } from "../../src/errors/catalogue.js";
import {
  formatPackageQuery,
  matchesQuery,
  parsePackageQuery,
  queryNames,
  queryUsesProvides,
  type QueryTarget,
} from "../../src/debian/package-query.js";
import { haveTool } from "./helpers.js";

/** A package as the publisher will describe it: control fields plus its kind. */
function target(fields: Record<string, string>, packageType = "deb"): QueryTarget & { id: string } {
  const name = fields.Package ?? "";
  const version = fields.Version ?? "";
  const architecture = packageType === "source" ? "source" : (fields.Architecture ?? "");
  const lower = new Map(Object.entries(fields).map(([k, v]) => [k.toLowerCase(), v]));
  return {
    id: packageType === "source" ? `${name}/src` : name,
    name,
    version,
    architecture,
    packageType,
    source: (fields.Source ?? name).replace(/\s*\(.*$/, ""),
    field: (f) => lower.get(f.toLowerCase()),
  };
}

const PACKAGES = [
  target({
    Package: "nginx",
    Version: "1.22.1-9",
    Architecture: "amd64",
    Priority: "optional",
    Section: "httpd",
    Provides: "httpd, httpd-cgi",
    Depends: "nginx-common (= 1.22.1-9),\n libc6 (>= 2.34)",
  }),
  target({
    Package: "nginx-common",
    Version: "1.22.1-9",
    Architecture: "all",
    Source: "nginx",
    Priority: "optional",
  }),
  target(
    {
      Package: "nginx",
      Version: "1.22.1-9",
      Architecture: "any all",
      Binary: "nginx, nginx-common",
      Priority: "optional",
    },
    "source",
  ),
  target({
    Package: "libnginx-mod-http-geoip",
    Version: "1.22.1-9+b1",
    Architecture: "arm64",
    Source: "nginx (1.22.1-9)",
    Priority: "optional",
  }),
  target({
    Package: "apache2",
    Version: "2.4.57-2",
    Architecture: "amd64",
    Provides: "httpd (= 2.4)",
    Priority: "optional",
  }),
  target({
    Package: "apache2-dev",
    Version: "2.4.57-2",
    Architecture: "amd64",
    Source: "apache2",
    Priority: "optional",
  }),
  target({
    Package: "exim4",
    Version: "4.96-15",
    Architecture: "amd64",
    Provides: "mail-transport-agent",
    Priority: "extra",
  }),
  target({
    Package: "hello",
    Version: "1:2.10-3",
    Architecture: "amd64",
    Essential: "yes",
    Depends: "libc6 (>= 2.34),\n libfoo",
  }),
  target({ Package: "hello-udeb", Version: "2.10-3", Architecture: "amd64", Source: "hello" }, "udeb"),
  target({ Package: "foo", Version: "1.0~rc1-1", Architecture: "amd64", Section: "misc" }),
];

const ALL_BINARIES = PACKAGES.filter((p) => p.packageType !== "source").map((p) => p.id);

/** Query → ids of the packages it matches (worked out by hand from Aptly's rules). */
const TABLE: Array<[string, string[]]> = [
  // names, Provides, relations
  ["nginx", ["nginx", "nginx/src"]],
  ["httpd", ["nginx", "apache2"]],
  ["httpd-cgi", ["nginx"]],
  ["mail-transport-agent", ["exim4"]],
  ["httpd (>= 1)", []],
  ["nginx (>= 1.22)", ["nginx", "nginx/src"]],
  ["nginx (>> 1.22.1-8)", ["nginx", "nginx/src"]],
  ["nginx (<< 1.22.1-9)", []],
  ["nginx (< 1.22.1-9)", ["nginx", "nginx/src"]],
  ["nginx (> 1.22.1-9)", ["nginx", "nginx/src"]],
  ["nginx (= 1.22.1-9)", ["nginx", "nginx/src"]],
  ["nginx (1.22.1-9)", ["nginx", "nginx/src"]],
  ["nginx (= 0:1.22.1-9)", ["nginx", "nginx/src"]],
  ["nginx (% 1.22.*)", ["nginx", "nginx/src"]],
  ["nginx (~ -9$)", ["nginx", "nginx/src"]],
  ["hello (>= 1:2.10)", ["hello"]],
  ["hello (<< 2.11)", []],
  ["foo (<< 1.0)", ["foo"]],
  ["foo (>= 1.0~)", ["foo"]],
  // architectures
  ["nginx {amd64}", ["nginx"]],
  ["nginx {source}", ["nginx/src"]],
  ["nginx-common {arm64}", ["nginx-common"]],
  ["nginx-common {source}", []],
  ["nginx (>= 1.0) {amd64}", ["nginx"]],
  ["httpd {amd64}", ["nginx", "apache2"]],
  ["$Architecture (amd64)", ALL_BINARIES.filter((id) => id !== "libnginx-mod-http-geoip")],
  ["$Architecture (= arm64)", ["nginx-common", "libnginx-mod-http-geoip"]],
  ["$Architecture (source)", ["nginx/src"]],
  ["$Architecture (% a*)", ALL_BINARIES],
  ["$Architecture (>> amd64)", ["nginx/src", "libnginx-mod-http-geoip"]],
  ["Architecture ('any all')", ["nginx/src"]],
  // references
  ["nginx_1.22.1-9_amd64", ["nginx"]],
  ["nginx_1.22.1-9_source", ["nginx/src"]],
  ["hello_2.10-3_amd64", []],
  ["hello_1:2.10-3_amd64", ["hello"]],
  ["nginx-common_1.22.1-9_amd64", []],
  // fields and special fields
  ["$Source (nginx)", ["nginx", "nginx-common", "libnginx-mod-http-geoip"]],
  ["$Source (hello)", ["hello", "hello-udeb"]],
  ["$SourceVersion (1.22.1-9)", ["nginx", "nginx-common", "libnginx-mod-http-geoip"]],
  ["Source (nginx)", ["nginx-common"]],
  ["$PackageType (source)", ["nginx/src"]],
  ["$PackageType (udeb)", ["hello-udeb"]],
  ["$PackageType (deb)", ALL_BINARIES.filter((id) => id !== "hello-udeb")],
  ["$Version (>= 1:0)", ["hello"]],
  ["$Version (<< 1.0)", ["foo"]],
  ["$Version (= 1.22.1-9)", ["nginx", "nginx-common", "nginx/src"]],
  ["$Version (% 1.22*)", ["nginx", "nginx-common", "nginx/src", "libnginx-mod-http-geoip"]],
  ["$Version (~ ^2\\.)", ["apache2", "apache2-dev", "hello-udeb"]],
  ["$Version (>> 2)", ["apache2", "apache2-dev", "exim4", "hello", "hello-udeb"]],
  // plain Version compares as text, as in Aptly: 1:2.10-3 sorts before "2"
  ["Version (>> 2)", ["apache2", "apache2-dev", "exim4", "hello-udeb"]],
  [
    "Priority (optional)",
    ["nginx", "nginx-common", "nginx/src", "libnginx-mod-http-geoip", "apache2", "apache2-dev"],
  ],
  ["Priority (extra)", ["exim4"]],
  ['"Section" ("httpd")', ["nginx"]],
  ["Section", ["nginx", "foo"]],
  ["Essential", ["hello"]],
  ["Essential (no)", []],
  ["Name (~ .*-dev)", ["apache2-dev"]],
  ["Name (~ ^nginx$)", ["nginx", "nginx/src"]],
  ["Name (% nginx*)", ["nginx", "nginx-common", "nginx/src"]],
  ["Name (% lib?ginx*)", ["libnginx-mod-http-geoip"]],
  ["Name (% [a-f]*)", ["apache2", "apache2-dev", "exim4", "foo"]],
  [
    "Name (% [^a-f]*)",
    ["nginx", "nginx-common", "nginx/src", "libnginx-mod-http-geoip", "hello", "hello-udeb"],
  ],
  ["Name (% ?x?m4)", ["exim4"]],
  ["Name (% \\exim4)", ["exim4"]],
  ["Name (% exim*5)", []],
  ["Depends ('libc6 (>= 2.34), libfoo')", ["hello"]],
  ["Depends (% *libc6*)", ["nginx", "hello"]],
  ["Provides (% *httpd*)", ["nginx", "apache2"]],
  // operators and precedence: `|` binds loosest, then `,`, then `!`
  ["!Name (~ .*-dev), httpd", ["nginx", "apache2"]],
  ["!nginx, apache2", ["apache2"]],
  ["!!nginx", ["nginx", "nginx/src"]],
  ["nginx | apache2, $Architecture (arm64)", ["nginx", "nginx/src"]],
  ["(nginx | apache2), $Architecture (arm64)", []],
  ["apache2, $Architecture (amd64) | exim4", ["apache2", "exim4"]],
  ["!(nginx | apache2), Priority (optional)", ["nginx-common", "libnginx-mod-http-geoip", "apache2-dev"]],
  ["$Source (nginx), !$Architecture (arm64) | foo", ["nginx", "foo"]],
  // whitespace and quoting
  ["  nginx   (  >=   1.0 )  {  amd64 }  ", ["nginx"]],
  ["nginx(>=1.0){amd64}", ["nginx"]],
  ["nginx|apache2,foo", ["nginx", "nginx/src"]],
  ["'nginx' ('1.22.1-9')", ["nginx", "nginx/src"]],
  ["Name ('hello-udeb')", ["hello-udeb"]],
  ['Name ("it\'s")', []],
];

describe("matchesQuery", () => {
  it.each(TABLE)("%s", (text, expected) => {
    const query = parsePackageQuery(text);
    const matched = PACKAGES.filter((p) => matchesQuery(query, p)).map((p) => p.id);
    expect(matched.sort()).toEqual([...expected].sort());
  });

  it("formats every query in the table so that it parses back to the same tree", () => {
    for (const [text] of TABLE) {
      const query = parsePackageQuery(text);
      const canonical = formatPackageQuery(query);
      expect(parsePackageQuery(canonical), `${text} → ${canonical}`).toEqual(query);
      expect(formatPackageQuery(parsePackageQuery(canonical))).toBe(canonical);
    }
  });

  it("never names a package outside queryNames() (or its Provides)", () => {
    for (const [text] of TABLE) {
      const query = parsePackageQuery(text);
      const names = queryNames(query);
      if (names === undefined) continue;
      for (const p of PACKAGES.filter((x) => matchesQuery(query, x))) {
        const provided = (p.field("Provides") ?? "").split(",").map((s) => s.trim().split(" ")[0]);
        const viaProvides = queryUsesProvides(query) && names.some((n) => provided.includes(n));
        expect(names.includes(p.name) || viaProvides, `${text} matched ${p.id}`).toBe(true);
      }
    }
  });
});

describe("parsePackageQuery", () => {
  it("builds Aptly's precedence into the tree and reads < and > as <= and >=", () => {
    expect(parsePackageQuery("a1 | b1, !c1")).toEqual({
      kind: "or",
      terms: [
        { kind: "package", name: "a1" },
        {
          kind: "and",
          terms: [
            { kind: "package", name: "b1" },
            { kind: "not", term: { kind: "package", name: "c1" } },
          ],
        },
      ],
    });
    expect(parsePackageQuery("a1 (< 1) {amd64}")).toEqual({
      kind: "package",
      name: "a1",
      condition: { op: "<=", value: "1" },
      architecture: "amd64",
    });
    expect(parsePackageQuery("a1 (> 1)")).toMatchObject({ condition: { op: ">=", value: "1" } });
    expect(parsePackageQuery("Priority")).toEqual({ kind: "field", field: "Priority" });
    expect(parsePackageQuery("a1_1.0-1_all")).toEqual({
      kind: "ref",
      name: "a1",
      version: "1.0-1",
      architecture: "all",
    });
    expect(parsePackageQuery("a1 | (b1 | c1)")).toEqual(parsePackageQuery("a1 | b1 | c1"));
  });

  it("writes canonical text", () => {
    expect(formatPackageQuery(parsePackageQuery("a1|b1,c1"))).toBe("a1 | b1, c1");
    expect(formatPackageQuery(parsePackageQuery("(a1|b1),c1"))).toBe("(a1 | b1), c1");
    expect(formatPackageQuery(parsePackageQuery("!(a1,b1)"))).toBe("!(a1, b1)");
    expect(formatPackageQuery(parsePackageQuery("a1 (> 1){amd64}"))).toBe("a1 (>= 1) {amd64}");
    expect(formatPackageQuery(parsePackageQuery("Name (~ 'a b|c')"))).toBe("Name (~ 'a b|c')");
    expect(formatPackageQuery(parsePackageQuery('Name ("it\'s")'))).toBe("Name (= 'it\\'s')");
    expect(formatPackageQuery(parsePackageQuery("Name (~ '~x')"))).toBe("Name (~ '~x')");
  });

  const ERRORS: Array<[string, number, RegExp]> = [
    ["", 1, /expected a package name, field name or name_version_arch reference, found the end of the query/],
    ["nginx (>= 1.2", 14, /expected "\)", found the end of the query/],
    ["nginx |", 8, /expected a package name/],
    ["nginx apache2", 7, /expected ",", "\|" or the end of the query, found "apache2"/],
    ["(nginx", 7, /expected "\)"/],
    ["nginx {amd64", 13, /expected "}"/],
    ["nginx {}", 8, /expected an architecture, found "}"/],
    ["nginx (>=)", 10, /expected a value, found "\)"/],
    ["!", 2, /expected a package name/],
    ["nginx, ", 8, /expected a package name/],
    ["nginx )", 7, /found "\)"/],
    ["$Foo (x)", 1, /unknown field "\$Foo"/],
    ["nginx (>= not-a-version)", 7, /invalid version "not-a-version"/],
    ["$Version (<< a)", 10, /invalid version "a"/],
    ["Name (~ '[')", 6, /invalid regular expression "\["/],
    ["Name (% 'a[')", 6, /invalid pattern "a\[": '\[' is not closed/],
    ["Name (% [z-a])", 6, /reversed/],
    ["'unterminated", 1, /unterminated quoted string/],
    ["x", 1, /invalid package name "x"/],
    ["nginx_1.0", 1, /invalid package name "nginx_1.0"/],
    ["nginx_1.0_AMD64", 1, /invalid architecture "AMD64"/],
    ["nginx_a.0_amd64", 1, /invalid version "a.0"/],
    ["nginx {Amd64}", 8, /invalid architecture "Amd64"/],
    ["Name (x) {amd64}", 10, /expected ",", "\|" or the end of the query, found "{"/],
    ["nginx_1.0_amd64 {amd64}", 17, /found "{"/],
  ];

  it.each(ERRORS)("refuses %j at position %i", (text, position, message) => {
    let error: unknown;
    try {
      parsePackageQuery(text);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(KilnError);
    const e = error as KilnError;
    expect(e.code).toBe("QUERY_INVALID");
    expect(e.status).toBe(400);
    expect(e.message).toMatch(message);
    expect(e.message).toContain(`at position ${position}`);
    expect(e.details).toMatchObject({ query: text, position });
  });
});

describe("queryNames", () => {
  const cases: Array<[string, string[] | undefined, boolean]> = [
    ["nginx", ["nginx"], true],
    ["nginx | apache2 (>= 2)", ["apache2", "nginx"], true],
    ["nginx_1.0_amd64 | Name (= hello)", ["hello", "nginx"], false],
    ["nginx (>= 1), $Version (>= 1)", ["nginx"], false],
    ["(aa | bb), (bb | cc)", ["bb"], true],
    ["aa, bb", [], true],
    ["!nginx", undefined, true],
    ["Priority (optional)", undefined, false],
    ["nginx | Priority (optional)", undefined, true],
    ["Name (% ngi*)", undefined, false],
  ];
  it.each(cases)("%s", (text, names, provides) => {
    const q = parsePackageQuery(text);
    expect(queryNames(q)).toEqual(names);
    expect(queryUsesProvides(q)).toBe(provides);
  });
});

// Tricky pairs: epochs, tildes, revisions, letters against digits, leading zeros.
const VERSION_PAIRS: Array<[string, string]> = [
  ["1.0", "1.0"],
  ["1.0", "1.0-0"],
  ["1.0-1", "1.0-1~bpo1"],
  ["1.0~rc1", "1.0"],
  ["1.0~~", "1.0~"],
  ["1.0~", "1.0"],
  ["1:0.1", "2.0"],
  ["0:1.0", "1.0"],
  ["1.0a", "1.0"],
  ["1.0+b1", "1.0"],
  ["1.0.1", "1.0a"],
  ["1.01", "1.1"],
  ["1.10", "1.9"],
  ["2.4.57-2", "2.4.57-10"],
  ["1.2-3+deb12u1", "1.2-3"],
  ["7:1.0", "6:99"],
  ["1.0-1ubuntu1", "1.0-1+b1"],
  ["9.99999999999999999999", "10"],
];
const OPS = ["<<", "<=", "=", ">=", ">>", "<", ">"] as const;

describe.runIf(haveTool("dpkg"))("version relations agree with dpkg --compare-versions", () => {
  it.each(VERSION_PAIRS)("%s against %s", (a, b) => {
    const pkg = target({ Package: "pkg", Version: a, Architecture: "amd64" });
    for (const op of OPS) {
      for (const text of [`pkg (${op} ${b})`, `$Version (${op} ${b})`]) {
        const ours = matchesQuery(parsePackageQuery(text), pkg);
        const dpkg = spawnSync("dpkg", ["--compare-versions", a, op, b], { stdio: "ignore" }).status === 0;
        expect(ours, `${a} ${op} ${b}`).toBe(dpkg);
      }
    }
  });
});
