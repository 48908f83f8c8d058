package com.verbatim.agent.android

import androidx.enterprise.feedback.KeyedAppState
import androidx.enterprise.feedback.RecordingKeyedAppStatesReporter
import com.verbatim.ffi.FeedbackItem
import com.verbatim.ffi.FeedbackSeverity
import kotlin.test.assertEquals
import kotlin.test.assertTrue
import org.junit.Test
import org.junit.runner.RunWith
import org.robolectric.RobolectricTestRunner
import org.robolectric.annotation.Config

/** Against the stand-in of androidx.enterprise (src/jvmTest/enterprise-standin). */
@RunWith(RobolectricTestRunner::class)
@Config(sdk = [34], manifest = Config.NONE)
class KeyedAppStatesPublisherTest {
    private fun item(key: String, severity: FeedbackSeverity, message: String = "m", data: String = "d") =
        FeedbackItem(key, severity, message, data)

    @Test
    fun informationIsBatchedAndErrorsGoOutImmediately() {
        val reporter = RecordingKeyedAppStatesReporter()
        val publisher = KeyedAppStatesPublisher(reporter)
        publisher.publish(listOf(item("verbatim.configured", FeedbackSeverity.INFO)))
        assertEquals(1, reporter.batched.size)
        assertTrue(reporter.immediate.isEmpty())

        publisher.publish(listOf(item("verbatim.configured", FeedbackSeverity.INFO), item("verbatim.queue", FeedbackSeverity.ERROR)))
        assertEquals(1, reporter.batched.size, "a batch with an error is not batched")
        val sent = reporter.immediate.single()
        assertEquals(listOf(KeyedAppState.SEVERITY_INFO, KeyedAppState.SEVERITY_ERROR), sent.map { it.getSeverity() })
        assertEquals(listOf("verbatim.configured", "verbatim.queue"), sent.map { it.getKey() })
    }

    @Test
    fun overlongFieldsAreCutToTheDocumentedLimits() {
        val reporter = RecordingKeyedAppStatesReporter()
        KeyedAppStatesPublisher(reporter).publish(
            listOf(item("k".repeat(150), FeedbackSeverity.INFO, message = "m".repeat(1500), data = "d".repeat(1500))),
        )
        val state = reporter.batched.single().single()
        assertEquals(KeyedAppState.MAX_KEY_LENGTH, state.getKey().length)
        assertEquals(KeyedAppState.MAX_MESSAGE_LENGTH, state.getMessage()!!.length)
        assertEquals(KeyedAppState.MAX_DATA_LENGTH, state.getData()!!.length)
    }

    @Test
    fun theContextConstructorUsesTheReportersFactory() {
        // KeyedAppStatesReporter.create(context) is what an app gets; here the stand-in's recorder.
        KeyedAppStatesPublisher(app()).publish(listOf(item("verbatim.configured", FeedbackSeverity.ERROR)))
        assertEquals("verbatim.configured", RecordingKeyedAppStatesReporter.lastCreated!!.immediate.single().single().getKey())
    }
}
