/**
 * `kiln publish …`: serving local repos, snapshots and tags to apt, signed, switched atomically;
 * each command returns once the hub serves the new Release.
 */
import type { Command } from "commander";
import type { KilnClient } from "../client/client.js";
import type {
  GenerationJson,
  PublicationJson,
  PublicationSpecJson,
  PublishOutcomeJson,
  RepoTaskAnswer,
} from "../client/types.js";
import { KilnError } from "../errors/catalogue.js";
import { clientFor, parseInteger, parseList } from "./context.js";
import { formatFields, formatTable, formatTime, formatTimestamp, printJson, Spinner } from "./output.js";
import { keyringCommand, sourcesLine, waitForRelease } from "./publish-wait.js";
import { reportQueued, resultOf } from "./repo.js";

interface JsonFlag {
  json?: boolean;
}

export const DEFAULT_PREFIX = ".";
export const DEFAULT_COMPONENT = "main";

function usage(message: string): KilnError {
  return new KilnError("VALIDATION_FAILED", message);
}

/** `stable`, or `ppa/stable` under a prefix: how the commands name a publication. */
export function publicationName(prefix: string, distribution: string): string {
  return prefix === DEFAULT_PREFIX ? distribution : `${prefix}/${distribution}`;
}

/**
 * `kiln publish repo|snapshot` positionals, Aptly's way: one source per component, then an
 * optional prefix (`publish snapshot --component main,contrib snap-main snap-contrib ppa`).
 */
export function splitSourcesAndPrefix(
  args: readonly string[],
  components: readonly string[] | undefined,
): { names: string[]; prefix: string } {
  const n = Math.max(1, components?.length ?? 1);
  if (args.length === n) return { names: [...args], prefix: DEFAULT_PREFIX };
  if (args.length === n + 1) return { names: args.slice(0, n), prefix: args[n] ?? DEFAULT_PREFIX };
  throw usage(
    n === 1
      ? `expected one source and an optional prefix, got ${args.length} arguments; ` +
          "publish several as components with --component a,b SRC_A SRC_B [PREFIX]"
      : `--component names ${n} components, so give ${n} sources (one each, in that order) and an optional prefix; got ${args.length} arguments`,
  );
}

/** `kiln publish switch DIST [PREFIX] SNAPSHOT…`: here the prefix comes first, as in Aptly. */
export function splitPrefixAndSnapshots(
  args: readonly string[],
  components: readonly string[] | undefined,
): { prefix: string; names: string[] } {
  const n = Math.max(1, components?.length ?? 1);
  if (args.length === n) return { prefix: DEFAULT_PREFIX, names: [...args] };
  if (args.length === n + 1) return { prefix: args[0] ?? DEFAULT_PREFIX, names: args.slice(1) };
  throw usage(
    `expected [PREFIX] and ${n === 1 ? "one snapshot" : `${n} snapshots (one per --component)`}, got ${args.length} arguments`,
  );
}

/** Pairs names with components; several names need --component naming one each. */
export function pairSources(
  names: readonly string[],
  components: readonly string[] | undefined,
  fallback: string = DEFAULT_COMPONENT,
): { component: string; name: string }[] {
  const comps = components && components.length > 0 ? components : [fallback];
  if (comps.length !== names.length) {
    throw usage(
      `${names.length} sources need ${names.length} components (--component a,b,…), got ${comps.length}`,
    );
  }
  return names.map((name, i) => ({ component: comps[i] ?? fallback, name }));
}

export interface PublishFlags extends JsonFlag {
  distribution?: string;
  component?: string[];
  architectures?: string[];
  origin?: string;
  label?: string;
  skipSigning?: boolean;
  nowait?: boolean;
}

/** The spec `kiln publish repo|snapshot|tag` sends. */
export function buildPublicationSpec(
  sourceKind: PublicationSpecJson["sourceKind"],
  sources: { component: string; name: string }[],
  prefix: string,
  flags: PublishFlags,
): PublicationSpecJson {
  if (!flags.distribution) throw usage("give the distribution to publish as: --distribution DIST");
  return {
    prefix,
    distribution: flags.distribution,
    sourceKind,
    sources,
    ...(flags.architectures && flags.architectures.length > 0 ? { architectures: flags.architectures } : {}),
    ...(flags.origin !== undefined ? { origin: flags.origin } : {}),
    ...(flags.label !== undefined ? { label: flags.label } : {}),
    ...(flags.skipSigning ? { skipSigning: true } : {}),
  };
}

// ---------------------------------------------------------------------------------------------
// Output

function describeSources(pub: PublicationJson): string {
  const kind = pub.sourceKind === "local" ? "repo" : pub.sourceKind;
  return pub.sources.map((s) => `${s.component}: ${kind} ${s.name}`).join(", ");
}

export function formatPublicationList(pubs: readonly PublicationJson[]): string {
  if (pubs.length === 0)
    return "nothing is published; publish with `kiln publish repo NAME --distribution DIST`\n";
  return formatTable<PublicationJson>(pubs, [
    { header: "prefix", value: (p) => p.prefix },
    { header: "distribution", value: (p) => p.distribution },
    { header: "sources", value: describeSources },
    { header: "generation", value: (p) => p.liveGeneration, align: "right" },
    { header: "signed", value: (p) => (p.skipSigning ? "no" : "yes") },
  ]);
}

export function formatPublication(pub: PublicationJson, hub: string, now: number = Date.now()): string {
  const fields = formatFields([
    ["publication", publicationName(pub.prefix, pub.distribution)],
    ["prefix", pub.prefix],
    ["distribution", pub.distribution],
    ["sources", describeSources(pub)],
    ["architectures", pub.architectures.length > 0 ? pub.architectures.join(", ") : "those of its packages"],
    ["origin", pub.origin],
    ["label", pub.label],
    ["signed", pub.skipSigning ? "no (--skip-signing)" : "yes"],
    ["live", pub.liveGeneration === null ? "none" : `generation ${pub.liveGeneration}`],
    ["updated", formatTime(pub.updatedAt, now)],
    ["apt", sourcesLine(hub, aptOf(pub))],
  ]);
  const history = pub.history ?? [];
  if (history.length === 0) return fields;
  const table = formatTable<GenerationJson>(history, [
    {
      header: "gen",
      value: (g) => `${g.generation === pub.liveGeneration ? "*" : " "}${g.generation}`,
      align: "right",
    },
    { header: "state", value: (g) => g.state },
    { header: "packages", value: (g) => g.packageCount, align: "right" },
    { header: "made", value: (g) => formatTimestamp(g.createdAt) },
    { header: "live at", value: (g) => (g.liveAt ? formatTimestamp(g.liveAt) : null) },
    { header: "task", value: (g) => g.taskId, align: "right" },
    ...(history.some((g) => g.error)
      ? [{ header: "error", value: (g: GenerationJson) => g.error?.split("\n")[0] }]
      : []),
  ]);
  return `${fields}\ngenerations (* is live):\n${table}`;
}

function aptOf(pub: PublicationJson) {
  return {
    prefix: pub.prefix,
    distribution: pub.distribution,
    components: pub.sources.map((s) => s.component),
    signed: !pub.skipSigning,
  };
}

/** The sources.list line and, when signed, the key command: what apt users need. */
export function formatAptInstructions(pub: PublicationJson, hub: string): string {
  const apt = aptOf(pub);
  const lines = [`apt source:  ${sourcesLine(hub, apt)}`];
  if (apt.signed) lines.push(`archive key: ${keyringCommand(hub)}`);
  return lines.map((l) => `${l}\n`).join("");
}

export type PublishAction = "publish" | "update" | "switch" | "rollback";

export function formatOutcome(action: PublishAction, outcome: PublishOutcomeJson): string {
  const name = publicationName(outcome.prefix, outcome.distribution);
  const what = `generation ${outcome.generation}, ${outcome.packageCount} package${outcome.packageCount === 1 ? "" : "s"}`;
  if (outcome.unchanged) return `${name} is unchanged: ${what} stays live\n`;
  switch (action) {
    case "publish":
      return `Published ${name} (${what})\n`;
    case "update":
      return `Updated ${name} (${what})\n`;
    case "switch":
      return `Switched ${name} (${what})\n`;
    case "rollback":
      return `Rolled ${name} back to ${what}\n`;
  }
}

// ---------------------------------------------------------------------------------------------

/**
 * Runs a publishing call: with --nowait only queued; else waited for, then waited on until the
 * hub serves its Release, then what apt users need is printed.
 */
async function runPublish(
  client: KilnClient,
  action: PublishAction,
  opts: JsonFlag & { nowait?: boolean },
  label: string,
  call: (async: boolean) => Promise<RepoTaskAnswer<PublishOutcomeJson>>,
): Promise<void> {
  const spinner = new Spinner();
  let publication: PublicationJson;
  let answer: RepoTaskAnswer<PublishOutcomeJson>;
  try {
    spinner.update(label);
    answer = await call(opts.nowait === true);
    if (opts.nowait) {
      spinner.stop();
      return reportQueued(answer, opts.json);
    }
    const outcome = resultOf(answer);
    publication = await client.showPublication(outcome.prefix, outcome.distribution);
    await waitForRelease(
      client.hub,
      { path: publication.path, releaseSha256: outcome.releaseSha256 },
      { spinner },
    );
  } finally {
    spinner.stop();
  }
  if (opts.json) return printJson({ ...answer, publication });
  process.stdout.write(formatOutcome(action, resultOf(answer)));
  process.stdout.write(formatAptInstructions(publication, client.hub));
}

function sharedOptions(cmd: Command): Command {
  return cmd
    .option(
      "--architectures <arches>",
      "only these architectures, comma-separated (default: those of the packages)",
      parseList,
    )
    .option("--origin <text>", "the Release file's Origin")
    .option("--label <text>", "the Release file's Label")
    .option("--skip-signing", "publish without InRelease and Release.gpg (apt then needs [trusted=yes])")
    .option("--nowait", "queue the publishing task, print its id and return")
    .option("--json", "print the task, its outcome and the publication as JSON");
}

export function registerPublishCommand(program: Command): void {
  const publish = program
    .command("publish")
    .description("Publish local repos, snapshots and tags as signed APT repositories");

  sharedOptions(
    publish
      .command("repo")
      .description(
        "Publish local repos (one per component); the distribution and component default to the repo's",
      )
      .argument("<args...>", "NAME… [PREFIX]: the repo(s), one per --component, then the prefix (default .)")
      .option("--distribution <dist>", "the distribution (default: the repo's)")
      .option(
        "--component <components>",
        "the component(s), comma-separated, one per repo (default: the repo's)",
        parseList,
      ),
  ).action(async (args: string[], opts: PublishFlags, cmd: Command) => {
    const client = clientFor(cmd);
    const { names, prefix } = splitSourcesAndPrefix(args, opts.component);
    let distribution = opts.distribution;
    let components = opts.component;
    if (names.length === 1 && (!distribution || !components)) {
      // Aptly's defaults: what the repo says it is published as.
      const repo = await client.showRepo(names[0] ?? "");
      distribution ||= repo.distribution || undefined;
      components ??= [repo.component];
    }
    const spec = buildPublicationSpec("local", pairSources(names, components), prefix, {
      ...opts,
      ...(distribution !== undefined ? { distribution } : {}),
    });
    await runPublish(
      client,
      "publish",
      opts,
      `publishing ${publicationName(prefix, spec.distribution)}`,
      (async) => client.publish(spec, async),
    );
  });

  sharedOptions(
    publish
      .command("snapshot")
      .description("Publish snapshots (one per component)")
      .argument(
        "<args...>",
        "SNAPSHOT… [PREFIX]: the snapshot(s), one per --component, then the prefix (default .)",
      )
      .requiredOption("--distribution <dist>", "the distribution")
      .option(
        "--component <components>",
        "the component(s), comma-separated, one per snapshot (default main)",
        parseList,
      ),
  ).action(async (args: string[], opts: PublishFlags, cmd: Command) => {
    const client = clientFor(cmd);
    const { names, prefix } = splitSourcesAndPrefix(args, opts.component);
    const spec = buildPublicationSpec("snapshot", pairSources(names, opts.component), prefix, opts);
    await runPublish(
      client,
      "publish",
      opts,
      `publishing ${publicationName(prefix, spec.distribution)}`,
      (async) => client.publish(spec, async),
    );
  });

  sharedOptions(
    publish
      .command("tag")
      .description("Publish a tag's latest builds; `kiln publish update` republishes what is tagged then")
      .argument("<tag>")
      .argument("[prefix]", "the prefix (default .)", DEFAULT_PREFIX)
      .requiredOption("--distribution <dist>", "the distribution")
      .option("--component <component>", "the component (default main)", parseList),
  ).action(async (tag: string, prefix: string, opts: PublishFlags, cmd: Command) => {
    const client = clientFor(cmd);
    const spec = buildPublicationSpec("tag", pairSources([tag], opts.component), prefix, opts);
    await runPublish(
      client,
      "publish",
      opts,
      `publishing ${publicationName(prefix, spec.distribution)}`,
      (async) => client.publish(spec, async),
    );
  });

  publish
    .command("update")
    .description("Republish a publication from its sources' current contents")
    .argument("<dist>")
    .argument("[prefix]", "the prefix (default .)", DEFAULT_PREFIX)
    .option("--nowait", "queue the task, print its id and return")
    .option("--json", "print the task, its outcome and the publication as JSON")
    .action(async (dist: string, prefix: string, opts: JsonFlag & { nowait?: boolean }, cmd: Command) => {
      const client = clientFor(cmd);
      await runPublish(client, "update", opts, `updating ${publicationName(prefix, dist)}`, (async) =>
        client.publicationAction(prefix, dist, "update", {}, async),
      );
    });

  publish
    .command("switch")
    .description("Publish other snapshots at the same place, switched atomically")
    .argument("<dist>")
    .argument("<args...>", "[PREFIX] SNAPSHOT…: the prefix (default .), then one snapshot per --component")
    .option(
      "--component <components>",
      "the component(s) to switch, comma-separated, one per snapshot",
      parseList,
    )
    .option("--nowait", "queue the task, print its id and return")
    .option("--json", "print the task, its outcome and the publication as JSON")
    .action(
      async (
        dist: string,
        args: string[],
        opts: JsonFlag & { nowait?: boolean; component?: string[] },
        cmd: Command,
      ) => {
        const client = clientFor(cmd);
        const { prefix, names } = splitPrefixAndSnapshots(args, opts.component);
        let components = opts.component;
        if (!components) {
          const pub = await client.showPublication(prefix, dist);
          if (pub.sources.length !== 1) {
            throw usage(
              `${publicationName(prefix, dist)} has components ${pub.sources.map((s) => s.component).join(", ")}: ` +
                "name the ones to switch with --component",
            );
          }
          components = pub.sources.map((s) => s.component);
        }
        const sources = pairSources(names, components);
        await runPublish(client, "switch", opts, `switching ${publicationName(prefix, dist)}`, (async) =>
          client.publicationAction(prefix, dist, "switch", { sources }, async),
        );
      },
    );

  publish
    .command("rollback")
    .description("Serve the generation that was live before (or --to N) again, instantly")
    .argument("<dist>")
    .argument("[prefix]", "the prefix (default .)", DEFAULT_PREFIX)
    .option("--to <n>", "this generation (`kiln publish show` lists them)", parseInteger(1))
    .option("--nowait", "queue the task, print its id and return")
    .option("--json", "print the task, its outcome and the publication as JSON")
    .action(
      async (
        dist: string,
        prefix: string,
        opts: JsonFlag & { nowait?: boolean; to?: number },
        cmd: Command,
      ) => {
        const client = clientFor(cmd);
        await runPublish(client, "rollback", opts, `rolling ${publicationName(prefix, dist)} back`, (async) =>
          client.publicationAction(
            prefix,
            dist,
            "rollback",
            opts.to !== undefined ? { to: opts.to } : {},
            async,
          ),
        );
      },
    );

  publish
    .command("list")
    .description("List publications")
    .option("--json", "print as JSON")
    .action(async (opts: JsonFlag, cmd: Command) => {
      const pubs = await clientFor(cmd).listPublications();
      if (opts.json) return printJson(pubs);
      process.stdout.write(formatPublicationList(pubs));
    });

  publish
    .command("show")
    .description("Show a publication, its apt line and its history of generations")
    .argument("<dist>")
    .argument("[prefix]", "the prefix (default .)", DEFAULT_PREFIX)
    .option("--json", "print as JSON")
    .action(async (dist: string, prefix: string, opts: JsonFlag, cmd: Command) => {
      const client = clientFor(cmd);
      const pub = await client.showPublication(prefix, dist);
      if (opts.json) return printJson(pub);
      process.stdout.write(formatPublication(pub, client.hub));
    });

  publish
    .command("drop")
    .description("Stop publishing a distribution; returns once the hub no longer serves it")
    .argument("<dist>")
    .argument("[prefix]", "the prefix (default .)", DEFAULT_PREFIX)
    .option("--nowait", "queue the task, print its id and return")
    .option("--json", "print the task and its result as JSON")
    .action(async (dist: string, prefix: string, opts: JsonFlag & { nowait?: boolean }, cmd: Command) => {
      const client = clientFor(cmd);
      const pub = await client.showPublication(prefix, dist);
      const spinner = new Spinner();
      let answer: Awaited<ReturnType<KilnClient["dropPublication"]>>;
      try {
        spinner.update(`dropping ${publicationName(prefix, dist)}`);
        answer = await client.dropPublication(prefix, dist, opts.nowait === true);
        if (!opts.nowait)
          await waitForRelease(client.hub, { path: pub.path, releaseSha256: null }, { spinner });
      } finally {
        spinner.stop();
      }
      if (opts.nowait) return reportQueued(answer, opts.json);
      if (opts.json) return printJson(answer);
      process.stdout.write(`Dropped ${publicationName(prefix, dist)}\n`);
    });
}
