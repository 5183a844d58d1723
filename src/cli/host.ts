/** `kiln host …`: the build hosts workers run as (admin only). */
import type { Command } from "commander";
import type { KilnClient } from "../client/client.js";
import type { HostJson } from "../client/types.js";
import { clientFor, parseList, parseNumber, resolveHub } from "./context.js";
import { formatFields, formatRelative, formatTime, printJson, printTable } from "./output.js";

interface JsonFlag {
  json?: boolean;
}

interface HostFlags {
  arch?: string[];
  channel?: string[];
  capacity?: number;
  description?: string;
}

const parseCapacity = parseNumber(0);

function state(host: HostJson): string {
  if (!host.enabled) return host.disabledReason?.startsWith("quarantined") ? "quarantined" : "disabled";
  return host.ready ? "ready" : "offline";
}

export function formatHost(host: HostJson): string {
  return formatFields([
    ["host", `${host.name} (id ${host.id})`],
    ["state", state(host)],
    ["arches", host.arches.join(", ")],
    ["channels", host.channels.join(", ")],
    ["load", `${host.load} of ${host.capacity}`],
    ["enabled", host.enabled ? "yes" : "no"],
    ["disabled", host.disabledReason],
    ["ready", host.ready ? "yes" : "no"],
    ["description", host.description],
    ["last seen", host.lastSeenAt ? formatTime(host.lastSeenAt) : "never"],
    ["created", formatTime(host.createdAt)],
    ["reported", host.reported ? JSON.stringify(host.reported, null, 2) : null],
  ]);
}

async function setEnabled(
  client: KilnClient,
  name: string,
  enabled: boolean,
  json: boolean | undefined,
): Promise<void> {
  const host = await client.editHost(name, { enabled });
  if (json) return printJson(host);
  process.stdout.write(
    enabled
      ? `Host ${host.name} enabled: it may claim tasks again.\n`
      : `Host ${host.name} disabled: it claims no new tasks.\n`,
  );
}

export function registerHostCommand(program: Command): void {
  const host = program.command("host").description("Manage build hosts (admin)");

  host
    .command("add")
    .description("Add a host; prints its token alone on stdout, for `kiln worker --token`")
    .argument("<name>", "the host's name")
    .requiredOption("--arch <arches>", "architectures it builds, comma-separated (amd64,arm64)", parseList)
    .option("--channel <channels>", "channels it serves, comma-separated (default: default)", parseList)
    .option("--capacity <n>", "how much task weight it runs at once", parseCapacity)
    .option("--description <text>", "a note about the host")
    .option("--json", 'print {"token", "host"} as JSON')
    .action(async (name: string, opts: JsonFlag & HostFlags & { arch: string[] }, cmd: Command) => {
      const added = await clientFor(cmd).addHost({
        name,
        arches: opts.arch,
        ...(opts.channel ? { channels: opts.channel } : {}),
        ...(opts.capacity !== undefined ? { capacity: opts.capacity } : {}),
        ...(opts.description !== undefined ? { description: opts.description } : {}),
      });
      if (opts.json) return printJson({ token: added.token, host: added.host });
      process.stdout.write(`${added.token}\n`);
      const hub = resolveHub(cmd.optsWithGlobals());
      process.stderr.write(
        `Host ${added.host.name} added. Its token is shown only this once; on that machine run:\n` +
          `  kiln worker --hub ${hub} --token <token>\n`,
      );
    });

  host
    .command("list")
    .description("List hosts")
    .option("--json", "print as JSON")
    .action(async (opts: JsonFlag, cmd: Command) => {
      const hosts = await clientFor(cmd).listHosts();
      if (opts.json) return printJson(hosts);
      printTable<HostJson>(hosts, [
        { header: "name", value: (h) => h.name },
        { header: "arches", value: (h) => h.arches.join(",") },
        { header: "channels", value: (h) => h.channels.join(",") },
        { header: "load", value: (h) => `${h.load}/${h.capacity}`, align: "right" },
        { header: "enabled", value: (h) => (h.enabled ? "yes" : "no") },
        { header: "ready", value: (h) => (h.ready ? "yes" : "no") },
        { header: "last seen", value: (h) => formatRelative(h.lastSeenAt) },
      ]);
    });

  host
    .command("show")
    .description("Show a host")
    .argument("<name>", "the host's name")
    .option("--json", "print as JSON")
    .action(async (name: string, opts: JsonFlag, cmd: Command) => {
      const found = await clientFor(cmd).getHost(name);
      if (opts.json) return printJson(found);
      process.stdout.write(formatHost(found));
    });

  host
    .command("edit")
    .description("Change a host's arches, channels, capacity or description")
    .argument("<name>", "the host's name")
    .option("--arch <arches>", "architectures, comma-separated (replaces the list)", parseList)
    .option("--channel <channels>", "channels, comma-separated (replaces the list)", parseList)
    .option("--capacity <n>", "how much task weight it runs at once", parseCapacity)
    .option("--description <text>", 'a note about the host ("" clears it)')
    .option("--json", "print the host as JSON")
    .action(async (name: string, opts: JsonFlag & HostFlags, cmd: Command) => {
      const change = {
        ...(opts.arch ? { arches: opts.arch } : {}),
        ...(opts.channel ? { channels: opts.channel } : {}),
        ...(opts.capacity !== undefined ? { capacity: opts.capacity } : {}),
        ...(opts.description !== undefined
          ? { description: opts.description === "" ? null : opts.description }
          : {}),
      };
      if (Object.keys(change).length === 0) {
        cmd.error("error: nothing to change: give --arch, --channel, --capacity or --description", {
          exitCode: 2,
          code: "kiln.nothingToChange",
        });
      }
      const edited = await clientFor(cmd).editHost(name, change);
      if (opts.json) return printJson(edited);
      process.stdout.write(formatHost(edited));
    });

  host
    .command("enable")
    .description("Let a host claim tasks again")
    .argument("<name>", "the host's name")
    .option("--json", "print the host as JSON")
    .action((name: string, opts: JsonFlag, cmd: Command) =>
      setEnabled(clientFor(cmd), name, true, opts.json),
    );

  host
    .command("disable")
    .description("Stop a host from claiming new tasks")
    .argument("<name>", "the host's name")
    .option("--json", "print the host as JSON")
    .action((name: string, opts: JsonFlag, cmd: Command) =>
      setEnabled(clientFor(cmd), name, false, opts.json),
    );
}
