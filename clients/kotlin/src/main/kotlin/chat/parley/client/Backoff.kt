package chat.parley.client

import kotlin.math.min
import kotlin.math.pow
import kotlin.random.Random
import kotlin.time.Duration
import kotlin.time.Duration.Companion.milliseconds
import kotlin.time.Duration.Companion.seconds

/**
 * Exponential backoff with jitter for reconnects and retries: delays `initial * multiplier^n`
 * capped at [maximum], each randomized downwards into `[d * (1 - jitter), d]`, so the cap is never
 * exceeded. The jitter spreads the reconnects of many clients that lost the same gateway at the
 * same moment, so they do not come back as one thundering herd.
 *
 * Not thread-safe: a session uses its own instance from one coroutine at a time.
 */
class Backoff(
    val initial: Duration = 200.milliseconds,
    val maximum: Duration = 15.seconds,
    val multiplier: Double = 2.0,
    val jitter: Double = 0.5,
    private val random: Random = Random.Default,
) {
    init {
        require(initial.isPositive() && maximum >= initial) { "backoff needs 0 < initial <= maximum" }
        require(multiplier >= 1.0) { "backoff multiplier must be >= 1" }
        require(jitter in 0.0..1.0) { "backoff jitter must be within [0, 1]" }
    }

    var attempt: Int = 0
        private set

    /** The un-jittered delay the next call is based on. */
    fun peekCeiling(): Duration {
        // 2^64 times any sane initial delay is already far past any maximum.
        val factor = multiplier.pow(min(attempt, 64))
        val ceiling = initial * factor
        return if (ceiling > maximum) maximum else ceiling
    }

    fun nextDelay(): Duration {
        val ceiling = peekCeiling()
        attempt++
        return ceiling - ceiling * (random.nextDouble() * jitter)
    }

    fun reset() {
        attempt = 0
    }

    /** A fresh backoff with the same settings (each session needs its own state). */
    fun copy(): Backoff = Backoff(initial, maximum, multiplier, jitter, random)
}
