package com.verbatim.agent.android

import android.app.Activity
import android.content.Intent
import android.net.NetworkCapabilities
import android.os.Bundle
import androidx.enterprise.feedback.RecordingKeyedAppStatesReporter
import com.verbatim.agent.ARCHIVE
import com.verbatim.agent.message
import com.verbatim.agent.seqOf
import com.verbatim.ffi.core.StopReason
import com.verbatim.ffi.VerbatimException
import kotlin.time.Duration.Companion.seconds
import java.util.concurrent.CountDownLatch
import java.util.concurrent.TimeUnit
import java.util.concurrent.atomic.AtomicInteger
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertFalse
import kotlin.test.assertIs
import kotlin.test.assertNotNull
import kotlin.test.assertTrue
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.async
import kotlinx.coroutines.awaitAll
import kotlinx.coroutines.runBlocking
import org.junit.After
import org.junit.Before
import org.junit.Test
import org.junit.runner.RunWith
import org.robolectric.Robolectric
import org.robolectric.RobolectricTestRunner
import org.robolectric.Shadows.shadowOf
import org.robolectric.annotation.Config

/** AndroidAgent against the real framework: restrictions, the broadcast, resumes, JobScheduler. */
@RunWith(RobolectricTestRunner::class)
@Config(sdk = [34], manifest = Config.NONE)
class AndroidAgentTest {
    @Before
    fun setUp() = resetAndroidAgent()

    @After
    fun tearDown() = resetAndroidAgent()

    private val restrictionsChanged = Intent(Intent.ACTION_APPLICATION_RESTRICTIONS_CHANGED)

    private fun startAndOpen(reporter: RecordingKeyedAppStatesReporter? = null, jobIds: UploadJobIds = UploadJobIds.DEFAULT) =
        runBlocking {
            AndroidAgent.start(app(), feedback = reporter?.let { KeyedAppStatesPublisher(it) }, jobIds = jobIds)
            AndroidAgent.get(app())
        }

    @Test
    fun startAppliesTheManagedConfigurationAndSchedulesUploads() {
        setRestrictions(managedPolicy("start-1", mapOf("upload_interval_minutes" to 30)))
        val agent = startAndOpen()
        assertIs<AgentState.Ready>(AndroidAgent.state)
        assertEquals("start-1", agent.status().policyVersion)
        val job = assertNotNull(jobScheduler().getPendingJob(UploadJobIds.DEFAULT_PERIODIC), "periodic upload job")
        assertEquals(30 * 60_000L, job.intervalMillis)
        assertTrue(job.isPersisted)
        // The job waits for the network ConnectivityNetworkState calls usable: validated Internet.
        val request = assertNotNull(job.requiredNetwork)
        assertTrue(request.hasCapability(NetworkCapabilities.NET_CAPABILITY_VALIDATED))
        assertTrue(request.hasCapability(NetworkCapabilities.NET_CAPABILITY_INTERNET))
    }

    @Test
    fun theBroadcastAppliesANewConfiguration() {
        setRestrictions(managedPolicy("bc-1"))
        startAndOpen()
        // Exactly one receiver for the broadcast while started.
        assertEquals(1, shadowOf(app()).getReceiversForIntent(restrictionsChanged).size)
        setRestrictions(managedPolicy("bc-2"))
        app().sendBroadcast(restrictionsChanged)
        eventually(what = "policy bc-2 in force after the broadcast") { app().policyVersion() == "bc-2" }
    }

    @Test
    fun anActivityResumeAppliesANewConfiguration() {
        setRestrictions(managedPolicy("resume-1"))
        startAndOpen()
        setRestrictions(managedPolicy("resume-2"))
        Robolectric.buildActivity(Activity::class.java).setup() // created, started, resumed
        eventually(what = "policy resume-2 in force after a resume") { app().policyVersion() == "resume-2" }
    }

    @Test
    fun anOlderConfigurationNeverOverwritesANewerOne() = runBlocking {
        setRestrictions(managedPolicy("order-A"))
        startAndOpen()
        setRestrictions(managedPolicy("order-B"))
        // The race: apply 1 reads the Bundle (B), then takes its time before
        // applying; meanwhile the MDM pushes C and apply 2 starts. Unserialised, apply 2 would
        // read C and apply it, then apply 1 would apply B over it, and C would be skipped as
        // "unchanged" from then on. Serialised, apply 2 reads only after apply 1 is done.
        val firstRead = CountDownLatch(1)
        val secondDone = CountDownLatch(1)
        val reads = AtomicInteger()
        AndroidAgent.readManagedConfig = { context ->
            val tree = ManagedConfig(context).read()
            if (reads.incrementAndGet() == 1) {
                firstRead.countDown()
                // Bounded: unserialised, apply 2 finishes meanwhile; serialised, it cannot while
                // this apply runs, so this waits out its bound and goes on.
                secondDone.await(1, TimeUnit.SECONDS)
            }
            tree
        }
        val apply1 = async(Dispatchers.Default) { AndroidAgent.applyManagedConfig(app()) }
        assertTrue(firstRead.await(10, TimeUnit.SECONDS), "apply 1 did not read")
        setRestrictions(managedPolicy("order-C"))
        async(Dispatchers.Default) { AndroidAgent.applyManagedConfig(app()) }.await()
        secondDone.countDown()
        apply1.await()
        assertEquals("order-C", AndroidAgent.get(app()).status().policyVersion, "the latest Bundle is in force")
        // And stays so on the next resume (not skipped as unchanged).
        AndroidAgent.applyManagedConfig(app())
        assertEquals("order-C", AndroidAgent.get(app()).status().policyVersion)
        // Back to an earlier configuration: applied again (compared with the last one applied).
        setRestrictions(managedPolicy("order-B"))
        AndroidAgent.applyManagedConfig(app())
        assertEquals("order-B", AndroidAgent.get(app()).status().policyVersion)
    }

    @Test
    fun concurrentAppliesEndWithTheLatestConfiguration() = runBlocking {
        setRestrictions(managedPolicy("many-0"))
        startAndOpen()
        for (round in 1..3) {
            (1..6).map { i ->
                async(Dispatchers.Default) {
                    setRestrictions(managedPolicy("many-$round-$i"))
                    AndroidAgent.applyManagedConfig(app())
                }
            }.awaitAll()
            setRestrictions(managedPolicy("many-$round-final"))
            (1..3).map { async(Dispatchers.Default) { AndroidAgent.applyManagedConfig(app()) } }.awaitAll()
            assertEquals("many-$round-final", AndroidAgent.get(app()).status().policyVersion)
        }
    }

    @Test
    fun stopUnregistersTheReceiverAndTheActivityCallbacks() = runBlocking {
        setRestrictions(managedPolicy("stop-1"))
        startAndOpen()
        assertTrue(shadowOf(app()).hasReceiverForIntent(restrictionsChanged))
        AndroidAgent.stop()
        assertFalse(shadowOf(app()).hasReceiverForIntent(restrictionsChanged), "receiver left registered")
        assertIs<AgentState.NotStarted>(AndroidAgent.state)
        // Started again: one receiver, not two.
        startAndOpen()
        assertEquals(1, shadowOf(app()).getReceiversForIntent(restrictionsChanged).size)
    }

    @Test
    fun aFailingPlatformTlsInitIsCaptureUnavailableNotACrash() = runBlocking {
        // What the JNI init throws when rustls-platform-verifier's classes are missing.
        AndroidAgent.platformInit = { throw IllegalStateException("org/rustls/platformverifier/CertificateVerifier") }
        AndroidAgent.start(app())
        val e = assertFailsWith<CaptureUnavailableException> { AndroidAgent.get(app()) }
        assertEquals(UnavailableReason.NATIVE_LIBRARY, e.reason)
        val state = assertIs<AgentState.CaptureUnavailable>(AndroidAgent.state)
        assertFalse("rustls" in state.detail, "the detail names the failure's type only")
    }

    @Test
    fun jobIdsAreConfigurable() {
        setRestrictions(managedPolicy("ids-1"))
        startAndOpen(jobIds = UploadJobIds(periodic = 4242, soon = 4243))
        assertNotNull(jobScheduler().getPendingJob(4242))
        assertEquals(null, jobScheduler().getPendingJob(UploadJobIds.DEFAULT_PERIODIC))
    }

    @Test
    fun healthIsPublishedToTheMdmWithErrorsImmediately() {
        val reporter = RecordingKeyedAppStatesReporter()
        setRestrictions(Bundle()) // nothing configured yet: an error for the admin
        startAndOpen(reporter)
        assertTrue(reporter.immediate.isNotEmpty(), "the not-configured error goes out at once")
        val configured = reporter.immediate.last().single { it.getKey() == "verbatim.configured" }
        assertEquals(androidx.enterprise.feedback.KeyedAppState.SEVERITY_ERROR, configured.getSeverity())
    }

    @Test
    fun anEmptyBundleAfterAPolicyWithdrawsItAndANewOneResumesCapture() = runBlocking {
        validatedNetwork()
        setRestrictions(managedPolicy("wd-1"))
        val agent = startAndOpen()
        seqOf(agent.capture(message("before-removal")))
        val queued = agent.status().queueRecords
        assertTrue(queued > 0uL)

        // The MDM removes the configuration: the app sees an empty Bundle and the broadcast.
        setRestrictions(Bundle())
        app().sendBroadcast(restrictionsChanged)
        eventually(what = "policy withdrawn") { !agent.status().configured }
        assertTrue("policy_withdrawn" in agent.status().unavailable, "${agent.status().unavailable}")
        // Capture fails closed, typed: the app blocks business messaging.
        assertFailsWith<VerbatimException.NotConfigured> { agent.capture(message("during-removal")) }
        // What was queued is the firm's: it still uploads to the archive of the removed policy.
        if (ARCHIVE != null) {
            val report = agent.upload(30.seconds)
            assertEquals(StopReason.DONE, report.stopped, "${report.detail}")
            assertTrue(report.recordsSent > 0uL)
            assertEquals(0uL, agent.status().queueRecords)
        } else {
            assertEquals(queued, agent.status().queueRecords, "nothing deleted")
        }
        // A resume with the Bundle still empty records nothing more (withdrawn once).
        AndroidAgent.applyManagedConfig(app())
        assertFalse(agent.status().configured)

        // The same configuration pushed again resumes capture.
        setRestrictions(managedPolicy("wd-1"))
        app().sendBroadcast(restrictionsChanged)
        eventually(what = "capture resumed") { agent.status().configured }
        seqOf(agent.capture(message("after-removal")))
        Unit
    }
}
