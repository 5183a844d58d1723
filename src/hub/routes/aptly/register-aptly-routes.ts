import multipart from "@fastify/multipart";
import type { FastifyError, FastifyInstance } from "fastify";
import { VERSION } from "../../../version.js";
import type { HubDeps } from "../../deps.js";
import { registerAptlyFileRoutes } from "./aptly-files.js";
import { APTLY_COMPAT_VERSION } from "./aptly-json.js";
import { toAptlyError } from "./aptly-error.js";
import { registerAptlyPublishRoutes } from "./aptly-publish.js";
import { registerAptlyRepoRoutes } from "./aptly-repos.js";
import { registerAptlySnapshotRoutes } from "./aptly-snapshots.js";
import { registerAptlyTaskRoutes } from "./aptly-tasks.js";

/**
 * The Aptly 1.6-compatible API under /api (files, repos, snapshots, publish, tasks, version),
 * for scripts and clients written for Aptly. Its own scope: Aptly's `{"error": "..."}` bodies,
 * multipart uploads, and the `aptly` route flag that lets `aptly_anonymous` serve it tokenless.
 */
export async function registerAptlyRoutes(app: FastifyInstance): Promise<void> {
  const { deps } = app.kiln as { deps: HubDeps };
  await app.register(async (api) => {
    api.addHook("onRoute", (route) => {
      route.config = { ...(route.config ?? {}), aptly: true };
    });
    api.setErrorHandler((err: FastifyError, req, reply) => {
      const { status, body, internal } = toAptlyError(err);
      if (internal) req.log.error({ err }, "aptly request failed");
      void reply.status(status).send(body);
    });
    // Files go straight to disk; the limit is the hub's per-file upload limit (+1 byte so that
    // the upload area's own check, which cleans up, is the one that trips).
    await api.register(multipart, {
      limits: { fileSize: deps.config.uploadLimitBytes + 1, files: 1000, fieldSize: 64 * 1024 },
    });

    // Open like Kiln's own /api/v1/version: clients probe it before they authenticate.
    api.get("/api/version", () => ({ Version: APTLY_COMPAT_VERSION, Kiln: VERSION }));
    registerAptlyFileRoutes(api, deps);
    registerAptlyRepoRoutes(api, deps);
    registerAptlySnapshotRoutes(api, deps);
    registerAptlyPublishRoutes(api, deps);
    registerAptlyTaskRoutes(api, deps);
  });
}
