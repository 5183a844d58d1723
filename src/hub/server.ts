import { EventEmitter } from "node:events";
import { chmodSync, existsSync, mkdirSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import type { AddressInfo } from "node:net";
import type { FastifyInstance } from "fastify";
import pino, { type Logger } from "pino";
import { KilnClient } from "../client/client.js";
import { DEFAULT_GC_INTERVAL, type HubConfig } from "../config/config.js";
import { migrateDatabase, openDatabase, withWriteTx, type Db } from "../db/database.js";
import { insertHost, updateHost } from "../db/hosts.js";
import { createHostToken, createUserToken } from "../db/tokens.js";
import { systemClock, type Clock } from "../tasks/deps.js";
import { Dispatcher } from "../tasks/dispatcher.js";
import { resetHostTasks } from "../tasks/heartbeat.js";
import { extendLeasesAfterRestart, sweep } from "../tasks/sweep.js";
import { Waker } from "../tasks/wake.js";
import { VERSION } from "../version.js";
import { Worker } from "../worker/daemon.js";
import type { HandlerMap } from "../worker/handler.js";
import { defaultWorkerHandlers } from "../worker/handlers/index.js";
import { detectArches } from "../debian/native-arch.js";
import { detectCapabilities } from "../worker/host-facts.js";
import { buildApp } from "./app.js";
import { clearWebhookLeases, WebhookDeliverer } from "../events/deliver-webhooks.js";
import { DEFAULT_WEBHOOKS } from "../events/webhook-config.js";
import { queueScheduledGc } from "./routes/v1/gc.js";
import { reachableWorkDir } from "../worker/work-dir.js";
import { BlobStore } from "../artifacts/blob-store.js";
import { UploadAreas } from "../artifacts/upload-area.js";
import { compilePolicies, withDefaultPolicies } from "../builds/policy.js";
import { HUB_POLICY_TESTS } from "./policy-check.js";
import type { HubDeps } from "./deps.js";
import { ArchiveKey } from "../publish/archive-key.js";
import { buildHandler } from "./handlers/build.js";
import { chainBuildHandler } from "./handlers/chain-build.js";
import { groupHandler } from "./handlers/group.js";
import { tagBuildHandler } from "./handlers/tag-build.js";
import { repoHandlers } from "./handlers/repo-ops.js";
import { tagRepoHandlers } from "./handlers/tag-repo.js";
import "../builds/tag-repo-methods.js";
import { TagRepoTracker } from "../builds/tag-repo-tracker.js";
import "../publish/methods.js";
import { TagPublicationTracker } from "../publish/track-tags.js";
import { recoverInterruptedPublishes } from "../publish/recover.js";
import { createTask } from "../tasks/create-task.js";
import "../builds/methods.js";
import "../builds/retry-policy.js";
import { createHubMetrics } from "./metrics.js";

export const DATA_SUBDIRS = ["blobs", "upload", "public", "staging", "logs", "keys", "work", "repos"];

export interface Hub {
  url: string;
  app: FastifyInstance;
  deps: HubDeps;
  adminTokenFile: string;
  /** Graceful stop: no new work, in-flight requests finish, running hub-side tasks handed back. */
  close(): Promise<void>;
}

export interface StartOptions {
  log?: Logger;
  clock?: Clock;
  /** Print the welcome lines (the CLI does; tests do not). */
  announce?: (line: string) => void;
  /** Make the archive key on first use rather than at start (test hubs: most never sign). */
  lazyArchiveKey?: boolean;
}

export function hubHandlers(deps: HubDeps): HandlerMap {
  return new Map([
    ["group", groupHandler(deps)],
    ["build", buildHandler(deps)],
    ["chainBuild", chainBuildHandler(deps)],
    ["tagBuild", tagBuildHandler(deps)],
    ...repoHandlers(deps),
    ...tagRepoHandlers(deps),
  ]);
}

/** Writes `<data>/admin-token` (0600) on first start, or when it has gone missing. */
async function ensureAdminToken(db: Db, dataDir: string, now: number): Promise<string> {
  const file = path.join(dataDir, "admin-token");
  if (existsSync(file)) return file;
  const { token } = await createUserToken(
    db.kysely,
    { user: "admin", role: "admin", description: "written to admin-token" },
    now,
  );
  writeFileSync(file, `${token}\n`, { mode: 0o600 });
  chmodSync(file, 0o600);
  return file;
}

/** Makes sure an embedded host exists and gives this process a fresh token for it. */
async function embeddedHost(
  deps: HubDeps,
  name: string,
  defaults: { arches: string[]; channels: string[]; capacity: number },
  forceShape: boolean,
): Promise<{ id: number; token: string }> {
  const now = deps.clock.now();
  return withWriteTx(deps.db, async (trx) => {
    let host = await trx.selectFrom("hosts").selectAll().where("name", "=", name).executeTakeFirst();
    if (!host)
      host = await insertHost(trx, name, { ...defaults, description: "embedded in kiln serve" }, now);
    else if (forceShape) host = await updateHost(trx, name, defaults);
    const token = await createHostToken(trx, host.id, now, { replace: true, description: "embedded" });
    return { id: host.id, token };
  });
}

export async function startHub(config: HubConfig, opts: StartOptions = {}): Promise<Hub> {
  const log = opts.log ?? pino({ level: config.logLevel }, pino.destination(2));
  const clock = opts.clock ?? systemClock;
  mkdirSync(config.data, { recursive: true });
  for (const sub of DATA_SUBDIRS) mkdirSync(path.join(config.data, sub), { recursive: true });

  const db = openDatabase(config.db);
  await migrateDatabase(db);
  const wake = new Waker(db, log);
  await wake.start();
  const metrics = createHubMetrics(db);
  const engineDeps = { db, clock, engine: config.engine, wake, log, observer: metrics.taskObserver };
  const deps: HubDeps = {
    ...engineDeps,
    config,
    dispatcher: new Dispatcher(engineDeps),
    logEvents: new EventEmitter().setMaxListeners(0),
    lifecycle: { closing: false, onClose: new Set() },
    blobs: new BlobStore(path.join(config.data, "blobs")),
    uploads: new UploadAreas(path.join(config.data, "upload")),
    policies: compilePolicies(withDefaultPolicies(config.policies), { tests: HUB_POLICY_TESTS }),
    archiveKey: new ArchiveKey(config.data),
    metrics,
  };
  await deps.blobs.cleanTemp();
  // Made (or found) now, so a broken gpg stops the start rather than the first publish.
  const archiveKey = opts.lazyArchiveKey ? undefined : await deps.archiveKey.ensure();

  await extendLeasesAfterRestart(deps);
  const adminTokenFile = await ensureAdminToken(db, config.data, clock.now());

  const app = await buildApp(deps);
  await app.listen({ host: config.listen.host, port: config.listen.port });
  const address = app.server.address() as AddressInfo;
  const localHost =
    address.family === "IPv6"
      ? address.address === "::"
        ? "[::1]"
        : `[${address.address}]`
      : address.address === "0.0.0.0"
        ? "127.0.0.1"
        : address.address;
  const url = `http://${localHost}:${address.port}`;

  const tracker = new TagPublicationTracker({ db, log, queue: (input) => createTask(deps, input) });
  const repoTracker = new TagRepoTracker(deps);
  const tickRepos = () =>
    void repoTracker.tick().catch((err: unknown) => log.error({ err }, "keeping tag repos current failed"));
  await recoverInterruptedPublishes(deps.db, path.join(config.data, "staging"), clock.now());
  // A tag changes when a task (tagBuild) or a call commits: look soon after a wake-up, at most
  // ten times a second, rather than waiting for the sweeper.
  let trackPending = false;
  const offTrack = wake.on(() => {
    if (trackPending) return;
    trackPending = true;
    setTimeout(() => {
      trackPending = false;
      tracker.tick().catch((err: unknown) => log.error({ err }, "republishing tracked tags failed"));
      tickRepos();
    }, 100).unref();
  });
  // Webhooks go out from a loop of their own, never as engine tasks: a dead receiver must not
  // hold a worker slot or delay a build. Commits wake it; it also polls, as events need no wake.
  const webhookDeps = { db, clock, log, webhooks: config.webhooks ?? DEFAULT_WEBHOOKS };
  if (db.dialect === "sqlite") await clearWebhookLeases(webhookDeps);
  const webhooks = new WebhookDeliverer(webhookDeps);
  webhooks.start();
  const offWebhooks = wake.on(() => webhooks.kick());
  const sweeper = setInterval(() => {
    tracker.tick().catch((err: unknown) => log.error({ err }, "republishing tracked tags failed"));
    tickRepos();
    sweep(deps)
      .then((r) => {
        if (r.expired.length > 0) log.warn({ tasks: r.expired }, "leases expired; tasks requeued");
        if (r.timedOut.length > 0) log.warn({ tasks: r.timedOut }, "tasks timed out");
        if (r.offline.length > 0) log.warn({ hosts: r.offline }, "hosts went offline");
        // Backoffs run out and leases end without anyone committing: look for work anyway.
        deps.dispatcher.tick();
      })
      .catch((err: unknown) => log.error({ err }, "sweep failed"));
  }, config.engine.sweepInterval * 1000);
  // Garbage collection as a task of its own, queued behind the publishes it must not race.
  const gcSeconds = config.gcInterval ?? DEFAULT_GC_INTERVAL;
  const gcTimer =
    gcSeconds > 0
      ? setInterval(() => {
          queueScheduledGc(deps).catch((err: unknown) => log.error({ err }, "queueing gc failed"));
        }, gcSeconds * 1000).unref()
      : undefined;

  // Hub-side methods run through the same claim path as any worker, as a host of their own.
  const workers: Worker[] = [];
  const hubName = `hub@${os.hostname()}:${address.port}`;
  const hubHost = await embeddedHost(
    deps,
    hubName,
    { arches: ["noarch"], channels: ["hub"], capacity: 1000 },
    true,
  );
  // Whatever it held before a crash died with that process.
  await resetHostTasks(deps, hubHost.id);
  const workRoot = path.join(config.data, "work");
  workers.push(
    new Worker({
      client: new KilnClient({ hub: url, token: hubHost.token }),
      handlers: hubHandlers(deps),
      workDir: path.join(workRoot, "hub"),
      log: log.child({ worker: hubName }),
      capabilities: [],
      version: VERSION,
    }),
  );
  if (config.worker) {
    const name = config.workerName ?? os.hostname();
    const facts = detectCapabilities();
    for (const warning of facts.warnings) log.warn(warning);
    const host = await embeddedHost(
      deps,
      name,
      {
        arches: detectArches(),
        // A worker that can make buildroots and build in them serves that channel too.
        channels: facts.capabilities.includes("buildroot") ? ["default", "buildroot"] : ["default"],
        capacity: Math.max(1, os.availableParallelism()),
      },
      false,
    );
    await resetHostTasks(deps, host.id);
    workers.push(
      new Worker({
        client: new KilnClient({ hub: url, token: host.token }),
        handlers: defaultWorkerHandlers(),
        workDir: reachableWorkDir(path.join(workRoot, "worker")).dir,
        log: log.child({ worker: name }),
        capabilities: facts.capabilities,
        version: VERSION,
        arches: detectArches(),
      }),
    );
  }
  for (const w of workers) await w.start();
  // A tag changed just before a stop or crash gets its repo now; leftovers on disk go.
  tickRepos();

  const announce = opts.announce;
  if (announce) {
    announce(`Kiln ${VERSION} hub listening on ${url}`);
    announce(`database: ${db.dialect === "sqlite" ? db.url.replace(/^sqlite:\/\//, "") : "PostgreSQL"}`);
    announce(`admin token: ${adminTokenFile} (the CLI on this machine reads it by itself)`);
    if (archiveKey)
      announce(`archive key: ${archiveKey.fingerprint} (served at ${url}/apt/kiln-archive-keyring.asc)`);
    announce(
      config.worker
        ? `embedded worker: ${config.workerName ?? os.hostname()}`
        : "embedded worker: off (--no-worker)",
    );
  }

  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= (async () => {
      deps.lifecycle.closing = true;
      // Workers first: they hand running tasks back through the still-open API.
      await Promise.all(workers.map((w) => w.stop()));
      clearInterval(sweeper);
      offWebhooks();
      await webhooks.stop();
      clearInterval(gcTimer);
      offTrack();
      deps.dispatcher.close();
      for (const fn of [...deps.lifecycle.onClose]) fn();
      // In-flight requests get a few seconds; then connections still busy (say, a client still
      // sending a body the hub already refused) are cut, so a stop never hangs on them.
      const cut = setTimeout(() => app.server.closeAllConnections(), 5000);
      await app.close();
      clearTimeout(cut);
      await deps.archiveKey.close();
      await wake.close();
      await db.close();
    })());

  return { url, app, deps, adminTokenFile, close };
}
