import { execFile } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";

const execFileAsync = promisify(execFile);

export interface AptResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * A real apt-get with all of its state in a temp dir, as an unprivileged client would use it:
 * one sources.list line, the archive key given by `signed-by` (or `[trusted=yes]`).
 */
export class AptClient {
  readonly dir: string;
  constructor(
    private readonly sourcesLine: string,
    private readonly arch = "amd64",
  ) {
    this.dir = mkdtempSync(path.join(os.tmpdir(), "kiln-apt-"));
    for (const d of [
      "etc/apt/sources.list.d",
      "etc/apt/preferences.d",
      "etc/apt/apt.conf.d",
      "etc/apt/trusted.gpg.d",
      "state/lists/partial",
      "cache/archives/partial",
      "dl",
    ]) {
      mkdirSync(path.join(this.dir, d), { recursive: true });
    }
    writeFileSync(path.join(this.dir, "etc/apt/sources.list"), `${sourcesLine}\n`);
    writeFileSync(path.join(this.dir, "status"), "");
  }

  private options(): string[] {
    const d = this.dir;
    return [
      `-o`,
      `Dir=${d}`,
      `-o`,
      `Dir::Etc=${d}/etc/apt`,
      `-o`,
      `Dir::State=${d}/state`,
      `-o`,
      `Dir::State::status=${d}/status`,
      `-o`,
      `Dir::Cache=${d}/cache`,
      `-o`,
      `Debug::NoLocking=1`,
      `-o`,
      `APT::Architecture=${this.arch}`,
      `-o`,
      `APT::Architectures::=${this.arch}`,
      `-o`,
      `Acquire::Languages=none`,
      `-o`,
      `Acquire::http::Proxy=false`,
      `-o`,
      `APT::Sandbox::User=${process.getuid?.() === 0 ? "root" : ""}`,
    ];
  }

  async run(...args: string[]): Promise<AptResult> {
    try {
      const { stdout, stderr } = await execFileAsync("apt-get", [...this.options(), ...args], {
        cwd: path.join(this.dir, "dl"),
        maxBuffer: 16 * 1024 * 1024,
      });
      return { code: 0, stdout, stderr };
    } catch (err) {
      const e = err as { code?: number; stdout?: string; stderr?: string };
      return {
        code: typeof e.code === "number" ? e.code : 1,
        stdout: e.stdout ?? "",
        stderr: e.stderr ?? "",
      };
    }
  }

  update(): Promise<AptResult> {
    return this.run("update");
  }

  /** apt-get download into dl/, returning where the file went. */
  async download(pkg: string): Promise<AptResult & { dir: string }> {
    return { ...(await this.run("download", pkg)), dir: path.join(this.dir, "dl") };
  }

  cleanup(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}
