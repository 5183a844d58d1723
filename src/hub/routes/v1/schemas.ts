/** JSON schemas shared by routes; they validate requests and feed the OpenAPI document. */
export const idParams = {
  type: "object",
  properties: { id: { type: "integer", minimum: 1 } },
  required: ["id"],
} as const;

export const nameParams = {
  type: "object",
  properties: { name: { type: "string", minLength: 1, maxLength: 128 } },
  required: ["name"],
} as const;

export const epochBody = {
  type: "object",
  properties: { epoch: { type: "integer", minimum: 0 } },
  required: ["epoch"],
} as const;

const nullableString = { type: ["string", "null"] } as const;

export const taskSchema = {
  type: "object",
  additionalProperties: true,
  properties: {
    id: { type: "integer" },
    method: { type: "string" },
    args: {},
    state: { type: "string", enum: ["free", "assigned", "open", "closed", "failed", "canceled"] },
    waiting: { type: "boolean" },
    priority: { type: "integer" },
    arch: { type: "string" },
    channel: { type: "string" },
    weight: { type: "number" },
    parentId: { type: ["integer", "null"] },
    label: nullableString,
    hostId: { type: ["integer", "null"] },
    owner: { type: "string" },
    attempts: { type: "integer" },
    infraFailures: { type: "integer" },
    leaseEpoch: { type: "integer" },
    timeout: { type: "integer" },
    runAt: { type: "string" },
    createdAt: { type: "string" },
    startedAt: nullableString,
    completedAt: nullableString,
    result: {},
    error: {},
  },
} as const;

export const hostSchema = {
  type: "object",
  additionalProperties: true,
  properties: {
    id: { type: "integer" },
    name: { type: "string" },
    arches: { type: "array", items: { type: "string" } },
    channels: { type: "array", items: { type: "string" } },
    capacity: { type: "number" },
    load: { type: "number" },
    enabled: { type: "boolean" },
    ready: { type: "boolean" },
    description: nullableString,
    reported: {},
    lastSeenAt: nullableString,
    createdAt: { type: "string" },
  },
} as const;

export const lockSchema = {
  type: "object",
  properties: { resource: { type: "string" }, exclusive: { type: "boolean" } },
  required: ["resource"],
} as const;

export const createTaskBody = {
  type: "object",
  properties: {
    method: { type: "string" },
    args: {},
    priority: {},
    arch: { type: "string" },
    channel: { type: "string" },
    weight: { type: "number" },
    timeout: { type: "integer" },
    locks: { type: "array", items: lockSchema, maxItems: 32 },
  },
  required: ["method"],
} as const;
