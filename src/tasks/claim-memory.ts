import type { WakeHint } from "./wake.js";

/** What decides whether a host can take a task: its arches and channels (JSON, as stored). */
export interface HostKind {
  arches: string;
  channels: string;
}

interface KindState {
  arches: Set<string>;
  channels: Set<string>;
  /** Something may have become runnable for this kind that no claim has looked for since. */
  dirty: boolean;
  /** While clean: a host of this kind with at most this much free capacity finds nothing… */
  missFree: number;
  /** …except for at most this many tasks that became runnable since (hinted by their creation). */
  credits: number;
  /** Bumped on every change, so a claim's outcome is only believed if nothing moved meanwhile. */
  version: number;
}

/** Taken before a claim and given back with its outcome. */
export interface ClaimTicket {
  key: string;
  version: number;
}

/**
 * Remembers, per kind of host, that claiming found nothing, and forgets it when a wake-up says
 * something runnable may have come. The dispatcher asks it before each claim statement, so that a
 * new task does not cost a claim by every waiting host, nor a finished one a claim by each.
 *
 * It may only err on the side of trying: a claim that finds nothing costs a statement, a skipped
 * claim that would have found a task strands it. So a claim's outcome is believed only when the
 * kind did not change while it ran, credits are spent only by claims that provably took a new
 * task, and anything without a hint (or not understood) forgets everything.
 */
export class ClaimMemory {
  private readonly kinds = new Map<string, KindState>();

  private state(host: HostKind): { key: string; state: KindState } {
    const key = `${host.arches}\n${host.channels}`;
    let state = this.kinds.get(key);
    if (!state) {
      state = {
        arches: new Set(JSON.parse(host.arches) as string[]),
        channels: new Set(JSON.parse(host.channels) as string[]),
        dirty: true,
        missFree: 0,
        credits: 0,
        version: 0,
      };
      this.kinds.set(key, state);
    }
    return { key, state };
  }

  /** Whether a claim by a host of this kind with `free` capacity may find something. */
  worthTrying(host: HostKind, free: number): boolean {
    if (!(free > 0)) return false;
    const { state } = this.state(host);
    return state.dirty || free > state.missFree || state.credits > 0;
  }

  /** Whether a host of this kind may run a task of this arch and channel. */
  canRun(host: HostKind, task: { arch: string; channel: string }): boolean {
    const { state } = this.state(host);
    return (task.arch === "noarch" || state.arches.has(task.arch)) && state.channels.has(task.channel);
  }

  /** Call just before claiming for a host of this kind. */
  ticket(host: HostKind): ClaimTicket {
    const { key, state } = this.state(host);
    return { key, version: state.version };
  }

  /** The claim of a host with `free` capacity found nothing. */
  missed(ticket: ClaimTicket, free: number): void {
    const state = this.kinds.get(ticket.key);
    if (!state || state.version !== ticket.version) return;
    if (state.dirty || state.credits > 0) {
      // What fitted before may not be all that fits now: start again from this claim.
      state.dirty = false;
      state.credits = 0;
      state.missFree = free;
    } else {
      state.missFree = Math.max(state.missFree, free);
    }
    state.version++;
  }

  /** The claim of a host with `free` capacity took a task. */
  took(ticket: ClaimTicket, free: number): void {
    const state = this.kinds.get(ticket.key);
    if (!state || state.version !== ticket.version) return;
    // Only a task that came after the last miss fits where that miss found nothing.
    if (!state.dirty && free <= state.missFree && state.credits > 0) {
      state.credits--;
      state.version++;
    }
  }

  /** A wake-up. */
  heard(hint: WakeHint | undefined): void {
    // Free capacity alone is the dispatcher's to track.
    if (hint?.kind === "finished" && hint.only) return;
    for (const state of this.kinds.values()) {
      const n =
        hint?.kind !== "tasks"
          ? Infinity
          : hint.tasks.filter(
              (t) => (t.arch === "noarch" || state.arches.has(t.arch)) && state.channels.has(t.channel),
            ).length;
      if (n === 0) continue;
      if (n === Infinity) state.dirty = true;
      else state.credits += n;
      state.version++;
    }
  }
}
