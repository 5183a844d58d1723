import type { FastifyReply, FastifyRequest } from "fastify";
import type { HubDeps } from "./deps.js";

/** A server-sent event stream a route writes to until the client goes or the hub closes. */
export interface SseStream {
  /** The client is still there and the hub is not shutting down. */
  readonly open: boolean;
  send(event: string, data: unknown, id?: string): void;
  /** Waits `ms`, or less when `wake()` is called (new data) or the stream closes. */
  pause(ms: number): Promise<void>;
  wake(): void;
  end(): void;
}

/**
 * Takes the response over for SSE: headers, a reconnect delay, keep-alive comments every 15 s,
 * and an end when the client disconnects or the hub shuts down.
 */
export function openSseStream(deps: HubDeps, req: FastifyRequest, reply: FastifyReply): SseStream {
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, {
    "content-type": "text/event-stream",
    "cache-control": "no-cache",
    connection: "keep-alive",
    "x-accel-buffering": "no",
  });
  let closed = false;
  let wakeUp: (() => void) | undefined;
  const close = () => {
    closed = true;
    wakeUp?.();
  };
  req.raw.on("close", close);
  deps.lifecycle.onClose.add(close);
  const keepAlive = setInterval(() => res.write(": keep-alive\n\n"), 15_000);
  res.write("retry: 1000\n\n");
  return {
    get open() {
      return !closed && !deps.lifecycle.closing;
    },
    send(event, data, id) {
      res.write(`event: ${event}\n${id === undefined ? "" : `id: ${id}\n`}data: ${JSON.stringify(data)}\n\n`);
    },
    async pause(ms) {
      if (closed) return;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, ms);
        wakeUp = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      wakeUp = undefined;
    },
    wake() {
      wakeUp?.();
    },
    end() {
      clearInterval(keepAlive);
      deps.lifecycle.onClose.delete(close);
      res.end();
    },
  };
}
