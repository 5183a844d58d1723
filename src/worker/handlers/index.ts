import type { HandlerMap } from "../handler.js";
import { buildArchHandler } from "./build-arch.js";
import { buildSrcHandler } from "./build-src.js";
import { createBuildrootHandler } from "./create-buildroot.js";
import { sleepHandler } from "./sleep.js";

/** The methods every worker runs (the hub's embedded worker adds its own on top). */
export function defaultWorkerHandlers(): HandlerMap {
  return new Map([
    ["sleep", sleepHandler],
    ["buildSrc", buildSrcHandler],
    ["buildArch", buildArchHandler],
    ["createBuildroot", createBuildrootHandler],
  ]);
}
