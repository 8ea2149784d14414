package chat.parley.client

import kotlin.test.assertEquals
import kotlin.test.assertTrue
import org.junit.jupiter.api.Test

class OrderBufferTest {
    @Test
    fun `releases in seq order and drops duplicates`() {
        val buffer = OrderBuffer<Long>(mapOf("c" to 2L))
        assertEquals(emptyList(), buffer.offer("c", 4, 4))
        assertEquals(listOf(3L, 4L), buffer.offer("c", 3, 3))
        assertEquals(emptyList(), buffer.offer("c", 3, 3))
        assertEquals(emptyList(), buffer.offer("c", 1, 1))
        assertEquals(2, buffer.duplicates)
        assertEquals(4L, buffer.position("c"))
    }

    @Test
    fun `the first message anchors a conversation without a position`() {
        val buffer = OrderBuffer<Long>()
        assertEquals(listOf(7L), buffer.offer("c", 7, 7))
        assertEquals(listOf(8L), buffer.offer("c", 8, 8))
    }

    @Test
    fun `a non-anchor item waits, then starts the conversation where it belongs`() {
        val buffer = OrderBuffer<String>()
        assertEquals(emptyList(), buffer.offer("c", 5, "own5", anchor = false))
        assertEquals(listOf("own5", "m6"), buffer.offer("c", 6, "m6"))
    }

    @Test
    fun `a baseline drops what it covers and releases what follows`() {
        val buffer = OrderBuffer<Long>()
        buffer.offer("c", 3, 3, anchor = false)
        buffer.offer("c", 5, 5, anchor = false)
        assertEquals(listOf(5L), buffer.setBaseline("c", 4))
        assertEquals(emptyList(), buffer.setBaseline("c", 10)) // known already
    }

    @Test
    fun `gaps are reported and can be skipped`() {
        val buffer = OrderBuffer<Long>(mapOf("c" to 1L))
        buffer.offer("c", 4, 4)
        buffer.offer("c", 5, 5)
        val gap = buffer.gaps().single()
        assertEquals(OrderBuffer.Gap("c", 1L, 4L, 2), gap)
        assertEquals(listOf(4L, 5L), buffer.skipGap("c"))
        assertTrue(buffer.gaps().isEmpty())
    }

    @Test
    fun `a gap that never fills is skipped past the hold limit`() {
        val buffer = OrderBuffer<Long>(mapOf("c" to 0L), maxHeld = 3)
        for (seq in 2L..4L) assertEquals(emptyList(), buffer.offer("c", seq, seq))
        assertEquals(listOf(2L, 3L, 4L, 5L), buffer.offer("c", 5, 5))
    }
}
