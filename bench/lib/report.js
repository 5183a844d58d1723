/** Renders the benchmark results as Markdown. */

const fmt = (value, digits = 0) => (Number.isFinite(value) ? value.toFixed(digits) : "—");
const ratio = (a, b) =>
  Number.isFinite(a) && Number.isFinite(b) && b !== 0 ? `${(a / b).toFixed(2)}×` : "—";

function table(header, rows) {
  const line = (cells) => `| ${cells.join(" | ")} |`;
  return [line(header), line(header.map(() => "---")), ...rows.map(line)].join("\n");
}

/**
 * `runs` is a list of `{ name, result?, error? }`; `config` describes the workload;
 * `targets` is `{ p50Ms, sqliteThroughput }`.
 */
export function renderReport({ runs, config, targets, machine }) {
  const out = [];
  out.push(`# Kiln benchmark: \`sleep 0\` tasks`);
  out.push("");
  out.push(
    `${machine.date} · ${machine.cpus} CPUs (${machine.cpuModel}) · Node ${machine.node} · PostgreSQL ${machine.postgres} · ` +
      `${config.n} measured tasks after ${config.warmup} warm-up tasks, ${config.submitConcurrency} submissions in flight`,
  );
  out.push("");
  out.push(
    table(
      [
        "system",
        "tasks",
        "workers × slots",
        "throughput (tasks/s)",
        "submit→start p50 (ms)",
        "submit→start p99 (ms)",
        `light load: p50 (ms)`,
        `light load: p99 (ms)`,
      ],
      runs.map(({ name, result, error }) =>
        result
          ? [
              name,
              result.tasks,
              `${result.workers} × ${result.concurrency}`,
              fmt(result.throughput),
              fmt(result.submitToStart.p50),
              fmt(result.submitToStart.p99),
              fmt(result.light.submitToStart.p50),
              fmt(result.light.submitToStart.p99),
            ]
          : [name, "—", "—", "—", "—", "—", "—", `**failed**: ${error ?? "not run"}`.replace(/\|/g, "\\|")],
      ),
    ),
  );
  out.push("");
  out.push(
    `Light load: ${config.paced.count} more tasks after the measured run, submitted one at a time, one every ` +
      `${config.paced.gapMs} ms — the latency of a queue with no backlog.`,
  );

  const gw = runs.find((r) => r.key === "graphile")?.result;
  const kilns = runs.filter((r) => r.key !== "graphile" && r.result);
  out.push("");
  out.push("## Kiln ÷ graphile-worker");
  out.push("");
  if (gw && kilns.length > 0) {
    out.push(
      table(
        ["system", "throughput", "submit→start p50", "submit→start p99", "light load p50", "light load p99"],
        kilns.map(({ name, result: k }) => [
          name,
          ratio(k.throughput, gw.throughput),
          ratio(k.submitToStart.p50, gw.submitToStart.p50),
          ratio(k.submitToStart.p99, gw.submitToStart.p99),
          ratio(k.light.submitToStart.p50, gw.light.submitToStart.p50),
          ratio(k.light.submitToStart.p99, gw.light.submitToStart.p99),
        ]),
      ),
    );
    out.push("");
    out.push("Throughput above 1× is Kiln faster; latency below 1× is Kiln faster.");
  } else {
    out.push("Not computed: needs graphile-worker and at least one Kiln run to succeed in the same run.");
  }

  out.push("");
  out.push("## Targets");
  out.push("");
  const mark = (ok) => (ok ? "✅ pass" : "❌ miss");
  const targetRows = [];
  for (const { key, name, result } of runs.filter((r) => r.key !== "graphile")) {
    targetRows.push([
      name,
      `submit→start p50 ≤ ${targets.p50Ms} ms`,
      result ? `${fmt(result.submitToStart.p50)} ms` : "not measured",
      result ? mark(result.submitToStart.p50 <= targets.p50Ms) : "❌ miss",
    ]);
    if (key === "sqlite") {
      targetRows.push([
        name,
        `throughput ≥ ${targets.sqliteThroughput} tasks/s`,
        result ? `${fmt(result.throughput)} tasks/s` : "not measured",
        result ? mark(result.throughput >= targets.sqliteThroughput) : "❌ miss",
      ]);
    }
    if (result) {
      targetRows.push([
        name,
        `(for reference) light-load p50 ≤ ${targets.p50Ms} ms`,
        `${fmt(result.light.submitToStart.p50)} ms`,
        result.light.submitToStart.p50 <= targets.p50Ms ? "would pass" : "would miss",
      ]);
    }
  }
  out.push(
    targetRows.length > 0
      ? table(["system", "target", "measured", "result"], targetRows)
      : "Kiln was not run.",
  );

  const measured = runs.filter((r) => r.result);
  if (measured.length > 0) {
    const perTask = (seconds, r) => (seconds === undefined ? "—" : fmt((seconds * 1000) / r.tasks, 1));
    out.push("");
    out.push("## Where the time goes (measured run)");
    out.push("");
    out.push(
      table(
        [
          "system",
          "submit phase (s)",
          "whole run (s)",
          "queued→start p50 / p99 (ms)",
          "start→done p50 / p99 (ms)",
          "CPU ms/task: hub",
          "workers",
          "PostgreSQL",
          "bench client",
          "total",
          "other CPU s",
        ],
        measured.map(({ name, result: r }) => [
          name,
          fmt(r.submitSeconds, 2),
          fmt(r.seconds, 2),
          `${fmt(r.createdToStart.p50)} / ${fmt(r.createdToStart.p99)}`,
          `${fmt(r.startToDone.p50)} / ${fmt(r.startToDone.p99)}`,
          perTask(r.cpu.hub, r),
          perTask(r.cpu.workers, r),
          perTask(r.cpu.postgres, r),
          perTask(r.cpu.bench, r),
          perTask(r.cpu.machine - r.cpu.other, r),
          fmt(r.cpu.other, 1),
        ]),
      ),
    );
    out.push("");
    out.push(
      "queued→start: from when the queue stored the task (Kiln `createdAt`, graphile-worker `created_at`). " +
        "start→done: Kiln from claim to the hub recording completion; graphile-worker from entering the task " +
        "function to its `job:complete` event. CPU ms/task: CPU time of each part during the measured run ÷ tasks; " +
        `with ${machine.cpus} CPUs, ${machine.cpus * 1000} ÷ total CPU ms/task bounds throughput. ` +
        "Other CPU s: CPU the machine spent on anything else (other processes, the kernel) meanwhile; " +
        "a large value means the numbers are noisy.",
    );
  }

  out.push("");
  out.push("## Notes");
  out.push("");
  for (const note of config.notes) out.push(`- ${note}`);
  out.push("");
  return out.join("\n");
}
