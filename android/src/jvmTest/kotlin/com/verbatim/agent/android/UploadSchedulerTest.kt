package com.verbatim.agent.android

import android.app.job.JobInfo
import android.net.NetworkCapabilities
import com.verbatim.ffi.core.RequiredNetwork
import com.verbatim.ffi.core.UploadSchedule
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertFalse
import kotlin.test.assertNotNull
import kotlin.test.assertNull
import kotlin.test.assertTrue
import org.junit.After
import org.junit.Before
import org.junit.Test
import org.junit.runner.RunWith
import org.robolectric.RobolectricTestRunner
import org.robolectric.Shadows.shadowOf
import org.robolectric.annotation.Config

@RunWith(RobolectricTestRunner::class)
@Config(sdk = [34], manifest = Config.NONE)
class UploadSchedulerTest {
    @Before
    fun setUp() = resetAndroidAgent()

    @After
    fun tearDown() = resetAndroidAgent()

    private fun schedule(network: RequiredNetwork, minutes: UInt = 20u) = UploadSchedule(network, minutes)

    @Test
    fun thePeriodicJobAsksForAValidatedNetworkOfThePolicysKind() {
        val cases = mapOf(
            RequiredNetwork.ANY to emptyList(),
            RequiredNetwork.UNMETERED to listOf(NetworkCapabilities.NET_CAPABILITY_NOT_METERED),
            RequiredNetwork.NOT_ROAMING to listOf(NetworkCapabilities.NET_CAPABILITY_NOT_ROAMING),
        )
        for ((required, extra) in cases) {
            assertTrue(UploadScheduler.schedule(app(), schedule(required)))
            val job = assertNotNull(jobScheduler().getPendingJob(UploadJobIds.DEFAULT_PERIODIC))
            val request = assertNotNull(job.requiredNetwork, "$required: a NetworkRequest (API 28+)")
            for (cap in listOf(NetworkCapabilities.NET_CAPABILITY_INTERNET, NetworkCapabilities.NET_CAPABILITY_VALIDATED) + extra) {
                assertTrue(request.hasCapability(cap), "$required: capability $cap")
            }
            assertEquals(20 * 60_000L, job.intervalMillis)
            assertEquals(JobInfo.BACKOFF_POLICY_EXPONENTIAL, job.backoffPolicy)
            assertEquals(UploadScheduler.BACKOFF_MILLIS, job.initialBackoffMillis)
        }
        // The soon job: the same constraint.
        assertTrue(UploadScheduler.scheduleSoon(app(), schedule(RequiredNetwork.UNMETERED)))
        val soon = assertNotNull(jobScheduler().getPendingJob(UploadJobIds.DEFAULT_SOON))
        assertTrue(soon.requiredNetwork!!.hasCapability(NetworkCapabilities.NET_CAPABILITY_VALIDATED))
        assertFalse(soon.isPeriodic)
    }

    @Test
    fun theIntervalHasJobSchedulersFloorAndNoPolicyCancels() {
        UploadScheduler.schedule(app(), schedule(RequiredNetwork.ANY, minutes = 1u))
        assertEquals(15 * 60_000L, jobScheduler().getPendingJob(UploadJobIds.DEFAULT_PERIODIC)!!.intervalMillis)
        UploadScheduler.schedule(app(), null)
        assertNull(jobScheduler().getPendingJob(UploadJobIds.DEFAULT_PERIODIC))
    }

    @Test
    fun aRefusedJobIsReportedNotIgnored() {
        shadowOf(jobScheduler()).failOnJob(UploadJobIds.DEFAULT_PERIODIC)
        assertFalse(UploadScheduler.schedule(app(), schedule(RequiredNetwork.ANY)), "RESULT_FAILURE must be reported")
        shadowOf(jobScheduler()).failOnJob(UploadJobIds.DEFAULT_SOON)
        assertFalse(UploadScheduler.scheduleSoon(app(), schedule(RequiredNetwork.ANY)))
    }

    @Test
    fun otherJobIdsLeaveTheAppsOwnJobsAlone() {
        // The host app's own job under the default id stays untouched.
        val appJob = JobInfo.Builder(UploadJobIds.DEFAULT_PERIODIC, android.content.ComponentName(app(), "com.example.AppJob"))
            .setMinimumLatency(60_000).build()
        jobScheduler().schedule(appJob)
        UploadScheduler.jobIds = UploadJobIds(periodic = 9001, soon = 9002)
        assertTrue(UploadScheduler.schedule(app(), schedule(RequiredNetwork.ANY)))
        UploadScheduler.schedule(app(), null)
        assertEquals("com.example.AppJob", jobScheduler().getPendingJob(UploadJobIds.DEFAULT_PERIODIC)!!.service.className)
        assertNull(jobScheduler().getPendingJob(9001))
        assertFailsWith<IllegalArgumentException> { UploadJobIds(periodic = 7, soon = 7) }
    }
}
