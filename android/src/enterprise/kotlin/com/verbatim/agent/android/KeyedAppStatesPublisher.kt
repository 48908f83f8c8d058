package com.verbatim.agent.android

import android.content.Context
import androidx.enterprise.feedback.KeyedAppState
import androidx.enterprise.feedback.KeyedAppStatesReporter
import com.verbatim.agent.FeedbackPublisher
import com.verbatim.ffi.FeedbackItem
import com.verbatim.ffi.FeedbackSeverity

/**
 * Publishes the agent's health as keyed app states, which the MDM (EMM) shows to its admin.
 * Built by Gradle only: androidx.enterprise:enterprise-feedback is published on Google's Maven
 * repository, which scripts/test-kotlin.sh cannot reach (this file is not compiled there).
 */
class KeyedAppStatesPublisher(context: Context) : FeedbackPublisher {
    private val reporter = KeyedAppStatesReporter.create(context.applicationContext)

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
        reporter.setStates(states, null)
    }
}
