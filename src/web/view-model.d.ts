// Types of view-model.js, for the tests that import it (the browser needs no compiling).

export interface GraphNode {
  name: string;
  layer: number;
  x: number;
  y: number;
}
export interface GraphEdge {
  from: string;
  to: string;
  [key: string]: unknown;
}
export function layoutGraph<E extends GraphEdge>(
  nodeNames: string[],
  edges: E[],
  opts?: { layerGap?: number; nodeGap?: number; margin?: number },
): { width: number; height: number; nodes: GraphNode[]; edges: (E & { a: GraphNode; b: GraphNode })[] };

interface TimedTask {
  createdAt: string;
  startedAt: string | null;
  completedAt: string | null;
}
export function timelineRows<T extends TimedTask>(
  tasks: T[],
  now: number,
): {
  start: number;
  end: number;
  anyStarted: boolean;
  rows: { task: T; x0: number | null; x1: number | null }[];
};

export function flattenTree<T extends { id: number }>(
  root: T,
  children: Map<number, T[]>,
): { task: T; depth: number }[];

export function summarizeQueue(tasks: { state: string; arch: string | null; channel: string }[]): {
  byState: [string, number][];
  byArch: [string, number][];
  byChannel: [string, number][];
};

export function firstErrorLine(lines: string[]): number;
export function searchLines(lines: string[], query: string): number[];
export function failingLine(lines: string[]): number;

export function sourcesLine(
  hub: string,
  pub: { prefix: string; distribution: string; components: readonly string[]; signed: boolean },
): string;
export function keyringCommand(hub: string): string;

export function permissions(me: { role: string; user: string | null } | null): {
  admin: boolean;
  user: boolean;
  controlTask(task: { owner: string }): boolean;
};

export function niceMax(v: number): number;
export function chartLine(
  values: (number | null | undefined)[],
  opts: { width: number; height: number; max?: number },
): { max: number; points: { i: number; value: number; x: number; y: number }[]; paths: string[] };
export function formatSeconds(sec: number | null | undefined): string;

interface EventLike {
  id: number;
  type: string;
  data: Record<string, unknown>;
}
export function tagHistory<E extends EventLike>(events: E[], tag: string): (E & { change: string })[];
