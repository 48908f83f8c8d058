// Stand-in (see KeyedAppState.kt): the documented reporter API.
package androidx.enterprise.feedback

import android.content.Context

fun interface KeyedAppStatesCallback {
    fun onResult(state: Int, throwable: Throwable?)
}

abstract class KeyedAppStatesReporter {
    /** Batched by the device before it reaches the EMM. */
    abstract fun setStates(states: Collection<KeyedAppState>, callback: KeyedAppStatesCallback?)

    /** Delivered at once: for errors the admin must see. */
    abstract fun setStatesImmediate(states: Collection<KeyedAppState>, callback: KeyedAppStatesCallback?)

    companion object {
        /** The tests' reporter (the real one binds to the device policy controller). */
        @JvmStatic
        fun create(context: Context): KeyedAppStatesReporter =
            RecordingKeyedAppStatesReporter().also { RecordingKeyedAppStatesReporter.lastCreated = it }
    }
}

/** Records what was reported and how; for the tests. */
class RecordingKeyedAppStatesReporter : KeyedAppStatesReporter() {
    val batched = java.util.concurrent.CopyOnWriteArrayList<List<KeyedAppState>>()
    val immediate = java.util.concurrent.CopyOnWriteArrayList<List<KeyedAppState>>()

    override fun setStates(states: Collection<KeyedAppState>, callback: KeyedAppStatesCallback?) {
        batched += states.toList()
    }

    override fun setStatesImmediate(states: Collection<KeyedAppState>, callback: KeyedAppStatesCallback?) {
        immediate += states.toList()
    }

    companion object {
        /** The reporter [KeyedAppStatesReporter.create] made last. */
        @Volatile
        var lastCreated: RecordingKeyedAppStatesReporter? = null
    }
}
