package com.verbatim.agent

import com.verbatim.ffi.FeedbackItem

/**
 * Where the agent's health goes for the MDM admin: Android keyed app states
 * (`com.verbatim.agent.android.KeyedAppStatesPublisher`, built with androidx.enterprise), iOS
 * managed app feedback, or the app's own channel. The entries (keys, severities, messages) are
 * decided in Rust ([VerbatimAgent.feedback]) so both platforms report the same keys.
 */
fun interface FeedbackPublisher {
    fun publish(items: List<FeedbackItem>)
}

/** Publishes the agent's current health. Memory only: safe on any thread. */
fun VerbatimAgent.publishFeedback(publisher: FeedbackPublisher) = publisher.publish(feedback())
