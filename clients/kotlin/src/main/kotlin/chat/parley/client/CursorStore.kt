package chat.parley.client

import java.util.concurrent.ConcurrentHashMap

/**
 * Where a session keeps its per-conversation positions ("cursors"): the highest seq of a
 * conversation the application has finished with (or, with [AckMode.MANUAL], acknowledged).
 * The session sends them in its hello so the server resends exactly what came after them.
 *
 * Implement it over your app's database to resume across restarts. A store only ever moves a
 * cursor forward. [save] is called from the session's own dispatcher, once per processed message:
 * keep it quick (a slow store slows the session down, it never reorders it).
 */
interface CursorStore {
    /** Every saved cursor, conversation id -> seq. */
    suspend fun load(): Map<String, Long>

    /** Everything up to [seq] in [conversationId] was handed to the application (never moves back). */
    suspend fun save(conversationId: String, seq: Long)
}

/** Cursors that live as long as the object: resume across reconnects and sessions, not restarts. */
class InMemoryCursorStore(initial: Map<String, Long> = emptyMap()) : CursorStore {
    private val cursors = ConcurrentHashMap(initial)

    override suspend fun load(): Map<String, Long> = HashMap(cursors)

    override suspend fun save(conversationId: String, seq: Long) {
        cursors.merge(conversationId, seq) { old, new -> maxOf(old, new) }
    }

    fun snapshot(): Map<String, Long> = HashMap(cursors)
}
