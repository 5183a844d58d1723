/**
 * Kiln's rows in the shapes Aptly 1.6 answers with (CamelCase fields), and the names and states
 * Aptly gives its tasks. Pure: the routes load, these only reshape.
 */
import { paragraphToRecord, parseParagraph } from "../../../debian/deb822.js";
import type { PackageRecord } from "../../../publish/package-store.js";
import type { PublicationRow, PublicationSource } from "../../../publish/publication-store.js";
import type { RepoAddResult } from "../../../publish/repo-ops.js";
import type { RepoRow } from "../../../publish/repo-store.js";
import type { SnapshotRow } from "../../../publish/snapshot-store.js";
import type { TaskRow } from "../../../tasks/types.js";
import { encodeAptlyPrefix } from "./aptly-prefix.js";

/** The version Aptly clients see; they compare it, so it is Aptly's, with Kiln's after a "+". */
export const APTLY_COMPAT_VERSION = "1.6.0";

export interface AptlyRepo {
  Name: string;
  Comment: string;
  DefaultDistribution: string;
  DefaultComponent: string;
}

export function toAptlyRepo(row: RepoRow): AptlyRepo {
  return {
    Name: row.name,
    Comment: row.comment,
    DefaultDistribution: row.distribution,
    DefaultComponent: row.component,
  };
}

export interface AptlySnapshot {
  Name: string;
  CreatedAt: string;
  Description: string;
}

export function toAptlySnapshot(row: SnapshotRow): AptlySnapshot {
  return { Name: row.name, CreatedAt: new Date(row.created_at).toISOString(), Description: row.description };
}

export interface AptlyPublished {
  Storage: string;
  Prefix: string;
  Path: string;
  Distribution: string;
  Codename: string;
  Suite: string;
  Origin: string;
  Label: string;
  NotAutomatic: string;
  ButAutomaticUpgrades: string;
  SourceKind: string;
  Sources: { Component: string; Name: string }[];
  Architectures: string[];
  AcquireByHash: boolean;
  SkipContents: boolean;
  /** Kiln's own: the prefix as Aptly URLs spell it, ready for PUT/DELETE /api/publish/… */
  EncodedPrefix: string;
}

export function toAptlyPublished(row: PublicationRow): AptlyPublished {
  const sources = JSON.parse(row.sources) as PublicationSource[];
  return {
    Storage: "",
    Prefix: row.prefix,
    Path: row.prefix === "." ? row.distribution : `${row.prefix}/${row.distribution}`,
    Distribution: row.distribution,
    Codename: "",
    Suite: "",
    Origin: row.origin,
    Label: row.label,
    NotAutomatic: "",
    ButAutomaticUpgrades: "",
    SourceKind: row.source_kind,
    Sources: sources.map((s) => ({ Component: s.component, Name: s.name })),
    Architectures: JSON.parse(row.architectures) as string[],
    AcquireByHash: true,
    SkipContents: true,
    EncodedPrefix: encodeAptlyPrefix(row.prefix),
  };
}

/** Aptly's `name_version_arch`, the way its reports name a package. */
export function aptlyPackageName(p: { name: string; version: string; arch: string }): string {
  return `${p.name}_${p.version}_${p.arch}`;
}

/** `format=details`: the control fields, plus Aptly's Key, ShortKey and FilesHash. */
export function toAptlyPackageDetails(p: PackageRecord): Record<string, string> {
  let fields: Record<string, string> = {};
  try {
    fields = paragraphToRecord(parseParagraph(p.control));
  } catch {
    fields = { Package: p.name, Version: p.version, Architecture: p.arch };
  }
  const lastSpace = p.key.lastIndexOf(" ");
  const out: Record<string, string> = {
    ...fields,
    Key: p.key,
    ShortKey: p.key.slice(0, lastSpace),
    FilesHash: p.key.slice(lastSpace + 1),
  };
  const main = p.kind === "dsc" ? undefined : p.files[0];
  if (main) {
    out.Filename ??= main.name;
    out.Size ??= String(main.size);
    out.MD5sum ??= main.md5;
    out.SHA1 ??= main.sha1;
    out.SHA256 ??= main.sha256;
  }
  return out;
}

/** The name Aptly would give the task that does this. */
export function aptlyTaskName(method: string, args: Record<string, unknown>): string {
  const a = (key: string) => {
    const v = args[key];
    return typeof v === "string" || typeof v === "number" ? String(v) : "";
  };
  const pub = () => `${a("prefix")}/${a("distribution")}`;
  switch (method) {
    case "repoAdd":
      return `Add packages from dir ${a("upload")} to repo ${a("repo")}`;
    case "repoAddKeys":
      return `Add packages to repo ${a("repo")}`;
    case "repoRemoveKeys":
      return `Delete packages from repo ${a("repo")}`;
    case "repoRemove":
      return `Remove packages matching ${a("query")} from repo ${a("repo")}`;
    case "repoCopy":
      return `Copy packages from repo ${a("from")} to repo ${a("to")}`;
    case "repoImportTag":
      return `Import tag ${a("tag")} into repo ${a("repo")}`;
    case "repoDrop":
      return `Delete repo ${a("repo")}`;
    case "snapshotCreate":
      return `Create snapshot ${a("name")}`;
    case "snapshotDrop":
      return `Delete snapshot ${a("name")}`;
    case "publishCreate": {
      const spec = (args.spec ?? {}) as { prefix?: string; distribution?: string; sourceKind?: string };
      return `Publish ${spec.sourceKind ?? ""}: ${spec.prefix ?? ""}/${spec.distribution ?? ""}`;
    }
    case "publishUpdate":
      return `Update published repository ${pub()}`;
    case "publishSwitch":
      return `Switch published repository ${pub()}`;
    case "publishRollback":
      return `Roll back published repository ${pub()}`;
    case "publishDrop":
      return `Delete published repository ${pub()}`;
    default:
      return method;
  }
}

/** Aptly's task states: 0 queued, 1 running, 2 succeeded, 3 failed. */
export function aptlyTaskState(state: string): 0 | 1 | 2 | 3 {
  switch (state) {
    case "free":
      return 0;
    case "assigned":
    case "open":
      return 1;
    case "closed":
      return 2;
    default:
      return 3;
  }
}

export interface AptlyTask {
  ID: number;
  Name: string;
  State: 0 | 1 | 2 | 3;
}

export function toAptlyTask(row: TaskRow): AptlyTask {
  let args: Record<string, unknown> = {};
  try {
    args = JSON.parse(row.args) as Record<string, unknown>;
  } catch {
    // a malformed args column still lists, under the bare method name
  }
  return { ID: row.id, Name: aptlyTaskName(row.method, args), State: aptlyTaskState(row.state) };
}

export interface AptlyAddReport {
  FailedFiles: string[];
  Report: { Warnings: string[]; Added: string[]; Removed: string[] };
}

/** `key` → `name_version_arch`, for reports (keys are `P<arch> <name> <version> <hash>`). */
function nameOfKey(key: string): string {
  const m = /^P(\S+) (\S+) (\S+)/.exec(key);
  return m ? `${m[2]}_${m[3]}_${m[1]}` : key;
}

/**
 * A Kiln add report in Aptly's words. Failed files are named `dir/file` (Aptly gives its own
 * absolute upload paths, which mean nothing outside its host).
 */
export function toAptlyAddReport(dir: string, result: RepoAddResult): AptlyAddReport {
  const out: AptlyAddReport = { FailedFiles: [], Report: { Warnings: [], Added: [], Removed: [] } };
  for (const f of result.files) {
    const file = `${dir}/${f.file}`;
    switch (f.outcome) {
      case "added":
      case "exists":
        out.Report.Added.push(`${nameOfKey(f.key)} added`);
        break;
      case "replaced":
        out.Report.Removed.push(`${nameOfKey(f.replaced)} removed due to conflict with package being added`);
        out.Report.Added.push(`${nameOfKey(f.key)} added`);
        break;
      case "failed":
        out.FailedFiles.push(file);
        out.Report.Warnings.push(
          f.code === "PACKAGE_CONFLICT" && f.key
            ? `Unable to add package to repo ${nameOfKey(f.key)}: conflict in package ${nameOfKey(f.key)}`
            : `Unable to process ${file}: ${f.error}`,
        );
        break;
    }
  }
  return out;
}
