/** `kiln stats`: the build-health view — success rate, waits, slowest and flakiest packages. */
import type { Command } from "commander";
import type { DurationStatsJson, StatsJson } from "../client/types.js";
import { clientFor } from "./context.js";
import { formatDuration, formatFields, formatTable, printJson } from "./output.js";

function pXX(d: DurationStatsJson): string {
  if (d.count === 0) return "no data";
  return `p50 ${formatDuration(d.p50 ?? 0)}, p95 ${formatDuration(d.p95 ?? 0)} (${d.count})`;
}

export function formatStats(s: StatsJson): string {
  const rate =
    s.builds.successRate === null ? "no finished builds" : `${(s.builds.successRate * 100).toFixed(1)}%`;
  const head = formatFields([
    ["since", s.since],
    [
      "builds",
      `${s.builds.total} (${s.builds.complete} complete, ${s.builds.failed} failed, ` +
        `${s.builds.canceled} canceled, ${s.builds.building} building)`,
    ],
    ["success rate", rate],
    ["queue wait", pXX(s.queueWait)],
    ["build time", pXX(s.buildTime)],
  ]);
  const section = (title: string, body: string) => `\n${title}:\n${body}`;
  const none = "none\n";
  return (
    head +
    section(
      "slowest packages",
      s.slowest.length === 0
        ? none
        : formatTable(s.slowest, [
            { header: "package", value: (r) => r.package },
            { header: "builds", value: (r) => r.builds, align: "right" },
            { header: "p50", value: (r) => formatDuration(r.p50), align: "right" },
            { header: "max", value: (r) => formatDuration(r.max), align: "right" },
          ]),
    ) +
    section(
      "flakiest packages (failed, then passed on retry)",
      s.flakiest.length === 0
        ? none
        : formatTable(s.flakiest, [
            { header: "package", value: (r) => r.package },
            { header: "flaky steps", value: (r) => r.flakySteps, align: "right" },
            { header: "retries", value: (r) => r.retries, align: "right" },
          ]),
    ) +
    section(
      "hosts with the most failures",
      s.hostFailures.length === 0
        ? none
        : formatTable(s.hostFailures, [
            { header: "host", value: (r) => r.host },
            { header: "failures", value: (r) => r.failures, align: "right" },
            { header: "infra", value: (r) => r.infra, align: "right" },
          ]),
    )
  );
}

export function registerStatsCommand(program: Command): void {
  program
    .command("stats")
    .description("Build health: success rate, queue wait, build time, slowest and flakiest packages")
    .option("--since <duration>", "the window: 90m, 12h, 7d, 2w", "7d")
    .option("--json", "print as JSON")
    .action(async (opts: { since: string; json?: boolean }, cmd: Command) => {
      const stats = await clientFor(cmd).stats({ since: opts.since });
      if (opts.json) return printJson(stats);
      process.stdout.write(formatStats(stats));
    });
}
