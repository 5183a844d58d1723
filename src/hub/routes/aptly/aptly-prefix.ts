import { KilnError } from "../../../errors/catalogue.js";
import { assertPrefix } from "../../../publish/apply-publication.js";

/**
 * Aptly's URL spelling of a publishing prefix (one path segment): `_` stands for `/`, `__` for a
 * literal `_`, and an optional `storage:` part comes first, so `:.` (and `.`, or nothing) is the
 * root. Kiln publishes to its own tree only, so any storage part is refused.
 */
export function decodeAptlyPrefix(encoded: string): string {
  // Aptly replaces every "_" by "/" and then every "//" by "_"; done left to right in one pass
  // here, which is the same for every input Aptly itself produces.
  let decoded = "";
  for (let i = 0; i < encoded.length; i++) {
    const c = encoded[i];
    if (c === "_" && encoded[i + 1] === "_") {
      decoded += "_";
      i++;
    } else decoded += c === "_" ? "/" : c;
  }
  const colon = decoded.lastIndexOf(":");
  const storage = colon >= 0 ? decoded.slice(0, colon) : "";
  const prefix = (colon >= 0 ? decoded.slice(colon + 1) : decoded) || ".";
  if (storage !== "") {
    throw new KilnError(
      "PUBLISH_STORAGE_UNSUPPORTED",
      `storage "${storage.slice(0, 100)}" is not supported: Kiln publishes to its own tree, served under /apt; use a plain prefix such as ":." or "a_b"`,
      { storage: storage.slice(0, 200) },
    );
  }
  assertPrefix(prefix);
  return prefix;
}

/** The inverse of decodeAptlyPrefix for Kiln prefixes: `.` → `:.`, `a/b_c` → `a_b__c`. */
export function encodeAptlyPrefix(prefix: string): string {
  if (prefix === ".") return ":.";
  return prefix.replace(/_/g, "__").replace(/\//g, "_");
}
