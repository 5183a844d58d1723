import { KilnError } from "../errors/catalogue.js";
import { registerMethod, type MethodSpec } from "../tasks/methods.js";

function objectArgs(name: string, args: unknown): Record<string, unknown> {
  if (typeof args !== "object" || args === null || Array.isArray(args)) {
    throw new KilnError("VALIDATION_FAILED", `${name}: args must be an object`);
  }
  return args as Record<string, unknown>;
}

/** The build methods: created by the hub (POST /builds), never directly by users. */
const hubOnly = (name: string, channel: string, weight: number): MethodSpec => ({
  name,
  channel,
  arch: "noarch",
  weight,
  adminOnly: false,
  userCreatable: false,
  validateArgs: (args) => objectArgs(name, args),
});

registerMethod(hubOnly("build", "hub", 0.2));
registerMethod(hubOnly("chainBuild", "hub", 0.1));
registerMethod(hubOnly("tagBuild", "hub", 0.1));
registerMethod(hubOnly("buildSrc", "default", 1));
registerMethod(hubOnly("buildArch", "default", 1.5));
// Made by POST /buildroots on a worker with the `buildroot` channel; arch is the base's, set there.
registerMethod(hubOnly("createBuildroot", "buildroot", 1));
