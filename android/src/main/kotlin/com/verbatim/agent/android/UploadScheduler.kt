package com.verbatim.agent.android

import android.app.job.JobInfo
import android.app.job.JobScheduler
import android.content.ComponentName
import android.content.Context
import android.net.NetworkCapabilities
import android.net.NetworkRequest
import android.os.Build
import android.util.Log
import com.verbatim.ffi.core.RequiredNetwork
import com.verbatim.ffi.core.UploadSchedule

/**
 * The two JobScheduler job ids the library uses. Job ids are shared by the whole app (every
 * library in it included): pick ids the host app does not use, and keep them stable across
 * releases (a persisted job outlives an update). Pass them to [AndroidAgent.start].
 */
data class UploadJobIds(
    /** The persisted periodic upload job. */
    val periodic: Int = DEFAULT_PERIODIC,
    /** The one-off "upload soon" job (after an upload cut short with records left). */
    val soon: Int = DEFAULT_SOON,
) {
    init {
        require(periodic != soon) { "the periodic and soon upload job ids must differ (both $periodic)" }
    }

    companion object {
        /** "VER" + 1 and 2: the documented defaults. */
        const val DEFAULT_PERIODIC = 0x56_45_52_01
        const val DEFAULT_SOON = 0x56_45_52_02

        @JvmField
        val DEFAULT = UploadJobIds()
    }
}

/**
 * Keeps the upload job scheduled as the policy in force says (`AgentStatus.uploadSchedule`,
 * computed in Rust): a persisted periodic job, plus a one-off "soon" job when an upload was cut
 * short by its deadline with records left (`UploadReport.retrySoon`).
 *
 * The network constraint matches what [ConnectivityNetworkState] reports as usable: on API 28+
 * the job asks for a validated Internet network (a captive portal not yet passed does not start
 * it); on API 26-27 only the network type can be asked for, and a run that finds itself offline
 * is rescheduled by [UploadJobService] with the job's backoff.
 */
object UploadScheduler {
    private const val TAG = "Verbatim"

    /** JobScheduler runs periodic jobs at most every 15 minutes. */
    private const val MIN_PERIOD_MINUTES = 15L

    /** First retry after a run that found no usable network; JobScheduler doubles it. */
    const val BACKOFF_MILLIS = 30_000L

    @Volatile
    var jobIds: UploadJobIds = UploadJobIds.DEFAULT
        internal set

    private fun networkType(required: RequiredNetwork): Int = when (required) {
        RequiredNetwork.UNMETERED -> JobInfo.NETWORK_TYPE_UNMETERED
        RequiredNetwork.NOT_ROAMING -> JobInfo.NETWORK_TYPE_NOT_ROAMING
        RequiredNetwork.ANY -> JobInfo.NETWORK_TYPE_ANY
    }

    /** The network the job waits for (API 28+): Internet, validated, plus the policy's limit. */
    internal fun networkRequest(required: RequiredNetwork): NetworkRequest {
        val builder = NetworkRequest.Builder()
            .addCapability(NetworkCapabilities.NET_CAPABILITY_INTERNET)
            .addCapability(NetworkCapabilities.NET_CAPABILITY_VALIDATED)
        when (required) {
            RequiredNetwork.UNMETERED -> builder.addCapability(NetworkCapabilities.NET_CAPABILITY_NOT_METERED)
            RequiredNetwork.NOT_ROAMING -> builder.addCapability(NetworkCapabilities.NET_CAPABILITY_NOT_ROAMING)
            RequiredNetwork.ANY -> {}
        }
        return builder.build()
    }

    private fun JobInfo.Builder.requireNetwork(required: RequiredNetwork): JobInfo.Builder =
        if (Build.VERSION.SDK_INT >= Build.VERSION_CODES.P) {
            setRequiredNetwork(networkRequest(required))
        } else {
            setRequiredNetworkType(networkType(required))
        }

    /**
     * Schedules (or, without a policy, cancels) the periodic upload job; no-op when unchanged.
     * Returns false when JobScheduler refused the job (`RESULT_FAILURE`: too many jobs, or an
     * invalid job), which is logged as an error.
     */
    @JvmStatic
    fun schedule(context: Context, schedule: UploadSchedule?): Boolean {
        val jobs = context.getSystemService(JobScheduler::class.java)
        val id = jobIds.periodic
        if (schedule == null) {
            jobs.cancel(id)
            return true
        }
        val periodMs = maxOf(schedule.intervalMinutes.toLong(), MIN_PERIOD_MINUTES) * 60_000L
        val job = JobInfo.Builder(id, ComponentName(context, UploadJobService::class.java))
            .requireNetwork(schedule.requiredNetwork)
            .setPeriodic(periodMs)
            .setBackoffCriteria(BACKOFF_MILLIS, JobInfo.BACKOFF_POLICY_EXPONENTIAL)
            .setPersisted(true)
            .build()
        val pending = jobs.getPendingJob(id)
        if (pending != null && sameConstraints(pending, job)) return true
        return submit(jobs, job, "periodic")
    }

    /** One more upload as soon as the policy's network is there. False when refused (logged). */
    @JvmStatic
    fun scheduleSoon(context: Context, schedule: UploadSchedule?): Boolean {
        if (schedule == null) return true
        val jobs = context.getSystemService(JobScheduler::class.java)
        val job = JobInfo.Builder(jobIds.soon, ComponentName(context, UploadJobService::class.java))
            .requireNetwork(schedule.requiredNetwork)
            .setBackoffCriteria(BACKOFF_MILLIS, JobInfo.BACKOFF_POLICY_EXPONENTIAL)
            .build()
        return submit(jobs, job, "soon")
    }

    private fun sameConstraints(a: JobInfo, b: JobInfo): Boolean {
        @Suppress("DEPRECATION")
        val sameNetwork = if (Build.VERSION.SDK_INT >= Build.VERSION_CODES.P) {
            a.requiredNetwork == b.requiredNetwork
        } else {
            a.networkType == b.networkType
        }
        return sameNetwork && a.intervalMillis == b.intervalMillis && a.isPersisted == b.isPersisted
    }

    private fun submit(jobs: JobScheduler, job: JobInfo, what: String): Boolean {
        val result = jobs.schedule(job)
        if (result != JobScheduler.RESULT_SUCCESS) {
            // Too many jobs in the app, or an id the app uses for another service: uploads wait
            // for the next successful schedule (at the next policy change, upload or start).
            Log.e(TAG, "the $what upload job (id ${job.id}) was refused by JobScheduler; choose other ids in AndroidAgent.start if the app uses this one")
            return false
        }
        return true
    }
}
