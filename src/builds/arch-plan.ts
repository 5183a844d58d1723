import { KilnError } from "../errors/catalogue.js";

export interface ArchTask {
  /** The task's arch: a host must have it (`noarch` for a package that is only `all`). */
  taskArch: string;
  /** The arch the binaries are built for ("all" for an `all`-only package). */
  arch: string;
  dep: boolean;
  indep: boolean;
}

/** Does a Debian architecture (wildcard) from debian/control cover this concrete arch? */
export function archMatches(pattern: string, arch: string): boolean {
  if (pattern === arch || pattern === "any" || pattern === "linux-any") return true;
  // any-<cpu> and linux-<cpu> name a CPU on the one OS Kiln builds for.
  const m = /^(?:any|linux)-(.+)$/.exec(pattern);
  return m !== null && m[1] === arch;
}

/**
 * Which buildArch tasks a build needs: the build tag's arches intersected with the package's
 * Architecture fields (and the --arch-override, if any); `all` binaries are built once, by the
 * first arch task, or by a noarch task when the package has nothing arch-dependent. Pure.
 */
export function planArches(
  tagArches: readonly string[],
  packageArches: readonly string[],
  override?: readonly string[],
): ArchTask[] {
  const wantsAll = packageArches.includes("all");
  const patterns = packageArches.filter((a) => a !== "all");
  let arches = tagArches.filter((a) => patterns.some((p) => archMatches(p, a)));
  if (override && override.length > 0) arches = arches.filter((a) => override.includes(a));
  if (arches.length > 0) {
    return arches.map((arch, i) => ({ taskArch: arch, arch, dep: true, indep: wantsAll && i === 0 }));
  }
  if (wantsAll && (patterns.length === 0 || !override || override.length === 0)) {
    return [{ taskArch: "noarch", arch: "all", dep: false, indep: true }];
  }
  throw new KilnError(
    "NO_ARCHES",
    `nothing to build: the build tag's arches [${tagArches.join(", ")}] and the package's [${packageArches.join(", ")}]${override?.length ? ` (override [${override.join(", ")}])` : ""} do not meet; set arches with \`kiln tag edit TAG --arches …\``,
  );
}
