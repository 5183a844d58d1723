import { Agent, type Dispatcher } from "undici";
import { KilnError, isErrorCode } from "../errors/catalogue.js";
import type {
  RepoJson,
  RepoDetailJson,
  RepoTaskAnswer,
  RepoAddResultJson,
  SnapshotJson,
  SnapshotDetailJson,
  SnapshotDiffJson,
  SnapshotSourceJson,
  PublicationJson,
  BuildPublicationJson,
  PublicationSpecJson,
  PublishOutcomeJson,
  ArchiveKeyJson,
  ArtifactJson,
  BuildJson,
  BuildrootDetailJson,
  BuildrootJson,
  CreateBuildrootRequest,
  CreateBuildRequest,
  ChainBuildJson,
  CreateChainBuildRequest,
  PackageEntryJson,
  TagDetailJson,
  TaggedBuildJson,
  TagJson,
  TagRepoJson,
  TargetJson,
  BuildAttemptJson,
  StatsJson,
  ClaimedTask,
  CreateTaskRequest,
  HelloRequest,
  HostJson,
  LeaseStatus,
  TaskDetailJson,
  TaskJson,
  TokenJson,
  WhoAmI,
} from "./types.js";
import type { EventJson, WebhookDeliveryJson, WebhookInput, WebhookJson } from "../events/event-json.js";

export interface ClientOptions {
  hub: string;
  token?: string | undefined;
  /** Per-request timeout in ms (long polls add their wait on top). */
  timeoutMs?: number;
}

/**
 * The typed HTTP client of the native API, shared by the CLI, the worker and tests.
 * Errors come back as KilnError with the hub's stable code; an unreachable hub is HUB_UNREACHABLE.
 */
export class KilnClient {
  readonly hub: string;
  private readonly token: string | undefined;
  private readonly timeoutMs: number;

  /** The hub's origin and the path it is served under, apart, as undici's dispatcher takes them. */
  private readonly origin: string;
  private readonly basePath: string;

  constructor(opts: ClientOptions) {
    this.hub = opts.hub.replace(/\/+$/, "");
    this.token = opts.token;
    this.timeoutMs = opts.timeoutMs ?? 30_000;
    let url: URL | undefined;
    try {
      url = new URL(this.hub);
    } catch {
      // Not a URL: every call will fail as HUB_UNREACHABLE, saying so.
    }
    this.origin = url?.origin ?? this.hub;
    this.basePath = url?.pathname.replace(/\/+$/, "") ?? "";
  }

  /**
   * A JSON call: the body is sent as JSON and the answer parsed (undefined for 204). This is the
   * hot path of the worker protocol, so it goes straight to undici's dispatcher on a keep-alive
   * pool: fetch() costs several times the CPU per call, and even undici's request() spends much
   * of its time on the response stream, which a small JSON answer does not need.
   */
  async request<T>(
    method: string,
    path: string,
    body?: unknown,
    opts: { timeoutMs?: number; signal?: AbortSignal } = {},
  ): Promise<T> {
    const headers: Record<string, string> = {};
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    let payload: string | undefined;
    if (body !== undefined) {
      headers["content-type"] = "application/json";
      payload = JSON.stringify(body);
    }
    let answer: { status: number; text: string };
    try {
      answer = await this.exchange(
        method,
        path,
        headers,
        payload,
        opts.timeoutMs ?? this.timeoutMs,
        opts.signal,
      );
    } catch (err) {
      if (opts.signal?.aborted) throw err;
      throw new KilnError("HUB_UNREACHABLE", `cannot reach the hub at ${this.hub}: ${describe(err)}`);
    }
    const { status, text } = answer;
    if (status < 200 || status > 299) throw errorFromAnswer(status, text);
    return (status === 204 || !text ? undefined : JSON.parse(text)) as T;
  }

  /** One request and its whole (small) answer, read into memory. */
  private exchange(
    method: string,
    path: string,
    headers: Record<string, string>,
    body: string | undefined,
    timeoutMs: number,
    signal: AbortSignal | undefined,
  ): Promise<{ status: number; text: string }> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) {
        reject(signal.reason as Error);
        return;
      }
      let status = 0;
      const chunks: Buffer[] = [];
      let abort: ((err?: Error) => void) | undefined;
      let aborted: Error | undefined;
      const onAbort = () => {
        aborted = (signal?.reason as Error | undefined) ?? new Error("aborted");
        abort?.(aborted);
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      const settle = () => signal?.removeEventListener("abort", onAbort);
      keepAlive.dispatch(
        {
          origin: this.origin,
          path: `${this.basePath}${path}`,
          method: method as Dispatcher.HttpMethod,
          headers,
          body: body ?? null,
          headersTimeout: timeoutMs,
          bodyTimeout: timeoutMs,
        },
        {
          onConnect: (fn) => {
            abort = fn;
            if (aborted) fn(aborted);
          },
          onHeaders: (code) => {
            status = code;
            return true;
          },
          onData: (chunk) => {
            chunks.push(chunk);
            return true;
          },
          onComplete: () => {
            settle();
            resolve({ status, text: Buffer.concat(chunks).toString("utf8") });
          },
          onError: (err) => {
            settle();
            reject(err);
          },
        },
      );
    });
  }

  /**
   * Performs the request with fetch() and hands back the Response, for streamed bodies (uploads,
   * downloads, server-sent events); throws KilnError on a non-2xx answer.
   */
  async raw(
    method: string,
    path: string,
    body?: unknown,
    opts: {
      timeoutMs?: number;
      signal?: AbortSignal;
      headers?: Record<string, string>;
      /** A raw request body (streams are sent as they are read). */
      body?: Buffer | ReadableStream<Uint8Array>;
    } = {},
  ): Promise<Response> {
    const headers: Record<string, string> = { ...opts.headers };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    if (body !== undefined) headers["content-type"] = "application/json";
    const timeout = AbortSignal.timeout(opts.timeoutMs ?? this.timeoutMs);
    const signal = opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout;
    let res: Response;
    try {
      res = await fetch(`${this.hub}${path}`, {
        method,
        headers,
        body: opts.body ?? (body === undefined ? null : JSON.stringify(body)),
        signal,
        ...(opts.body instanceof ReadableStream ? { duplex: "half" } : {}),
      });
    } catch (err) {
      if (opts.signal?.aborted) throw err;
      throw new KilnError("HUB_UNREACHABLE", `cannot reach the hub at ${this.hub}: ${describe(err)}`);
    }
    if (res.ok) return res;
    throw errorFromAnswer(res.status, await res.text());
  }

  /** The hub's version; needs no token. */
  version(): Promise<{ version: string }> {
    return this.request("GET", "/api/v1/version");
  }

  whoami(): Promise<WhoAmI> {
    return this.request("GET", "/api/v1/whoami");
  }

  // Tasks
  createTask(req: CreateTaskRequest): Promise<TaskJson> {
    return this.request("POST", "/api/v1/tasks", req);
  }
  getTask(id: number): Promise<TaskDetailJson> {
    return this.request("GET", `/api/v1/tasks/${id}`);
  }
  listTasks(
    q: {
      state?: string;
      method?: string;
      owner?: string;
      parent?: number;
      before?: number;
      limit?: number;
    } = {},
  ): Promise<{
    tasks: TaskJson[];
    next: number | null;
  }> {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(q)) if (v !== undefined) params.set(k, String(v));
    const qs = params.toString();
    return this.request("GET", `/api/v1/tasks${qs ? `?${qs}` : ""}`);
  }
  cancelTask(id: number): Promise<{ task: TaskJson; canceled: number[] }> {
    return this.request("POST", `/api/v1/tasks/${id}/cancel`, {});
  }
  retryTask(id: number): Promise<TaskJson> {
    return this.request("POST", `/api/v1/tasks/${id}/retry`, {});
  }
  /** The log of the task's latest attempt (or `epoch`), as text. */
  async taskLog(id: number, epoch?: number): Promise<string> {
    const res = await this.raw("GET", `/api/v1/tasks/${id}/logs${epoch ? `?epoch=${epoch}` : ""}`);
    return res.text();
  }

  // Hosts (admin; `me` for a host token)
  listHosts(): Promise<HostJson[]> {
    return this.request("GET", "/api/v1/hosts");
  }
  getHost(name: string): Promise<HostJson> {
    return this.request("GET", `/api/v1/hosts/${encodeURIComponent(name)}`);
  }
  addHost(req: {
    name: string;
    arches: string[];
    channels?: string[];
    capacity?: number;
    description?: string;
  }): Promise<{
    host: HostJson;
    token: string;
  }> {
    return this.request("POST", "/api/v1/hosts", req);
  }
  editHost(
    name: string,
    req: {
      arches?: string[];
      channels?: string[];
      capacity?: number;
      description?: string | null;
      enabled?: boolean;
    },
  ): Promise<HostJson> {
    return this.request("PATCH", `/api/v1/hosts/${encodeURIComponent(name)}`, req);
  }

  // Events and webhooks
  listEvents(
    q: { since?: number; type?: string; limit?: number; newest?: boolean } = {},
  ): Promise<{ events: EventJson[]; next: number }> {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(q)) if (v !== undefined) params.set(k, String(v));
    const qs = params.toString();
    return this.request("GET", `/api/v1/events${qs ? `?${qs}` : ""}`);
  }
  listWebhooks(): Promise<WebhookJson[]> {
    return this.request("GET", "/api/v1/webhooks");
  }
  getWebhook(id: number): Promise<WebhookJson> {
    return this.request("GET", `/api/v1/webhooks/${id}`);
  }
  addWebhook(req: WebhookInput & { url: string; events: string[] }): Promise<WebhookJson> {
    return this.request("POST", "/api/v1/webhooks", req);
  }
  editWebhook(id: number, req: WebhookInput): Promise<WebhookJson> {
    return this.request("PATCH", `/api/v1/webhooks/${id}`, req);
  }
  removeWebhook(id: number): Promise<WebhookJson> {
    return this.request("DELETE", `/api/v1/webhooks/${id}`);
  }
  testWebhook(id: number): Promise<{ eventId: number }> {
    return this.request("POST", `/api/v1/webhooks/${id}/test`, {});
  }
  webhookDeliveries(id: number, q: { limit?: number; event?: number } = {}): Promise<WebhookDeliveryJson[]> {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(q)) if (v !== undefined) params.set(k, String(v));
    const qs = params.toString();
    return this.request("GET", `/api/v1/webhooks/${id}/deliveries${qs ? `?${qs}` : ""}`);
  }

  // Tokens (admin)
  listTokens(): Promise<TokenJson[]> {
    return this.request("GET", "/api/v1/tokens");
  }
  createToken(req: {
    user: string;
    role?: "admin" | "user";
    description?: string;
  }): Promise<{ token: string; info: TokenJson }> {
    return this.request("POST", "/api/v1/tokens", req);
  }
  revokeToken(id: number): Promise<TokenJson> {
    return this.request("DELETE", `/api/v1/tokens/${id}`);
  }

  // Worker calls (host token). `host` is "me" or the host's own name.
  hello(
    req: HelloRequest,
    host = "me",
  ): Promise<{ host: HostJson; heartbeatInterval: number; requeued: number[] }> {
    return this.request("POST", `/api/v1/hosts/${encodeURIComponent(host)}/hello`, req);
  }
  /** With `max` above 1 the hub may hand out up to that many tasks at once, the rest in `more`. */
  claim(
    waitSeconds: number,
    signal?: AbortSignal,
    host = "me",
    max = 1,
  ): Promise<(ClaimedTask & { more?: ClaimedTask[] }) | undefined> {
    return this.request(
      "POST",
      `/api/v1/hosts/${encodeURIComponent(host)}/claim?wait=${waitSeconds}${max > 1 ? `&max=${max}` : ""}`,
      {},
      {
        timeoutMs: this.timeoutMs + waitSeconds * 1000,
        ...(signal ? { signal } : {}),
      },
    );
  }
  heartbeat(
    running: { id: number; epoch: number }[],
    host = "me",
  ): Promise<{ tasks: { id: number; status: LeaseStatus }[] }> {
    return this.request("POST", `/api/v1/hosts/${encodeURIComponent(host)}/heartbeat`, { tasks: running });
  }
  startTask(id: number, epoch: number): Promise<TaskJson> {
    return this.request("POST", `/api/v1/tasks/${id}/start`, { epoch });
  }
  appendLog(id: number, epoch: number, offset: number, data: string): Promise<{ size: number }> {
    return this.request("POST", `/api/v1/tasks/${id}/log`, { epoch, offset, data });
  }
  /** `log`: the last chunk of the log, appended in the same transaction (saves a log call). */
  completeTask(
    id: number,
    epoch: number,
    result: unknown,
    log?: { offset: number; data: string },
  ): Promise<TaskJson> {
    return this.request("POST", `/api/v1/tasks/${id}/complete`, { epoch, result, ...(log ? { log } : {}) });
  }
  failTask(
    id: number,
    epoch: number,
    error: {
      code: string;
      message: string;
      infra?: boolean;
      exitCode?: number | null;
      signal?: string | null;
    },
    log?: { offset: number; data: string },
  ): Promise<TaskJson> {
    return this.request("POST", `/api/v1/tasks/${id}/fail`, { epoch, error, ...(log ? { log } : {}) });
  }
  releaseTask(id: number, epoch: number): Promise<TaskJson> {
    return this.request("POST", `/api/v1/tasks/${id}/release`, { epoch });
  }
  createSubtasks(
    id: number,
    epoch: number,
    tasks: (Omit<CreateTaskRequest, "priority"> & { label: string })[],
  ): Promise<{ tasks: TaskJson[] }> {
    return this.request("POST", `/api/v1/tasks/${id}/subtasks`, { epoch, tasks });
  }
  waitSubtasks(id: number, epoch: number): Promise<{ done: boolean; subtasks: TaskJson[] }> {
    return this.request("POST", `/api/v1/tasks/${id}/wait`, { epoch });
  }

  // --- Tags, packages, tagging, targets ---
  listTags(): Promise<TagJson[]> {
    return this.request("GET", "/api/v1/tags");
  }
  getTag(name: string, event?: number): Promise<TagDetailJson> {
    return this.request("GET", `/api/v1/tags/${encodeURIComponent(name)}${event ? `?event=${event}` : ""}`);
  }
  createTag(req: {
    name: string;
    arches?: string[] | null;
    perm?: string | null;
    locked?: boolean;
    extra?: Record<string, unknown>;
  }): Promise<TagJson> {
    return this.request("POST", "/api/v1/tags", req);
  }
  /** `extra` keys with a null value are removed. */
  editTag(
    name: string,
    req: {
      rename?: string;
      arches?: string[] | null;
      perm?: string | null;
      locked?: boolean;
      extra?: Record<string, unknown>;
    },
  ): Promise<TagJson> {
    return this.request("PATCH", `/api/v1/tags/${encodeURIComponent(name)}`, req);
  }
  deleteTag(name: string): Promise<void> {
    return this.request("DELETE", `/api/v1/tags/${encodeURIComponent(name)}`);
  }
  addTagParent(
    tag: string,
    req: {
      parent: string;
      priority: number;
      maxdepth?: number | null;
      intransitive?: boolean;
      noconfig?: boolean;
      pkgFilter?: string;
    },
  ): Promise<TagDetailJson> {
    return this.request("POST", `/api/v1/tags/${encodeURIComponent(tag)}/parents`, req);
  }
  removeTagParent(tag: string, parent: string): Promise<TagDetailJson> {
    return this.request(
      "DELETE",
      `/api/v1/tags/${encodeURIComponent(tag)}/parents/${encodeURIComponent(parent)}`,
    );
  }
  listPackages(tag: string, event?: number): Promise<PackageEntryJson[]> {
    return this.request(
      "GET",
      `/api/v1/tags/${encodeURIComponent(tag)}/packages${event ? `?event=${event}` : ""}`,
    );
  }
  /** add (needs owner), block, unblock, remove. */
  changePackages(
    tag: string,
    req: {
      action: "add" | "block" | "unblock" | "remove";
      packages: string[];
      owner?: string;
      force?: boolean;
    },
  ): Promise<PackageEntryJson[]> {
    return this.request("POST", `/api/v1/tags/${encodeURIComponent(tag)}/packages`, req);
  }
  latestBuilds(tag: string, event?: number): Promise<TaggedBuildJson[]> {
    return this.request(
      "GET",
      `/api/v1/tags/${encodeURIComponent(tag)}/latest${event ? `?event=${event}` : ""}`,
    );
  }
  /** nvr is "source/version". */
  tagBuild(tag: string, nvr: string, opts: { force?: boolean } = {}): Promise<TaggedBuildJson> {
    return this.request("POST", `/api/v1/tags/${encodeURIComponent(tag)}/builds`, { build: nvr, ...opts });
  }
  untagBuild(tag: string, nvr: string, opts: { force?: boolean } = {}): Promise<void> {
    return this.request("POST", `/api/v1/tags/${encodeURIComponent(tag)}/untag`, { build: nvr, ...opts });
  }
  /** The tag's current ready repo (TAG_REPO_NOT_FOUND when it has none). */
  getTagRepo(tag: string): Promise<TagRepoJson> {
    return this.request("GET", `/api/v1/tags/${encodeURIComponent(tag)}/repo`);
  }
  /** The tag's repos, newest first. */
  listTagRepos(tag: string, limit?: number): Promise<TagRepoJson[]> {
    return this.request(
      "GET",
      `/api/v1/tags/${encodeURIComponent(tag)}/repos${limit ? `?limit=${limit}` : ""}`,
    );
  }
  /** Queues a newRepo for the tag (or gets the one queued); its result is the repo. */
  regenTagRepo(tag: string): Promise<{ task: TaskJson }> {
    return this.request("POST", `/api/v1/tags/${encodeURIComponent(tag)}/repo`, {});
  }
  listTargets(): Promise<TargetJson[]> {
    return this.request("GET", "/api/v1/targets");
  }
  createTarget(req: { name: string; buildTag: string; destTag: string }): Promise<TargetJson> {
    return this.request("POST", "/api/v1/targets", req);
  }
  editTarget(
    name: string,
    req: { retry?: number; retryOn?: string; retryPolicy?: string | null },
  ): Promise<TargetJson> {
    return this.request("PATCH", `/api/v1/targets/${encodeURIComponent(name)}`, req);
  }
  deleteTarget(name: string): Promise<void> {
    return this.request("DELETE", `/api/v1/targets/${encodeURIComponent(name)}`);
  }

  // --- Repositories, snapshots, publications ---
  listRepos(): Promise<RepoJson[]> {
    return this.request("GET", "/api/v1/repos");
  }
  createRepo(req: {
    name: string;
    comment?: string;
    distribution?: string;
    component?: string;
  }): Promise<RepoJson> {
    return this.request("POST", "/api/v1/repos", req);
  }
  showRepo(name: string, opts: ContentsQuery = {}): Promise<RepoDetailJson> {
    return this.request("GET", `/api/v1/repos/${encodeURIComponent(name)}${contentsQuery(opts)}`);
  }
  editRepo(
    name: string,
    patch: { comment?: string; distribution?: string; component?: string },
  ): Promise<RepoJson> {
    return this.request("PATCH", `/api/v1/repos/${encodeURIComponent(name)}`, patch);
  }
  /** A repository task: waited for (`{ task, result }`), or with `async` only queued (`{ task }`). */
  repoTask<R>(
    method: "POST" | "DELETE",
    path: string,
    body?: unknown,
    async = false,
  ): Promise<RepoTaskAnswer<R>> {
    const sep = path.includes("?") ? "&" : "?";
    return this.request(method, async ? `${path}${sep}async=true` : path, body, {
      timeoutMs: 24 * 3_600_000,
    });
  }
  dropRepo(name: string, opts: { force?: boolean; async?: boolean } = {}) {
    return this.repoTask<{ repo: string }>(
      "DELETE",
      `/api/v1/repos/${encodeURIComponent(name)}${opts.force ? "?force=true" : ""}`,
      undefined,
      opts.async,
    );
  }
  addToRepo(
    name: string,
    req: {
      upload: string;
      files?: string[];
      forceReplace?: boolean;
      removeUpload?: "all" | "added" | "none";
    },
    async = false,
  ) {
    return this.repoTask<RepoAddResultJson>(
      "POST",
      `/api/v1/repos/${encodeURIComponent(name)}/add`,
      req,
      async,
    );
  }
  removeFromRepo(name: string, query: string, async = false) {
    return this.repoTask<{ repo: string; keys: string[] }>(
      "POST",
      `/api/v1/repos/${encodeURIComponent(name)}/remove`,
      { query },
      async,
    );
  }
  copyPackages(
    from: string,
    req: { to: string; query: string; move?: boolean; forceReplace?: boolean },
    async = false,
  ) {
    return this.repoTask<{ from: string; to: string; keys: string[] }>(
      "POST",
      `/api/v1/repos/${encodeURIComponent(from)}/copy`,
      req,
      async,
    );
  }
  importTag(name: string, req: { tag: string; event?: number; forceReplace?: boolean }, async = false) {
    return this.repoTask<{
      repo: string;
      tag: string;
      event: number;
      outcomes?: { outcome: string; key: string }[];
    }>("POST", `/api/v1/repos/${encodeURIComponent(name)}/import-tag`, req, async);
  }
  listSnapshots(): Promise<SnapshotJson[]> {
    return this.request("GET", "/api/v1/snapshots");
  }
  createSnapshot(req: { name: string; description?: string; from: SnapshotSourceJson }, async = false) {
    return this.repoTask<{ snapshot: string; packageCount: number }>("POST", "/api/v1/snapshots", req, async);
  }
  showSnapshot(name: string, opts: ContentsQuery = {}): Promise<SnapshotDetailJson> {
    return this.request("GET", `/api/v1/snapshots/${encodeURIComponent(name)}${contentsQuery(opts)}`);
  }
  diffSnapshots(a: string, b: string): Promise<SnapshotDiffJson[]> {
    return this.request("GET", `/api/v1/snapshots/${encodeURIComponent(a)}/diff/${encodeURIComponent(b)}`);
  }
  dropSnapshot(name: string, opts: { force?: boolean; async?: boolean } = {}) {
    return this.repoTask<{ snapshot: string }>(
      "DELETE",
      `/api/v1/snapshots/${encodeURIComponent(name)}${opts.force ? "?force=true" : ""}`,
      undefined,
      opts.async,
    );
  }
  /** Tag-tracking publications that serve a build, and whether apt can see it there yet. */
  buildPublications(buildId: number): Promise<BuildPublicationJson[]> {
    return this.request("GET", `/api/v1/builds/${buildId}/publications`);
  }
  listPublications(): Promise<PublicationJson[]> {
    return this.request("GET", "/api/v1/publish");
  }
  publish(spec: PublicationSpecJson, async = false) {
    return this.repoTask<PublishOutcomeJson>("POST", "/api/v1/publish", spec, async);
  }
  showPublication(prefix: string, dist: string): Promise<PublicationJson> {
    return this.request(
      "GET",
      `/api/v1/publish/${encodeURIComponent(dist)}?prefix=${encodeURIComponent(prefix)}`,
    );
  }
  publicationAction(
    prefix: string,
    dist: string,
    action: "update" | "switch" | "rollback",
    body: Record<string, unknown> = {},
    async = false,
  ) {
    return this.repoTask<PublishOutcomeJson>(
      "POST",
      `/api/v1/publish/${encodeURIComponent(dist)}/${action}?prefix=${encodeURIComponent(prefix)}`,
      body,
      async,
    );
  }
  dropPublication(prefix: string, dist: string, async = false) {
    return this.repoTask<{ dropped: boolean }>(
      "DELETE",
      `/api/v1/publish/${encodeURIComponent(dist)}?prefix=${encodeURIComponent(prefix)}`,
      undefined,
      async,
    );
  }

  // --- Uploads, builds, blobs ---
  createUpload(): Promise<{ id: string }> {
    return this.request("POST", "/api/v1/uploads", {});
  }
  /** Streams a file into an upload area. */
  async uploadFile(
    upload: string,
    name: string,
    body: Buffer | ReadableStream<Uint8Array>,
  ): Promise<{ name: string; size: number; sha256: string }> {
    const res = await this.raw(
      "PUT",
      `/api/v1/uploads/${encodeURIComponent(upload)}/files/${encodeURIComponent(name)}`,
      undefined,
      { body, headers: { "content-type": "application/octet-stream" }, timeoutMs: 3_600_000 },
    );
    return (await res.json()) as { name: string; size: number; sha256: string };
  }
  /** A file of an upload area (hosts read the source they build from here). */
  downloadUploadFile(upload: string, name: string): Promise<Response> {
    return this.raw(
      "GET",
      `/api/v1/uploads/${encodeURIComponent(upload)}/files/${encodeURIComponent(name)}`,
      undefined,
      {
        timeoutMs: 3_600_000,
      },
    );
  }
  createBuild(req: CreateBuildRequest): Promise<{ build: BuildJson; task: TaskJson }> {
    return this.request("POST", "/api/v1/builds", req);
  }
  /** Groups of builds in order; answers the chain's task and its (not yet started) builds. */
  createChainBuild(req: CreateChainBuildRequest): Promise<ChainBuildJson> {
    return this.request("POST", "/api/v1/chain-builds", req);
  }
  /** A chain build by its task id: where each of its builds stands. */
  getChainBuild(taskId: number): Promise<ChainBuildJson> {
    return this.request("GET", `/api/v1/chain-builds/${taskId}`);
  }
  /** By "source/version" or numeric id. */
  getBuild(ref: string | number): Promise<BuildJson> {
    return this.request(
      "GET",
      `/api/v1/builds/${typeof ref === "number" ? ref : ref.split("/").map(encodeURIComponent).join("/")}`,
    );
  }
  /** Every attempt of the build's steps (retries, requeues), oldest first. */
  getBuildAttempts(id: number): Promise<BuildAttemptJson[]> {
    return this.request("GET", `/api/v1/builds/${id}/attempts`);
  }
  stats(q: { since?: string } = {}): Promise<StatsJson> {
    const qs = q.since === undefined ? "" : `?since=${encodeURIComponent(q.since)}`;
    return this.request("GET", `/api/v1/stats${qs}`);
  }
  listBuilds(q: { package?: string; state?: string; limit?: number } = {}): Promise<BuildJson[]> {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(q)) if (v !== undefined) params.set(k, String(v));
    const qs = params.toString();
    return this.request("GET", `/api/v1/builds${qs ? `?${qs}` : ""}`);
  }
  /** A stored blob (artifact) by its sha256. */
  downloadBlob(sha256: string): Promise<Response> {
    return this.raw("GET", `/api/v1/blobs/${sha256}`, undefined, { timeoutMs: 3_600_000 });
  }
  /** Worker: attaches an artifact to a task attempt, fenced by the epoch. */
  async uploadArtifact(
    taskId: number,
    epoch: number,
    name: string,
    body: Buffer | ReadableStream<Uint8Array>,
    meta: { kind: string; arch?: string | null },
  ): Promise<ArtifactJson> {
    const params = new URLSearchParams({ epoch: String(epoch), kind: meta.kind });
    if (meta.arch) params.set("arch", meta.arch);
    const res = await this.raw(
      "PUT",
      `/api/v1/tasks/${taskId}/artifacts/${encodeURIComponent(name)}?${params.toString()}`,
      undefined,
      { body, headers: { "content-type": "application/octet-stream" }, timeoutMs: 3_600_000 },
    );
    return (await res.json()) as ArtifactJson;
  }

  // --- Buildroot bases ---
  /** Admin: records the base and queues the task that makes it. */
  createBuildroot(req: CreateBuildrootRequest): Promise<{ buildroot: BuildrootJson; task: TaskJson }> {
    return this.request("POST", "/api/v1/buildroots", req);
  }
  listBuildroots(opts: { all?: boolean } = {}): Promise<BuildrootJson[]> {
    return this.request("GET", `/api/v1/buildroots${opts.all ? "?all=true" : ""}`);
  }
  getBuildroot(name: string): Promise<BuildrootDetailJson> {
    return this.request("GET", `/api/v1/buildroots/${encodeURIComponent(name)}`);
  }
  /** Admin: soft delete; `force` even while tags name it. */
  deleteBuildroot(name: string, opts: { force?: boolean } = {}): Promise<BuildrootJson> {
    return this.request(
      "DELETE",
      `/api/v1/buildroots/${encodeURIComponent(name)}${opts.force ? "?force=true" : ""}`,
    );
  }

  // --- The archive signing key ---
  getArchiveKey(): Promise<ArchiveKeyJson> {
    return this.request("GET", "/api/v1/key");
  }
  /** Admin: makes `armored` (one passphrase-less secret key) the key that signs from now on. */
  importArchiveKey(armored: string): Promise<ArchiveKeyJson> {
    return this.request("POST", "/api/v1/key", { secretKey: armored });
  }
}

/** What to list of a repo's or snapshot's packages: all of them, or those a query matches. */
interface ContentsQuery {
  withPackages?: boolean;
  q?: string;
}

function contentsQuery(opts: ContentsQuery): string {
  const qs = new URLSearchParams();
  if (opts.withPackages) qs.set("withPackages", "true");
  if (opts.q) qs.set("q", opts.q);
  return qs.size > 0 ? `?${qs.toString()}` : "";
}

/** Keep-alive connections to hubs, shared by every client in the process (idle sockets do not hold it open). */
const keepAlive = new Agent({ keepAliveTimeout: 30_000 });

/** The hub's `{ error: { code, message, details } }` answer as a KilnError. */
function errorFromAnswer(status: number, text: string): KilnError {
  let code = "INTERNAL";
  let message = `HTTP ${status}`;
  let details: Record<string, unknown> | undefined;
  try {
    const parsed = JSON.parse(text) as {
      error?: { code?: string; message?: string; details?: Record<string, unknown> };
    };
    code = parsed.error?.code ?? code;
    message = parsed.error?.message ?? message;
    details = parsed.error?.details;
  } catch {
    if (text) message = `${message}: ${text.slice(0, 200)}`;
  }
  return new KilnError(isErrorCode(code) ? code : "INTERNAL", message, { status, ...details });
}

function describe(err: unknown): string {
  const e = err as { code?: string; cause?: { code?: string; message?: string }; message?: string };
  // undici's own errors (UND_ERR_*) say more in their message; system errors by their code.
  if (e.code && !e.code.startsWith("UND_ERR")) return e.code;
  return e.cause?.code ?? e.cause?.message ?? e.message ?? String(err);
}
