package chat.parley.client

/**
 * Per-conversation dedupe and in-order release of incoming messages.
 *
 * Seqs of a conversation are 1, 2, 3, ... without gaps, so the pair (conversation, seq) identifies
 * a message: anything at or below the conversation's position is a duplicate (a resend after a
 * reconnect), and a jump above `position + 1` is a gap. The server sends each conversation in
 * order, so gaps are rare (e.g. a resync racing a live delivery); items after a gap are held until
 * the gap fills or the caller gives up on it ([skipGap]).
 *
 * Not thread-safe: the session confines it to its own dispatcher.
 */
class OrderBuffer<T>(positions: Map<String, Long> = emptyMap(), private val maxHeld: Int = 10_000) {
    data class Gap(
        val conversationId: String,
        /** Last seq released in order; null if the conversation has no position yet. */
        val position: Long?,
        /** Lowest held seq (> position + 1). */
        val firstHeld: Long,
        val held: Int,
    )

    private val pos = HashMap<String, Long>().apply { positions.forEach { (c, s) -> if (s >= 0) put(c, s) } }
    private val held = HashMap<String, java.util.TreeMap<Long, T>>()

    /** How many duplicates were dropped. */
    var duplicates: Long = 0
        private set

    fun position(conversationId: String): Long? = pos[conversationId]

    fun positions(): Map<String, Long> = HashMap(pos)

    /**
     * Adds one item; returns the items now releasable, in seq order.
     *
     * For a conversation without a position, an [anchor] item starts it (the server decides where
     * a new conversation's stream begins); a non-anchor item (e.g. the ack of one's own send, which
     * may overtake the delivery of an earlier message) is held instead.
     */
    fun offer(conversationId: String, seq: Long, item: T, anchor: Boolean = true): List<T> {
        var p = pos[conversationId]
        if (p == null && anchor) {
            // Held non-anchor items below this seq came first: start there.
            val lowestHeld = held[conversationId]?.firstKey()
            val start = if (lowestHeld != null && lowestHeld < seq) lowestHeld else seq
            p = start - 1
            pos[conversationId] = p
        }
        val waiting = held[conversationId]
        if ((p != null && seq <= p) || (waiting != null && waiting.containsKey(seq))) {
            duplicates++
            return emptyList()
        }
        held.getOrPut(conversationId) { java.util.TreeMap() }[seq] = item
        if (p == null) return emptyList()
        val released = release(conversationId).toMutableList()
        if ((held[conversationId]?.size ?: 0) > maxHeld) released += skipGap(conversationId)
        return released
    }

    /** Tells where the conversation's stream starts, if not yet known (the server's sync cursors). */
    fun setBaseline(conversationId: String, seq: Long): List<T> {
        if (pos.containsKey(conversationId)) return emptyList()
        held[conversationId]?.headMap(seq, true)?.clear()
        pos[conversationId] = seq
        return release(conversationId)
    }

    fun gaps(): List<Gap> = held.filterValues { it.isNotEmpty() }.map { (c, items) ->
        Gap(c, pos[c], items.firstKey(), items.size)
    }

    /** Gives up on the missing seqs below the lowest held item and releases what follows it. */
    fun skipGap(conversationId: String): List<T> {
        val items = held[conversationId]
        if (items.isNullOrEmpty()) return emptyList()
        pos[conversationId] = items.firstKey() - 1
        return release(conversationId)
    }

    private fun release(conversationId: String): List<T> {
        val items = held[conversationId]
        var p = pos.getValue(conversationId)
        val released = ArrayList<T>()
        while (items != null && items.isNotEmpty() && items.containsKey(p + 1)) {
            p++
            released += items.remove(p)!!
        }
        pos[conversationId] = p
        if (items != null && items.isEmpty()) held.remove(conversationId)
        return released
    }
}
