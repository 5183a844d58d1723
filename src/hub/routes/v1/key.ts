import type { FastifyInstance } from "fastify";
import type { ArchiveKeyJson } from "../../../client/types.js";
import type { ArchiveKeyInfo } from "../../../publish/archive-key.js";
import { requireAdmin, requireAuth } from "../../auth.js";

const archiveKeySchema = {
  type: "object",
  properties: {
    fingerprint: { type: "string" },
    uid: { type: "string" },
    algorithm: { type: "string" },
    created: { type: "string", format: "date-time" },
    publicKey: { type: "string", description: "the armored public key, as apt's keyring takes it" },
  },
  required: ["fingerprint", "uid", "algorithm", "created", "publicKey"],
} as const;

function toJson(info: ArchiveKeyInfo): ArchiveKeyJson {
  return {
    fingerprint: info.fingerprint,
    uid: info.uid,
    algorithm: info.algorithm,
    created: info.created,
    publicKey: info.publicKeyArmored,
  };
}

/** The archive signing key: anyone with a token may read it; an admin may replace it. */
export function registerKeyRoutes(app: FastifyInstance): void {
  const { deps } = app.kiln;
  const tags = ["key"];

  app.get(
    "/api/v1/key",
    { schema: { summary: "The archive signing key", tags, response: { 200: archiveKeySchema } } },
    async (req) => {
      requireAuth(req);
      return toJson(await deps.archiveKey.info());
    },
  );

  app.post<{ Body: { secretKey: string } }>(
    "/api/v1/key",
    {
      schema: {
        summary: "Replace the archive signing key by an imported secret key (admin)",
        tags,
        body: {
          type: "object",
          properties: {
            secretKey: {
              type: "string",
              minLength: 1,
              maxLength: 1024 * 1024,
              description: "one armored OpenPGP secret key without a passphrase",
            },
          },
          required: ["secretKey"],
          additionalProperties: false,
        },
        response: { 200: archiveKeySchema },
      },
    },
    async (req) => {
      const p = requireAdmin(req);
      const previous = await deps.archiveKey.fingerprint();
      const info = await deps.archiveKey.importSecretKey(req.body.secretKey);
      req.log.info(
        { previous, fingerprint: info.fingerprint, by: p.user?.name },
        "archive key replaced by an imported key",
      );
      return toJson(info);
    },
  );
}
