/**
 * Where a session keeps, per conversation, the last seq the application
 * finished with. The next session says it in its hello, so the server sends
 * exactly what came after.
 */
export interface CursorStore {
  load(): Promise<Record<string, number>>;
  save(conversationId: string, seq: number): Promise<void>;
}

/** Forgets everything when the process ends: the server then resumes from the user's acked position. */
export class MemoryCursorStore implements CursorStore {
  private readonly cursors = new Map<string, number>();

  constructor(initial: Record<string, number> = {}) {
    for (const [c, s] of Object.entries(initial)) this.cursors.set(c, s);
  }

  async load(): Promise<Record<string, number>> {
    return Object.fromEntries(this.cursors);
  }

  async save(conversationId: string, seq: number): Promise<void> {
    if (seq > (this.cursors.get(conversationId) ?? 0)) this.cursors.set(conversationId, seq);
  }
}

/** The subset of the Web Storage API used (window.localStorage in a browser). */
export interface KeyValueStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
}

/** Cursors in Web Storage (e.g. localStorage), one JSON object under `key`. */
export class WebStorageCursorStore implements CursorStore {
  constructor(private readonly storage: KeyValueStorage, private readonly key: string) {}

  async load(): Promise<Record<string, number>> {
    try {
      const value: unknown = JSON.parse(this.storage.getItem(this.key) ?? "{}");
      if (value === null || typeof value !== "object") return {};
      return Object.fromEntries(
        Object.entries(value as Record<string, unknown>).filter((e): e is [string, number] => typeof e[1] === "number"),
      );
    } catch {
      return {}; // a corrupt entry: resume from the server's acked position
    }
  }

  async save(conversationId: string, seq: number): Promise<void> {
    const cursors = await this.load();
    if (seq <= (cursors[conversationId] ?? 0)) return;
    cursors[conversationId] = seq;
    this.storage.setItem(this.key, JSON.stringify(cursors));
  }
}
