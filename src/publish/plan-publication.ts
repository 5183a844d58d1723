import { indexChunks, packagesStanza, poolDirectory } from "../debian/index-writers.js";
import { parseDsc, sourcesStanza } from "../debian/dsc-file.js";
import { KilnError } from "../errors/catalogue.js";
import { mainFile, type PackageRecord } from "./package-store.js";

export interface PlanComponent {
  component: string;
  packages: readonly PackageRecord[];
}

export interface PlanInput {
  distribution: string;
  components: readonly PlanComponent[];
  /** Binary architectures to publish (and `source`); empty: every one the packages have. */
  architectures: readonly string[];
}

/** A file the pool must hold: `path` relative to the prefix's root, content from the blob store. */
export interface PoolEntry {
  path: string;
  sha256: string;
  size: number;
}

/** One index (Packages or Sources) of one component and architecture, uncompressed. */
export interface IndexEntry {
  component: string;
  /** `binary-amd64` or `source`. */
  dir: string;
  architecture: string;
  name: "Packages" | "Sources";
  content: string;
  /** `content` in pieces cut where its paragraphs say (indexChunks()), compressed one by one. */
  chunks: string[];
}

export interface PublicationPlan {
  distribution: string;
  components: string[];
  /** Binary architectures, as the top Release lists them. */
  architectures: string[];
  /** Whether Sources indexes are published. */
  withSource: boolean;
  pool: PoolEntry[];
  indexes: IndexEntry[];
  packageCount: number;
}

/**
 * Index stanzas are the bulk of a publish's work and rarely change between publishes: keep the
 * last ones made, by component and package row id, with the row's key (a row never changes; the
 * key guards against an id used again after its row was deleted). Numbers, not strings, as keys:
 * a lookup then costs no string to build and hash, 20,000 times a publish.
 */
const stanzaCache = new Map<string, Map<number, { key: string; stanza: string }>>();
let stanzaCount = 0;
const STANZA_CACHE_MAX = 200_000;

function stanzasOf(component: string): Map<number, { key: string; stanza: string }> {
  let byId = stanzaCache.get(component);
  if (!byId) {
    byId = new Map();
    stanzaCache.set(component, byId);
  }
  return byId;
}

function cached(
  byId: Map<number, { key: string; stanza: string }>,
  pkg: PackageRecord,
  make: () => string,
): string {
  const hit = byId.get(pkg.id);
  if (hit !== undefined && hit.key === pkg.key) return hit.stanza;
  const stanza = make();
  if (stanzaCount >= STANZA_CACHE_MAX) {
    stanzaCache.clear();
    stanzaCount = 0;
  }
  if (!hit) stanzaCount++;
  byId.set(pkg.id, { key: pkg.key, stanza });
  return stanza;
}

const byNameVersionArch = (a: PackageRecord, b: PackageRecord): number =>
  a.name < b.name ? -1 : a.name > b.name ? 1 : a.arch < b.arch ? -1 : a.arch > b.arch ? 1 : a.id - b.id;

/** The architectures a publication lists (refused when there are none to put packages under). */
function planArchitectures(input: PlanInput): { binaryArches: string[]; withSource: boolean } {
  const requested = new Set(input.architectures);
  const derived = new Set<string>();
  let anySource = false;
  for (const c of input.components) {
    for (const p of c.packages) {
      if (p.kind === "dsc") anySource = true;
      else if (p.arch !== "all") derived.add(p.arch);
    }
  }
  const binaryArches = [...(requested.size > 0 ? requested : derived)].filter(
    (a) => a !== "source" && a !== "all",
  );
  if (binaryArches.length === 0) {
    const hasAll = input.components.some((c) => c.packages.some((p) => p.kind !== "dsc"));
    if (hasAll) {
      throw new KilnError(
        "VALIDATION_FAILED",
        "only Architecture: all packages to publish: name the architectures to publish them for (--architectures)",
      );
    }
  }
  binaryArches.sort();
  const withSource = requested.size > 0 ? requested.has("source") : anySource;
  return { binaryArches, withSource };
}

/**
 * Calls `visit` for every package a component's indexes list, in index order, with its pool
 * directory and the architectures it is listed under (`source` for a source package).
 */
function eachListed(
  component: string,
  packages: readonly PackageRecord[],
  arches: { binaryArches: readonly string[]; withSource: boolean },
  visit: (pkg: PackageRecord, dir: string, targets: readonly string[]) => void,
): void {
  const source = ["source"];
  for (const pkg of [...packages].sort(byNameVersionArch)) {
    const dir = poolDirectory(component, pkg.source); // checks every package's names, listed or not
    const targets =
      pkg.kind === "dsc"
        ? arches.withSource
          ? source
          : []
        : pkg.arch === "all"
          ? arches.binaryArches
          : arches.binaryArches.includes(pkg.arch)
            ? [pkg.arch]
            : [];
    if (targets.length > 0) visit(pkg, dir, targets);
  }
}

/**
 * The files a publication's pool holds, sorted by path: cheap next to the indexes, so a publish
 * can start putting them in place while the indexes are made. Two different files claiming one
 * pool path are refused (POOL_FILE_CONFLICT).
 */
export function planPool(input: PlanInput): PoolEntry[] {
  const arches = planArchitectures(input);
  const claims: { entry: PoolEntry; from: string }[] = [];
  for (const { component, packages } of input.components) {
    eachListed(component, packages, arches, (pkg, dir) => {
      // A binary package's pool file is its .deb; a source package's are all its files.
      for (const f of pkg.kind === "dsc" ? pkg.files : [mainFile(pkg)]) {
        // Checked when the package was imported; again here, as the publisher joins these paths by hand.
        if (f.name === "" || f.name === "." || f.name === ".." || f.name.includes("/")) {
          throw new KilnError("INVALID_NAME", `package ${pkg.key} has a file named "${f.name}"`, {
            name: f.name,
          });
        }
        claims.push({ entry: { path: `${dir}/${f.name}`, sha256: f.sha256, size: f.size }, from: pkg.key });
      }
    });
  }
  // Sorted (stably), a path's claims are side by side: the first stays, the others must agree.
  claims.sort((a, b) => (a.entry.path < b.entry.path ? -1 : a.entry.path > b.entry.path ? 1 : 0));
  const pool: PoolEntry[] = [];
  for (const { entry, from } of claims) {
    const there = pool[pool.length - 1];
    if (there?.path !== entry.path) pool.push(entry);
    else if (there.sha256 !== entry.sha256) {
      throw new KilnError(
        "POOL_FILE_CONFLICT",
        `two different files would be ${entry.path} (the second from ${from}); remove one of the packages`,
        { path: entry.path, sha256: [there.sha256, entry.sha256] },
      );
    }
  }
  return pool;
}

/**
 * What a publication of these packages consists of: pure, so the layout rules are tested
 * without a disk. Binary packages of `Architecture: all` are listed in every architecture's
 * Packages; two different files claiming one pool path are refused before anything is written.
 * `pool` is planPool() of the same input, when the caller has it already.
 */
export function planPublication(input: PlanInput, pool: PoolEntry[] = planPool(input)): PublicationPlan {
  const arches = planArchitectures(input);
  const indexes: IndexEntry[] = [];
  let packageCount = 0;
  for (const { component, packages } of input.components) {
    const known = stanzasOf(component);
    const perArch = new Map<string, string[]>(arches.binaryArches.map((a) => [a, []]));
    const sources: string[] = [];
    eachListed(component, packages, arches, (pkg, dir, targets) => {
      packageCount++;
      const file = mainFile(pkg);
      if (pkg.kind === "dsc") {
        sources.push(
          cached(known, pkg, () =>
            sourcesStanza(parseDsc(pkg.control, file.name), { directory: dir, dscFile: file }),
          ),
        );
        return;
      }
      const filename = `${dir}/${file.name}`;
      const stanza = cached(known, pkg, () => packagesStanza(pkg.control, { ...file, filename }));
      for (const a of targets) perArch.get(a)?.push(stanza);
    });
    const add = (dir: string, architecture: string, name: IndexEntry["name"], paragraphs: string[]) => {
      const chunks = indexChunks(paragraphs);
      indexes.push({ component, dir, architecture, name, content: chunks.join(""), chunks });
    };
    for (const [arch, stanzas] of perArch) add(`binary-${arch}`, arch, "Packages", stanzas);
    if (arches.withSource) add("source", "source", "Sources", sources);
  }
  return {
    distribution: input.distribution,
    components: input.components.map((c) => c.component),
    architectures: arches.binaryArches,
    withSource: arches.withSource,
    pool,
    indexes,
    packageCount,
  };
}
