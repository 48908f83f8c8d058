package com.verbatim.agent.android

import android.app.Activity
import android.app.Application
import android.content.Context
import android.os.Bundle
import android.util.Log
import com.verbatim.agent.FeedbackPublisher
import com.verbatim.agent.VerbatimAgent
import com.verbatim.agent.agentObserver
import com.verbatim.agent.publishFeedback
import com.verbatim.ffi.AgentNotice
import com.verbatim.ffi.AgentObserver
import com.verbatim.ffi.LogSink
import com.verbatim.ffi.PolicyValue
import com.verbatim.ffi.VerbatimException
import java.io.File
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.SupervisorJob
import kotlinx.coroutines.launch
import kotlinx.coroutines.sync.Mutex
import kotlinx.coroutines.sync.withLock
import kotlinx.coroutines.withContext

/**
 * The process's one agent on Android, and the platform glue around it (no decisions):
 * - opens it in app-private no-backup storage, after the one-time TLS initialisation;
 * - applies the managed configuration at start, on `ACTION_APPLICATION_RESTRICTIONS_CHANGED`
 *   and whenever an activity resumes (the broadcast only reaches a running process);
 * - keeps the upload job scheduled as the policy says;
 * - publishes health to the MDM feedback channel after every change.
 *
 * Call [start] from `Application.onCreate`; use [get] (suspending) wherever the agent is needed.
 */
object AndroidAgent {
    private const val TAG = "Verbatim"

    private val scope = CoroutineScope(SupervisorJob() + Dispatchers.Default)
    private val lock = Mutex()

    @Volatile
    private var agent: VerbatimAgent? = null
    @Volatile
    private var settings = Settings()
    private var lastTree: PolicyValue? = null
    private var started = false

    private class Settings(
        val observer: AgentObserver? = null,
        val feedback: FeedbackPublisher? = null,
        val logSink: LogSink? = LogcatSink(),
    )

    /**
     * Starts the agent in the background. [observer] receives the agent's notices (on an agent
     * thread: post to your own dispatcher); [feedback] is where health goes for the MDM admin
     * (e.g. `KeyedAppStatesPublisher(context)`); [logSink] receives filtered log records.
     */
    @JvmStatic
    @JvmOverloads
    fun start(
        context: Context,
        observer: AgentObserver? = null,
        feedback: FeedbackPublisher? = null,
        logSink: LogSink? = LogcatSink(),
    ) {
        val app = context.applicationContext
        synchronized(this) {
            if (started) return
            started = true
            settings = Settings(observer, feedback, logSink)
        }
        (app as? Application)?.registerActivityLifecycleCallbacks(ResumeWatcher(app))
        scope.launch {
            try {
                get(app)
            } catch (e: VerbatimException) {
                Log.e(TAG, "agent did not start: ${e.kind()}: ${e.message}")
            }
        }
    }

    /** The agent, opened on first use. Main-safe: the opening work runs on Dispatchers.IO. */
    suspend fun get(context: Context): VerbatimAgent = agent ?: lock.withLock {
        agent ?: withContext(Dispatchers.IO) { open(context.applicationContext) }.also { agent = it }
    }

    private suspend fun open(app: Context): VerbatimAgent {
        PlatformTls.init(app)
        VerbatimAgent.setLogSink(settings.logSink)
        val forward = settings.observer
        val observer = agentObserver { notice ->
            // After a change: reschedule (policy) and republish health, off the agent's thread.
            scope.launch { onNotice(app, notice) }
            forward?.onEvent(notice)
        }
        val opened = VerbatimAgent.open(File(app.noBackupFilesDir, "verbatim"), ConnectivityNetworkState(app), observer)
        ManagedConfig(app).watch { scope.launch { applyManagedConfig(app) } }
        applyManagedConfig(app, opened)
        UploadScheduler.schedule(app, opened.status().uploadSchedule)
        settings.feedback?.let { opened.publishFeedback(it) }
        return opened
    }

    private suspend fun onNotice(app: Context, notice: AgentNotice) {
        val current = agent ?: return
        if (notice is AgentNotice.PolicyApplied) UploadScheduler.schedule(app, current.status().uploadSchedule)
        settings.feedback?.let { current.publishFeedback(it) }
    }

    /** Re-reads the managed configuration and applies it if it changed since the last push. */
    suspend fun applyManagedConfig(context: Context, target: VerbatimAgent? = null) {
        val current = target ?: agent ?: return
        val tree = withContext(Dispatchers.IO) { ManagedConfig(context).read() } // binder IPC
        synchronized(this) {
            if (tree == lastTree) return
            lastTree = tree
        }
        try {
            val warnings = current.applyPolicy(tree)
            if (warnings.isNotEmpty()) Log.w(TAG, "policy warnings: ${warnings.joinToString { "${it.key}: ${it.kind}" }}")
        } catch (e: VerbatimException.PolicyRejected) {
            // The agent recorded it and notified the observer; the MDM sees it in the feedback.
            Log.w(TAG, "managed configuration rejected: ${e.problems.joinToString { "${it.key}: ${it.kind}" }}")
        } catch (e: VerbatimException) {
            // Not applied (storage, closed): try again at the next change or resume.
            synchronized(this) { lastTree = null }
            Log.e(TAG, "managed configuration not applied: ${e.kind()}: ${e.message}")
        }
    }

    /** Republishes health and reschedules after an upload (called by [UploadJobService]). */
    suspend fun refresh(context: Context) {
        val current = agent ?: return
        UploadScheduler.schedule(context.applicationContext, current.status().uploadSchedule)
        settings.feedback?.let { current.publishFeedback(it) }
    }

    private class ResumeWatcher(private val app: Context) : Application.ActivityLifecycleCallbacks {
        override fun onActivityResumed(activity: Activity) {
            scope.launch { applyManagedConfig(app) }
        }

        override fun onActivityCreated(activity: Activity, savedInstanceState: Bundle?) {}
        override fun onActivityStarted(activity: Activity) {}
        override fun onActivityPaused(activity: Activity) {}
        override fun onActivityStopped(activity: Activity) {}
        override fun onActivitySaveInstanceState(activity: Activity, outState: Bundle) {}
        override fun onActivityDestroyed(activity: Activity) {}
    }
}
