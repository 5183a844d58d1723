import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";

export interface DebSpec {
  name: string;
  version: string;
  arch?: string;
  depends?: string;
  source?: string;
  /** Text of /usr/share/<name>/payload, so that two builds of one version can differ. */
  payload?: string;
}

/** Builds a small real .deb with dpkg-deb into `outDir` and returns its path. */
export function buildDeb(outDir: string, spec: DebSpec): string {
  const arch = spec.arch ?? "amd64";
  const root = path.join(
    outDir,
    `.root-${spec.name}-${spec.version}-${arch}-${Math.random().toString(36).slice(2)}`,
  );
  mkdirSync(path.join(root, "DEBIAN"), { recursive: true });
  mkdirSync(path.join(root, "usr", "share", spec.name), { recursive: true });
  writeFileSync(
    path.join(root, "usr", "share", spec.name, "payload"),
    spec.payload ?? `${spec.name} ${spec.version}\n`,
  );
  const control = [
    `Package: ${spec.name}`,
    `Version: ${spec.version}`,
    `Architecture: ${arch}`,
    "Maintainer: Kiln Tests <tests@example.org>",
    ...(spec.source ? [`Source: ${spec.source}`] : []),
    ...(spec.depends ? [`Depends: ${spec.depends}`] : []),
    "Section: misc",
    "Priority: optional",
    `Description: test package ${spec.name}`,
    " A package made by Kiln's tests.",
    "",
  ].join("\n");
  writeFileSync(path.join(root, "DEBIAN", "control"), control);
  const out = path.join(outDir, `${spec.name}_${spec.version.replace(/^[0-9]+:/, "")}_${arch}.deb`);
  execFileSync("dpkg-deb", ["--root-owner-group", "-Zgzip", "--build", root, out], { stdio: "pipe" });
  execFileSync("rm", ["-rf", root]);
  return out;
}
