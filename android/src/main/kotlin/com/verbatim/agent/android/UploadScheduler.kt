package com.verbatim.agent.android

import android.app.job.JobInfo
import android.app.job.JobScheduler
import android.content.ComponentName
import android.content.Context
import com.verbatim.ffi.core.RequiredNetwork
import com.verbatim.ffi.core.UploadSchedule

/**
 * Keeps the upload job scheduled as the policy in force says (`AgentStatus.uploadSchedule`,
 * computed in Rust): a persisted periodic job, plus a one-off "soon" job when an upload was cut
 * short by its deadline with records left (`UploadReport.retrySoon`).
 */
object UploadScheduler {
    const val PERIODIC_JOB_ID = 0x56_45_52_01
    const val SOON_JOB_ID = 0x56_45_52_02

    /** JobScheduler runs periodic jobs at most every 15 minutes. */
    private const val MIN_PERIOD_MINUTES = 15L

    private fun networkType(required: RequiredNetwork): Int = when (required) {
        RequiredNetwork.UNMETERED -> JobInfo.NETWORK_TYPE_UNMETERED
        RequiredNetwork.NOT_ROAMING -> JobInfo.NETWORK_TYPE_NOT_ROAMING
        RequiredNetwork.ANY -> JobInfo.NETWORK_TYPE_ANY
    }

    /** Schedules (or, without a policy, cancels) the periodic upload job; no-op when unchanged. */
    @JvmStatic
    fun schedule(context: Context, schedule: UploadSchedule?) {
        val jobs = context.getSystemService(JobScheduler::class.java)
        if (schedule == null) {
            jobs.cancel(PERIODIC_JOB_ID)
            return
        }
        val network = networkType(schedule.requiredNetwork)
        val periodMs = maxOf(schedule.intervalMinutes.toLong(), MIN_PERIOD_MINUTES) * 60_000L
        val pending = jobs.getPendingJob(PERIODIC_JOB_ID)
        @Suppress("DEPRECATION")
        if (pending != null && pending.networkType == network && pending.intervalMillis == periodMs) return
        val job = JobInfo.Builder(PERIODIC_JOB_ID, ComponentName(context, UploadJobService::class.java))
            .setRequiredNetworkType(network)
            .setPeriodic(periodMs)
            .setPersisted(true)
            .build()
        jobs.schedule(job)
    }

    /** One more upload as soon as the policy's network is there. */
    @JvmStatic
    fun scheduleSoon(context: Context, schedule: UploadSchedule?) {
        if (schedule == null) return
        val jobs = context.getSystemService(JobScheduler::class.java)
        val job = JobInfo.Builder(SOON_JOB_ID, ComponentName(context, UploadJobService::class.java))
            .setRequiredNetworkType(networkType(schedule.requiredNetwork))
            .build()
        jobs.schedule(job)
    }
}
