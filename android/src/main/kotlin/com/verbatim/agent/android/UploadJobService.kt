package com.verbatim.agent.android

import android.app.job.JobParameters
import android.app.job.JobService
import android.util.Log
import com.verbatim.ffi.core.StopReason
import com.verbatim.ffi.VerbatimException
import java.util.concurrent.ConcurrentHashMap
import kotlin.time.Duration.Companion.minutes
import kotlinx.coroutines.CancellationException
import kotlinx.coroutines.CoroutineExceptionHandler
import kotlinx.coroutines.CoroutineStart
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.Job
import kotlinx.coroutines.SupervisorJob
import kotlinx.coroutines.cancel
import kotlinx.coroutines.isActive
import kotlinx.coroutines.launch

/**
 * Runs the agent's upload when JobScheduler grants a window (scheduled by [UploadScheduler]
 * with the network constraint of the policy). The upload gets a deadline well inside the job's
 * execution limit (10 minutes on current Android); if the system stops the job earlier, the
 * coroutine is cancelled, which stops the upload safely (nothing is deleted before the archive
 * acknowledged), and the job is rescheduled. A run that finds no usable network after all
 * (offline, or a network the policy does not allow) finishes with `jobFinished(params, true)`:
 * JobScheduler runs it again after the job's backoff instead of waiting a whole period.
 */
class UploadJobService : JobService() {
    // An exception nothing expected is logged (the job is still finished, in `finally`), never
    // rethrown on a pool thread, where it would crash the host app.
    private val scope = CoroutineScope(
        SupervisorJob() + Dispatchers.Default +
            CoroutineExceptionHandler { _, e -> Log.e(TAG, "upload job failed: ${e.javaClass.simpleName}") },
    )
    private val running = ConcurrentHashMap<Int, Job>()

    override fun onStartJob(params: JobParameters): Boolean {
        // Started only once it is in `running`: a run that finishes at once (offline) must find
        // itself there, or jobFinished would never be called and the job would hang until the
        // system times it out.
        val job = scope.launch(start = CoroutineStart.LAZY) {
            var reschedule = false
            try {
                val agent = AndroidAgent.get(applicationContext)
                val report = agent.upload(UPLOAD_DEADLINE)
                Log.i(TAG, "upload: ${report.stopped}, ${report.recordsSent} records, acked through ${report.ackedThrough}")
                // The job started on a network that is gone (or no longer allowed) by the time the
                // upload looked: run again soon, with the job's backoff, not at the next period.
                reschedule = report.stopped in RETRY_WITH_BACKOFF
                if (report.retrySoon) UploadScheduler.scheduleSoon(applicationContext, agent.status().uploadSchedule)
                AndroidAgent.refresh(applicationContext)
            } catch (e: CancellationException) {
                throw e
            } catch (e: CaptureUnavailableException) {
                Log.e(TAG, "upload not run: capture unavailable: ${e.reason}")
            } catch (e: VerbatimException) {
                // Typed and metadata-only; the next scheduled window tries again.
                Log.w(TAG, "upload not run: ${e.kind()}: ${e.message}")
            } finally {
                if (running.remove(params.jobId) != null && isActive) jobFinished(params, reschedule)
            }
        }
        running[params.jobId] = job
        job.start()
        return true // work continues on the coroutine
    }

    override fun onStopJob(params: JobParameters): Boolean {
        running.remove(params.jobId)?.cancel()
        return true // stopped by the system: run again later
    }

    override fun onDestroy() {
        scope.cancel()
        super.onDestroy()
    }

    companion object {
        private const val TAG = "Verbatim"

        /** Inside JobScheduler's 10-minute execution limit, with room for the report. */
        val UPLOAD_DEADLINE = 8.minutes

        /** Stops that mean "no usable network after all": retried with backoff. */
        private val RETRY_WITH_BACKOFF = setOf(StopReason.OFFLINE, StopReason.NOT_ALLOWED)
    }
}
