import type { FastifyInstance } from "fastify";
import { KilnError } from "../../../errors/catalogue.js";
import { requireAuth, requireUser } from "../../auth.js";
import type { HubDeps } from "../../deps.js";

/**
 * Aptly's file upload API over Kiln's upload areas (`/api/files/:dir` is `UploadAreas.ensure`).
 * Uploads stream to disk and are capped at the hub's upload limit per file.
 */
export function registerAptlyFileRoutes(api: FastifyInstance, deps: HubDeps): void {
  api.get("/api/files", async (req) => {
    requireAuth(req);
    return deps.uploads.areas();
  });

  api.post<{ Params: { dir: string } }>("/api/files/:dir", async (req, reply) => {
    requireUser(req);
    deps.uploads.areaDir(req.params.dir); // a bad name is a 400 before anything is read
    if (!req.isMultipart())
      throw new KilnError("BAD_REQUEST", "request Content-Type isn't multipart/form-data");
    const { id } = await deps.uploads.ensure(req.params.dir);
    const stored: string[] = [];
    for await (const part of req.parts()) {
      if (part.type !== "file") continue;
      const written = await deps.uploads.writeFile(id, part.filename, part.file, {
        maxBytes: deps.config.uploadLimitBytes,
      });
      stored.push(`${id}/${written.name}`);
    }
    return reply.status(200).send(stored);
  });

  api.get<{ Params: { dir: string } }>("/api/files/:dir", async (req) => {
    requireAuth(req);
    return (await deps.uploads.list(req.params.dir)).map((f) => f.name);
  });

  api.delete<{ Params: { dir: string } }>("/api/files/:dir", async (req) => {
    requireUser(req);
    await deps.uploads.remove(req.params.dir);
    return {};
  });

  api.delete<{ Params: { dir: string; file: string } }>("/api/files/:dir/:file", async (req) => {
    requireUser(req);
    await deps.uploads.removeFile(req.params.dir, req.params.file);
    return {};
  });
}
