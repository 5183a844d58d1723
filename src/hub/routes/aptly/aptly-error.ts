import type { FastifyError } from "fastify";
import { KilnError, type ErrorCode } from "../../../errors/catalogue.js";

/**
 * Where Aptly answers with another status than Kiln's catalogue gives the same condition: a
 * taken prefix/distribution and a package conflict are 400 in Aptly's API.
 */
const APTLY_STATUS: Partial<Record<ErrorCode, number>> = {
  PUBLICATION_EXISTS: 400,
  PACKAGE_CONFLICT: 400,
};

/** Anything thrown under the Aptly routes as Aptly's `{"error": "..."}` with its status. */
export function toAptlyError(err: FastifyError | Error): {
  status: number;
  body: { error: string };
  internal: boolean;
} {
  if (err instanceof KilnError) {
    const status = APTLY_STATUS[err.code] ?? err.status;
    return { status, body: { error: err.message }, internal: err.code === "INTERNAL" };
  }
  const fe = err as FastifyError & { validation?: unknown };
  if (fe.validation) return { status: 400, body: { error: fe.message }, internal: false };
  if (fe.code === "FST_REQ_FILE_TOO_LARGE" || fe.code === "FST_ERR_CTP_BODY_TOO_LARGE") {
    return { status: 413, body: { error: "request body too large" }, internal: false };
  }
  const status = typeof fe.statusCode === "number" ? fe.statusCode : 0;
  if (err instanceof SyntaxError || (status >= 400 && status < 500)) {
    return {
      status: status >= 400 && status < 500 ? status : 400,
      body: { error: err.message },
      internal: false,
    };
  }
  return { status: 500, body: { error: "internal error; the hub's log has the details" }, internal: true };
}
