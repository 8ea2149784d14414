package chat.parley.client

import kotlin.random.Random
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertTrue
import kotlin.time.Duration.Companion.milliseconds
import kotlin.time.Duration.Companion.seconds
import org.junit.jupiter.api.Test

class BackoffTest {
    @Test
    fun `delays grow exponentially within their jitter band and never pass the maximum`() {
        val backoff = Backoff(initial = 100.milliseconds, maximum = 1.seconds, jitter = 0.5, random = Random(7))
        val ceilings = listOf(100, 200, 400, 800, 1000, 1000).map { it.milliseconds }
        for (ceiling in ceilings) {
            val delay = backoff.nextDelay()
            assertTrue(delay <= ceiling && delay >= ceiling / 2, "$delay not within [${ceiling / 2}, $ceiling]")
        }
        backoff.reset()
        assertEquals(100.milliseconds, backoff.peekCeiling())
    }

    @Test
    fun `bad settings are refused`() {
        assertFailsWith<IllegalArgumentException> { Backoff(initial = 2.seconds, maximum = 1.seconds) }
        assertFailsWith<IllegalArgumentException> { Backoff(jitter = 1.5) }
        assertFailsWith<IllegalArgumentException> { Backoff(multiplier = 0.5) }
    }
}
