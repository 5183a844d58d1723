import type { Logger } from "pino";
import type { EngineConfig } from "../config/config.js";
import type { Db } from "../db/database.js";
import type { TaskObserver } from "./task-attempts.js";
import type { Waker } from "./wake.js";

export interface Clock {
  now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };

/** What the task engine's operations need; wired once by the hub. */
export interface EngineDeps {
  db: Db;
  clock: Clock;
  engine: EngineConfig;
  wake: Waker;
  log: Logger;
  /** Told when a task attempt ends (the hub's metrics); optional so tests need not wire one. */
  observer?: TaskObserver;
}

/** How long a lease lasts without a heartbeat: the missed-beat allowance. */
export function leaseMs(engine: EngineConfig): number {
  return engine.heartbeatInterval * engine.missedHeartbeats * 1000;
}
