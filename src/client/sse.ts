/**
 * A parser of server-sent events (the text/event-stream format of the HTML standard), fed in
 * arbitrary chunks: a line, a CRLF pair or a multi-byte character may be split anywhere.
 */

export interface SseEvent {
  /** The event type; "message" when the server named none. */
  event: string;
  /** The last event ID seen on the stream so far (it carries over to later events, as in browsers). */
  id: string;
  data: string;
}

export class SseParser {
  /** The reconnection delay the server asked for with `retry:`, in ms. */
  retry: number | undefined;
  /** The last event ID, to send back as Last-Event-ID when reconnecting. */
  lastEventId = "";

  private buffer = "";
  private data: string[] = [];
  private eventType = "";
  private started = false;
  /** The previous chunk ended in CR: a LF at the start of the next one belongs to it. */
  private skipLf = false;

  /** Feeds decoded text; returns the events it completed. */
  push(text: string): SseEvent[] {
    if (!this.started && text.length > 0) {
      this.started = true;
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    }
    if (text.length === 0) return [];
    if (this.skipLf && text.startsWith("\n")) text = text.slice(1);
    this.skipLf = false;
    this.buffer += text;

    const events: SseEvent[] = [];
    let start = 0;
    for (;;) {
      const cr = this.buffer.indexOf("\r", start);
      const lf = this.buffer.indexOf("\n", start);
      if (cr === -1 && lf === -1) break;
      let end: number;
      let next: number;
      if (lf !== -1 && (cr === -1 || lf < cr)) {
        end = lf;
        next = lf + 1;
      } else if (cr + 1 < this.buffer.length) {
        end = cr;
        next = this.buffer[cr + 1] === "\n" ? cr + 2 : cr + 1;
      } else {
        // A CR at the very end: the line ends here, and a LF arriving next is part of it.
        end = cr;
        next = cr + 1;
        this.skipLf = true;
      }
      const event = this.processLine(this.buffer.slice(start, end));
      if (event) events.push(event);
      start = next;
    }
    this.buffer = this.buffer.slice(start);
    return events;
  }

  private processLine(line: string): SseEvent | undefined {
    if (line === "") return this.dispatch();
    if (line.startsWith(":")) return undefined;
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    switch (field) {
      case "event":
        this.eventType = value;
        break;
      case "data":
        this.data.push(value);
        break;
      case "id":
        if (!value.includes("\0")) this.lastEventId = value;
        break;
      case "retry":
        if (/^\d+$/.test(value)) this.retry = Number(value);
        break;
      default:
        // Unknown fields are ignored, as the standard says.
        break;
    }
    return undefined;
  }

  private dispatch(): SseEvent | undefined {
    const data = this.data;
    const eventType = this.eventType;
    this.data = [];
    this.eventType = "";
    if (data.length === 0) return undefined;
    return { event: eventType || "message", id: this.lastEventId, data: data.join("\n") };
  }
}

/**
 * Reads a response body as server-sent events. `onChunk` is called for every chunk received,
 * comments and keep-alives included, so a caller can tell a quiet stream from a dead one.
 */
export async function* readSse(
  body: ReadableStream<Uint8Array>,
  opts: { parser?: SseParser; onChunk?: () => void } = {},
): AsyncGenerator<SseEvent, void, undefined> {
  const parser = opts.parser ?? new SseParser();
  const decoder = new TextDecoder("utf-8");
  const reader = body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      opts.onChunk?.();
      yield* parser.push(decoder.decode(value, { stream: true }));
    }
    // An event not ended by a blank line is incomplete and, as in browsers, dropped.
    parser.push(decoder.decode());
  } finally {
    // Stops the download when the consumer leaves early; the stream may already be errored.
    await reader.cancel().catch(() => undefined);
    reader.releaseLock();
  }
}
