/**
 * Fair ordering within one priority. Each task gets a virtual time: a new owner's task joins the
 * front of the queue (`head`, the smallest virtual time still waiting), an owner's further tasks
 * queue behind their own last one. Ordering by (priority desc, virtual time, id) interleaves
 * owners round-robin, so one owner's thousand tasks cannot starve another's one, while each
 * owner's tasks keep their submission order.
 */
export function nextFairVt(head: number | null, ownerLast: number | null): number {
  const front = head ?? 0;
  if (ownerLast === null) return front;
  return Math.max(front, ownerLast + 1);
}

/** Priorities above this form the urgent tier: strict FIFO ahead of everything, no interleaving. */
export const URGENT_PRIORITY = 80;
