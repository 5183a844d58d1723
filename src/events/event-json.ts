/** The JSON shapes of events, webhooks and deliveries, shared by the hub, the client and the CLI. */

export interface EventJson {
  id: number;
  type: string;
  actor: string | null;
  data: Record<string, unknown>;
  createdAt: string;
}

export type WebhookFormat = "json" | "slack" | "discord";

export interface WebhookJson {
  id: number;
  url: string;
  events: string[];
  format: WebhookFormat;
  /** Whether deliveries are signed; the secret itself is never shown. */
  hasSecret: boolean;
  description: string | null;
  enabled: boolean;
  disabledReason: string | null;
  pending: number;
  createdBy: string | null;
  createdAt: string;
  updatedAt: string;
}

export interface WebhookAttemptJson {
  attempt: number;
  startedAt: string;
  durationMs: number;
  /** The HTTP status, or null when no answer came (timeout, refused, forbidden address). */
  status: number | null;
  error: string | null;
  /** The first bytes of the receiver's answer. */
  response: string | null;
}

export interface WebhookDeliveryJson {
  id: number;
  /** The X-Kiln-Delivery header: the same on every attempt. */
  uuid: string;
  webhookId: number;
  eventId: number;
  eventType: string;
  state: "pending" | "delivered" | "failed";
  attempts: number;
  nextAttemptAt: string | null;
  createdAt: string;
  completedAt: string | null;
  attemptLog: WebhookAttemptJson[];
}

export interface WebhookInput {
  url?: string;
  events?: string[];
  secret?: string | null;
  format?: WebhookFormat;
  description?: string | null;
  enabled?: boolean;
}
