import { describe, expect, it } from "vitest";
import { readSse, SseParser, type SseEvent } from "../../src/client/sse.js";

function parseAll(chunks: string[]): SseEvent[] {
  const parser = new SseParser();
  return chunks.flatMap((c) => parser.push(c));
}

function streamOf(chunks: Uint8Array[]): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(controller) {
      for (const chunk of chunks) controller.enqueue(chunk);
      controller.close();
    },
  });
}

async function collect(stream: ReadableStream<Uint8Array>, parser = new SseParser()): Promise<SseEvent[]> {
  const events: SseEvent[] = [];
  for await (const event of readSse(stream, { parser })) events.push(event);
  return events;
}

// What the hub sends for a task log: a retry hint, keep-alives, log events with ids, an end.
const HUB_STREAM =
  "retry: 1000\n\n" +
  'event: log\nid: 1:6\ndata: {"epoch":1,"offset":0,"data":"hello\\n"}\n\n' +
  ": keep-alive\n\n" +
  'event: log\nid: 1:18\ndata: {"epoch":1,"offset":6,"data":"wörld ✓\\n"}\n\n' +
  'event: end\ndata: {"state":"closed","error":null}\n\n';

const HUB_EVENTS: SseEvent[] = [
  { event: "log", id: "1:6", data: '{"epoch":1,"offset":0,"data":"hello\\n"}' },
  { event: "log", id: "1:18", data: '{"epoch":1,"offset":6,"data":"wörld ✓\\n"}' },
  { event: "end", id: "1:18", data: '{"state":"closed","error":null}' },
];

describe("SseParser", () => {
  it("parses the hub's log stream in one piece", () => {
    const parser = new SseParser();
    expect(parser.push(HUB_STREAM)).toEqual(HUB_EVENTS);
    expect(parser.retry).toBe(1000);
    expect(parser.lastEventId).toBe("1:18");
  });

  it("gives the same events however the text is split, mid-line and mid-field included", () => {
    for (let i = 0; i <= HUB_STREAM.length; i++) {
      for (const j of [i, Math.min(HUB_STREAM.length, i + 1), Math.min(HUB_STREAM.length, i + 7)]) {
        const chunks = [HUB_STREAM.slice(0, i), HUB_STREAM.slice(i, j), HUB_STREAM.slice(j)];
        expect(parseAll(chunks), `split at ${i} and ${j}`).toEqual(HUB_EVENTS);
      }
    }
  });

  it("gives the same events fed one character at a time", () => {
    expect(parseAll([...HUB_STREAM])).toEqual(HUB_EVENTS);
  });

  it("holds back a line until its end arrives", () => {
    const parser = new SseParser();
    expect(parser.push("event: log\nda")).toEqual([]);
    expect(parser.push("ta: par")).toEqual([]);
    expect(parser.push("tial\n")).toEqual([]);
    expect(parser.push("\n")).toEqual([{ event: "log", id: "", data: "partial" }]);
  });

  it("accepts CRLF and CR line ends, a CRLF split across chunks counting once", () => {
    const events = parseAll(["data: a\r", "\n\r", "\ndata: b\r\r", "data: c\r", "\r"]);
    expect(events.map((e) => e.data)).toEqual(["a", "b", "c"]);
  });

  it("joins data lines with newlines and defaults the event type to message", () => {
    expect(parseAll(["data: one\ndata:two\ndata\n\n"])).toEqual([
      { event: "message", id: "", data: "one\ntwo\n" },
    ]);
  });

  it("ignores comments, unknown fields and blocks without data", () => {
    expect(parseAll([": hi\nfoo: bar\n\nevent: x\n\nid: 7\n\ndata: d\n\n"])).toEqual([
      { event: "message", id: "7", data: "d" },
    ]);
  });

  it("keeps the last event id for later events and ignores a bad retry", () => {
    const parser = new SseParser();
    const events = parser.push("id: 2:10\ndata: a\n\ndata: b\n\nretry: soon\n\n");
    expect(events.map((e) => e.id)).toEqual(["2:10", "2:10"]);
    expect(parser.retry).toBeUndefined();
  });

  it("drops a byte-order mark at the start of the stream only", () => {
    expect(parseAll(["\ufeffdata: x\n\n", "data: \ufeffy\n\n"]).map((e) => e.data)).toEqual(["x", "\ufeffy"]);
  });
});

describe("readSse", () => {
  it("decodes multi-byte characters split across body chunks", async () => {
    const bytes = new TextEncoder().encode(HUB_STREAM);
    for (let i = 0; i <= bytes.length; i += 3) {
      const events = await collect(streamOf([bytes.slice(0, i), bytes.slice(i)]));
      expect(events, `split at byte ${i}`).toEqual(HUB_EVENTS);
    }
  });

  it("drops an event the stream cut off before its blank line", async () => {
    const body = new TextEncoder().encode('event: log\ndata: {"a":1}\n\nevent: log\ndata: {"b":');
    expect(await collect(streamOf([body]))).toEqual([{ event: "log", id: "", data: '{"a":1}' }]);
  });

  it("carries the last event id on the parser across connections", async () => {
    const parser = new SseParser();
    await collect(streamOf([new TextEncoder().encode("id: 1:5\ndata: x\n\n")]), parser);
    expect(parser.lastEventId).toBe("1:5");
  });

  it("cancels the body when the consumer stops early", async () => {
    let canceled = false;
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new TextEncoder().encode("data: 1\n\ndata: 2\n\n"));
      },
      cancel() {
        canceled = true;
      },
    });
    for await (const event of readSse(body)) {
      expect(event.data).toBe("1");
      break;
    }
    expect(canceled).toBe(true);
  });
});
