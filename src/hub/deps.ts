import type { EventEmitter } from "node:events";
import type { BlobStore } from "../artifacts/blob-store.js";
import type { UploadAreas } from "../artifacts/upload-area.js";
import type { Policy } from "../builds/policy.js";
import type { ArchiveKey } from "../publish/archive-key.js";
import type { HubConfig } from "../config/config.js";
import type { HubMetrics } from "./metrics.js";
import type { EngineDeps } from "../tasks/deps.js";
import type { Dispatcher } from "../tasks/dispatcher.js";

/** Everything the hub's routes and handlers need, wired once in server.ts (or by a test). */
export interface HubDeps extends EngineDeps {
  config: HubConfig;
  dispatcher: Dispatcher;
  /** Emits `log:<taskId>` when a chunk is appended, so followers need not poll. */
  logEvents: EventEmitter;
  /** Set when the hub starts shutting down: new long polls and streams end at once. */
  lifecycle: { closing: boolean; onClose: Set<() => void> };
  blobs: BlobStore;
  uploads: UploadAreas;
  /** Compiled at start, so a broken policy stops the hub with its line number. */
  policies: Record<string, Policy>;
  /** The OpenPGP key that signs publications (`<data>/keys/gnupg`). */
  archiveKey: ArchiveKey;
  /** Prometheus metrics; buildApp makes a registry of its own when none is given. */
  metrics?: HubMetrics;
}
