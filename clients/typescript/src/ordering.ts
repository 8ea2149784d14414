/**
 * Per-conversation dedupe and in-order release of incoming messages.
 *
 * Seqs of a conversation are 1, 2, 3, ... without gaps, so (conversation_id,
 * seq) identifies a message: anything at or below the conversation's position
 * is a duplicate (a resend after a reconnect), and a jump above position + 1
 * is a gap; items after a gap are held until it fills or the caller gives up.
 */
export interface Gap {
  conversationId: string;
  /** Last seq released in order; undefined if the conversation has no position yet. */
  position: number | undefined;
  firstHeld: number;
}

export class OrderBuffer<T> {
  private readonly pos = new Map<string, number>();
  private readonly held = new Map<string, Map<number, T>>();
  duplicates = 0;

  constructor(positions: Record<string, number> = {}, private readonly maxHeld = 10_000) {
    for (const [c, s] of Object.entries(positions)) if (s >= 0) this.pos.set(c, s);
  }

  position(conversationId: string): number | undefined {
    return this.pos.get(conversationId);
  }

  positions(): Record<string, number> {
    return Object.fromEntries(this.pos);
  }

  /**
   * Adds one item; returns the items now releasable, in seq order. For a
   * conversation without a position an `anchor` item starts it; a non-anchor
   * item (the ack of one's own send, which may overtake an earlier delivery) is held.
   */
  offer(conversationId: string, seq: number, item: T, anchor = true): T[] {
    let pos = this.pos.get(conversationId);
    const held = this.held.get(conversationId);
    if (pos === undefined && anchor) {
      pos = Math.min(seq, ...(held ? held.keys() : [])) - 1;
      this.pos.set(conversationId, pos);
    }
    if ((pos !== undefined && seq <= pos) || held?.has(seq)) {
      this.duplicates += 1;
      return [];
    }
    const bucket = held ?? new Map<number, T>();
    bucket.set(seq, item);
    this.held.set(conversationId, bucket);
    if (pos === undefined) return [];
    const released = this.release(conversationId);
    if ((this.held.get(conversationId)?.size ?? 0) > this.maxHeld) released.push(...this.skipGap(conversationId));
    return released;
  }

  /** Where the conversation's stream starts, if not yet known (the server's sync cursors). */
  setBaseline(conversationId: string, seq: number): T[] {
    if (this.pos.has(conversationId)) return [];
    const held = this.held.get(conversationId);
    if (held) for (const s of [...held.keys()]) if (s <= seq) held.delete(s);
    this.pos.set(conversationId, seq);
    return this.release(conversationId);
  }

  gaps(): Gap[] {
    const out: Gap[] = [];
    for (const [c, held] of this.held) {
      if (held.size > 0) out.push({ conversationId: c, position: this.pos.get(c), firstHeld: Math.min(...held.keys()) });
    }
    return out;
  }

  /** Gives up on the missing seqs below the lowest held item; releases what follows it. */
  skipGap(conversationId: string): T[] {
    const held = this.held.get(conversationId);
    if (!held || held.size === 0) return [];
    this.pos.set(conversationId, Math.min(...held.keys()) - 1);
    return this.release(conversationId);
  }

  private release(conversationId: string): T[] {
    const held = this.held.get(conversationId);
    let pos = this.pos.get(conversationId) ?? 0;
    const released: T[] = [];
    while (held && held.has(pos + 1)) {
      pos += 1;
      released.push(held.get(pos) as T);
      held.delete(pos);
    }
    this.pos.set(conversationId, pos);
    if (!held || held.size === 0) this.held.delete(conversationId);
    return released;
  }
}
