import type { TaskJson } from "../../src/tasks/types.js";

/** A task as the API shows it, for tests of code that only reads tasks: a free `sleep` by default. */
export function taskJson(over: Partial<TaskJson> = {}): TaskJson {
  return {
    id: 1,
    method: "sleep",
    args: {},
    state: "free",
    waiting: false,
    priority: 20,
    arch: "noarch",
    channel: "default",
    weight: 1,
    parentId: null,
    label: null,
    hostId: null,
    owner: "admin",
    attempts: 0,
    infraFailures: 0,
    leaseEpoch: 0,
    timeout: 7200,
    runAt: "2025-01-01T00:00:00.000Z",
    createdAt: "2025-01-01T00:00:00.000Z",
    startedAt: null,
    completedAt: null,
    result: null,
    error: null,
    ...over,
  };
}
