/**
 * Exponential backoff with jitter for reconnects and retries: delays
 * `initial * multiplier^n` capped at `maximum`, each randomized downwards to
 * `[d * (1 - jitter), d]`, so many clients that lost the same gateway do not
 * come back as one herd.
 */
export interface BackoffOptions {
  initialMs?: number;
  maximumMs?: number;
  multiplier?: number;
  jitter?: number;
  random?: () => number;
}

export class Backoff {
  readonly initialMs: number;
  readonly maximumMs: number;
  readonly multiplier: number;
  readonly jitter: number;
  private readonly random: () => number;
  private attempt = 0;

  constructor(options: BackoffOptions = {}) {
    this.initialMs = options.initialMs ?? 200;
    this.maximumMs = options.maximumMs ?? 15_000;
    this.multiplier = options.multiplier ?? 2;
    this.jitter = options.jitter ?? 0.5;
    this.random = options.random ?? Math.random;
    if (this.initialMs <= 0 || this.maximumMs < this.initialMs) throw new RangeError("backoff needs 0 < initial <= maximum");
    if (this.multiplier < 1) throw new RangeError("backoff multiplier must be >= 1");
    if (this.jitter < 0 || this.jitter > 1) throw new RangeError("backoff jitter must be within [0, 1]");
  }

  nextDelayMs(): number {
    const ceiling = Math.min(this.maximumMs, this.initialMs * this.multiplier ** Math.min(this.attempt, 64));
    this.attempt += 1;
    return ceiling - this.random() * ceiling * this.jitter;
  }

  reset(): void {
    this.attempt = 0;
  }
}

/** A delay for retry number `attempt` (0-based): jittered in [ceiling/2, ceiling], at least `floorMs`. */
export function retryDelayMs(attempt: number, floorMs = 0, random: () => number = Math.random): number {
  const ceiling = Math.min(5_000, 100 * 2 ** attempt);
  return Math.max(floorMs, ceiling * (0.5 + 0.5 * random()));
}
