/**
 * A build's own root from a cached base: an overlay mount (copy-on-write: the base is the
 * read-only lower layer, the build's changes go to an upper directory of its own) — or, where
 * overlayfs cannot be mounted, a full copy. Either way it is removed after the build; what a
 * crash leaves mounted is unmounted when the worker starts again.
 */
import { execFile } from "node:child_process";
import { mkdir, readFile, rm } from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);
const ENV = { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", LC_ALL: "C.UTF-8" };

export interface BuildRoot {
  /** The root to use as `/`. */
  root: string;
  how: "overlay" | "copy";
  /** Unmounts and removes everything under the build root's directory. */
  dispose(): Promise<void>;
}

/** Makes `<dir>/merged`, a fresh root over `lower`; `dir` must not exist or be empty. */
export async function makeBuildRoot(lower: string, dir: string): Promise<BuildRoot> {
  const upper = path.join(dir, "upper");
  const work = path.join(dir, "work");
  const merged = path.join(dir, "merged");
  await mkdir(upper, { recursive: true, mode: 0o755 });
  await mkdir(work, { mode: 0o700 });
  await mkdir(merged, { mode: 0o755 });
  const dispose = async () => {
    await unmountUnder(dir);
    await rm(dir, { recursive: true, force: true });
  };
  // overlayfs options are comma- and colon-separated: paths with those cannot be named.
  if (![lower, upper, work].some((p) => /[,:\\]/.test(p))) {
    try {
      await run(
        "mount",
        ["-t", "overlay", "overlay", "-o", `lowerdir=${lower},upperdir=${upper},workdir=${work}`, merged],
        { env: ENV },
      );
      return { root: merged, how: "overlay", dispose };
    } catch {
      // not root, or no overlayfs here: copy instead
    }
  }
  try {
    await run("cp", ["-a", "--reflink=auto", `${lower}/.`, merged], {
      env: ENV,
      maxBuffer: 16 * 1024 * 1024,
    });
  } catch (err) {
    await dispose();
    throw err;
  }
  return { root: merged, how: "copy", dispose };
}

/** Mount points at or under `dir`, deepest first, from /proc/self/mountinfo. */
export async function mountsUnder(dir: string): Promise<string[]> {
  const abs = path.resolve(dir);
  let text: string;
  try {
    text = await readFile("/proc/self/mountinfo", "utf8");
  } catch {
    return [];
  }
  const out: string[] = [];
  for (const line of text.split("\n")) {
    const field = line.split(" ")[4];
    if (field === undefined) continue;
    // The kernel escapes space, tab, newline and backslash as octal.
    const point = field.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
    if (point === abs || point.startsWith(`${abs}/`)) out.push(point);
  }
  return out.sort((a, b) => b.length - a.length);
}

/** Unmounts everything at or under `dir` (lazily: a process still inside cannot keep it). */
export async function unmountUnder(dir: string): Promise<void> {
  for (const point of await mountsUnder(dir)) {
    await run("umount", ["-l", point], { env: ENV }).catch(() => undefined);
  }
}
