import { KilnError, isErrorCode } from "../errors/catalogue.js";
import type {
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

  constructor(opts: ClientOptions) {
    this.hub = opts.hub.replace(/\/+$/, "");
    this.token = opts.token;
    this.timeoutMs = opts.timeoutMs ?? 30_000;
  }

  async request<T>(
    method: string,
    path: string,
    body?: unknown,
    opts: { timeoutMs?: number; signal?: AbortSignal } = {},
  ): Promise<T> {
    const res = await this.raw(method, path, body, opts);
    if (res.status === 204) return undefined as T;
    const text = await res.text();
    const data: unknown = text ? JSON.parse(text) : undefined;
    return data as T;
  }

  /** Performs the request; throws KilnError on a non-2xx answer. */
  async raw(
    method: string,
    path: string,
    body?: unknown,
    opts: { timeoutMs?: number; signal?: AbortSignal; headers?: Record<string, string> } = {},
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
        body: body === undefined ? null : JSON.stringify(body),
        signal,
      });
    } catch (err) {
      if (opts.signal?.aborted) throw err;
      throw new KilnError("HUB_UNREACHABLE", `cannot reach the hub at ${this.hub}: ${describe(err)}`);
    }
    if (res.ok) return res;
    const text = await res.text();
    let code = "INTERNAL";
    let message = `HTTP ${res.status}`;
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
    throw new KilnError(isErrorCode(code) ? code : "INTERNAL", message, { status: res.status, ...details });
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
  claim(waitSeconds: number, signal?: AbortSignal, host = "me"): Promise<ClaimedTask | undefined> {
    return this.request(
      "POST",
      `/api/v1/hosts/${encodeURIComponent(host)}/claim?wait=${waitSeconds}`,
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
  completeTask(id: number, epoch: number, result: unknown): Promise<TaskJson> {
    return this.request("POST", `/api/v1/tasks/${id}/complete`, { epoch, result });
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
  ): Promise<TaskJson> {
    return this.request("POST", `/api/v1/tasks/${id}/fail`, { epoch, error });
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
}

function describe(err: unknown): string {
  const e = err as { cause?: { code?: string; message?: string }; message?: string };
  return e.cause?.code ?? e.cause?.message ?? e.message ?? String(err);
}
