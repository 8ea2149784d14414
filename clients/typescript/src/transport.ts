/**
 * The WebSocket the SDK needs: the WHATWG interface, which browsers have and
 * the `ws` package implements for Node (Node 22+ also has a global one).
 */
export interface SocketLike {
  binaryType: string;
  readonly readyState: number;
  readonly protocol: string;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  send(data: string | ArrayBufferLike | Uint8Array): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketFactory = (url: string, protocols: string[]) => SocketLike;

export const OPEN = 1;
export const SUBPROTOCOL = "parley.v1";

/** The browser's (or Node 22's) global WebSocket; undefined where there is none. */
export function globalWebSocketFactory(): WebSocketFactory | undefined {
  const ctor = (globalThis as { WebSocket?: new (url: string, protocols: string[]) => SocketLike }).WebSocket;
  if (ctor === undefined) return undefined;
  return (url, protocols) => new ctor(url, protocols);
}

export interface NodeSocketOptions {
  /** PEM CA certificate(s) to trust for wss:// (e.g. the development CA, .state/pki/ca.crt). */
  ca?: string | Uint8Array;
}

/**
 * A factory on the `ws` package for Node. Loaded by a computed name, so
 * browser bundles never pull it in.
 */
export async function nodeWebSocketFactory(options: NodeSocketOptions = {}): Promise<WebSocketFactory> {
  const name = "ws";
  const module = (await import(name)) as {
    default: new (url: string, protocols: string[], options: Record<string, unknown>) => SocketLike;
  };
  const WS = module.default;
  return (url, protocols) => new WS(url, protocols, options.ca === undefined ? {} : { ca: options.ca });
}

export function toBytes(data: unknown): Uint8Array | undefined {
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return undefined;
}
