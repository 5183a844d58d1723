import { KilnError } from "../errors/catalogue.js";

/** The stable codes this folder reports (all in the catalogue). */
export type DebianErrorCode =
  | "INVALID_VERSION"
  | "INVALID_PACKAGE_NAME"
  | "INVALID_ARCHITECTURE"
  | "CONTROL_INVALID"
  | "CHANGELOG_INVALID"
  | "DEPENDS_INVALID"
  | "DEB_INVALID"
  | "ARCHIVE_INVALID"
  | "ARCHIVE_UNSAFE"
  | "ARCHIVE_TOO_LARGE";

export function debianError(
  code: DebianErrorCode,
  message: string,
  details?: Record<string, unknown>,
): KilnError {
  return new KilnError(code, message, details);
}

/** ARCHIVE_TOO_LARGE for a stream that decompresses past `limit` bytes (a bomb, or just too big). */
export function decompressionLimitError(name: string, limit: number): KilnError {
  return debianError(
    "ARCHIVE_TOO_LARGE",
    `${name} decompresses to more than ${limit} bytes; refused (decompression limit)`,
    { limit },
  );
}

/** The Debian code of an error made by `debianError()` (or by the catalogue once it has them). */
export function debianErrorCode(err: unknown): string | undefined {
  if (!(err instanceof KilnError)) return undefined;
  const reason = err.details?.reason;
  return typeof reason === "string" ? reason : err.code;
}

/** Shows untrusted text in an error message: quoted, escaped and cut short. */
export function quote(text: string, max = 80): string {
  const cut = text.length > max ? `${text.slice(0, max)}…` : text;
  return JSON.stringify(cut);
}
