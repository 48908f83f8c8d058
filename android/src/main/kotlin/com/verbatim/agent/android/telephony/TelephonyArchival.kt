package com.verbatim.agent.android.telephony

import android.app.job.JobInfo
import android.app.job.JobScheduler
import android.content.ComponentName
import android.content.Context
import android.util.Log
import com.verbatim.agent.android.AndroidAgent
import com.verbatim.agent.android.CaptureUnavailableException
import com.verbatim.agent.android.UploadScheduler
import com.verbatim.ffi.VerbatimException
import com.verbatim.ffi.core.ScanReport
import java.io.File
import java.util.concurrent.atomic.AtomicBoolean
import java.util.concurrent.atomic.AtomicInteger
import kotlin.time.Duration
import kotlin.time.TimeSource
import kotlinx.coroutines.sync.Mutex
import kotlinx.coroutines.sync.withLock

/**
 * Google Messages' archival mode on a fully managed phone (see docs/mdm-admin.md): the scans of
 * the Telephony provider that [ArchivalService] (Google Messages' wake-up) and
 * [ReconciliationJobService] (the periodic catch-up) run, one at a time.
 *
 * Call [start] once from the app (e.g. next to `AndroidAgent.start`) to schedule the
 * reconciliation job: on Messages builds that never send the wake-up it is the only way
 * messages are captured.
 */
object TelephonyArchival {
    private const val TAG = "Verbatim"

    /** "VER" + 3: the default id of the reconciliation job (the upload jobs use + 1 and + 2). */
    const val DEFAULT_RECONCILIATION_JOB_ID = 0x56_45_52_03

    /** How often the reconciliation scan runs (JobScheduler's minimum period). */
    const val RECONCILIATION_PERIOD_MINUTES = 15L

    @Volatile
    var reconciliationJobId: Int = DEFAULT_RECONCILIATION_JOB_ID
        private set

    /** The organisation the notice names, once the agent told us (before it has: a generic notice). */
    @Volatile
    internal var organizationName: String? = null

    private val scanning = Mutex()
    private val requested = AtomicBoolean(false)

    /** Wake-ups waiting for the scan in progress (tests observe it). */
    internal val waiting = AtomicInteger(0)

    /**
     * Schedules the persisted periodic reconciliation job (no network needed: it only reads the
     * provider and captures; uploads follow their own jobs). [jobId] is shared with the whole app:
     * choose one the app does not use, and keep it stable. False when JobScheduler refused it.
     */
    @JvmStatic
    @JvmOverloads
    fun start(context: Context, jobId: Int = DEFAULT_RECONCILIATION_JOB_ID): Boolean {
        val app = context.applicationContext
        val jobs = app.getSystemService(JobScheduler::class.java)
        if (jobId != reconciliationJobId) jobs.cancel(reconciliationJobId)
        reconciliationJobId = jobId
        val job = JobInfo.Builder(jobId, ComponentName(app, ReconciliationJobService::class.java))
            .setPeriodic(RECONCILIATION_PERIOD_MINUTES * 60_000L)
            .setPersisted(true)
            .build()
        val pending = jobs.getPendingJob(jobId)
        if (pending != null && pending.intervalMillis == job.intervalMillis && pending.service == job.service) return true
        if (jobs.schedule(job) != JobScheduler.RESULT_SUCCESS) {
            Log.e(TAG, "the telephony reconciliation job (id $jobId) was refused by JobScheduler; choose another id in TelephonyArchival.start")
            return false
        }
        return true
    }

    /** Cancels the reconciliation job (archival turned off for this app). */
    @JvmStatic
    fun stop(context: Context) {
        context.applicationContext.getSystemService(JobScheduler::class.java).cancel(reconciliationJobId)
    }

    /**
     * A wake-up: scans the provider, one scan at a time. A wake-up during a scan asks for one
     * more pass after it (however many arrive, one pass), so a row written while a scan read past
     * it is still seen; the caller returns once a pass that started after its wake-up is done.
     * Stops between pages once [budget] is spent (what was captured is kept; the next wake-up or
     * the reconciliation job goes on). Returns the reports of the passes this call ran (empty when
     * another caller's pass covered it). Never throws for a capture problem: it is logged.
     */
    suspend fun wake(context: Context, budget: Duration): List<ScanReport> {
        val deadline = TimeSource.Monotonic.markNow() + budget
        requested.set(true)
        waiting.incrementAndGet()
        return scanning.withLock {
            waiting.decrementAndGet()
            val reports = ArrayList<ScanReport>()
            while (requested.getAndSet(false)) {
                reports += scanOnce(context.applicationContext, deadline) ?: break
            }
            reports
        }
    }

    private suspend fun scanOnce(app: Context, deadline: TimeSource.Monotonic.ValueTimeMark): ScanReport? {
        try {
            val agent = AndroidAgent.get(app)
            organizationName = agent.status().organizationName
            val reader = TelephonyReader(app.contentResolver, File(app.cacheDir, "verbatim-parts"))
            val report = agent.beginTelephonyScan().use { scan -> reader.readInto(scan, deadline) }
            Log.i(TAG, "telephony scan: ${report.events.size} events, ${report.unchanged} unchanged, ${report.baseline} history")
            if (report.events.isNotEmpty()) UploadScheduler.scheduleSoon(app, agent.status().uploadSchedule)
            return report
        } catch (e: TelephonyReader.OutOfTime) {
            requested.set(true) // unfinished: the next wake-up or the job scans again
            Log.w(TAG, "telephony scan stopped at its time budget; the next one goes on")
        } catch (e: java.io.IOException) {
            // A media part that could not be streamed: nothing of its row is captured yet; the
            // next scan offers it again.
            Log.w(TAG, "telephony scan stopped: a message part could not be read (${e.javaClass.simpleName})")
        } catch (e: SecurityException) {
            Log.e(TAG, "telephony scan: READ_SMS is not granted (the device owner grants it, see the admin guide)")
        } catch (e: CaptureUnavailableException) {
            Log.e(TAG, "telephony scan: capture unavailable: ${e.reason}")
        } catch (e: VerbatimException) {
            // Typed and metadata-only (not configured, queue full, ...): the next scan tries again.
            Log.w(TAG, "telephony scan refused: ${e.kind()}: ${e.message}")
        }
        return null
    }
}
