import { accessSync, constants, statSync } from "node:fs";
import path from "node:path";

/** The first executable called `name` on PATH, like `which`. */
export function findOnPath(name: string, envPath = process.env.PATH ?? ""): string | undefined {
  for (const dir of envPath.split(path.delimiter)) {
    if (!dir) continue;
    const file = path.join(dir, name);
    try {
      if (!statSync(file).isFile()) continue;
      accessSync(file, constants.X_OK);
      return file;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** What this machine can do, as the worker reports it in hello. */
export function detectCapabilities(): { capabilities: string[]; warnings: string[] } {
  const capabilities: string[] = [];
  const warnings: string[] = [];
  if (findOnPath("bwrap")) capabilities.push("sandbox");
  else {
    warnings.push(
      "bwrap (bubblewrap) is not on PATH: this worker will not advertise the sandbox capability, " +
        "so it cannot run sandboxed builds. Install it with `apt-get install bubblewrap`.",
    );
  }
  // Buildroots: debootstrap makes bases, zstd packs them, and installing Build-Depends into a
  // fresh root (dpkg chowning files, overlay mounts) needs root.
  const missing = ["debootstrap", "zstd"].filter(
    (t) => !findOnPath(t, `${process.env.PATH ?? ""}:/usr/sbin:/sbin`),
  );
  if (process.getuid?.() === 0 && missing.length === 0 && capabilities.includes("sandbox"))
    capabilities.push("buildroot");
  else if (process.getuid?.() === 0 && missing.length > 0)
    warnings.push(
      `${missing.join(" and ")} not installed: this worker cannot make buildroots or build in them (apt-get install ${missing.join(" ")})`,
    );
  return { capabilities, warnings };
}
