package com.verbatim.agent

import com.verbatim.ffi.Agent
import com.verbatim.ffi.AgentObserver
import com.verbatim.ffi.AgentNotice
import com.verbatim.ffi.core.AgentStatus
import com.verbatim.ffi.core.AttachmentEvent
import com.verbatim.ffi.core.CallEvent
import com.verbatim.ffi.core.CaptureOutcome
import com.verbatim.ffi.core.Channel
import com.verbatim.ffi.core.Direction
import com.verbatim.ffi.core.EditEvent
import com.verbatim.ffi.core.EventMeta
import com.verbatim.ffi.FeedbackItem
import com.verbatim.ffi.core.LogLevel
import com.verbatim.ffi.LogSink
import com.verbatim.ffi.core.MessageEvent
import com.verbatim.ffi.core.NetworkState
import com.verbatim.ffi.NetworkStateProvider
import com.verbatim.ffi.PolicyCheck
import com.verbatim.ffi.core.PolicyProblem
import com.verbatim.ffi.PolicyValue
import com.verbatim.ffi.TelephonyScan
import com.verbatim.ffi.core.ReactionEvent
import com.verbatim.ffi.core.UnenrollReport
import com.verbatim.ffi.core.UnsendEvent
import com.verbatim.ffi.core.UploadReport
import java.io.File
import kotlin.time.Duration
import kotlin.time.Duration.Companion.milliseconds

/**
 * The Verbatim capture agent, for Kotlin callers: a thin facade over the generated bindings
 * (`com.verbatim.ffi.Agent`). Every decision (scope, validation, sealing, queueing, upload
 * policy) is taken in Rust; this class only adapts types.
 *
 * Threading: every `suspend` function is main-safe (the work runs on the agent's own threads;
 * the coroutine suspends, no thread blocks). [status] and [feedback] read memory only.
 *
 * Errors: [com.verbatim.ffi.VerbatimException] and its subclasses (`NotConfigured`,
 * `PolicyRejected` with `problems`, `InvalidEvent`, `QueueFull`, ...); `e.kind()` gives the
 * [com.verbatim.ffi.core.ErrorKind] of any of them.
 */
class VerbatimAgent private constructor(
    /** The generated object, for anything this facade does not cover. */
    val ffi: Agent,
) : AutoCloseable {

    companion object {
        /**
         * Opens (or creates) the agent's store in [dataDir] (app-private storage, e.g.
         * `File(context.noBackupFilesDir, "verbatim")`) and re-applies the policy stored by an
         * earlier run.
         */
        @JvmStatic
        suspend fun open(
            dataDir: File,
            network: NetworkStateProvider,
            observer: AgentObserver? = null,
        ): VerbatimAgent = VerbatimAgent(Agent.open(dataDir.absolutePath, network, observer)) // creates dataDir

        /** Sets (or removes) the process's log sink; records below the policy's `log_level` never reach it. */
        @JvmStatic
        fun setLogSink(sink: LogSink?) = com.verbatim.ffi.setLogSink(sink)

        /** Validates a managed configuration without applying it. */
        @JvmStatic
        fun checkPolicy(config: Map<String, *>): PolicyCheck = com.verbatim.ffi.checkPolicy(PolicyTree.from(config))

        /** The agent library's version. */
        @JvmStatic
        val version: String get() = com.verbatim.ffi.agentVersion()
    }

    /**
     * Applies a managed configuration (see [PolicyTree] for the value types). Returns the
     * warnings of an accepted policy; throws `VerbatimException.PolicyRejected` listing every
     * problem by key, and the policy in force stays.
     */
    suspend fun applyPolicy(config: Map<String, *>): List<PolicyProblem> = ffi.applyPolicy(PolicyTree.from(config))

    suspend fun applyPolicy(tree: PolicyValue): List<PolicyProblem> = ffi.applyPolicy(tree)

    /**
     * The MDM removed the managed configuration: call it when the platform finds none after a
     * policy was in force ([com.verbatim.agent.android.AndroidAgent] does). Records a
     * `policy_withdrawn` event; capture then fails closed with `NotConfigured` while what is
     * queued keeps uploading; [applyPolicy] resumes capture. False when nothing was in force
     * or it was already withdrawn.
     */
    suspend fun withdrawPolicy(): Boolean = ffi.withdrawPolicy()

    /** Captures an event; returns once it is durable (or dropped as out of scope). */
    suspend fun capture(event: MessageEvent): CaptureOutcome = ffi.captureMessage(event)
    suspend fun capture(event: EditEvent): CaptureOutcome = ffi.captureEdit(event)
    suspend fun capture(event: UnsendEvent): CaptureOutcome = ffi.captureUnsend(event)
    suspend fun capture(event: ReactionEvent): CaptureOutcome = ffi.captureReaction(event)
    suspend fun capture(event: AttachmentEvent): CaptureOutcome = ffi.captureAttachment(event)
    suspend fun capture(event: CallEvent): CaptureOutcome = ffi.captureCall(event)

    /** The client notice to show or send in this conversation now, if the policy says it is due. */
    fun disclaimerDue(channel: Channel, conversationId: String): String? = ffi.disclaimerDue(channel, conversationId)

    /** The app showed or sent the client notice: captured in the conversation. */
    suspend fun disclaimerShown(meta: EventMeta): CaptureOutcome = ffi.disclaimerShown(meta)

    /**
     * The app let a communication through while capture was unavailable (only when the policy's
     * `fail_closed` is false): recorded, metadata only.
     */
    suspend fun reportUncaptured(meta: EventMeta, direction: Direction, reason: String) =
        ffi.reportUncaptured(meta, direction, reason)

    /**
     * Uploads within [deadline] on the network the provider reports. Network and archive trouble
     * is in the report; cancelling the coroutine stops the upload safely.
     */
    suspend fun upload(deadline: Duration): UploadReport = ffi.upload(milliseconds(deadline))

    /**
     * [upload] for Java callers (a Kotlin `Duration` is an inline class, so the Duration overload
     * has a mangled JVM name): the deadline in milliseconds.
     */
    suspend fun upload(deadlineMillis: Long): UploadReport = upload(deadlineMillis.milliseconds)

    /**
     * Stops the upload running now, if any, at its next wait; its [upload] then returns a report
     * with `stopped` = CANCELLED. Cancelling the upload's coroutine does the same.
     */
    fun cancelUpload() = ffi.cancelUpload()

    /** Everything about the agent, from memory: safe on the main thread. */
    fun status(): AgentStatus = ffi.status()

    /** The agent's health for the MDM feedback channel (see [FeedbackPublisher]). */
    fun feedback(): List<FeedbackItem> = ffi.feedback()

    /**
     * Starts a scan of the phone's Telephony provider (Google Messages' archival mode, fully
     * managed Android only): feed it every page of `content://sms`, then of `content://mms`, then
     * `finish()` it. The line and the first scan's history come from the policy. Android's
     * `telephony.TelephonyReader` does all of that.
     */
    suspend fun beginTelephonyScan(): TelephonyScan = ffi.beginTelephonyScan()

    /** Records what is due (heartbeat, stale-pending alert). Background jobs call it. */
    suspend fun tick() = ffi.tick()

    /**
     * Leaves the device: uploads within [deadline], then destroys the local store once the archive
     * acknowledged everything; with [force] (selective wipe) regardless.
     */
    suspend fun unenroll(deadline: Duration, force: Boolean): UnenrollReport = ffi.unenroll(milliseconds(deadline), force)

    /** [unenroll] for Java callers: the deadline in milliseconds. */
    suspend fun unenroll(deadlineMillis: Long, force: Boolean): UnenrollReport = unenroll(deadlineMillis.milliseconds, force)

    /** Records a clean stop and releases the store; later calls throw `VerbatimException.Closed`. */
    suspend fun shutdown() = ffi.shutdown()

    /** Frees the native object (after [shutdown], or it shuts down as it is freed). */
    override fun close() = ffi.close()

    /** Whole milliseconds, clamped to [0, one year] (the same bound as the Swift facade). */
    private fun milliseconds(d: Duration): ULong =
        d.inWholeMilliseconds.coerceIn(0L, MAX_DEADLINE_MS).toULong()
}

private const val MAX_DEADLINE_MS = 365L * 86_400_000L

/** A [NetworkStateProvider] from a function. */
fun networkStateProvider(block: () -> NetworkState): NetworkStateProvider = object : NetworkStateProvider {
    override fun current(): NetworkState = block()
}

/** An [AgentObserver] from a function. */
fun agentObserver(block: (AgentNotice) -> Unit): AgentObserver = object : AgentObserver {
    override fun onEvent(notice: AgentNotice) = block(notice)
}

/** A [LogSink] from a function. */
fun logSink(block: (level: LogLevel, target: String, message: String) -> Unit): LogSink = object : LogSink {
    override fun log(level: LogLevel, target: String, message: String) = block(level, target, message)
}
