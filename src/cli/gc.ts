/** `kiln gc`: collect pool files, packages, blobs and upload areas nothing refers to (admin). */
import { InvalidArgumentError, type Command } from "commander";
import type { GcReport } from "../publish/collect-garbage.js";
import { formatBytes } from "./byte-progress.js";
import { clientFor } from "./context.js";
import { formatFields, printJson, type TextSink } from "./output.js";

function parseSeconds(value: string): number {
  const n = Number(value);
  if (!/^[0-9]+$/.test(value) || !Number.isSafeInteger(n)) {
    throw new InvalidArgumentError("must be a whole number of seconds");
  }
  return n;
}

/** What a collection did (or would do), for people. */
export function formatGcReport(report: GcReport): string {
  const poolFiles = report.pool.reduce((n, p) => n + p.removedCount, 0);
  const poolBytes = report.pool.reduce((n, p) => n + p.bytesFreed, 0);
  const verb = report.dryRun ? "would remove" : "removed";
  const lines = [
    formatFields([
      [`pool files ${verb}`, `${poolFiles} (${formatBytes(poolBytes)})`],
      [`packages ${verb}`, report.packagesRemoved],
      [
        `blobs ${verb}`,
        `${report.blobs.removed} (${formatBytes(report.blobs.bytesFreed)}), ${report.blobs.kept} kept`,
      ],
      [`upload areas ${verb}`, report.uploads.length],
    ]),
  ];
  for (const p of report.pool) {
    const where = p.prefix === "." ? "(root)" : p.prefix;
    lines.push(
      p.skipped
        ? `prefix ${where}: left alone: ${p.skipped}\n`
        : `prefix ${where}: ${p.generations} generations on disk list ${p.referenced} pool files; ${p.removedCount} ${verb.split(" ").pop() ?? ""}\n`,
    );
  }
  if (report.dryRun) lines.push("Dry run: nothing was changed.\n");
  return lines.join("");
}

export function registerGcCommand(program: Command, out: TextSink = process.stdout): void {
  program
    .command("gc")
    .description(
      "Collect garbage (admin): pool files no generation on disk lists, packages and blobs nothing refers to, old upload areas",
    )
    .option("--dry-run", "report what would go; change nothing")
    .option(
      "--min-age <seconds>",
      "keep blobs and package rows younger than this (default 3600)",
      parseSeconds,
    )
    .option("--json", "print the report as JSON")
    .action(async (opts: { dryRun?: boolean; minAge?: number; json?: boolean }, cmd: Command) => {
      const qs = new URLSearchParams();
      if (opts.dryRun) qs.set("dryRun", "true");
      if (opts.minAge !== undefined) qs.set("minAge", String(opts.minAge));
      const tail = qs.size > 0 ? `?${qs.toString()}` : "";
      const answer = await clientFor(cmd).repoTask<GcReport>("POST", `/api/v1/gc${tail}`);
      const report = answer.result as GcReport;
      if (opts.json) return printJson(report, out);
      out.write(formatGcReport(report));
    });
}
