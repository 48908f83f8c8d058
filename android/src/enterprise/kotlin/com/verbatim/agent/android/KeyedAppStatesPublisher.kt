package com.verbatim.agent.android

import android.content.Context
import androidx.enterprise.feedback.KeyedAppState
import androidx.enterprise.feedback.KeyedAppStatesReporter
import com.verbatim.agent.FeedbackPublisher
import com.verbatim.ffi.FeedbackItem
import com.verbatim.ffi.FeedbackSeverity

/**
 * Publishes the agent's health as keyed app states, which the MDM (EMM) shows to its admin.
 *
 * A batch holding an error goes out with `setStatesImmediate` (delivered at once, as the
 * keyed-app-states guide asks for errors, so the admin sees a broken agent without waiting for
 * the next batched upload); a batch of information only with `setStates` (batched by the device).
 *
 * Built by Gradle with androidx.enterprise:enterprise-feedback (Google's Maven repository);
 * the Maven test build compiles it against a stand-in of that documented API (android/README.md).
 */
class KeyedAppStatesPublisher(private val reporter: KeyedAppStatesReporter) : FeedbackPublisher {
    constructor(context: Context) : this(KeyedAppStatesReporter.create(context.applicationContext))

    override fun publish(items: List<FeedbackItem>) {
        val states = items.map { item ->
            KeyedAppState.builder()
                .setKey(item.key.take(KeyedAppState.MAX_KEY_LENGTH))
                .setSeverity(
                    if (item.severity == FeedbackSeverity.ERROR) KeyedAppState.SEVERITY_ERROR else KeyedAppState.SEVERITY_INFO,
                )
                .setMessage(item.message.take(KeyedAppState.MAX_MESSAGE_LENGTH))
                .setData(item.data.take(KeyedAppState.MAX_DATA_LENGTH))
                .build()
        }
        if (items.any { it.severity == FeedbackSeverity.ERROR }) {
            reporter.setStatesImmediate(states, null)
        } else {
            reporter.setStates(states, null)
        }
    }
}
