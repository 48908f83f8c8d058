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
import kotlinx.coroutines.CoroutineExceptionHandler
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.SupervisorJob
import kotlinx.coroutines.cancelChildren
import kotlinx.coroutines.launch
import kotlinx.coroutines.sync.Mutex
import kotlinx.coroutines.sync.withLock
import kotlinx.coroutines.withContext

/** Whether the app can capture now; read [AndroidAgent.state] before letting a message through. */
sealed class AgentState {
    /** [AndroidAgent.start] was not called yet (or [AndroidAgent.stop] was). */
    object NotStarted : AgentState()

    /** Started; the agent is opening. */
    object Starting : AgentState()

    /** The agent is open (capture itself still follows the policy: see `status()`). */
    object Ready : AgentState()

    /** Capture cannot work in this process: block sending if the policy fails closed. */
    data class CaptureUnavailable(val reason: UnavailableReason, val detail: String) : AgentState()
}

enum class UnavailableReason {
    /**
     * The native library could not be loaded or linked (missing for this ABI, a broken APK split,
     * a JNI symbol missing), or its one-time platform TLS initialisation failed. Permanent for
     * this process.
     */
    NATIVE_LIBRARY,

    /** The agent's store could not be opened (`VerbatimException`); the next [AndroidAgent.get] tries again. */
    OPEN_FAILED,
}

/** Thrown by [AndroidAgent.get] when capture is unavailable; never a crash of the app. */
class CaptureUnavailableException(
    val reason: UnavailableReason,
    message: String,
    cause: Throwable? = null,
) : Exception(message, cause)

/**
 * The process's one agent on Android, and the platform glue around it (no decisions):
 * - opens it in app-private no-backup storage, after the one-time TLS initialisation;
 * - applies the managed configuration at start, on `ACTION_APPLICATION_RESTRICTIONS_CHANGED`
 *   and whenever an activity resumes (the broadcast only reaches a running process), one at a
 *   time and always from the latest restrictions Bundle; an empty Bundle (the MDM removed the
 *   configuration) withdraws the policy in force;
 * - keeps the upload job scheduled as the policy says;
 * - publishes health to the MDM feedback channel after every change;
 * - reports a native library that cannot load as [AgentState.CaptureUnavailable], never as a
 *   crash of the host app.
 *
 * Call [start] from `Application.onCreate`; use [get] (suspending) wherever the agent is needed.
 */
object AndroidAgent {
    private const val TAG = "Verbatim"

    /**
     * The background work (opening, applying the configuration, rescheduling, feedback). An
     * exception nothing expected is logged, never rethrown on a pool thread, where it would
     * crash the host app.
     */
    private val scope = CoroutineScope(
        SupervisorJob() + Dispatchers.Default +
            CoroutineExceptionHandler { _, e -> Log.e(TAG, "background work failed: ${e.javaClass.simpleName}") },
    )
    private val openLock = Mutex()

    /** Serialises every application of the managed configuration (start, broadcast, resume). */
    private val configLock = Mutex()

    @Volatile
    private var agent: VerbatimAgent? = null

    @Volatile
    private var settings = Settings()

    /** The last tree handed to the agent (accepted or rejected); guarded by [configLock]. */
    private var lastApplied: PolicyValue? = null
    private var started = false
    private var application: Application? = null
    private var resumeWatcher: ResumeWatcher? = null
    private var restrictionsWatch: AutoCloseable? = null

    /** Reads the managed configuration (binder IPC); replaceable by tests only. */
    @Volatile
    internal var readManagedConfig: (Context) -> PolicyValue = { ManagedConfig(it).read() }

    /** The one-time JNI initialisation before opening; replaceable by tests only. */
    @Volatile
    internal var platformInit: (Context) -> Unit = PlatformTls::init

    /** Where the app stands: see [AgentState]. Memory only: safe on the main thread. */
    @Volatile
    @JvmStatic
    var state: AgentState = AgentState.NotStarted
        private set

    private class Settings(
        val observer: AgentObserver? = null,
        val feedback: FeedbackPublisher? = null,
        val logSink: LogSink? = LogcatSink(),
    )

    /**
     * Starts the agent in the background. [observer] receives the agent's notices (on an agent
     * thread: post to your own dispatcher); [feedback] is where health goes for the MDM admin
     * (e.g. `KeyedAppStatesPublisher(context)`); [logSink] receives filtered log records;
     * [jobIds] are the JobScheduler ids of the upload jobs (change them if the app uses
     * [UploadJobIds.DEFAULT_PERIODIC] or [UploadJobIds.DEFAULT_SOON] for its own jobs).
     */
    @JvmStatic
    @JvmOverloads
    fun start(
        context: Context,
        observer: AgentObserver? = null,
        feedback: FeedbackPublisher? = null,
        logSink: LogSink? = LogcatSink(),
        jobIds: UploadJobIds = UploadJobIds.DEFAULT,
    ) {
        val app = context.applicationContext
        synchronized(this) {
            if (started) return
            started = true
            settings = Settings(observer, feedback, logSink)
            UploadScheduler.jobIds = jobIds
            state = AgentState.Starting
            (app as? Application)?.let { application ->
                val watcher = ResumeWatcher(app)
                application.registerActivityLifecycleCallbacks(watcher)
                this.application = application
                resumeWatcher = watcher
            }
        }
        scope.launch {
            try {
                get(app)
            } catch (e: CaptureUnavailableException) {
                Log.e(TAG, "capture unavailable: ${e.reason}: ${e.message}")
            } catch (e: VerbatimException) {
                Log.e(TAG, "agent did not start: ${e.kind()}: ${e.message}")
            }
        }
    }

    /**
     * The agent, opened on first use. Main-safe: the opening work runs on Dispatchers.IO.
     * Throws [CaptureUnavailableException] when the native library cannot be used in this
     * process, and `VerbatimException` when the store cannot be opened (tried again next call).
     */
    suspend fun get(context: Context): VerbatimAgent {
        agent?.let { return it }
        return openLock.withLock {
            agent ?: openOrReport(context.applicationContext).also {
                agent = it
                state = AgentState.Ready
            }
        }
    }

    private suspend fun openOrReport(app: Context): VerbatimAgent {
        (state as? AgentState.CaptureUnavailable)?.takeIf { it.reason == UnavailableReason.NATIVE_LIBRARY }?.let {
            throw CaptureUnavailableException(it.reason, it.detail)
        }
        return try {
            withContext(Dispatchers.IO) { open(app) }
        } catch (e: LinkageError) {
            // UnsatisfiedLinkError (library or JNI symbol missing), or the bindings' class
            // initialisation failing on it (ExceptionInInitializerError, then NoClassDefFoundError).
            val detail = "native library unavailable: ${e.javaClass.simpleName}"
            state = AgentState.CaptureUnavailable(UnavailableReason.NATIVE_LIBRARY, detail)
            throw CaptureUnavailableException(UnavailableReason.NATIVE_LIBRARY, detail, e)
        } catch (e: CaptureUnavailableException) {
            state = AgentState.CaptureUnavailable(e.reason, e.message.orEmpty())
            throw e
        } catch (e: VerbatimException) {
            state = AgentState.CaptureUnavailable(UnavailableReason.OPEN_FAILED, "agent not opened: ${e.kind()}")
            throw e
        }
    }

    private suspend fun open(app: Context): VerbatimAgent {
        try {
            platformInit(app)
        } catch (e: RuntimeException) {
            // The JNI init throws (the JNI convention) when the verifier cannot start, e.g. its
            // Kotlin classes were stripped from the APK: no upload could check the archive.
            throw CaptureUnavailableException(
                UnavailableReason.NATIVE_LIBRARY,
                "platform TLS initialisation failed: ${e.javaClass.simpleName}",
                e,
            )
        }
        VerbatimAgent.setLogSink(settings.logSink)
        val forward = settings.observer
        val observer = agentObserver { notice ->
            // After a change: reschedule (policy) and republish health, off the agent's thread.
            scope.launch { onNotice(app, notice) }
            forward?.onEvent(notice)
        }
        val opened = VerbatimAgent.open(File(app.noBackupFilesDir, "verbatim"), ConnectivityNetworkState(app), observer)
        try {
            synchronized(this) {
                restrictionsWatch?.close()
                restrictionsWatch = ManagedConfig(app).watch { scope.launch { applyManagedConfig(app, opened) } }
            }
            configLock.withLock { applyLatest(app, opened) }
            UploadScheduler.schedule(app, opened.status().uploadSchedule)
            settings.feedback?.let { opened.publishFeedback(it) }
        } catch (e: Throwable) {
            // Not handed out: release the store, or the next attempt finds it locked.
            opened.close()
            throw e
        }
        return opened
    }

    private fun onNotice(app: Context, notice: AgentNotice) {
        val current = agent ?: return
        if (notice is AgentNotice.PolicyApplied) UploadScheduler.schedule(app, current.status().uploadSchedule)
        settings.feedback?.let { current.publishFeedback(it) }
    }

    /**
     * Re-reads the managed configuration and applies it if it changed since the last one applied.
     * Calls run one at a time, each reading the restrictions when its turn comes, so the policy in
     * force is always the latest Bundle, whatever order a resume and a broadcast arrive in.
     */
    suspend fun applyManagedConfig(context: Context, target: VerbatimAgent? = null) {
        val current = target ?: agent ?: return
        configLock.withLock { applyLatest(context.applicationContext, current) }
    }

    /** Under [configLock]. */
    private suspend fun applyLatest(app: Context, current: VerbatimAgent) {
        val tree = withContext(Dispatchers.IO) { readManagedConfig(app) }
        if (tree == lastApplied) return
        if (tree == EMPTY_CONFIGURATION) {
            withdraw(current)
            return
        }
        try {
            val warnings = current.applyPolicy(tree)
            lastApplied = tree
            if (warnings.isNotEmpty()) Log.w(TAG, "policy warnings: ${warnings.joinToString { "${it.key}: ${it.kind}" }}")
        } catch (e: VerbatimException.PolicyRejected) {
            // The agent recorded it and notified the observer; the MDM sees it in the feedback.
            // Not retried until the configuration changes.
            lastApplied = tree
            Log.w(TAG, "managed configuration rejected: ${e.problems.joinToString { "${it.key}: ${it.kind}" }}")
        } catch (e: VerbatimException) {
            // Not applied (storage, closed): tried again at the next change or resume.
            Log.e(TAG, "managed configuration not applied: ${e.kind()}: ${e.message}")
        }
    }

    /**
     * No restrictions at all: the MDM removed the managed configuration (or never pushed one).
     * The agent withdraws the policy in force, if any: capture fails closed, the queue keeps
     * uploading; a configuration pushed again resumes capture. Under [configLock].
     */
    private suspend fun withdraw(current: VerbatimAgent) {
        try {
            if (current.withdrawPolicy()) Log.w(TAG, "managed configuration removed by the MDM: policy withdrawn, capture stopped")
            lastApplied = EMPTY_CONFIGURATION
        } catch (e: VerbatimException) {
            // Not recorded (storage, closed): tried again at the next change or resume.
            Log.e(TAG, "managed configuration removal not recorded: ${e.kind()}: ${e.message}")
        }
    }

    private val EMPTY_CONFIGURATION = PolicyValue.Dict(emptyMap())

    /** Republishes health and reschedules after an upload (called by [UploadJobService]). */
    suspend fun refresh(context: Context) {
        val current = agent ?: return
        UploadScheduler.schedule(context.applicationContext, current.status().uploadSchedule)
        settings.feedback?.let { current.publishFeedback(it) }
    }

    /**
     * Stops watching the configuration (unregisters the broadcast receiver and the activity
     * callbacks), shuts the agent down and frees it. [start] may be called again afterwards.
     * Scheduled upload jobs stay (they open the agent again when they run).
     */
    suspend fun stop() {
        val closing: VerbatimAgent?
        synchronized(this) {
            restrictionsWatch?.close()
            restrictionsWatch = null
            resumeWatcher?.let { application?.unregisterActivityLifecycleCallbacks(it) }
            resumeWatcher = null
            application = null
            started = false
        }
        scope.coroutineContext.cancelChildren()
        openLock.withLock {
            closing = agent
            agent = null
            configLock.withLock { lastApplied = null }
            state = AgentState.NotStarted
        }
        closing?.let {
            try {
                it.shutdown()
            } catch (e: VerbatimException) {
                Log.w(TAG, "shutdown: ${e.kind()}")
            } finally {
                it.close()
            }
        }
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
