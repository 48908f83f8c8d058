package com.verbatim.agent.android

import android.app.job.JobParameters
import android.net.ConnectivityManager
import android.net.NetworkCapabilities
import kotlin.test.assertFalse
import kotlin.test.assertTrue
import kotlinx.coroutines.runBlocking
import org.junit.After
import org.junit.Before
import org.junit.Test
import org.junit.runner.RunWith
import org.robolectric.Robolectric
import org.robolectric.RobolectricTestRunner
import org.robolectric.Shadows.shadowOf
import org.robolectric.annotation.Config
import org.robolectric.shadows.ShadowNetworkCapabilities

@RunWith(RobolectricTestRunner::class)
@Config(sdk = [34], manifest = Config.NONE)
class UploadJobServiceTest {
    @Before
    fun setUp() = resetAndroidAgent()

    @After
    fun tearDown() = resetAndroidAgent()

    /** JobParameters has no public constructor: the framework's own, with every int the job id. */
    private fun jobParameters(jobId: Int): JobParameters {
        val ctor = JobParameters::class.java.declaredConstructors.maxBy { it.parameterCount }
        ctor.isAccessible = true
        val args: List<Any?> = ctor.parameterTypes.map { type ->
            when (type) {
                Int::class.javaPrimitiveType -> jobId
                Boolean::class.javaPrimitiveType -> false
                Long::class.javaPrimitiveType -> 0L
                else -> null
            }
        }
        return (ctor.newInstance(*args.toTypedArray()) as JobParameters).also { check(it.jobId == jobId) }
    }

    private fun network(validated: Boolean) {
        val connectivity = app().getSystemService(ConnectivityManager::class.java)
        val caps = ShadowNetworkCapabilities.newInstance()
        shadowOf(caps).apply {
            addCapability(NetworkCapabilities.NET_CAPABILITY_INTERNET)
            addCapability(NetworkCapabilities.NET_CAPABILITY_NOT_ROAMING)
            addCapability(NetworkCapabilities.NET_CAPABILITY_NOT_METERED)
            if (validated) addCapability(NetworkCapabilities.NET_CAPABILITY_VALIDATED)
        }
        shadowOf(connectivity).setNetworkCapabilities(connectivity.activeNetwork, caps)
    }

    private fun runJob(): Boolean {
        setRestrictions(managedPolicy("job-1"))
        AndroidAgent.start(app())
        runBlocking { AndroidAgent.get(app()) }
        val service = Robolectric.buildService(UploadJobService::class.java).create().get()
        assertTrue(service.onStartJob(jobParameters(UploadJobIds.DEFAULT_PERIODIC)), "work continues off the main thread")
        eventually(what = "jobFinished called") { shadowOf(service).isJobFinished }
        return shadowOf(service).isRescheduleNeeded
    }

    @Test
    fun aRunThatFindsNoUsableNetworkAsksToBeRescheduled() {
        network(validated = false) // a captive portal: the job's window came, the network is not usable
        assertTrue(runJob(), "offline: jobFinished(params, true) for a retry with backoff")
    }

    @Test
    fun aRunOnAUsableNetworkFinishesWithoutRetry() {
        network(validated = true)
        assertFalse(runJob(), "an upload that ran is not rescheduled early")
    }
}
