import type { Message, Presence, Receipt, SendAck, Typing } from "./gen/parley/v1/messages_pb.js";
import type { ParleyError } from "./errors.js";

export type ConnectionState = "connecting" | "connected" | "synced" | "disconnected" | "closed";

/** A message from another user or another of one's own devices, released in seq order without duplicates. */
export interface MessageEvent {
  conversationId: string;
  seq: number;
  senderId: string;
  text: string;
  message: Message;
}

export interface StateEvent {
  state: ConnectionState;
  /** Why it disconnected or closed. */
  reason?: string;
  error?: ParleyError;
  /** For "disconnected": when the next attempt starts. */
  retryInMs?: number;
  /** For "connected": how many times this session connected before. */
  reconnects?: number;
}

export interface SessionEvents {
  message: MessageEvent;
  /** The server acknowledged one of this session's sends (also resolves its promise). */
  sendAck: SendAck;
  receipt: Receipt;
  typing: Typing;
  presence: Presence;
  /** An error frame not tied to a pending send. */
  error: ParleyError;
  state: StateEvent;
  /** The backlog of a (re)connect has been delivered: the highest seq per conversation. */
  syncComplete: Record<string, number>;
}

export type Listener<T> = (event: T) => void | Promise<void>;
