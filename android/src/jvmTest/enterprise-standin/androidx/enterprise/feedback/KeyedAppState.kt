// A stand-in for androidx.enterprise:enterprise-feedback (Google's Maven repository only, which
// the test build cannot reach): the documented public API KeyedAppStatesPublisher uses, with the
// same names, constants and limits, and no behaviour. Compiled for the tests only; the AAR is
// built by Gradle against the real library.
package androidx.enterprise.feedback

abstract class KeyedAppState {
    abstract fun getKey(): String
    abstract fun getSeverity(): Int
    abstract fun getMessage(): String?
    abstract fun getData(): String?

    abstract class KeyedAppStateBuilder {
        abstract fun setKey(key: String): KeyedAppStateBuilder
        abstract fun setSeverity(severity: Int): KeyedAppStateBuilder
        abstract fun setMessage(message: String?): KeyedAppStateBuilder
        abstract fun setData(data: String?): KeyedAppStateBuilder
        abstract fun build(): KeyedAppState
    }

    companion object {
        const val SEVERITY_INFO = 1
        const val SEVERITY_ERROR = 2
        const val MAX_KEY_LENGTH = 100
        const val MAX_MESSAGE_LENGTH = 1000
        const val MAX_DATA_LENGTH = 1000

        @JvmStatic
        fun builder(): KeyedAppStateBuilder = StandInBuilder()
    }
}

private class StandInBuilder : KeyedAppState.KeyedAppStateBuilder() {
    private var key: String? = null
    private var severity = KeyedAppState.SEVERITY_INFO
    private var message: String? = null
    private var data: String? = null

    override fun setKey(key: String) = apply { this.key = key }
    override fun setSeverity(severity: Int) = apply { this.severity = severity }
    override fun setMessage(message: String?) = apply { this.message = message }
    override fun setData(data: String?) = apply { this.data = data }

    override fun build(): KeyedAppState {
        val k = requireNotNull(key) { "key is required" }
        // The real builder refuses what is over a limit; so does this one.
        require(k.length <= KeyedAppState.MAX_KEY_LENGTH) { "key too long" }
        require((message?.length ?: 0) <= KeyedAppState.MAX_MESSAGE_LENGTH) { "message too long" }
        require((data?.length ?: 0) <= KeyedAppState.MAX_DATA_LENGTH) { "data too long" }
        require(severity == KeyedAppState.SEVERITY_INFO || severity == KeyedAppState.SEVERITY_ERROR) { "bad severity" }
        val (s, m, d) = Triple(severity, message, data)
        return object : KeyedAppState() {
            override fun getKey() = k
            override fun getSeverity() = s
            override fun getMessage() = m
            override fun getData() = d
        }
    }
}
