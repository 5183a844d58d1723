import { describe, expect, it } from "vitest";
import { reconnectDelay, unseenPart } from "../../src/cli/task-logs.js";

describe("unseenPart", () => {
  it("passes everything before anything was printed, and a newer attempt's log", () => {
    expect(unseenPart({ epoch: 1, offset: 0, data: "abc" }, undefined)).toBe("abc");
    expect(unseenPart({ epoch: 2, offset: 0, data: "new" }, { epoch: 1, offset: 10 })).toBe("new");
  });

  it("drops what was already printed, whole or in part, counting bytes", () => {
    expect(unseenPart({ epoch: 1, offset: 0, data: "abc" }, { epoch: 1, offset: 3 })).toBeUndefined();
    expect(unseenPart({ epoch: 1, offset: 0, data: "abcdef" }, { epoch: 1, offset: 3 })).toBe("def");
    // "ö" is two bytes: offset 3 is just after it.
    expect(unseenPart({ epoch: 1, offset: 0, data: "aöbc" }, { epoch: 1, offset: 3 })).toBe("bc");
    expect(unseenPart({ epoch: 1, offset: 3, data: "def" }, { epoch: 1, offset: 3 })).toBe("def");
    expect(unseenPart({ epoch: 1, offset: 0, data: "old" }, { epoch: 2, offset: 0 })).toBeUndefined();
  });
});

describe("reconnectDelay", () => {
  it("grows exponentially with jitter between half and all of the step, capped at 30 s", () => {
    expect(reconnectDelay(1, 1000, () => 0)).toBe(500);
    expect(reconnectDelay(1, 1000, () => 1)).toBe(1000);
    expect(reconnectDelay(3, 1000, () => 0.5)).toBe(3000);
    expect(reconnectDelay(20, 1000, () => 1)).toBe(30_000);
    expect(reconnectDelay(20, 1000, () => 0)).toBe(15_000);
  });
});
