import Fastify, {
  LogController,
  type FastifyBaseLogger,
  type FastifyError,
  type FastifyInstance,
} from "fastify";
import { KilnError } from "../errors/catalogue.js";
import { Authenticator } from "./auth.js";
import type { HubDeps } from "./deps.js";
import { OpenApiCollector } from "./openapi.js";
import { createHubMetrics } from "./metrics.js";
import { registerAptRoutes } from "./routes/apt.js";
import { registerMetricsRoutes } from "./routes/metrics.js";
import { registerStatsRoutes } from "./routes/v1/stats.js";
import { registerAptlyRoutes } from "./routes/aptly/register-aptly-routes.js";
import { registerHostRoutes } from "./routes/v1/hosts.js";
import { registerKeyRoutes } from "./routes/v1/key.js";
import { registerMetaRoutes } from "./routes/v1/meta.js";
import { registerTaskRoutes } from "./routes/v1/tasks.js";
import { registerTagRoutes } from "./routes/v1/tags.js";
import { registerTagRepoRoutes } from "./routes/v1/tag-repos.js";
import { registerBuildRoutes } from "./routes/v1/builds.js";
import { registerBuildrootRoutes } from "./routes/v1/buildroots.js";
import { registerChainBuildRoutes } from "./routes/v1/chain-builds.js";
import { registerUserRoutes } from "./routes/v1/users.js";
import { registerRepoRoutes } from "./routes/v1/repos.js";
import { registerGcRoutes } from "./routes/v1/gc.js";
import { registerTokenRoutes } from "./routes/v1/tokens.js";
import { registerWorkerRoutes } from "./routes/v1/worker.js";
import { registerEventRoutes } from "./routes/v1/events.js";
import { registerWebhookRoutes } from "./routes/v1/webhooks.js";
import { registerWebRoutes } from "./routes/web.js";

declare module "fastify" {
  interface FastifySchema {
    summary?: string;
    tags?: string[];
    hide?: boolean;
  }
  interface FastifyInstance {
    kiln: { deps: HubDeps; auth: Authenticator };
  }
}

/** Maps anything thrown in a route to `{ error: { code, message, details } }` with its status. */
function toKilnError(err: FastifyError | Error): KilnError {
  if (err instanceof KilnError) return err;
  const fe = err as FastifyError & { validation?: unknown };
  if (fe.validation) return new KilnError("VALIDATION_FAILED", fe.message);
  switch (fe.code) {
    case "FST_ERR_CTP_INVALID_JSON_BODY":
    case "FST_ERR_CTP_EMPTY_JSON_BODY":
      return new KilnError("INVALID_JSON", fe.message);
    case "FST_ERR_CTP_BODY_TOO_LARGE":
      return new KilnError("PAYLOAD_TOO_LARGE");
    case "FST_ERR_CTP_INVALID_MEDIA_TYPE":
      return new KilnError("BAD_REQUEST", fe.message);
    default:
      break;
  }
  if (err instanceof SyntaxError || fe.statusCode === 400) return new KilnError("INVALID_JSON", err.message);
  return new KilnError("INTERNAL", "internal error; the hub's log has the details");
}

export async function buildApp(deps: HubDeps): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: deps.log as unknown as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: 16 * 1024 * 1024,
    forceCloseConnections: "idle",
    return503OnClosing: true,
  });
  const auth = new Authenticator(deps);
  app.decorate("kiln", { deps, auth });
  app.decorateRequest("principal", null);
  const openapi = new OpenApiCollector();
  app.addHook("onRoute", (route) => openapi.add(route));

  app.setErrorHandler((err: FastifyError, req, reply) => {
    const kerr = toKilnError(err);
    if (kerr.code === "INTERNAL") req.log.error({ err }, "request failed");
    void reply.status(kerr.status).send(kerr.toJSON());
  });
  app.setNotFoundHandler((req, reply) => {
    const kerr = new KilnError("NOT_FOUND", `no route ${req.method} ${req.url.split("?")[0]}`);
    void reply.status(404).send(kerr.toJSON());
  });
  app.addHook("onRequest", auth.hook);
  deps.metrics ??= createHubMetrics(deps.db);
  const httpSeconds = deps.metrics.httpRequestSeconds;
  app.addHook("onResponse", (req, reply, done) => {
    // The route's pattern, not the URL: ids and names would make a series per request.
    const route = req.routeOptions.url ?? "unmatched";
    httpSeconds.observe(
      { method: req.method, route, status: String(reply.statusCode) },
      reply.elapsedTime / 1000,
    );
    done();
  });

  registerMetaRoutes(app, () => openapi.document());
  registerMetricsRoutes(app, deps.metrics);
  registerStatsRoutes(app);
  registerTaskRoutes(app);
  registerWorkerRoutes(app);
  registerHostRoutes(app);
  registerTokenRoutes(app);
  registerRepoRoutes(app);
  registerGcRoutes(app);
  registerTagRoutes(app);
  registerTagRepoRoutes(app);
  registerBuildRoutes(app);
  registerBuildrootRoutes(app);
  registerChainBuildRoutes(app);
  registerUserRoutes(app);
  registerKeyRoutes(app);
  registerEventRoutes(app);
  registerWebhookRoutes(app);
  registerWebRoutes(app);
  registerAptRoutes(app);
  await registerAptlyRoutes(app);
  await app.ready();
  return app;
}
