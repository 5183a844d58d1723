import type { RouteOptions } from "fastify";
import { VERSION } from "../version.js";

interface Operation {
  summary?: string;
  tags?: string[];
  parameters?: unknown[];
  requestBody?: unknown;
  responses: Record<string, unknown>;
}

/** Builds the OpenAPI 3.1 document from the routes' own JSON schemas, so it cannot drift. */
export class OpenApiCollector {
  private readonly paths: Record<string, Record<string, Operation>> = {};

  add(route: RouteOptions): void {
    if (!route.url.startsWith("/api/v1") && route.url !== "/healthz") return;
    const schema = (route.schema ?? {}) as {
      summary?: string;
      tags?: string[];
      body?: unknown;
      querystring?: { properties?: Record<string, unknown> };
      params?: { properties?: Record<string, unknown> };
      response?: Record<string, unknown>;
      hide?: boolean;
    };
    if (schema.hide) return;
    const path = route.url.replace(/:([A-Za-z_]+)/g, "{$1}");
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    for (const method of methods) {
      if (method === "HEAD") continue;
      const parameters = [
        ...Object.entries(schema.params?.properties ?? {}).map(([name, s]) => ({
          name,
          in: "path",
          required: true,
          schema: s,
        })),
        ...Object.entries(schema.querystring?.properties ?? {}).map(([name, s]) => ({
          name,
          in: "query",
          schema: s,
        })),
      ];
      const responses: Record<string, unknown> = {};
      for (const [code, s] of Object.entries(schema.response ?? { 200: {} })) {
        responses[code] = {
          description: code.startsWith("2") ? "success" : "error",
          content: { "application/json": { schema: s } },
        };
      }
      responses.default = {
        description: "error",
        content: { "application/json": { schema: { $ref: "#/components/schemas/Error" } } },
      };
      const op: Operation = { responses };
      if (schema.summary) op.summary = schema.summary;
      if (schema.tags) op.tags = schema.tags;
      if (parameters.length > 0) op.parameters = parameters;
      if (schema.body) op.requestBody = { content: { "application/json": { schema: schema.body } } };
      (this.paths[path] ??= {})[method.toLowerCase()] = op;
    }
  }

  document(): unknown {
    return {
      openapi: "3.1.0",
      info: { title: "Kiln native API", version: VERSION },
      components: {
        securitySchemes: { bearer: { type: "http", scheme: "bearer" } },
        schemas: {
          Error: {
            type: "object",
            properties: {
              error: {
                type: "object",
                properties: {
                  code: { type: "string" },
                  message: { type: "string" },
                  details: { type: "object" },
                },
                required: ["code", "message"],
              },
            },
          },
        },
      },
      security: [{ bearer: [] }],
      paths: this.paths,
    };
  }
}
