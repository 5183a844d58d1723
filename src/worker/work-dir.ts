import { createHash } from "node:crypto";
import { statSync } from "node:fs";
import os from "node:os";
import path from "node:path";

/**
 * Sandboxed builds run as an unprivileged uid that must be able to walk down to its workspace.
 * When some existing ancestor of the preferred directory is closed to others (a 0700 home or
 * temp dir), use a per-directory folder under the system temp dir instead.
 */
export function reachableWorkDir(preferred: string): { dir: string; moved: boolean } {
  const abs = path.resolve(preferred);
  if (process.getuid?.() !== 0 || ancestorsOpen(abs)) return { dir: abs, moved: false };
  const tag = createHash("sha256").update(abs).digest("hex").slice(0, 12);
  return { dir: path.join(os.tmpdir(), `kiln-work-${tag}`), moved: true };
}

function ancestorsOpen(dir: string): boolean {
  for (let p = dir; ; p = path.dirname(p)) {
    try {
      if ((statSync(p).mode & 0o001) === 0) return false;
    } catch {
      // Not made yet: it will be created traversable.
    }
    if (p === path.dirname(p)) return true;
  }
}
