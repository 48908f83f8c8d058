package com.verbatim.agent.android.telephony

import android.app.job.JobParameters
import android.app.job.JobService
import android.util.Log
import java.util.concurrent.ConcurrentHashMap
import kotlin.time.Duration.Companion.minutes
import kotlinx.coroutines.CoroutineExceptionHandler
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.CoroutineStart
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.Job
import kotlinx.coroutines.SupervisorJob
import kotlinx.coroutines.cancel
import kotlinx.coroutines.isActive
import kotlinx.coroutines.launch

/**
 * The periodic reconciliation scan ([TelephonyArchival.start] schedules it): the same scan as a
 * Google Messages wake-up, for wake-ups that were missed or never sent (older Messages builds).
 */
class ReconciliationJobService : JobService() {
    private val scope = CoroutineScope(
        SupervisorJob() + Dispatchers.Default +
            CoroutineExceptionHandler { _, e -> Log.e("Verbatim", "telephony reconciliation failed: ${e.javaClass.simpleName}") },
    )
    private val running = ConcurrentHashMap<Int, Job>()

    override fun onStartJob(params: JobParameters): Boolean {
        val job = scope.launch(start = CoroutineStart.LAZY) {
            try {
                TelephonyArchival.wake(applicationContext, SCAN_BUDGET)
            } finally {
                if (running.remove(params.jobId) != null && isActive) jobFinished(params, false)
            }
        }
        running[params.jobId] = job
        job.start()
        return true
    }

    override fun onStopJob(params: JobParameters): Boolean {
        running.remove(params.jobId)?.cancel()
        return true
    }

    override fun onDestroy() {
        scope.cancel()
        super.onDestroy()
    }

    companion object {
        /** Inside JobScheduler's 10-minute execution limit. */
        val SCAN_BUDGET = 8.minutes
    }
}
