package chat.parley.client

import java.util.concurrent.CopyOnWriteArrayList
import kotlin.time.Duration
import kotlin.time.Duration.Companion.seconds
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.launch
import kotlinx.coroutines.withTimeout

/**
 * Collects a session's events in the background so a test can wait for the ones it expects.
 * [next] takes the first matching event not taken before, wherever it is in the stream, so
 * waiting for one kind of event never loses another that arrived first.
 */
class EventCollector(scope: CoroutineScope, session: ParleySession) {
    /** Every event seen so far, in order. */
    val seen = CopyOnWriteArrayList<ParleyEvent>()
    private val taken = HashSet<Int>()
    private val count = MutableStateFlow(0)

    val job = scope.launch {
        session.events.collect {
            seen += it
            count.value = seen.size
        }
    }

    @Synchronized
    fun take(match: (ParleyEvent) -> Boolean): ParleyEvent? {
        for (i in seen.indices) {
            if (i !in taken && match(seen[i])) {
                taken += i
                return seen[i]
            }
        }
        return null
    }

    /** The first not yet taken event that is a [T] and matches [predicate]. */
    suspend inline fun <reified T : ParleyEvent> next(
        timeout: Duration = 20.seconds,
        crossinline predicate: (T) -> Boolean = { true },
    ): T = withTimeout(timeout) {
        var found: ParleyEvent? = null
        awaitChange { found = take { it is T && predicate(it) }; found != null }
        found as T
    }

    suspend fun awaitChange(condition: () -> Boolean) {
        count.first { condition() }
    }

    /** The next [count] messages not yet taken, in order. */
    suspend fun messages(count: Int, timeout: Duration = 30.seconds): List<ParleyEvent.MessageReceived> =
        withTimeout(timeout) { List(count) { next<ParleyEvent.MessageReceived>(timeout) } }
}
