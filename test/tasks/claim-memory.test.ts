import { describe, expect, it } from "vitest";
import { ClaimMemory } from "../../src/tasks/claim-memory.js";

const amd64 = { arches: JSON.stringify(["amd64"]), channels: JSON.stringify(["default"]) };
const arm64 = { arches: JSON.stringify(["arm64"]), channels: JSON.stringify(["default"]) };
const hub = { arches: JSON.stringify(["noarch"]), channels: JSON.stringify(["hub"]) };

/** A claim by a host of `kind` with `free` capacity that found nothing. */
function miss(m: ClaimMemory, kind: typeof amd64, free: number): void {
  m.missed(m.ticket(kind), free);
}

describe("ClaimMemory", () => {
  it("tries a kind it knows nothing about, and stops after a claim found nothing", () => {
    const m = new ClaimMemory();
    expect(m.worthTrying(amd64, 2)).toBe(true);
    miss(m, amd64, 2);
    expect(m.worthTrying(amd64, 2)).toBe(false);
    expect(m.worthTrying(amd64, 1)).toBe(false);
    // More room than the claim that missed had: a heavier task may fit.
    expect(m.worthTrying(amd64, 3)).toBe(true);
    // No room at all is never worth a statement.
    expect(m.worthTrying(amd64, 0)).toBe(false);
  });

  it("lets a new task wake only the kinds that can run it, once per task", () => {
    const m = new ClaimMemory();
    for (const kind of [amd64, arm64, hub]) miss(m, kind, 4);
    m.heard({ kind: "tasks", tasks: [{ arch: "amd64", channel: "default" }] });
    expect(m.worthTrying(amd64, 4)).toBe(true);
    expect(m.worthTrying(arm64, 4)).toBe(false);
    expect(m.worthTrying(hub, 4)).toBe(false);
    m.took(m.ticket(amd64), 4);
    expect(m.worthTrying(amd64, 4)).toBe(false);
    // noarch runs anywhere its channel is.
    m.heard({ kind: "tasks", tasks: [{ arch: "noarch", channel: "default" }] });
    expect([m.worthTrying(amd64, 4), m.worthTrying(arm64, 4), m.worthTrying(hub, 4)]).toEqual([
      true,
      true,
      false,
    ]);
  });

  it("forgets everything on a wake-up without a hint, or after a finish that changed more than capacity", () => {
    const m = new ClaimMemory();
    miss(m, amd64, 4);
    m.heard({ kind: "finished", hostId: 1, weight: 1, only: true });
    expect(m.worthTrying(amd64, 4)).toBe(false);
    m.heard({ kind: "finished", hostId: 1, weight: 1, only: false });
    expect(m.worthTrying(amd64, 4)).toBe(true);
    miss(m, amd64, 4);
    m.heard(undefined);
    expect(m.worthTrying(amd64, 4)).toBe(true);
  });

  it("does not believe a claim's outcome when the kind changed while it ran", () => {
    const m = new ClaimMemory();
    const ticket = m.ticket(amd64);
    m.heard({ kind: "tasks", tasks: [{ arch: "amd64", channel: "default" }] });
    m.missed(ticket, 4);
    expect(m.worthTrying(amd64, 4)).toBe(true);
    // Nor spends a credit on a task that a claim started before may have found.
    miss(m, amd64, 4);
    m.heard({ kind: "tasks", tasks: [{ arch: "amd64", channel: "default" }] });
    const before = m.ticket(amd64);
    m.heard({ kind: "tasks", tasks: [{ arch: "amd64", channel: "default" }] });
    m.took(before, 4);
    m.took(m.ticket(amd64), 4);
    expect(m.worthTrying(amd64, 4)).toBe(true);
  });

  it("spends no credit on a claim by a host with more room than the last miss had", () => {
    const m = new ClaimMemory();
    miss(m, amd64, 1);
    m.heard({ kind: "tasks", tasks: [{ arch: "amd64", channel: "default" }] });
    // This host may have taken an older, heavier task: the new one may still be waiting.
    m.took(m.ticket(amd64), 4);
    expect(m.worthTrying(amd64, 1)).toBe(true);
  });
});
