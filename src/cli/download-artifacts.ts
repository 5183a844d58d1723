/** `kiln download`: which artifacts of a build to fetch, and fetching them with their hashes checked. */
import { createHash } from "node:crypto";
import { createWriteStream } from "node:fs";
import { mkdir, rename, rm } from "node:fs/promises";
import path from "node:path";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { ReadableStream as NodeReadableStream } from "node:stream/web";
import type { KilnClient } from "../client/client.js";
import type { ArtifactJson } from "../client/types.js";
import { KilnError } from "../errors/catalogue.js";
import { ByteProgress } from "./byte-progress.js";
import { Spinner } from "./output.js";

/** The source package: the .dsc and the tarballs or diff it lists. */
export function isSourceArtifact(a: ArtifactJson): boolean {
  return a.kind === "dsc" || a.kind === "source" || a.arch === "source";
}

/**
 * The artifacts to fetch. Without an arch: all of them (source package, binaries of every arch,
 * .buildinfo, .changes, logs). With one: what was built for that arch plus the
 * Architecture: all binaries (what an apt client of that arch would install), no source;
 * `source` gives the source package alone. An arch the build has binaries for none of (when it
 * has some for another) is refused, and so are two different files of one name.
 */
export function selectArtifacts(artifacts: readonly ArtifactJson[], arch?: string): ArtifactJson[] {
  if (arch !== undefined && arch !== "source" && arch !== "all") {
    // Architecture: all packages suit every arch, but not a build that was never made for it.
    const built = [
      ...new Set(
        artifacts
          .filter((a) => !isSourceArtifact(a) && a.arch !== null && a.arch !== "all")
          .map((a) => a.arch),
      ),
    ];
    if (built.length > 0 && !built.includes(arch)) {
      throw new KilnError(
        "ARTIFACT_NOT_FOUND",
        `the build was not made for ${arch}, only for ${built.join(", ")}`,
        { arch },
      );
    }
  }
  const wanted = artifacts.filter((a) => {
    if (arch === undefined) return true;
    if (arch === "source") return isSourceArtifact(a);
    return !isSourceArtifact(a) && (a.arch === arch || a.arch === "all");
  });
  const byName = new Map<string, ArtifactJson>();
  for (const a of wanted) {
    const seen = byName.get(a.name);
    if (!seen) byName.set(a.name, a);
    else if (seen.sha256 !== a.sha256) {
      throw new KilnError(
        "VALIDATION_FAILED",
        `the build has two different files named ${a.name} (${seen.arch ?? "no arch"} and ${a.arch ?? "no arch"}); ` +
          "download one architecture at a time with --arch",
        { name: a.name },
      );
    }
  }
  return [...byName.values()];
}

export interface SavedFile {
  name: string;
  path: string;
  size: number;
  sha256: string;
}

/** A name fit to be a file in DIR: no directories, nothing hidden behind `.` or `..`. */
function checkFileName(name: string): void {
  if (name === "" || name === "." || name === ".." || name !== path.basename(name) || name.includes("\\")) {
    throw new KilnError(
      "VALIDATION_FAILED",
      `the hub lists an artifact named "${name}", which is not a plain file name`,
    );
  }
}

/**
 * Streams one artifact to DIR/NAME: written to a hidden partial file, hashed on the way, and
 * renamed into place only when its SHA-256 and size are the ones the build lists. A mismatch
 * deletes what was written and fails.
 */
export async function downloadArtifact(
  client: KilnClient,
  artifact: ArtifactJson,
  dir: string,
  progress?: ByteProgress,
): Promise<SavedFile> {
  checkFileName(artifact.name);
  const final = path.join(dir, artifact.name);
  const partial = path.join(dir, `.${artifact.name}.kiln-partial`);
  const res = await client.downloadBlob(artifact.sha256);
  if (!res.body) throw new KilnError("INTERNAL", `the hub sent ${artifact.name} without a body`);
  const hash = createHash("sha256");
  let size = 0;
  const tap = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      hash.update(chunk);
      size += chunk.length;
      progress?.add(chunk.length);
      done(null, chunk);
    },
  });
  const out = createWriteStream(partial);
  let writeFailed = false;
  out.on("error", () => {
    writeFailed = true;
  });
  try {
    await pipeline(Readable.fromWeb(res.body as NodeReadableStream<Uint8Array>), tap, out);
  } catch (err) {
    await rm(partial, { force: true });
    if (err instanceof KilnError) throw err;
    const message = (err as Error).message;
    if (writeFailed)
      throw new KilnError("VALIDATION_FAILED", `cannot write ${final}: ${message}`, { path: final });
    throw new KilnError(
      "HUB_UNREACHABLE",
      `the download of ${artifact.name} from ${client.hub} broke off: ${message}`,
    );
  }
  const sha256 = hash.digest("hex");
  if (sha256 !== artifact.sha256 || size !== artifact.size) {
    await rm(partial, { force: true });
    throw new KilnError(
      "INTERNAL",
      `${artifact.name} came with SHA-256 ${sha256} (${size} bytes), not the ${artifact.sha256} ` +
        `(${artifact.size} bytes) the build lists; it was not saved. Try again; if it happens again, ` +
        "the hub's copy is damaged",
      { name: artifact.name, expected: artifact.sha256, actual: sha256, expectedSize: artifact.size, size },
    );
  }
  await rename(partial, final);
  return { name: artifact.name, path: final, size, sha256 };
}

/** Downloads the artifacts into DIR (made if missing), one after another, progress on stderr. */
export async function downloadArtifacts(
  client: KilnClient,
  artifacts: readonly ArtifactJson[],
  dir: string,
  opts: { spinner?: Spinner } = {},
): Promise<SavedFile[]> {
  await mkdir(dir, { recursive: true });
  const spinner = opts.spinner ?? new Spinner();
  const saved: SavedFile[] = [];
  try {
    for (const [i, artifact] of artifacts.entries()) {
      const label = `[${i + 1}/${artifacts.length}] ${artifact.name}`;
      saved.push(
        await downloadArtifact(client, artifact, dir, new ByteProgress(spinner, label, artifact.size)),
      );
    }
  } finally {
    spinner.stop();
  }
  return saved;
}
