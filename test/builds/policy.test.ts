import { describe, expect, it } from "vitest";
import {
  DEFAULT_POLICIES,
  DEFAULT_POLICY_TESTS,
  assertPolicy,
  checkPolicy,
  compilePolicies,
  evaluatePolicy,
  globMatch,
  parsePolicy,
  withDefaultPolicies,
  type PolicyData,
} from "../../src/builds/policy.js";
import { KilnError } from "../../src/errors/catalogue.js";

function errorOf(fn: () => unknown): KilnError {
  try {
    fn();
  } catch (err) {
    if (err instanceof KilnError) return err;
    throw err;
  }
  throw new Error("expected a KilnError");
}

function run(text: string, data: PolicyData = {}) {
  return evaluatePolicy(parsePolicy(text, { tests: DEFAULT_POLICY_TESTS }), data);
}

describe("parsePolicy: errors name the line", () => {
  const cases: [string, string, number, RegExp][] = [
    ["a line without separator", "true :: allow\n\nis_admin allow", 3, /expected 'TESTS :: ACTION'/],
    ["a stray closing brace", "true :: {\n  true :: allow\n}\n}", 4, /'}' has no matching '{'/],
    [
      "an unclosed block, at its opening line",
      "false :: deny\nis_admin :: {\n  true :: allow",
      2,
      /never closed/,
    ],
    ["a rule with no test", "  :: allow", 1, /no test/],
    ["a rule with no action", "true ::   # nothing", 1, /no action/],
    ["an empty test around &&", "true && :: allow", 1, /missing around '&&'/],
    ["a brace not on its own line", "true :: {\n  true :: allow }", 2, /'}'/],
    ["a closing brace with more on its line", "true :: {\n} true :: allow", 2, /by itself/],
  ];
  for (const [what, text, line, message] of cases) {
    it(`reports ${what}`, () => {
      const err = errorOf(() => parsePolicy(text, { name: "tag" }));
      expect(err.code).toBe("POLICY_SYNTAX");
      expect(err.details).toMatchObject({ policy: "tag", line });
      expect(err.message).toMatch(new RegExp(`^Policy tag, line ${line}: `));
      expect(err.message).toMatch(message);
    });
  }

  it("refuses unknown tests and bad arguments when given the tests", () => {
    const tests = DEFAULT_POLICY_TESTS;
    expect(errorOf(() => parsePolicy("true :: allow\nis_amdin :: allow", { tests })).message).toMatch(
      /line 2: unknown test "is_amdin"/,
    );
    expect(errorOf(() => parsePolicy("compare size >> 3 :: deny", { tests })).message).toMatch(
      /line 1: compare: unknown operator ">>"/,
    );
    expect(errorOf(() => parsePolicy("compare size > big :: deny", { tests })).message).toMatch(
      /not a number/,
    );
    expect(errorOf(() => parsePolicy("package :: deny", { tests })).message).toMatch(/at least one package/);
    expect(errorOf(() => parsePolicy("all deny :: deny", { tests })).message).toMatch(
      /all: takes no arguments/,
    );
    // Without the tests, only the shape is checked.
    expect(() => parsePolicy("is_amdin :: allow")).not.toThrow();
  });

  it("refuses actions outside the allowed set when asked", () => {
    const err = errorOf(() => parsePolicy("true :: allow\ntrue :: permit", { actions: ["allow", "deny"] }));
    expect(err.message).toMatch(/line 2: unknown action "permit"/);
  });
});

describe("parsePolicy: shape", () => {
  it("skips comments and blank lines, keeps line numbers and splits tests and args", () => {
    const policy = parsePolicy(
      "# header\n\n  tag *-candidate   &&  package foo bar :: deny  not now # why\n",
    );
    expect(policy.rules).toEqual([
      {
        kind: "action",
        line: 3,
        negate: false,
        action: "deny  not now",
        tests: [
          { name: "tag", args: ["*-candidate"] },
          { name: "package", args: ["foo", "bar"] },
        ],
      },
    ]);
  });

  it("keeps braces inside a reason", () => {
    expect(parsePolicy("true :: deny use {name} instead").rules[0]).toMatchObject({
      action: "deny use {name} instead",
    });
  });

  it("splits at the first separator, so a reason may contain '::'", () => {
    const policy = parsePolicy("true !! deny use ns::name instead");
    expect(policy.rules[0]).toMatchObject({ negate: true, action: "deny use ns::name instead" });
  });
});

describe("evaluatePolicy", () => {
  it("takes the first matching rule", () => {
    const text = "package foo :: deny first\npackage f* :: deny second\nall :: allow";
    expect(run(text, { package: "foo" }).action).toBe("deny first");
    expect(run(text, { package: "fab" }).action).toBe("deny second");
    expect(run(text, { package: "bar" }).action).toBe("allow");
  });

  it("requires every test joined by && to pass", () => {
    const text = "is_admin && package foo :: allow\nall :: deny";
    expect(run(text, { isAdmin: true, package: "foo" }).action).toBe("allow");
    expect(run(text, { isAdmin: true, package: "bar" }).action).toBe("deny");
    expect(run(text, { isAdmin: false, package: "foo" }).action).toBe("deny");
  });

  it("with !! takes the rule when the tests do not all pass", () => {
    const text = "is_admin && package foo !! deny not both\nall :: allow";
    expect(run(text, { isAdmin: true, package: "foo" }).action).toBe("allow");
    expect(run(text, { isAdmin: true, package: "bar" }).action).toBe("deny not both");
    expect(run(text, { isAdmin: false, package: "foo" }).action).toBe("deny not both");
  });

  it("enters a block only when its tests pass, and the first match inside wins", () => {
    const text = [
      "tag *-updates :: {",
      "    operation move :: {",
      "        fromtag *-testing :: allow",
      "        all :: deny only from testing",
      "    }",
      "    operation tag :: deny use a move",
      "}",
      "all :: allow",
    ].join("\n");
    expect(run(text, { tag: "f40-updates", operation: "move", fromtag: "f40-testing" })).toEqual({
      action: "allow",
      matched: true,
      trail: [
        "line 1: tag *-updates :: {",
        "line 2: operation move :: {",
        "line 3: fromtag *-testing :: allow",
      ],
    });
    expect(run(text, { tag: "f40-updates", operation: "move", fromtag: "f40-candidate" }).action).toBe(
      "deny only from testing",
    );
    expect(run(text, { tag: "f40-updates", operation: "tag" }).action).toBe("deny use a move");
    expect(run(text, { tag: "f40-candidate", operation: "tag" }).action).toBe("allow");
  });

  it("goes on after a block when nothing inside matches", () => {
    const text = [
      "package foo* :: {",
      "    user alice :: deny alice may not",
      "    is_admin !! {",
      "        user bob :: deny bob may not",
      "    }",
      "}",
      "all :: allow after the block",
    ].join("\n");
    const result = run(text, { package: "foobar", user: "carol" });
    expect(result).toEqual({
      action: "allow after the block",
      matched: true,
      trail: ["line 7: all :: allow after the block"],
    });
    expect(run(text, { package: "foobar", user: "bob" }).action).toBe("deny bob may not");
    expect(run(text, { package: "foobar", user: "bob", isAdmin: true }).action).toBe("allow after the block");
  });

  it("gives the default when no rule matches", () => {
    expect(run("package foo :: allow", { package: "bar" })).toEqual({
      action: "deny",
      matched: false,
      trail: [],
    });
    const policy = parsePolicy("false :: allow");
    expect(evaluatePolicy(policy, {}, DEFAULT_POLICY_TESTS, "use default").action).toBe("use default");
    expect(run("").matched).toBe(false);
  });

  it("stops at the first failing test", () => {
    let calls = 0;
    const tests = { ...DEFAULT_POLICY_TESTS, count: () => (calls++, true) };
    evaluatePolicy(parsePolicy("false && count :: allow"), {}, tests);
    expect(calls).toBe(0);
  });

  it("runs tests callers add, with their arguments", () => {
    const tests = {
      ...DEFAULT_POLICY_TESTS,
      arch_in: (d: PolicyData, args: readonly string[]) => args.includes(String(d.arch)),
    };
    const policy = parsePolicy("arch_in amd64 arm64 :: allow\nall :: deny", { tests });
    expect(evaluatePolicy(policy, { arch: "arm64" }, tests).action).toBe("allow");
    expect(evaluatePolicy(policy, { arch: "s390x" }, tests).action).toBe("deny");
  });

  it("fails clearly on a test nobody registered", () => {
    const err = errorOf(() => evaluatePolicy(parsePolicy("false :: deny\nhas_role x :: allow"), {}));
    expect(err.code).toBe("POLICY_ERROR");
    expect(err.details).toMatchObject({ line: 2, test: "has_role" });
  });
});

describe("built-in tests", () => {
  const passes = (rule: string, data: PolicyData) => run(`${rule} :: yes`, data).matched;

  it("true, all, false, none", () => {
    expect([passes("true", {}), passes("all", {}), passes("false", {}), passes("none", {})]).toEqual([
      true,
      true,
      false,
      false,
    ]);
  });

  it("has and bool read any field", () => {
    expect(passes("has scratch", { scratch: false })).toBe(true);
    expect(passes("has scratch", {})).toBe(false);
    expect(passes("bool scratch", { scratch: true })).toBe(true);
    expect(passes("bool scratch", { scratch: false })).toBe(false);
    expect(passes("bool scratch", {})).toBe(false);
  });

  it("match compares a field with globs; a list matches when any element does", () => {
    expect(passes("match target f4? rawhide", { target: "f41" })).toBe(true);
    expect(passes("match target f4? rawhide", { target: "f5" })).toBe(false);
    expect(passes("match target f4? rawhide", {})).toBe(false);
    expect(passes("match arches arm*", { arches: ["amd64", "arm64"] })).toBe(true);
    expect(passes("match priority 2*", { priority: 20 })).toBe(true);
  });

  it("compare compares a numeric field", () => {
    const data = { size: 10 };
    const results = ["<", ">", "<=", ">=", "=", "!="].map((op) => passes(`compare size ${op} 10`, data));
    expect(results).toEqual([false, false, true, true, true, false]);
    expect(passes("compare size > 9.5", data)).toBe(true);
    expect(passes("compare size > 1", { size: "10" })).toBe(false);
    expect(passes("compare missing > 1", {})).toBe(false);
  });

  it("is_admin, has_perm and has_tag_perm read the caller's role and permissions", () => {
    expect(passes("is_admin", { isAdmin: true })).toBe(true);
    expect(passes("is_admin", {})).toBe(false);
    expect(passes("has_perm release repo-*", { perms: ["repo-admin"] })).toBe(true);
    expect(passes("has_perm release", { perms: ["tag"] })).toBe(false);
    expect(passes("has_perm release", {})).toBe(false);
    expect(passes("has_tag_perm", { tagPerm: null })).toBe(true);
    expect(passes("has_tag_perm", {})).toBe(true);
    expect(passes("has_tag_perm", { tagPerm: "stable", perms: ["stable"] })).toBe(true);
    expect(passes("has_tag_perm", { tagPerm: "stable", perms: ["testing"] })).toBe(false);
  });

  it("user, user_in_group, package, version, tag, fromtag, buildtag, target, operation match their field", () => {
    expect(passes("user ali*", { user: "alice" })).toBe(true);
    expect(passes("user_in_group packagers qa", { groups: ["qa"] })).toBe(true);
    expect(passes("user_in_group packagers", { groups: ["qa"] })).toBe(false);
    expect(passes("package lib*", { package: "libfoo" })).toBe(true);
    expect(passes("version 1.*", { version: "1.2-1" })).toBe(true);
    expect(passes("tag *-candidate", { tag: "f40-candidate" })).toBe(true);
    expect(passes("tag *", { tag: null })).toBe(false); // an untag has no destination tag
    expect(passes("fromtag *-testing", { fromtag: "f40-testing" })).toBe(true);
    expect(passes("buildtag *-build", { buildTag: "f40-build" })).toBe(true);
    expect(passes("target f40", { target: "f40" })).toBe(true);
    expect(passes("operation tag move", { operation: "untag" })).toBe(false);
    expect(passes("operation tag move", { operation: "move" })).toBe(true);
  });
});

describe("globMatch (Python fnmatch)", () => {
  it("matches the whole string with * ? [set] [!set], case-sensitively", () => {
    expect(globMatch("f40-candidate", "*-candidate")).toBe(true);
    expect(globMatch("f40-candidate-x", "*-candidate")).toBe(false);
    expect(globMatch("a/b", "a*")).toBe(true);
    expect(globMatch("f41", "f4?")).toBe(true);
    expect(globMatch("f4", "f4?")).toBe(false);
    expect(globMatch("b", "[abc]")).toBe(true);
    expect(globMatch("d", "[abc]")).toBe(false);
    expect(globMatch("d", "[!abc]")).toBe(true);
    expect(globMatch("7", "[0-9]")).toBe(true);
    expect(globMatch("]", "[]]")).toBe(true);
    expect(globMatch("[x", "[x")).toBe(true);
    expect(globMatch("a.b", "a.b")).toBe(true);
    expect(globMatch("axb", "a.b")).toBe(false);
    expect(globMatch("Foo", "foo")).toBe(false);
    expect(globMatch("(x)", "(x)")).toBe(true);
    expect(globMatch("abc", "a**c")).toBe(true);
  });
});

describe("checkPolicy", () => {
  const policies = {
    tag: "is_admin :: allow\ntag *-candidate :: allow\ntag *-stable :: deny stable needs a release manager\n",
    odd: "true :: permit",
  };

  it("allows when the policy is missing", () => {
    expect(checkPolicy(policies, "build_from_source", {})).toMatchObject({
      allowed: true,
      reason: "missing policy",
      forced: false,
    });
  });

  it("allows on allow and denies with the text after deny as the reason", () => {
    expect(checkPolicy(policies, "tag", { tag: "f40-candidate" })).toMatchObject({
      allowed: true,
      forced: false,
    });
    expect(checkPolicy(policies, "tag", { tag: "f40-stable" })).toMatchObject({
      allowed: false,
      reason: "stable needs a release manager",
      trail: ["line 3: tag *-stable :: deny stable needs a release manager"],
    });
  });

  it("denies when no rule matches", () => {
    expect(checkPolicy(policies, "tag", { tag: "scratch" })).toMatchObject({
      allowed: false,
      matched: false,
      reason: "not covered by policy",
    });
  });

  it("denies on an action that is neither allow nor deny", () => {
    expect(checkPolicy(policies, "odd", {})).toMatchObject({
      allowed: false,
      reason: 'error in policy: unknown action "permit"',
    });
  });

  it("lets an admin's force override a denial, reported as forced", () => {
    const forced = checkPolicy(policies, "tag", { tag: "f40-stable" }, { force: true, isAdmin: true });
    expect(forced).toMatchObject({ allowed: true, forced: true, reason: "stable needs a release manager" });
    expect(checkPolicy(policies, "tag", { tag: "f40-stable" }, { force: true })).toMatchObject({
      allowed: false,
      forced: false,
    });
    expect(
      checkPolicy(policies, "tag", { tag: "f40-stable", isAdmin: false }, { force: true, isAdmin: false })
        .allowed,
    ).toBe(false);
    // Force is not reported when nothing needed overriding.
    expect(checkPolicy(policies, "tag", { tag: "x-candidate" }, { force: true, isAdmin: true }).forced).toBe(
      false,
    );
  });

  it("takes the admin flag from the data when not given", () => {
    expect(checkPolicy(policies, "tag", { tag: "scratch", isAdmin: true }, { force: true }).forced).toBe(
      false,
    );
    expect(checkPolicy(policies, "tag", { tag: "scratch", isAdmin: false }, { force: true }).allowed).toBe(
      false,
    );
  });

  it("accepts compiled policies and extra tests", () => {
    const compiled = compilePolicies(
      { tag: "tuesday :: deny not on tuesdays\nall :: allow" },
      {
        tests: { tuesday: (d) => d.day === "tue" },
      },
    );
    const tests = { tuesday: (d: PolicyData) => d.day === "tue" };
    expect(checkPolicy(compiled, "tag", { day: "tue" }, { tests })).toMatchObject({
      allowed: false,
      reason: "not on tuesdays",
    });
    expect(checkPolicy(compiled, "tag", { day: "wed" }, { tests }).allowed).toBe(true);
  });

  it("reports a syntax error in a policy given as text", () => {
    const err = errorOf(() => checkPolicy({ tag: "all :: allow\nnonsense" }, "tag", {}));
    expect(err.code).toBe("POLICY_SYNTAX");
    expect(err.details).toMatchObject({ policy: "tag", line: 2 });
  });

  it("evaluates `policy NAME` against another policy, refusing loops", () => {
    const set = {
      admins: "is_admin :: allow\nhas_perm release :: yes\nall :: deny",
      tag: "policy admins :: allow\nall :: deny ask a release manager",
      loop_a: "policy loop_b :: allow",
      loop_b: "policy loop_a :: allow",
      dangling: "policy nowhere :: allow",
    };
    expect(checkPolicy(set, "tag", { isAdmin: true }).allowed).toBe(true);
    expect(checkPolicy(set, "tag", { perms: ["release"] }).allowed).toBe(true);
    expect(checkPolicy(set, "tag", {})).toMatchObject({ allowed: false, reason: "ask a release manager" });
    expect(errorOf(() => checkPolicy(set, "loop_a", {})).message).toMatch(/policy loop/);
    expect(errorOf(() => checkPolicy(set, "dangling", {})).message).toMatch(/no such policy "nowhere"/);
  });
});

describe("assertPolicy", () => {
  it("throws POLICY_DENIED with the reason on a denial and returns the decision otherwise", () => {
    const policies = { package_list: "all :: deny lists are frozen" };
    const err = errorOf(() => assertPolicy(policies, "package_list", {}));
    expect(err.code).toBe("POLICY_DENIED");
    expect(err.message).toBe("policy violation (package_list): lists are frozen");
    expect(err.details).toMatchObject({ policy: "package_list" });
    expect(assertPolicy(policies, "package_list", {}, { force: true, isAdmin: true }).forced).toBe(true);
  });
});

describe("default policies", () => {
  const policies = withDefaultPolicies({});

  it("parse, with allow/deny actions only", () => {
    expect(Object.keys(compilePolicies(DEFAULT_POLICIES))).toEqual([
      "build_from_source",
      "tag",
      "package_list",
    ]);
  });

  it("build_from_source: anyone may build", () => {
    expect(checkPolicy(policies, "build_from_source", { user: "alice" }).allowed).toBe(true);
    expect(checkPolicy(policies, "build_from_source", { isAdmin: true }).allowed).toBe(true);
  });

  it("tag: admins; others need the tag's permission when it has one", () => {
    expect(checkPolicy(policies, "tag", { isAdmin: true, tagPerm: "stable" }).allowed).toBe(true);
    expect(checkPolicy(policies, "tag", { tagPerm: null }).allowed).toBe(true);
    expect(checkPolicy(policies, "tag", { tagPerm: "stable", perms: ["stable"] }).allowed).toBe(true);
    expect(checkPolicy(policies, "tag", { tagPerm: "stable", perms: [] })).toMatchObject({
      allowed: false,
      reason: "this tag requires a permission you do not have",
    });
  });

  it("package_list: admins and holders of the tag permission", () => {
    expect(checkPolicy(policies, "package_list", { isAdmin: true }).allowed).toBe(true);
    expect(checkPolicy(policies, "package_list", { perms: ["tag"] }).allowed).toBe(true);
    expect(checkPolicy(policies, "package_list", { perms: [] }).allowed).toBe(false);
  });

  it("are replaced whole by a configured policy, and other names stay missing", () => {
    const merged = withDefaultPolicies({ tag: "all :: deny frozen", package_list: undefined });
    expect(checkPolicy(merged, "tag", { isAdmin: true })).toMatchObject({ allowed: false, reason: "frozen" });
    expect(merged.package_list).toBe(DEFAULT_POLICIES.package_list);
    expect(checkPolicy(merged, "something_else", {}).reason).toBe("missing policy");
  });

  it("compilePolicies refuses a non allow/deny action in them", () => {
    expect(errorOf(() => compilePolicies({ tag: "all :: maybe" })).message).toMatch(/unknown action "maybe"/);
    expect(() => compilePolicies({ channel: "all :: use default" })).not.toThrow();
  });
});
