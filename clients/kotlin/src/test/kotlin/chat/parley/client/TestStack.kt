package chat.parley.client

import java.nio.file.Path
import java.util.Base64
import java.util.UUID
import javax.crypto.Mac
import javax.crypto.spec.SecretKeySpec
import org.junit.jupiter.api.Assumptions.assumeTrue

/**
 * The local stack the tests run against: `PARLEY_GATEWAY` (host:port) and `PARLEY_CA_FILE` (the
 * development CA) are set by tests/e2e/test_kotlin_sdk.py, which starts the stack. Without
 * them the stack tests are skipped, and that wrapper fails on any skipped test.
 */
object TestStack {
    val gateway: String? = System.getenv("PARLEY_GATEWAY")
    val caFile: Path? = System.getenv("PARLEY_CA_FILE")?.let(Path::of)

    // services/parley/auth.py DEV_SECRET: accepted only by a stack in development mode.
    private const val DEV_SECRET = "parley-development-secret-do-not-use-in-production"

    fun requireStack(): String {
        assumeTrue(gateway != null, "PARLEY_GATEWAY is not set: run through `make kotlin-test` (starts the stack)")
        return gateway!!
    }

    /** A user id of its own for each test, so reruns never meet old conversations. */
    fun user(name: String): String = "kt-$name-${UUID.randomUUID().toString().take(8)}"

    /** An HS256 JWT with the development secret, as `parley token` mints it. */
    fun token(userId: String, ttlSeconds: Long = 3600, secret: String = DEV_SECRET): String {
        val now = System.currentTimeMillis() / 1000
        val enc = Base64.getUrlEncoder().withoutPadding()
        val header = enc.encodeToString("""{"alg":"HS256","typ":"JWT"}""".toByteArray())
        val payload = enc.encodeToString("""{"sub":"$userId","iat":$now,"exp":${now + ttlSeconds}}""".toByteArray())
        val mac = Mac.getInstance("HmacSHA256").apply { init(SecretKeySpec(secret.toByteArray(), "HmacSHA256")) }
        val signature = enc.encodeToString(mac.doFinal("$header.$payload".toByteArray()))
        return "$header.$payload.$signature"
    }

    fun client(
        userId: String,
        target: String = requireStack(),
        configure: ParleyClientConfig.() -> Unit = {},
    ): ParleyClient = ParleyClient(target) {
        token(TestStack.token(userId))
        caFile = this@TestStack.caFile
        configure()
    }
}
