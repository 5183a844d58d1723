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
 * last ones made, keyed by package row and component (a row never changes).
 */
const stanzaCache = new Map<string, string>();
const STANZA_CACHE_MAX = 200_000;

function cached(key: string, make: () => string): string {
  let s = stanzaCache.get(key);
  if (s === undefined) {
    s = make();
    if (stanzaCache.size >= STANZA_CACHE_MAX) stanzaCache.clear();
    stanzaCache.set(key, s);
  }
  return s;
}

const byNameVersionArch = (a: PackageRecord, b: PackageRecord): number =>
  a.name < b.name ? -1 : a.name > b.name ? 1 : a.arch < b.arch ? -1 : a.arch > b.arch ? 1 : a.id - b.id;

/**
 * What a publication of these packages consists of: pure, so the layout rules are tested
 * without a disk. Binary packages of `Architecture: all` are listed in every architecture's
 * Packages; two different files claiming one pool path are refused before anything is written.
 */
export function planPublication(input: PlanInput): PublicationPlan {
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
  const pool = new Map<string, PoolEntry>();
  const addPool = (entry: PoolEntry, key: string) => {
    const there = pool.get(entry.path);
    if (there && there.sha256 !== entry.sha256) {
      throw new KilnError(
        "POOL_FILE_CONFLICT",
        `two different files would be ${entry.path} (the second from ${key}); remove one of the packages`,
        { path: entry.path, sha256: [there.sha256, entry.sha256] },
      );
    }
    pool.set(entry.path, entry);
  };

  const indexes: IndexEntry[] = [];
  let packageCount = 0;
  for (const { component, packages } of input.components) {
    const sorted = [...packages].sort(byNameVersionArch);
    const perArch = new Map<string, string[]>(binaryArches.map((a) => [a, []]));
    const sources: string[] = [];
    for (const pkg of sorted) {
      const dir = poolDirectory(component, pkg.source);
      if (pkg.kind === "dsc") {
        if (!withSource) continue;
        for (const f of pkg.files)
          addPool({ path: `${dir}/${f.name}`, sha256: f.sha256, size: f.size }, pkg.key);
        sources.push(
          cached(`${pkg.key}|${component}`, () => {
            const dscFile = mainFile(pkg);
            return sourcesStanza(parseDsc(pkg.control, dscFile.name), { directory: dir, dscFile });
          }),
        );
        packageCount++;
        continue;
      }
      const targets = pkg.arch === "all" ? binaryArches : perArch.has(pkg.arch) ? [pkg.arch] : [];
      if (targets.length === 0) continue;
      const file = mainFile(pkg);
      const filename = `${dir}/${file.name}`;
      addPool({ path: filename, sha256: file.sha256, size: file.size }, pkg.key);
      const stanza = cached(`${pkg.key}|${component}`, () =>
        packagesStanza(pkg.control, { ...file, filename }),
      );
      for (const a of targets) perArch.get(a)?.push(stanza);
      packageCount++;
    }
    for (const [arch, stanzas] of perArch) {
      const chunks = indexChunks(stanzas);
      indexes.push({
        component,
        dir: `binary-${arch}`,
        architecture: arch,
        name: "Packages",
        content: chunks.join(""),
        chunks,
      });
    }
    if (withSource) {
      const chunks = indexChunks(sources);
      indexes.push({
        component,
        dir: "source",
        architecture: "source",
        name: "Sources",
        content: chunks.join(""),
        chunks,
      });
    }
  }
  return {
    distribution: input.distribution,
    components: input.components.map((c) => c.component),
    architectures: binaryArches,
    withSource,
    pool: [...pool.values()].sort((a, b) => (a.path < b.path ? -1 : 1)),
    indexes,
    packageCount,
  };
}
