/**
 * The error catalogue: every error Kiln reports has a stable code, an HTTP status and a CLI
 * exit code. docs/errors.md lists the same codes; a test fails when the two disagree.
 */

export interface ErrorSpec {
  status: number;
  exit: number;
  message: string;
}

// Exit codes: 1 generic failure, 2 usage, 3 not found, 4 conflict, 5 auth, 6 unavailable.
export const ERRORS = {
  BAD_REQUEST: { status: 400, exit: 2, message: "The request is malformed" },
  INVALID_JSON: { status: 400, exit: 2, message: "The request body is not valid JSON" },
  VALIDATION_FAILED: { status: 400, exit: 2, message: "The request does not match the expected shape" },
  UNKNOWN_METHOD: { status: 400, exit: 2, message: "No such task method" },
  INVALID_PRIORITY: { status: 400, exit: 2, message: "Priority must be an integer from 0 to 100" },
  INVALID_NAME: { status: 400, exit: 2, message: "The name is not allowed" },
  INVALID_LOCK: { status: 400, exit: 2, message: "A resource lock is malformed" },
  INVALID_VERSION: { status: 400, exit: 2, message: "The version is not a valid Debian version" },
  INVALID_PACKAGE_NAME: { status: 400, exit: 2, message: "The package name is not allowed by Debian policy" },
  INVALID_ARCHITECTURE: { status: 400, exit: 2, message: "The architecture name is not valid" },
  CONTROL_INVALID: { status: 400, exit: 2, message: "The control data is malformed" },
  CHANGELOG_INVALID: { status: 400, exit: 2, message: "debian/changelog cannot be parsed" },
  DEPENDS_INVALID: {
    status: 400,
    exit: 2,
    message: "A relationship field (Depends, Build-Depends…) is malformed",
  },
  QUERY_INVALID: { status: 400, exit: 2, message: "The package query cannot be parsed" },
  RETRY_POLICY_INVALID: {
    status: 400,
    exit: 2,
    message: "The retry policy is malformed: expected a count and exit:CODE, signal:NAME or infra",
  },
  DURATION_INVALID: { status: 400, exit: 2, message: "The duration is not a number with s, m, h, d or w" },
  DEB_INVALID: { status: 400, exit: 2, message: "The file is not a valid Debian package" },
  ARCHIVE_INVALID: { status: 400, exit: 2, message: "The archive is corrupt" },
  ARCHIVE_UNSAFE: {
    status: 400,
    exit: 2,
    message: "The archive has an absolute path, a .. component or a link leaving it",
  },
  ARCHIVE_TOO_LARGE: {
    status: 413,
    exit: 1,
    message: "The archive is over a size, entry-count or decompression limit",
  },
  KEY_INVALID: {
    status: 400,
    exit: 2,
    message: "The key is not one passphrase-less OpenPGP secret key that can sign",
  },
  KEY_UNAVAILABLE: {
    status: 500,
    exit: 1,
    message: "The archive signing key cannot be used: gpg failed or the key is missing",
  },
  APT_PATH_INVALID: { status: 400, exit: 2, message: "The repository path is not allowed" },
  RANGE_NOT_SATISFIABLE: { status: 416, exit: 1, message: "The requested byte range is not in the file" },
  INHERITANCE_SELF: { status: 400, exit: 2, message: "A tag cannot inherit from itself" },
  INHERITANCE_INVALID: { status: 400, exit: 2, message: "The inheritance link is invalid" },
  INHERITANCE_BAD_FILTER: {
    status: 400,
    exit: 2,
    message: "The package filter is not a valid regular expression",
  },
  INHERITANCE_PRIORITY_TAKEN: {
    status: 409,
    exit: 4,
    message: "Another parent link of this tag has that priority",
  },
  INHERITANCE_DUPLICATE_PARENT: {
    status: 409,
    exit: 4,
    message: "The tag already inherits from that parent",
  },
  // Events and webhooks.
  EVENT_TYPE_UNKNOWN: { status: 400, exit: 2, message: "No such event type; see `kiln events --help`" },
  WEBHOOK_URL_INVALID: { status: 400, exit: 2, message: "The webhook URL is not an absolute http(s) URL" },
  WEBHOOK_ADDRESS_FORBIDDEN: {
    status: 400,
    exit: 2,
    message:
      "The webhook's host is a loopback, private, link-local or metadata address; set [webhooks] allow_private to allow it",
  },
  WEBHOOK_NOT_FOUND: { status: 404, exit: 3, message: "No such webhook" },
  POLICY_SYNTAX: { status: 500, exit: 2, message: "A policy in the configuration cannot be parsed" },
  POLICY_ERROR: { status: 500, exit: 1, message: "A policy could not be evaluated" },
  POLICY_DENIED: { status: 403, exit: 5, message: "Refused by policy" },
  AUTH_REQUIRED: { status: 401, exit: 5, message: "A token is required: pass --token or set KILN_TOKEN" },
  TOKEN_INVALID: { status: 401, exit: 5, message: "The token is unknown or revoked" },
  ADMIN_REQUIRED: { status: 403, exit: 5, message: "This call needs an admin token" },
  HOST_REQUIRED: { status: 403, exit: 5, message: "This call needs a host token" },
  HOST_MISMATCH: { status: 403, exit: 5, message: "A host token may act only for its own host" },
  FORBIDDEN: { status: 403, exit: 5, message: "Not permitted" },
  NOT_FOUND: { status: 404, exit: 3, message: "No such resource" },
  TASK_NOT_FOUND: { status: 404, exit: 3, message: "No such task" },
  HOST_NOT_FOUND: { status: 404, exit: 3, message: "No such host" },
  TOKEN_NOT_FOUND: { status: 404, exit: 3, message: "No such token" },
  TAG_NOT_FOUND: { status: 404, exit: 3, message: "No such tag" },
  TARGET_NOT_FOUND: { status: 404, exit: 3, message: "No such build target" },
  BUILD_NOT_FOUND: { status: 404, exit: 3, message: "No such build" },
  UPLOAD_NOT_FOUND: { status: 404, exit: 3, message: "No such upload area or file" },
  ARTIFACT_NOT_FOUND: { status: 404, exit: 3, message: "No such artifact" },
  TAG_EXISTS: { status: 409, exit: 4, message: "A tag with that name already exists" },
  TARGET_EXISTS: { status: 409, exit: 4, message: "A target with that name already exists" },
  TAG_LOCKED: { status: 409, exit: 4, message: "The tag is locked; an admin may unlock it or use --force" },
  TAG_IN_USE: { status: 409, exit: 4, message: "The tag is still used by targets or child tags" },
  TAG_REPO_NOT_FOUND: {
    status: 404,
    exit: 3,
    message: "The tag has no ready repository yet; `kiln tag regen-repo TAG` makes one",
  },
  TAG_REPO_FAILED: {
    status: 500,
    exit: 1,
    message: "Making the tag's repository failed; see the task's log",
  },
  TAG_REPO_TIMEOUT: {
    status: 504,
    exit: 1,
    message: "No ready repository of the tag held the builds before the wait timed out",
  },
  BUILD_EXISTS: {
    status: 409,
    exit: 4,
    message: "That source and version was already built; use --scratch to build it again",
  },
  CHAIN_TARGET_UNUSABLE: {
    status: 400,
    exit: 2,
    message: "The target cannot chain builds: its build tag does not inherit its destination tag",
  },
  CHAIN_DUPLICATE_BUILD: {
    status: 400,
    exit: 2,
    message: "The chain names the same source and version more than once",
  },
  BUILD_NOT_COMPLETE: { status: 409, exit: 4, message: "Only a complete, non-scratch build can be tagged" },
  BUILD_ALREADY_TAGGED: { status: 409, exit: 4, message: "The build is already in that tag" },
  BUILD_NOT_TAGGED: { status: 409, exit: 4, message: "The build is not in that tag" },
  PACKAGE_NOT_LISTED: {
    status: 403,
    exit: 5,
    message: "The package is not in the tag's package list; add it with `kiln package add`",
  },
  PACKAGE_BLOCKED: { status: 403, exit: 5, message: "The package is blocked in the tag" },
  SOURCE_INVALID: {
    status: 400,
    exit: 2,
    message: "The source is not a Debian source package (no debian/ directory?)",
  },
  NO_ARCHES: {
    status: 400,
    exit: 2,
    message: "No architecture to build: the build tag's arches and the package's do not meet",
  },
  // Buildroot bases.
  INVALID_SUITE: { status: 400, exit: 2, message: "The suite is not a Debian suite or codename" },
  INVALID_MIRROR: { status: 400, exit: 2, message: "The mirror is not an http(s) URL" },
  BUILDROOT_NOT_FOUND: { status: 404, exit: 3, message: "No such buildroot base; see `kiln buildroot list`" },
  BUILDROOT_EXISTS: {
    status: 409,
    exit: 4,
    message: "A buildroot base of that name exists; delete it first or pick another name",
  },
  BUILDROOT_NOT_READY: {
    status: 409,
    exit: 4,
    message: "The buildroot base is still being made, or making it failed",
  },
  BUILDROOT_IN_USE: {
    status: 409,
    exit: 4,
    message: "Tags name the buildroot base; point them elsewhere or delete with --force",
  },
  BUILDROOT_CREATE_FAILED: {
    status: 500,
    exit: 1,
    message: "Making the buildroot base failed (debootstrap's explanation is in the message)",
  },
  BUILD_DEPS_MISSING: { status: 500, exit: 1, message: "Build dependencies are missing" },
  BUILD_FAILED: { status: 500, exit: 1, message: "The build failed; see its log" },
  SANDBOX_UNAVAILABLE: {
    status: 500,
    exit: 1,
    message: "The build sandbox (bubblewrap) is not available on this worker",
  },
  HOST_EXISTS: { status: 409, exit: 4, message: "A host with that name already exists" },
  HOST_DISABLED: { status: 409, exit: 4, message: "The host is disabled" },
  LEASE_STALE: {
    status: 409,
    exit: 4,
    message: "The task's lease has moved on: another attempt owns it now; discard this result",
  },
  TASK_NOT_RUNNING: { status: 409, exit: 4, message: "The task is not running" },
  TASK_NOT_RETRYABLE: { status: 409, exit: 4, message: "Only a failed or canceled task can be retried" },
  TASK_FINISHED: { status: 409, exit: 4, message: "The task has already finished" },
  LOG_GAP: { status: 409, exit: 4, message: "A log chunk does not follow the previous one" },
  LOG_TOO_LARGE: { status: 413, exit: 1, message: "The task's log is over its size limit" },
  PAYLOAD_TOO_LARGE: { status: 413, exit: 1, message: "The request body is too large" },
  TASK_TIMEOUT: { status: 500, exit: 1, message: "The task timed out" },
  TASK_FAILED: { status: 500, exit: 1, message: "The task failed" },
  SUBTASK_FAILED: { status: 500, exit: 1, message: "A subtask failed" },
  TASK_CANCELED: { status: 409, exit: 4, message: "The task was canceled" },
  HOST_LOST: { status: 500, exit: 1, message: "The task lost its host too many times" },
  SHUTTING_DOWN: { status: 503, exit: 6, message: "The hub is shutting down; try again shortly" },
  HUB_UNREACHABLE: {
    status: 503,
    exit: 6,
    message: "Cannot reach the hub: is `kiln serve` running? Check --hub or KILN_HUB",
  },
  CONFIG_INVALID: { status: 500, exit: 2, message: "The configuration is invalid" },
  // Repositories, snapshots and publishing.
  REPO_NOT_FOUND: { status: 404, exit: 3, message: "No such local repository" },
  REPO_EXISTS: { status: 409, exit: 4, message: "A local repository of that name exists" },
  REPO_PUBLISHED: {
    status: 409,
    exit: 4,
    message: "The repository is published; drop the publication first or force",
  },
  SNAPSHOT_NOT_FOUND: { status: 404, exit: 3, message: "No such snapshot" },
  SNAPSHOT_EXISTS: {
    status: 409,
    exit: 4,
    message: "A snapshot of that name exists; snapshots never change",
  },
  SNAPSHOT_PUBLISHED: {
    status: 409,
    exit: 4,
    message: "The snapshot is published; switch or drop the publication first",
  },
  PACKAGE_NOT_FOUND: { status: 404, exit: 3, message: "No such package" },
  DSC_FILE_MISSING: { status: 400, exit: 2, message: "A file the .dsc lists was not uploaded with it" },
  CHECKSUM_MISMATCH: {
    status: 400,
    exit: 2,
    message: "A file does not match the size or checksum listed for it",
  },
  PACKAGE_CONFLICT: {
    status: 409,
    exit: 4,
    message: "The repository has another package of the same name, version and architecture",
  },
  PUBLICATION_NOT_FOUND: { status: 404, exit: 3, message: "No such publication" },
  PUBLICATION_EXISTS: { status: 409, exit: 4, message: "That prefix and distribution are already published" },
  PUBLICATION_EMPTY: { status: 400, exit: 2, message: "There is nothing to publish" },
  GENERATION_NOT_FOUND: { status: 404, exit: 3, message: "That publication generation is not on disk" },
  POOL_FILE_CONFLICT: {
    status: 409,
    exit: 4,
    message: "A pool file of the same name and different content exists",
  },
  PUBLISH_VERIFY_FAILED: {
    status: 500,
    exit: 1,
    message: "A staged file does not match the Release it would be served with",
  },
  INVALID_PREFIX: { status: 400, exit: 2, message: "The publishing prefix is not allowed" },
  PUBLISH_STORAGE_UNSUPPORTED: {
    status: 400,
    exit: 2,
    message: "Kiln publishes only to its own tree; Aptly storage prefixes (s3:, filesystem:…) are refused",
  },
  PUBLISH_NOT_SERVED: {
    status: 504,
    exit: 1,
    message: "The publication was made, but the hub did not serve its new Release in time",
  },
  INTERNAL: { status: 500, exit: 1, message: "Internal error" },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERRORS;

export function isErrorCode(code: string): code is ErrorCode {
  return Object.hasOwn(ERRORS, code);
}

/** An error with a stable code; the HTTP layer and the CLI both render it. */
export class KilnError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message?: string, details?: Record<string, unknown>) {
    super(message ?? ERRORS[code].message);
    this.name = "KilnError";
    this.code = code;
    this.details = details;
  }

  get status(): number {
    return ERRORS[this.code].status;
  }

  get exitCode(): number {
    return ERRORS[this.code].exit;
  }

  toJSON(): { error: { code: string; message: string; details?: Record<string, unknown> } } {
    return {
      error: {
        code: this.code,
        message: this.message,
        ...(this.details ? { details: this.details } : {}),
      },
    };
  }
}
