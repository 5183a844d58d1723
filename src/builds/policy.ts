/**
 * Koji's policy language (koji/policy.py `SimpleRuleSet`, kojihub `check_policy`), for the
 * policies in the config file. Pure: callers pass the policy text, the facts about the request
 * (`PolicyData`) and the tests; nothing here looks anything up.
 *
 *     # comment (anything after # on any line)
 *     is_admin :: allow
 *     tag *-candidate && package foo* :: allow
 *     has_perm release !! deny only release managers may do this
 *     operation move :: {
 *         fromtag *-testing :: allow
 *     }
 *     all :: deny
 *
 * A rule is `TESTS :: ACTION` (taken when every test passes) or `TESTS !! ACTION` (taken when they
 * do not all pass — `!!` negates the whole `&&` chain, not one test). `ACTION` `{` opens a block
 * closed by a `}` on its own line; the block's rules are tried only when its tests pass, and when
 * none of them matches, evaluation goes on after the block. The first rule that matches decides.
 */
import { KilnError } from "../errors/catalogue.js";

/** Stable codes for policy errors (in the catalogue). */
export type PolicyErrorCode = "POLICY_SYNTAX" | "POLICY_ERROR" | "POLICY_DENIED";

function policyError(
  code: "POLICY_SYNTAX" | "POLICY_ERROR",
  message: string,
  details: Record<string, unknown>,
) {
  return new KilnError(code, message, details);
}

/**
 * Facts about the request a policy is checked for. The named fields are the ones the built-in
 * tests read; `bool`, `has`, `match` and `compare` can read any field by name.
 */
export interface PolicyData {
  /** The caller has the admin role. */
  isAdmin?: boolean;
  /** The caller's permissions. */
  perms?: readonly string[];
  user?: string | null;
  groups?: readonly string[];
  package?: string | null;
  version?: string | null;
  /** The destination tag (for a move, the tag moved to; for an untag, null). */
  tag?: string | null;
  /** The tag a build leaves (move, untag). */
  fromtag?: string | null;
  buildTag?: string | null;
  target?: string | null;
  /** For the tag policy: tag, untag or move. For package_list: add, remove, block, unblock, update. */
  operation?: string | null;
  /** The permission the destination tag requires, or null when it requires none. */
  tagPerm?: string | null;
  [field: string]: unknown;
}

/** A named test: true when the data passes it with these arguments. */
export interface PolicyTest {
  (data: PolicyData, args: readonly string[]): boolean;
  /** A message when the arguments are malformed; checked when a policy is parsed with the test. */
  validateArgs?: (args: readonly string[]) => string | undefined;
}

export type PolicyTestRegistry = Readonly<Record<string, PolicyTest | undefined>>;

export interface PolicyCondition {
  name: string;
  args: readonly string[];
}

interface RuleBase {
  /** 1-based line in the policy text. */
  line: number;
  tests: readonly PolicyCondition[];
  /** `!!`: the rule matches when the tests do not all pass. */
  negate: boolean;
}

export type PolicyRule =
  | (RuleBase & { kind: "action"; action: string })
  | (RuleBase & { kind: "block"; rules: readonly PolicyRule[] });

export interface Policy {
  name: string;
  rules: readonly PolicyRule[];
}

export interface ParseOptions {
  /** Shown in error messages. */
  name?: string;
  /** When given, unknown test names and malformed arguments are refused at parse time. */
  tests?: PolicyTestRegistry;
  /** When given, the first word of every action must be one of these. */
  actions?: readonly string[];
}

/**
 * Parses policy text. Differs from Koji in one detail: a rule splits at its first `::` or `!!`
 * (Koji takes the last `::`), so a deny reason may contain `::`. `#` always starts a comment.
 */
export function parsePolicy(text: string, options: ParseOptions = {}): Policy {
  const name = options.name ?? "policy";
  const fail = (line: number, message: string): KilnError =>
    policyError("POLICY_SYNTAX", `Policy ${name}, line ${line}: ${message}`, { policy: name, line });

  const root: PolicyRule[] = [];
  const open: { rules: PolicyRule[]; line: number }[] = [];
  let current = root;
  for (const [index, raw] of text.split(/\r?\n/).entries()) {
    const lineNo = index + 1;
    const hash = raw.indexOf("#");
    const line = (hash >= 0 ? raw.slice(0, hash) : raw).trim();
    if (line === "") continue;
    if (line === "}") {
      const outer = open.pop();
      if (!outer) throw fail(lineNo, "'}' has no matching '{'");
      current = outer.rules;
      continue;
    }
    const sep = findSeparator(line);
    if (sep < 0) {
      throw fail(
        lineNo,
        line.includes("}")
          ? "'}' must be on a line by itself"
          : "expected 'TESTS :: ACTION' or 'TESTS !! ACTION'",
      );
    }
    const negate = line.startsWith("!!", sep);
    const testsText = line.slice(0, sep).trim();
    const action = line.slice(sep + 2).trim();
    if (testsText === "") throw fail(lineNo, "the rule has no test");
    if (/[{}]/.test(testsText)) throw fail(lineNo, "'}' must be on a line by itself, and '{' end a rule");
    if (action === "") throw fail(lineNo, "the rule has no action");
    const tests = testsText.split("&&").map((part) => {
      const words = part.trim().split(/\s+/);
      const [testName, ...args] = words;
      if (testName === undefined || testName === "") throw fail(lineNo, "a test is missing around '&&'");
      if (options.tests) {
        const test = options.tests[testName];
        if (!test) throw fail(lineNo, `unknown test "${testName}"`);
        const problem = test.validateArgs?.(args);
        if (problem !== undefined) throw fail(lineNo, `${testName}: ${problem}`);
      }
      return { name: testName, args };
    });
    if (action === "{") {
      const rules: PolicyRule[] = [];
      current.push({ kind: "block", line: lineNo, tests, negate, rules });
      open.push({ rules: current, line: lineNo });
      current = rules;
      continue;
    }
    if (action.startsWith("{") || action.endsWith("}")) {
      throw fail(lineNo, "a block's '{' must end its line and its '}' stand on a line by itself");
    }
    const verb = firstWord(action);
    if (options.actions && !options.actions.includes(verb)) {
      throw fail(lineNo, `unknown action "${verb}" (expected ${options.actions.join(" or ")})`);
    }
    current.push({ kind: "action", line: lineNo, tests, negate, action });
  }
  const unclosed = open.pop();
  if (unclosed) throw fail(unclosed.line, "'{' is never closed");
  return { name, rules: root };
}

function findSeparator(line: string): number {
  const colons = line.indexOf("::");
  const bangs = line.indexOf("!!");
  if (colons < 0) return bangs;
  if (bangs < 0) return colons;
  return Math.min(colons, bangs);
}

function firstWord(text: string): string {
  return text.trim().split(/\s+/, 1)[0] ?? "";
}

export interface PolicyResult {
  /** The matched rule's action, or the default when no rule matched. */
  action: string;
  matched: boolean;
  /** The rules that led to the result, outermost first, e.g. `line 3: tag *-testing :: {`. */
  trail: string[];
}

/**
 * Evaluates a policy: rules in order, tests of a rule left to right until one fails; the first
 * matching rule with an action decides. A matching block whose rules all miss lets evaluation go
 * on after the block (Koji's `_apply`). No match gives `defaultAction` ("deny").
 */
export function evaluatePolicy(
  policy: Policy,
  data: PolicyData,
  tests: PolicyTestRegistry = DEFAULT_POLICY_TESTS,
  defaultAction = "deny",
): PolicyResult {
  const trail: string[] = [];
  const passes = (rule: PolicyRule): boolean => {
    let all = true;
    for (const condition of rule.tests) {
      const test = tests[condition.name];
      const where = { policy: policy.name, line: rule.line, test: condition.name };
      if (!test) {
        throw policyError(
          "POLICY_ERROR",
          `Policy ${policy.name}, line ${rule.line}: unknown test "${condition.name}"`,
          where,
        );
      }
      const problem = test.validateArgs?.(condition.args);
      if (problem !== undefined) {
        throw policyError(
          "POLICY_ERROR",
          `Policy ${policy.name}, line ${rule.line}: ${condition.name}: ${problem}`,
          where,
        );
      }
      if (!test(data, condition.args)) {
        all = false;
        break;
      }
    }
    return rule.negate ? !all : all;
  };
  const apply = (rules: readonly PolicyRule[]): string | null => {
    for (const rule of rules) {
      if (!passes(rule)) continue;
      trail.push(describeRule(rule));
      if (rule.kind === "action") return rule.action;
      const inner = apply(rule.rules);
      if (inner !== null) return inner;
      trail.pop();
    }
    return null;
  };
  const action = apply(policy.rules);
  return action === null
    ? { action: defaultAction, matched: false, trail }
    : { action, matched: true, trail };
}

function describeRule(rule: PolicyRule): string {
  const tests = rule.tests.map((t) => [t.name, ...t.args].join(" ")).join(" && ");
  const body = rule.kind === "action" ? rule.action : "{";
  return `line ${rule.line}: ${tests} ${rule.negate ? "!!" : "::"} ${body}`;
}

// ---------------------------------------------------------------------------------------------
// Allow/deny policies

export interface CheckOptions {
  /** The caller asked to override a denial; honoured for admins only. */
  force?: boolean;
  /** Defaults to `data.isAdmin`. */
  isAdmin?: boolean;
  /** Extra tests, added to (and overriding) the built-in ones. */
  tests?: PolicyTestRegistry;
}

export interface PolicyDecision {
  allowed: boolean;
  /** The text after `deny`/`allow`, "not covered by policy", "missing policy" or "error in policy: …". */
  reason: string;
  /** An admin's force turned a denial into an allow: the caller records it. */
  forced: boolean;
  /** The action as evaluated ("allow" for a missing policy). */
  action: string;
  matched: boolean;
  trail: string[];
}

export type PolicySource = string | Policy | undefined;

/** Actions of the allow/deny policies (`build_from_source`, `tag`, `package_list`). */
export const ALLOW_DENY = ["allow", "deny"] as const;

/**
 * Checks an allow/deny policy as kojihub's `check_policy` does: a missing policy allows (Koji's
 * MissingPolicyOk default); no matching rule denies ("not covered by policy"); an action other
 * than allow or deny denies ("error in policy"); `force` by an admin turns any denial into an
 * allow reported as forced. Adds the test `policy NAME` (true when that other policy allows),
 * with loops refused.
 */
export function checkPolicy(
  policies: Readonly<Record<string, PolicySource>>,
  name: string,
  data: PolicyData,
  options: CheckOptions = {},
): PolicyDecision {
  const source = policies[name];
  if (source === undefined) {
    return {
      allowed: true,
      reason: "missing policy",
      forced: false,
      action: "allow",
      matched: false,
      trail: [],
    };
  }
  const running = new Set([name]);
  const registry: Record<string, PolicyTest | undefined> = { ...DEFAULT_POLICY_TESTS, ...options.tests };
  const resolve = (policyName: string, src: string | Policy): Policy =>
    typeof src === "string" ? parsePolicy(src, { name: policyName, tests: registry }) : src;
  registry.policy = withArgs(
    (d, args) => {
      const target = args[0] as string;
      const targetSource = policies[target];
      if (targetSource === undefined) {
        throw policyError("POLICY_ERROR", `Policy ${name}: no such policy "${target}"`, {
          policy: name,
          target,
        });
      }
      if (running.has(target)) {
        throw policyError("POLICY_ERROR", `Policy ${name}: policy loop through "${target}"`, {
          policy: name,
          target,
        });
      }
      running.add(target);
      try {
        const result = evaluatePolicy(resolve(target, targetSource), d, registry);
        return result.matched && ["yes", "true", "allow"].includes(firstWord(result.action).toLowerCase());
      } finally {
        running.delete(target);
      }
    },
    (args) => (args.length === 1 ? undefined : "takes exactly one policy name"),
  );

  const result = evaluatePolicy(resolve(name, source), data, registry);
  const verb = firstWord(result.action);
  let reason = result.action.trim().slice(verb.length).trim();
  if (!result.matched) reason = "not covered by policy";
  const decision = {
    reason,
    forced: false,
    action: result.action,
    matched: result.matched,
    trail: result.trail,
  };
  if (verb === "allow") return { ...decision, allowed: true };
  if (verb !== "deny") decision.reason = `error in policy: unknown action "${verb}"`;
  if (options.force === true && (options.isAdmin ?? data.isAdmin === true)) {
    return { ...decision, allowed: true, forced: true };
  }
  return { ...decision, allowed: false };
}

/** Like `checkPolicy`, but a denial throws POLICY_DENIED ("policy violation (NAME): REASON"). */
export function assertPolicy(
  policies: Readonly<Record<string, PolicySource>>,
  name: string,
  data: PolicyData,
  options: CheckOptions = {},
): PolicyDecision {
  const decision = checkPolicy(policies, name, data, options);
  if (!decision.allowed) {
    const message = decision.reason
      ? `policy violation (${name}): ${decision.reason}`
      : `policy violation (${name})`;
    throw new KilnError("POLICY_DENIED", message, {
      policy: name,
      denial: decision.reason,
    });
  }
  return decision;
}

/**
 * Parses every configured policy up front, so a mistake shows at startup with its line number.
 * The allow/deny policies among `allowDeny` also have their actions checked.
 */
export function compilePolicies(
  texts: Readonly<Record<string, string | undefined>>,
  options: { tests?: PolicyTestRegistry; allowDeny?: readonly string[] } = {},
): Record<string, Policy> {
  const tests: PolicyTestRegistry = {
    ...DEFAULT_POLICY_TESTS,
    policy: POLICY_TEST_PLACEHOLDER,
    ...options.tests,
  };
  const allowDeny = options.allowDeny ?? Object.keys(DEFAULT_POLICIES);
  const compiled: Record<string, Policy> = {};
  for (const [name, text] of Object.entries(texts)) {
    if (text === undefined) continue;
    compiled[name] = parsePolicy(text, {
      name,
      tests,
      ...(allowDeny.includes(name) ? { actions: ALLOW_DENY } : {}),
    });
  }
  return compiled;
}

// Stands in for `policy NAME` at parse time; checkPolicy supplies the real one.
const POLICY_TEST_PLACEHOLDER = withArgs(
  () => false,
  (args) => (args.length === 1 ? undefined : "takes exactly one policy name"),
);

// ---------------------------------------------------------------------------------------------
// Default policies

/**
 * What Kiln checks when the config file sets none of these (Koji keeps such defaults in
 * kojixmlrpc `_default_policies`). Koji admits only admins to build_from_srpm; a Kiln farm is
 * usually one team's, so any authenticated user may build.
 */
export const DEFAULT_POLICIES = {
  build_from_source: `
is_admin :: allow
# Koji's own default, for a stricter farm:
#   all :: deny only admins may build from source
all :: allow
`,
  tag: `
is_admin :: allow
has_tag_perm :: allow
all :: deny this tag requires a permission you do not have
`,
  package_list: `
is_admin :: allow
has_perm tag :: allow
all :: deny only admins and holders of the tag permission may change package lists
`,
} as const satisfies Record<string, string>;

/** The configured policies over the defaults: a configured policy replaces its default whole. */
export function withDefaultPolicies(
  configured: Readonly<Record<string, string | undefined>>,
): Record<string, string> {
  const merged: Record<string, string> = { ...DEFAULT_POLICIES };
  for (const [name, text] of Object.entries(configured)) if (text !== undefined) merged[name] = text;
  return merged;
}

// ---------------------------------------------------------------------------------------------
// Built-in tests

function withArgs(
  run: (data: PolicyData, args: readonly string[]) => boolean,
  validateArgs: PolicyTest["validateArgs"],
) {
  const test: PolicyTest = (data, args) => run(data, args);
  test.validateArgs = validateArgs;
  return test;
}

const noArgs = (args: readonly string[]) => (args.length === 0 ? undefined : "takes no arguments");
const someArgs = (what: string) => (args: readonly string[]) =>
  args.length > 0 ? undefined : `needs at least one ${what}`;
const oneField = (args: readonly string[]) =>
  args.length === 1 ? undefined : "takes exactly one field name";

/** A field value as the strings a glob is matched against: a list matches when any element does. */
function valuesOf(value: unknown): string[] {
  if (typeof value === "string") return [value];
  if (typeof value === "number" || typeof value === "bigint") return [String(value)];
  if (Array.isArray(value)) return value.flatMap((v) => valuesOf(v as unknown));
  return [];
}

function matchesAny(value: unknown, patterns: readonly string[]): boolean {
  return valuesOf(value).some((v) => patterns.some((p) => globMatch(v, p)));
}

/** A test matching one data field against the rule's glob patterns (Koji's MatchTest subclasses). */
function fieldMatch(field: keyof PolicyData & string, what: string): PolicyTest {
  return withArgs((data, args) => matchesAny(data[field], args), someArgs(what));
}

const COMPARE_OPS: Record<string, (a: number, b: number) => boolean> = {
  "<": (a, b) => a < b,
  ">": (a, b) => a > b,
  "<=": (a, b) => a <= b,
  ">=": (a, b) => a >= b,
  "=": (a, b) => a === b,
  "!=": (a, b) => a !== b,
};

export const DEFAULT_POLICY_TESTS: PolicyTestRegistry = {
  true: withArgs(() => true, noArgs),
  all: withArgs(() => true, noArgs),
  false: withArgs(() => false, noArgs),
  none: withArgs(() => false, noArgs),
  /** has FIELD: the data has the field. */
  has: withArgs((data, [field]) => data[field as string] !== undefined, oneField),
  /** bool FIELD: the field is truthy. */
  bool: withArgs((data, [field]) => Boolean(data[field as string]), oneField),
  /** match FIELD PATTERN…: the field matches any glob. */
  match: withArgs(
    (data, [field, ...patterns]) => matchesAny(data[field as string], patterns),
    (args) => (args.length >= 2 ? undefined : "needs a field name and at least one pattern"),
  ),
  /** compare FIELD OP NUMBER, OP one of < > <= >= = !=; false when the field is not a number. */
  compare: withArgs(
    (data, [field, op, number]) => {
      const value = data[field as string];
      const compare = COMPARE_OPS[op as string];
      return typeof value === "number" && compare !== undefined && compare(value, Number(number));
    },
    (args) => {
      if (args.length !== 3) return "expected FIELD OP NUMBER";
      if (!Object.hasOwn(COMPARE_OPS, args[1] as string)) return `unknown operator "${args[1]}"`;
      if (!Number.isFinite(Number(args[2])) || (args[2] as string).trim() === "")
        return `"${args[2]}" is not a number`;
      return undefined;
    },
  ),
  is_admin: withArgs((data) => data.isAdmin === true, noArgs),
  /** has_perm PERM…: the caller holds a permission matching any glob. */
  has_perm: withArgs((data, args) => matchesAny(data.perms ?? [], args), someArgs("permission")),
  /** has_tag_perm: the destination tag requires no permission, or the caller holds it. */
  has_tag_perm: withArgs((data) => {
    const perm = data.tagPerm;
    return perm === undefined || perm === null || (data.perms ?? []).includes(perm);
  }, noArgs),
  user: fieldMatch("user", "user name"),
  user_in_group: withArgs((data, args) => matchesAny(data.groups ?? [], args), someArgs("group")),
  package: fieldMatch("package", "package pattern"),
  version: fieldMatch("version", "version pattern"),
  tag: fieldMatch("tag", "tag pattern"),
  fromtag: fieldMatch("fromtag", "tag pattern"),
  buildtag: fieldMatch("buildTag", "tag pattern"),
  target: fieldMatch("target", "target pattern"),
  operation: fieldMatch("operation", "operation"),
};

// ---------------------------------------------------------------------------------------------
// Globs

const globCache = new Map<string, RegExp>();

/**
 * Python's fnmatch on POSIX: `*` any run (slashes too), `?` one character, `[seq]` and `[!seq]`
 * sets, everything else literal; case-sensitive; the whole string must match.
 */
export function globMatch(value: string, pattern: string): boolean {
  let re = globCache.get(pattern);
  if (!re) {
    re = globToRegExp(pattern);
    globCache.set(pattern, re);
  }
  return re.test(value);
}

function globToRegExp(pattern: string): RegExp {
  let out = "";
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern.charAt(i);
    if (c === "*") {
      if (pattern.charAt(i - 1) !== "*") out += ".*";
    } else if (c === "?") {
      out += ".";
    } else if (c === "[") {
      let j = i + 1;
      if (pattern.charAt(j) === "!") j++;
      if (pattern.charAt(j) === "]") j++;
      while (j < pattern.length && pattern.charAt(j) !== "]") j++;
      if (j >= pattern.length) {
        out += "\\[";
      } else {
        let body = pattern.slice(i + 1, j);
        const negated = body.startsWith("!");
        if (negated) body = body.slice(1);
        out += `[${negated ? "^" : ""}${body.replace(/[\\\]^[]/g, "\\$&")}]`;
        i = j;
      }
    } else {
      out += c.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
    }
  }
  return new RegExp(`^(?:${out})$`, "s");
}
