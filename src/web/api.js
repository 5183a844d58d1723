/** The UI's only way to the hub: the native API with the token from sign-in. */

const KEY = "kiln.token";

export function getToken() {
  return sessionStorage.getItem(KEY) ?? localStorage.getItem(KEY) ?? "";
}

/** `remember` keeps the token across browser restarts (localStorage), else for this tab only. */
export function setToken(token, remember) {
  signOut();
  (remember ? localStorage : sessionStorage).setItem(KEY, token);
}

export function signOut() {
  localStorage.removeItem(KEY);
  sessionStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function headers(extra = {}) {
  const token = getToken();
  return token ? { ...extra, authorization: `Bearer ${token}` } : extra;
}

async function failure(res) {
  let code = "HTTP_" + res.status;
  let message = res.statusText;
  try {
    const body = await res.json();
    code = body.error?.code ?? code;
    message = body.error?.message ?? message;
  } catch {
    // Not a Kiln error body (a proxy's page): the status says enough.
  }
  return new ApiError(res.status, code, `${message} (${code})`);
}

/** GET/POST/PATCH a JSON call under /api/v1; throws ApiError with the hub's code. */
export async function api(path, { method = "GET", body, signal } = {}) {
  const res = await fetch(`/api/v1${path}`, {
    method,
    headers: headers(body === undefined ? {} : { "content-type": "application/json" }),
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
  });
  if (!res.ok) throw await failure(res);
  const type = res.headers.get("content-type") ?? "";
  return type.includes("json") ? res.json() : res.text();
}

/** Bytes of a call (a blob download), with the token. */
export async function apiBlob(path, { signal } = {}) {
  const res = await fetch(`/api/v1${path}`, { headers: headers(), signal });
  if (!res.ok) throw await failure(res);
  return res.blob();
}

/**
 * Server-sent events over fetch, since EventSource cannot send the Authorization header.
 * Reconnects with Last-Event-ID until `signal` aborts; `onEvent({event, id, data})` per event.
 */
export async function followEvents(path, { signal, onEvent, onOpen }) {
  let lastId = "";
  while (!signal.aborted) {
    try {
      const res = await fetch(`/api/v1${path}`, {
        headers: headers({ accept: "text/event-stream", ...(lastId ? { "last-event-id": lastId } : {}) }),
        signal,
      });
      if (!res.ok) throw await failure(res);
      onOpen?.();
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      let ended = false;
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const ev = parseEvent(block);
          if (!ev) continue;
          if (ev.id) lastId = ev.id;
          if (onEvent(ev) === false) ended = true;
        }
        if (ended) {
          await reader.cancel();
          return;
        }
      }
    } catch (err) {
      if (signal.aborted) return;
      if (err instanceof ApiError && err.status < 500) throw err;
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

/** One SSE block → {event, id, data}; comments and retry lines alone give null. */
export function parseEvent(block) {
  let event = "message";
  let id = "";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith(":") || line === "") continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") event = value;
    else if (field === "id") id = value;
    else if (field === "data") data.push(value);
  }
  if (data.length === 0) return null;
  return { event, id, data: data.join("\n") };
}
