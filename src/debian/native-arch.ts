import { execFileSync } from "node:child_process";

const NODE_TO_DEBIAN: Record<string, string> = {
  x64: "amd64",
  ia32: "i386",
  arm64: "arm64",
  arm: "armhf",
  ppc64: "ppc64el",
  s390x: "s390x",
  riscv64: "riscv64",
  mips64el: "mips64el",
  loong64: "loong64",
};

/** The Debian architectures this machine builds for natively: dpkg's, else Node's translated. */
export function detectArches(): string[] {
  try {
    const arch = execFileSync("dpkg", ["--print-architecture"], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "ignore"],
    }).trim();
    if (arch) return [arch];
  } catch {
    // not a dpkg system: fall back to what Node knows
  }
  return [NODE_TO_DEBIAN[process.arch] ?? process.arch];
}
