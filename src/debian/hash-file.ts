import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";

/** The size and checksums that Packages, Sources and Release files list for a file. */
export interface FileHashes {
  size: number;
  md5: string;
  sha1: string;
  sha256: string;
}

/** Hashes a file in one streamed pass (lowercase hex digests). */
export async function hashFile(path: string): Promise<FileHashes> {
  const md5 = createHash("md5");
  const sha1 = createHash("sha1");
  const sha256 = createHash("sha256");
  let size = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024 }) as AsyncIterable<Buffer>) {
    md5.update(chunk);
    sha1.update(chunk);
    sha256.update(chunk);
    size += chunk.length;
  }
  return { size, md5: md5.digest("hex"), sha1: sha1.digest("hex"), sha256: sha256.digest("hex") };
}
