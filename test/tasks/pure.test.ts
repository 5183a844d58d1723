import { describe, expect, it } from "vitest";
import { nextFairVt } from "../../src/tasks/fair-order.js";
import { backoffDelayMs } from "../../src/tasks/retry.js";
import { parseLock } from "../../src/tasks/create-task.js";

describe("backoff with full jitter", () => {
  it("grows exponentially up to the cap and spans the whole range", () => {
    expect(backoffDelayMs(1, 5, 600, () => 0.999)).toBe(4995);
    expect(backoffDelayMs(3, 5, 600, () => 0.999)).toBe(19980);
    expect(backoffDelayMs(20, 5, 600, () => 0.5)).toBe(300000);
    expect(backoffDelayMs(4, 5, 600, () => 0)).toBe(0);
  });
});

describe("fair order", () => {
  it("puts a new owner at the head and an owner's next task behind its last", () => {
    expect(nextFairVt(null, null)).toBe(0);
    expect(nextFairVt(7, null)).toBe(7);
    expect(nextFairVt(7, 20)).toBe(21);
    expect(nextFairVt(30, 20)).toBe(30);
  });
});

describe("lock syntax", () => {
  it("parses NAME and NAME:shared", () => {
    expect(parseLock("repo:main")).toEqual({ resource: "repo:main", exclusive: true });
    expect(parseLock("repo:main:shared")).toEqual({ resource: "repo:main", exclusive: false });
    expect(parseLock("pool:x:exclusive")).toEqual({ resource: "pool:x", exclusive: true });
    expect(() => parseLock("bad name")).toThrow(/not NAME/);
  });
});
