import { KilnError } from "../errors/catalogue.js";

/** What the engine knows of a task method: where it runs and who may start it. */
export interface MethodSpec {
  name: string;
  /** Channel tasks of this method are queued on unless the caller names another. */
  channel: string;
  arch: string;
  weight: number;
  adminOnly: boolean;
  /** May a user create it through POST /tasks, or only the hub itself (as a subtask)? */
  userCreatable: boolean;
  validateArgs(args: unknown): Record<string, unknown>;
}

function objectArgs(args: unknown): Record<string, unknown> {
  if (args === undefined || args === null) return {};
  if (typeof args !== "object" || Array.isArray(args)) {
    throw new KilnError("VALIDATION_FAILED", "args must be an object");
  }
  return args as Record<string, unknown>;
}

const sleep: MethodSpec = {
  name: "sleep",
  channel: "default",
  arch: "noarch",
  weight: 1,
  adminOnly: true,
  userCreatable: true,
  validateArgs(raw) {
    const args = objectArgs(raw);
    const seconds = args.seconds;
    if (typeof seconds !== "number" || !Number.isFinite(seconds) || seconds < 0 || seconds > 86400) {
      throw new KilnError("VALIDATION_FAILED", "sleep: seconds must be a number from 0 to 86400");
    }
    if (args.fail !== undefined && typeof args.fail !== "boolean") {
      throw new KilnError("VALIDATION_FAILED", "sleep: fail must be true or false");
    }
    return { seconds, fail: args.fail === true };
  },
};

/**
 * Hub-side: runs its `tasks` as subtasks in parallel and closes when all closed; one failing
 * cancels the rest. The pattern every orchestration method (build, chain-build) follows.
 */
const group: MethodSpec = {
  name: "group",
  channel: "hub",
  arch: "noarch",
  weight: 0.1,
  adminOnly: true,
  userCreatable: true,
  validateArgs(raw) {
    const args = objectArgs(raw);
    const tasks = args.tasks;
    if (!Array.isArray(tasks) || tasks.length === 0 || tasks.length > 1000) {
      throw new KilnError("VALIDATION_FAILED", "group: tasks must be a list of 1 to 1000 subtasks");
    }
    for (const t of tasks) {
      const spec = objectArgs(t);
      if (typeof spec.method !== "string") {
        throw new KilnError("VALIDATION_FAILED", "group: every subtask needs a method");
      }
      const method = getMethod(spec.method);
      method.validateArgs(spec.args);
    }
    return { tasks };
  },
};

const METHODS = new Map<string, MethodSpec>([
  [sleep.name, sleep],
  [group.name, group],
]);

/** Later modules (builds, publishing) add their methods here at import time. */
export function registerMethod(spec: MethodSpec): void {
  METHODS.set(spec.name, spec);
}

export function getMethod(name: string): MethodSpec {
  const spec = METHODS.get(name);
  if (!spec) {
    throw new KilnError("UNKNOWN_METHOD", `no task method named "${name}"`, {
      known: [...METHODS.keys()].sort(),
    });
  }
  return spec;
}

export function listMethods(): string[] {
  return [...METHODS.keys()].sort();
}
