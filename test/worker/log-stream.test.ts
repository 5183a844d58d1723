import { describe, expect, it, vi } from "vitest";
import { KilnError } from "../../src/errors/catalogue.js";
import { LogStream, type LogStreamOptions } from "../../src/worker/log-stream.js";

/**
 * Stands in for the hub's log endpoint with its offset rules: a chunk at an old offset is a
 * no-op replay, one past the end is LOG_GAP with the current size. `fail` makes the next calls
 * throw (after optionally storing the chunk, as when the answer is lost on the way back).
 */
class FakeLogHub {
  bytes = Buffer.alloc(0);
  calls: { offset: number; data: string }[] = [];
  fail: { err: KilnError; store?: boolean }[] = [];

  appendLog = (_id: number, _epoch: number, offset: number, data: string): Promise<{ size: number }> => {
    this.calls.push({ offset, data });
    const next = this.fail.shift();
    if (next && !next.store) return Promise.reject(next.err);
    const chunk = Buffer.from(data, "utf8");
    if (offset > this.bytes.length) {
      return Promise.reject(new KilnError("LOG_GAP", "gap", { status: 409, size: this.bytes.length }));
    }
    if (offset === this.bytes.length) this.bytes = Buffer.concat([this.bytes, chunk]);
    if (next) return Promise.reject(next.err);
    return Promise.resolve({ size: this.bytes.length });
  };

  get text(): string {
    return this.bytes.toString("utf8");
  }
}

const unreachable = () => new KilnError("HUB_UNREACHABLE", "connection refused");

function stream(hub: FakeLogHub, opts: Partial<LogStreamOptions> = {}): LogStream {
  return new LogStream({
    client: hub,
    taskId: 1,
    epoch: 1,
    flushIntervalMs: 60_000,
    retryBaseSeconds: 0.001,
    retryMaxSeconds: 0.01,
    ...opts,
  });
}

describe("LogStream", () => {
  it("batches writes into one chunk and advances by UTF-8 bytes", async () => {
    const hub = new FakeLogHub();
    const log = stream(hub);
    log.write("héllo ");
    log.write("wörld 🙂\n");
    await log.flush();
    log.write("next\n");
    await log.flush();
    expect(hub.calls).toEqual([
      { offset: 0, data: "héllo wörld 🙂\n" },
      { offset: Buffer.byteLength("héllo wörld 🙂\n"), data: "next\n" },
    ]);
    expect(hub.text).toBe("héllo wörld 🙂\nnext\n");
    expect(log.size).toBe(hub.bytes.length);
  });

  it("sends on the interval without a flush", async () => {
    const hub = new FakeLogHub();
    const log = stream(hub, { flushIntervalMs: 20 });
    log.write("tick\n");
    expect(hub.calls).toHaveLength(0);
    await vi.waitFor(() => expect(hub.text).toBe("tick\n"));
    log.close();
  });

  it("sends at once when a chunk's worth is buffered", async () => {
    const hub = new FakeLogHub();
    const log = stream(hub, { chunkBytes: 1024 });
    log.write("a".repeat(1000));
    expect(hub.calls).toHaveLength(0);
    log.write("b".repeat(100));
    await vi.waitFor(() => expect(hub.bytes.length).toBe(1100));
    log.close();
  });

  it("splits large output on character boundaries", async () => {
    const hub = new FakeLogHub();
    const log = stream(hub, { maxRequestBytes: 10 });
    const text = "€".repeat(9); // 3 bytes each
    log.write(text);
    await log.flush();
    expect(hub.text).toBe(text);
    expect(hub.calls.map((c) => c.data)).toEqual(["€€€", "€€€", "€€€"]);
  });

  it("retries the same chunk while the hub is down; a replay of what landed is harmless", async () => {
    const hub = new FakeLogHub();
    hub.fail = [
      { err: unreachable() },
      { err: unreachable(), store: true },
      { err: new KilnError("INTERNAL", "x", { status: 502 }) },
    ];
    const log = stream(hub);
    log.write("one\n");
    await log.flush();
    log.write("two\n");
    await log.flush();
    expect(hub.text).toBe("one\ntwo\n");
    expect(hub.calls.map((c) => c.offset)).toEqual([0, 0, 0, 0, 4]);
  });

  it("resyncs to the hub's size on LOG_GAP", async () => {
    const hub = new FakeLogHub();
    const log = stream(hub);
    log.write("lost\n");
    await log.flush();
    hub.bytes = Buffer.alloc(0); // the hub lost the chunk
    log.write("kept\n");
    await log.flush();
    expect(hub.calls.map((c) => c.offset)).toEqual([0, 5, 0]);
    expect(hub.text).toBe("kept\n");
    expect(log.size).toBe(5);
  });

  it.each(["LEASE_STALE", "TASK_CANCELED", "TASK_FINISHED", "HOST_MISMATCH", "LOG_TOO_LARGE"] as const)(
    "stops sending after %s",
    async (code) => {
      const hub = new FakeLogHub();
      hub.fail = [{ err: new KilnError(code) }];
      const log = stream(hub);
      log.write("first\n");
      await log.flush();
      log.write("second\n");
      await log.flush();
      expect(hub.calls).toHaveLength(1);
      expect(log.accepting).toBe(false);
    },
  );

  it("gives up retrying when closed or aborted", async () => {
    const hub = new FakeLogHub();
    hub.fail = Array.from({ length: 1000 }, () => ({ err: unreachable() }));
    const controller = new AbortController();
    const log = stream(hub, { signal: controller.signal, retryBaseSeconds: 0.01, retryMaxSeconds: 0.01 });
    log.write("never\n");
    const flushed = log.flush();
    await vi.waitFor(() => expect(hub.calls.length).toBeGreaterThan(2));
    controller.abort();
    await flushed;
    const calls = hub.calls.length;
    log.write("more\n");
    await log.flush();
    expect(hub.calls.length).toBe(calls);
    expect(hub.bytes.length).toBe(0);
  });

  it("drops output past the buffer limit and says so", async () => {
    const hub = new FakeLogHub();
    hub.fail = [{ err: unreachable() }];
    const log = stream(hub, { maxBufferBytes: 10 });
    log.write("12345");
    log.write("67890");
    log.write("dropped!");
    await log.flush();
    expect(hub.text).toBe(
      "1234567890\n[kiln: 8 bytes of output dropped: the hub was unreachable or too slow]\n",
    );
  });
});
