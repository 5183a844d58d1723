import type { FastifyInstance, FastifyRequest } from "fastify";
import { requireAuth } from "../auth.js";
import type { HubMetrics } from "../metrics.js";

function fromLoopback(req: FastifyRequest): boolean {
  // The socket's own peer, not a forwarded header: a proxy on this machine is not a local scraper.
  const addr = req.socket.remoteAddress ?? "";
  return addr === "::1" || /^(::ffff:)?127\./.test(addr);
}

/**
 * `GET /metrics` in Prometheus text. Who may read it without a token is `metrics_public`:
 * anyone (true), scrapers on this machine (unset, the default), or no one (false); any valid
 * token (Prometheus' `authorization` / `bearer_token_file`) always works.
 */
export function registerMetricsRoutes(app: FastifyInstance, metrics: HubMetrics): void {
  const { deps } = app.kiln;
  app.get(
    "/metrics",
    { schema: { summary: "Prometheus metrics (text format)", tags: ["meta"] } },
    async (req, reply) => {
      const policy = deps.config.metricsPublic ?? "loopback";
      const open = policy === "always" || (policy === "loopback" && fromLoopback(req));
      if (!open) requireAuth(req);
      const { contentType, body } = await metrics.scrape();
      return reply.header("content-type", contentType).send(body);
    },
  );
}
