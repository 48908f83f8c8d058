package com.verbatim.agent

import com.verbatim.ffi.AgentNotice
import com.verbatim.ffi.core.AttachmentEvent
import com.verbatim.ffi.core.CallEvent
import com.verbatim.ffi.core.CallOutcome
import com.verbatim.ffi.core.CaptureOutcome
import com.verbatim.ffi.core.Channel
import com.verbatim.ffi.core.Direction
import com.verbatim.ffi.core.EditEvent
import com.verbatim.ffi.core.ErrorKind
import com.verbatim.ffi.core.EventMeta
import com.verbatim.ffi.FeedbackSeverity
import com.verbatim.ffi.InternalException
import com.verbatim.ffi.core.LogLevel
import com.verbatim.ffi.core.MessageEvent
import com.verbatim.ffi.core.NetworkState
import com.verbatim.ffi.PolicyValue
import com.verbatim.ffi.core.ProblemKind
import com.verbatim.ffi.core.ReactionEvent
import com.verbatim.ffi.core.RequiredNetwork
import com.verbatim.ffi.core.StopReason
import com.verbatim.ffi.core.UnsendEvent
import com.verbatim.ffi.VerbatimException
import java.io.File
import java.nio.file.Files
import java.util.Base64
import java.util.UUID
import java.util.concurrent.CopyOnWriteArrayList
import java.util.concurrent.atomic.AtomicInteger
import kotlin.test.assertContains
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertFalse
import kotlin.test.assertIs
import kotlin.test.assertNotNull
import kotlin.test.assertNull
import kotlin.test.assertTrue
import kotlin.test.fail
import kotlin.time.Duration.Companion.seconds
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.async
import kotlinx.coroutines.awaitAll
import kotlinx.coroutines.coroutineScope
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.Test
import org.junit.runner.RunWith
import org.robolectric.RobolectricTestRunner
import org.robolectric.annotation.Config

// The Kotlin facade's tests, against the host build of libverbatim_ffi (with the `test-hooks`
// feature) and, for upload, the reference receiver on loopback over TLS. Run by Surefire through
// scripts/test-kotlin.sh, which passes the receiver's details in VERBATIM_* variables.

const val LINE = "+15550100"
const val PEER = "+15550199"

/** The archive the upload tests talk to (the script's receiver), or null when none is running. */
data class Archive(
    val url: String,
    val caPem: String,
    val publicKey: String,
    val keyId: String,
    val tenant: String,
    val device: String,
    val token: String,
)

fun archiveFromEnv(): Archive? {
    val env = System.getenv()
    val url = env["VERBATIM_ARCHIVE_URL"] ?: return null
    return Archive(
        url = url,
        caPem = File(env.getValue("VERBATIM_ARCHIVE_CA_PEM")).readText(),
        publicKey = env.getValue("VERBATIM_ARCHIVE_PUBLIC_KEY"),
        keyId = env.getValue("VERBATIM_ARCHIVE_KEY_ID"),
        tenant = env.getValue("VERBATIM_TENANT_ID"),
        device = env.getValue("VERBATIM_DEVICE_ID"),
        token = env.getValue("VERBATIM_DEVICE_TOKEN"),
    )
}

val ARCHIVE: Archive? = archiveFromEnv()

/** A valid X25519 public key for tests that never upload (any 32 bytes are one). */
val OFFLINE_KEY: String = Base64.getEncoder().encodeToString(ByteArray(32) { (it * 7 + 1).toByte() })

fun policy(
    token: String = "tok-" + UUID.randomUUID(),
    logLevel: String = "info",
    version: String = "v1",
    extra: Map<String, Any?> = emptyMap(),
): Map<String, Any?> {
    val a = ARCHIVE
    val base = mutableMapOf<String, Any?>(
        "archive_url" to (a?.url ?: "https://127.0.0.1:9/"),
        "archive_public_key" to (a?.publicKey ?: OFFLINE_KEY),
        // archive_key_id left out: derived from archive_public_key by the core.
        "tenant_id" to (a?.tenant ?: "tenant-jvm-tests"),
        "device_id" to (a?.device ?: "jvm-test-device"),
        "device_token" to (a?.token ?: token),
        "business_lines" to listOf(LINE),
        "capture_channels" to "sms,whatsapp,voice",
        "log_level" to logLevel,
        "policy_version" to version,
    )
    if (a != null) base["archive_ca_pem"] = a.caPem
    base.putAll(extra)
    return base
}

fun meta(id: String, channel: Channel = Channel.SMS, line: String = LINE) = EventMeta(
    channel = channel,
    line = line,
    conversationId = "conv-1",
    sourceId = id,
    sourceTimeMs = System.currentTimeMillis(),
)

fun message(id: String, text: String = "hello $id", line: String = LINE) = MessageEvent(
    meta = meta(id, line = line),
    direction = Direction.OUTBOUND,
    sender = line,
    recipients = listOf(PEER),
    text = text,
    attachmentIds = emptyList(),
    replyTo = null,
)

/** A network provider whose answer a test can change. */
class FakeNetwork(@Volatile var state: NetworkState = NetworkState.UNMETERED) {
    val provider = networkStateProvider { state }
}

fun tempDir(name: String): File = Files.createTempDirectory("verbatim-$name-").toFile()

suspend fun openAgent(
    dir: File = tempDir("agent"),
    network: FakeNetwork = FakeNetwork(),
    notices: MutableList<AgentNotice>? = null,
): VerbatimAgent = VerbatimAgent.open(dir, network.provider, notices?.let { n -> agentObserver { n.add(it) } })

fun seqOf(outcome: CaptureOutcome): Pair<ULong, ULong> {
    assertIs<CaptureOutcome.Captured>(outcome, "expected Captured, got $outcome")
    return outcome.firstSeq to outcome.lastSeq
}

// ------------------------------------------------------------------------------------ tests

suspend fun testTreeConversion() {
    val tree = PolicyTree.from(
        mapOf(
            "s" to "x",
            "i" to 7,
            "l" to 8L,
            "b" to true,
            "absent" to null,
            "list" to listOf("a", null, "b"),
            "array" to arrayOf("c", "d"),
            "ints" to intArrayOf(1, 2),
            "nested" to mapOf("inner" to false, "deeper" to mapOf("n" to 1)),
            "bundles" to listOf(mapOf("k" to "v")),
            "float" to 1.5,
        ),
    )
    val expected = PolicyValue.Dict(
        mapOf(
            "s" to PolicyValue.Text("x"),
            "i" to PolicyValue.Integer(7),
            "l" to PolicyValue.Integer(8),
            "b" to PolicyValue.Bool(true),
            "list" to PolicyValue.Items(listOf(PolicyValue.Text("a"), PolicyValue.Text("b"))),
            "array" to PolicyValue.Items(listOf(PolicyValue.Text("c"), PolicyValue.Text("d"))),
            "ints" to PolicyValue.Items(listOf(PolicyValue.Integer(1), PolicyValue.Integer(2))),
            "nested" to PolicyValue.Dict(
                mapOf(
                    "inner" to PolicyValue.Bool(false),
                    "deeper" to PolicyValue.Dict(mapOf("n" to PolicyValue.Integer(1))),
                ),
            ),
            "bundles" to PolicyValue.Items(listOf(PolicyValue.Dict(mapOf("k" to PolicyValue.Text("v"))))),
            "float" to PolicyValue.Real(1.5),
        ),
    )
    assertEquals(expected, tree)
    // The deep tree crosses the FFI intact: the core sees every key (the float is named).
    val check = VerbatimAgent.checkPolicy(policy(extra = mapOf("max_attachment_mb" to 1.5, "nested" to mapOf("a" to listOf(1)))))
    assertFalse(check.valid)
    assertEquals(listOf("max_attachment_mb"), check.problems.map { it.key })
    assertTrue(check.warnings.any { it.key == "nested" && it.kind == ProblemKind.UNKNOWN_KEY }, "${check.warnings}")
}

/** One case of the shared conversion table: the Kotlin value, the tree it must become, the verdict. */
data class ConversionCase(val name: String, val native: Any?, val tree: PolicyValue?, val outcome: String)

/** The cases of core/tests/data/policy-value-conversions.json that have a Kotlin form (one per line). */
fun conversionCases(): List<ConversionCase> {
    val path = System.getenv("VERBATIM_VALUE_TABLE") ?: error("VERBATIM_VALUE_TABLE is not set (scripts/test-kotlin.sh sets it)")
    val field = { line: String, name: String -> Regex("\"$name\": (\\{[^}]*\\}|\"[^\"]*\"|[^,}]+)").find(line)?.groupValues?.get(1) }
    val inner = { obj: String, name: String -> Regex("\"$name\": (\"[^\"]*\"|[^,}]+)").find(obj)?.groupValues?.get(1)?.trim() }
    return File(path).readLines().filter { it.trim().startsWith("{\"name\"") }.mapNotNull { line ->
        val kotlin = field(line, "kotlin") ?: return@mapNotNull null
        if (kotlin == "null") return@mapNotNull null
        val type = inner(kotlin, "type")!!.trim('"')
        val raw = inner(kotlin, "value")
        val native: Any? = when (type) {
            "Int" -> raw!!.toInt()
            "Long" -> raw!!.toLong()
            "Double" -> raw!!.toDouble()
            "Float" -> raw!!.toFloat()
            "String" -> raw!!.trim('"')
            "Boolean" -> raw!!.toBoolean()
            "null" -> null
            else -> error("unknown Kotlin type $type")
        }
        val treeText = field(line, "tree")!!
        val tree: PolicyValue? = if (treeText == "\"absent\"") null else {
            val (tag, value) = Regex("\\{\"(\\w+)\": (.+)\\}").find(treeText)!!.destructured
            when (tag) {
                "integer" -> PolicyValue.Integer(value.toLong())
                "real" -> PolicyValue.Real(value.toDouble())
                "text" -> PolicyValue.Text(value.trim('"'))
                "bool" -> PolicyValue.Bool(value.toBoolean())
                else -> error("unknown tree tag $tag")
            }
        }
        ConversionCase(field(line, "name")!!.trim('"'), native, tree, field(line, "outcome")!!.trim().trim('"'))
    }
}

/** The shared table, on this layer: Kotlin value -> tree (PolicyTree), then the core's verdict. */
suspend fun testSharedConversionTable() {
    val cases = conversionCases()
    assertTrue(cases.size >= 10, "table read: ${cases.size} Kotlin cases")
    openAgent().use { agent ->
        for ((i, case) in cases.withIndex()) {
            assertEquals(case.tree, PolicyTree.value(case.native), "${case.name}: tree value")
            val tree = policy(version = "table-$i", extra = mapOf("upload_interval_minutes" to case.native))
            val number = case.outcome.toUIntOrNull()
            if (number != null) {
                agent.applyPolicy(tree)
                assertEquals(number, agent.status().uploadSchedule?.intervalMinutes, "${case.name}: verdict")
            } else {
                val check = VerbatimAgent.checkPolicy(tree)
                assertFalse(check.valid, "${case.name}: must be refused")
                assertEquals(listOf("upload_interval_minutes"), check.problems.map { it.key }, case.name)
                assertEquals(case.outcome, check.problems.single().kind.name.lowercase(), "${case.name}: verdict")
            }
        }
        agent.shutdown()
    }
}

suspend fun testPolicyValidAndRejected() {
    val notices = CopyOnWriteArrayList<AgentNotice>()
    openAgent(notices = notices).use { agent ->
        val before = agent.status()
        assertFalse(before.configured)
        assertTrue(before.failClosed, "no policy: fail closed")
        assertNotNull(before.notConfiguredReason)
        val refused = assertFailsWith<VerbatimException.NotConfigured> { agent.capture(message("m0")) }
        assertEquals(ErrorKind.NOT_CONFIGURED, refused.kind())

        val warnings = agent.applyPolicy(
            policy(extra = mapOf("no_such_key" to "x", "upload_network" to "any", "upload_allow_roaming" to false)),
        )
        assertEquals(listOf("no_such_key"), warnings.map { it.key })
        assertEquals(ProblemKind.UNKNOWN_KEY, warnings.single().kind)
        val s = agent.status()
        assertTrue(s.configured)
        assertTrue(s.captureEnabled)
        assertEquals("v1", s.policyVersion)
        assertEquals(setOf(Channel.SMS, Channel.WHATSAPP, Channel.VOICE), s.channels.toSet())
        assertEquals(RequiredNetwork.NOT_ROAMING, s.uploadSchedule?.requiredNetwork)
        assertEquals(15u, s.uploadSchedule?.intervalMinutes)

        val bad = policy(
            version = "v2",
            extra = mapOf("archive_url" to "http://archive.example.com", "tenant_id" to null, "queue_max_mb" to 1),
        )
        val e = assertFailsWith<VerbatimException.PolicyRejected> { agent.applyPolicy(bad) }
        assertEquals(ErrorKind.POLICY_REJECTED, e.kind())
        val byKey = e.problems.associateBy { it.key }
        assertEquals(setOf("archive_url", "tenant_id", "queue_max_mb"), byKey.keys)
        assertEquals(ProblemKind.INSECURE_URL, byKey.getValue("archive_url").kind)
        assertEquals(ProblemKind.MISSING, byKey.getValue("tenant_id").kind)
        assertEquals(ProblemKind.OUT_OF_RANGE, byKey.getValue("queue_max_mb").kind)
        assertContains(e.detail, "archive_url")
        // The policy in force stays.
        assertEquals("v1", agent.status().policyVersion)
        assertTrue(agent.status().configured)
        // A secret is never echoed back in a problem.
        val badToken = "tok-\u0001-" + UUID.randomUUID()
        val e2 = assertFailsWith<VerbatimException.PolicyRejected> {
            agent.applyPolicy(policy(token = badToken, extra = mapOf("device_token" to badToken, "archive_url" to 5)))
        }
        assertFalse(e2.toString().contains(badToken))
        assertTrue(notices.any { it is AgentNotice.PolicyApplied && it.policyVersion == "v1" }, "$notices")
        assertTrue(notices.any { it is AgentNotice.PolicyRejected && it.problems.any { p -> p.key == "tenant_id" } }, "$notices")
        agent.shutdown()
    }
}

suspend fun testCaptureEveryType() {
    val dir = tempDir("capture")
    openAgent(dir).use { agent ->
        agent.applyPolicy(policy(extra = mapOf("capture_attachments" to true, "capture_call_recordings" to "true")))
        val seqs = mutableListOf<Pair<ULong, ULong>>()
        seqs += seqOf(agent.capture(message("m1")))
        seqs += seqOf(agent.capture(EditEvent(meta("e1"), targetMessageId = "m1", editor = LINE, newText = "hello again")))
        seqs += seqOf(agent.capture(UnsendEvent(meta("u1"), targetMessageId = "m1", actor = LINE)))
        seqs += seqOf(agent.capture(ReactionEvent(meta("r1"), targetMessageId = "m1", actor = PEER, reaction = "👍", removed = false)))
        val file = File(dir, "photo.jpg").apply { writeBytes(ByteArray(300_000) { (it % 251).toByte() }) }
        seqs += seqOf(
            agent.capture(
                AttachmentEvent(
                    meta("a1"), messageId = "m1", direction = Direction.INBOUND, sender = PEER,
                    fileName = "photo.jpg", mimeType = "image/jpeg", path = file.absolutePath,
                ),
            ),
        )
        val recording = File(dir, "call.m4a").apply { writeBytes(ByteArray(50_000) { 3 }) }
        val now = System.currentTimeMillis()
        seqs += seqOf(
            agent.capture(
                CallEvent(
                    meta("c1", channel = Channel.VOICE), direction = Direction.OUTBOUND, participants = listOf(LINE, PEER),
                    startedMs = now - 60_000, endedMs = now, outcome = CallOutcome.ANSWERED,
                    recordingPath = recording.absolutePath, recordingMimeType = "audio/mp4",
                ),
            ),
        )
        seqs += seqOf(
            agent.capture(
                CallEvent(
                    meta("c2", channel = Channel.VOICE), direction = Direction.INBOUND, participants = listOf(PEER, LINE),
                    startedMs = now, endedMs = null, outcome = CallOutcome.MISSED,
                    recordingPath = null, recordingMimeType = null,
                ),
            ),
        )
        // Each capture follows the previous one, or the key record announcing its conversation's
        // key (sealing with conversation keys); the attachment and the recorded call span records.
        for (i in 1 until seqs.size) {
            val gap = seqs[i].first - seqs[i - 1].second
            assertTrue(gap == 1uL || gap == 2uL, "$seqs")
        }
        assertTrue(seqs[4].second > seqs[4].first, "attachment spans several records: $seqs")
        assertTrue(seqs[5].second > seqs[5].first, "call + recording span several records: $seqs")

        // Not business: another line, another channel.
        assertEquals(CaptureOutcome.OutOfScope, agent.capture(message("m2", line = "+15550777")))
        val telegram = message("m3").let { it.copy(meta = it.meta.copy(channel = Channel.TELEGRAM)) }
        assertEquals(CaptureOutcome.OutOfScope, agent.capture(telegram))
        // Malformed: typed error naming the field, never the value.
        val secretText = "SECRET-" + UUID.randomUUID()
        val bad = assertFailsWith<VerbatimException.InvalidEvent> { agent.capture(message("m4", text = secretText).copy(recipients = emptyList())) }
        assertContains(bad.detail, "recipients")
        assertFalse(bad.toString().contains(secretText))
        // Unreadable attachment file: typed error.
        val missing = assertFailsWith<VerbatimException.File> {
            agent.capture(
                AttachmentEvent(
                    meta("a2"), messageId = null, direction = Direction.INBOUND, sender = PEER,
                    fileName = "x.bin", mimeType = "application/octet-stream", path = File(dir, "nope").absolutePath,
                ),
            )
        }
        assertEquals(ErrorKind.FILE, missing.kind())

        val s = agent.status()
        assertEquals(7uL, s.counters.captured)
        assertEquals(2uL, s.counters.outOfScope)
        assertEquals(1uL, s.counters.invalid)
        assertEquals(seqs.last().second, s.lastSeq)
        assertTrue(s.queueRecords >= 7u)
        agent.shutdown()
    }
}

suspend fun testConcurrentCaptures() {
    openAgent().use { agent ->
        agent.applyPolicy(policy())
        val before = agent.status()
        val outcomes = coroutinesCapture(agent, coroutines = 8, each = 50)
        val seqs = outcomes.map { seqOf(it) }
        seqs.forEach { assertEquals(it.first, it.second) }
        val sorted = seqs.map { it.first }.sorted()
        assertEquals(400, sorted.toSet().size, "no duplicate sequence numbers")
        val after = agent.status()
        assertEquals(400uL, after.counters.captured)
        assertEquals(sorted.last(), after.lastSeq)
        // Contiguous, but for the one key record of their conversation in this epoch.
        assertTrue(sorted.first() in before.lastSeq + 1u..before.lastSeq + 2u, "$sorted")
        assertTrue(after.lastSeq - before.lastSeq in 400uL..401uL, "contiguous: ${after.lastSeq - before.lastSeq}")
        agent.shutdown()
    }
}

suspend fun coroutinesCapture(agent: VerbatimAgent, coroutines: Int, each: Int): List<CaptureOutcome> =
    kotlinx.coroutines.coroutineScope {
        (0 until coroutines).map { c ->
            async(Dispatchers.Default) { (0 until each).map { i -> agent.capture(message("c$c-$i")) } }
        }.awaitAll().flatten()
    }

suspend fun testNetworkOfflineAndNotAllowed() {
    val network = FakeNetwork(NetworkState.OFFLINE)
    openAgent(network = network).use { agent ->
        agent.applyPolicy(policy(extra = mapOf("upload_network" to "unmetered")))
        assertEquals(RequiredNetwork.UNMETERED, agent.status().uploadSchedule?.requiredNetwork)
        repeat(3) { agent.capture(message("n$it")) }
        val queued = agent.status().queueRecords
        val offline = agent.upload(10.seconds)
        assertEquals(StopReason.OFFLINE, offline.stopped)
        assertEquals(0uL, offline.recordsSent)
        assertTrue(offline.morePending)
        assertFalse(offline.retrySoon)
        network.state = NetworkState.METERED
        val metered = agent.upload(10.seconds)
        assertEquals(StopReason.NOT_ALLOWED, metered.stopped)
        assertContains(metered.detail ?: "", "unmetered")
        network.state = NetworkState.ROAMING
        assertEquals(StopReason.NOT_ALLOWED, agent.upload(10.seconds).stopped)
        assertEquals(queued, agent.status().queueRecords, "nothing sent, nothing deleted")
        assertNull(agent.status().upload.lastAttemptMs)
        agent.shutdown()
    }
}

/** Cancelling the caller's coroutine stops the upload; the next one runs at once. */
suspend fun testUploadCancellation() {
    openAgent().use { agent ->
        // Nothing listens on 127.0.0.1:9: every attempt fails and is retried with back-off
        // until the deadline, unless the upload is cancelled.
        agent.applyPolicy(policy(extra = mapOf("archive_url" to "https://127.0.0.1:9/", "archive_ca_pem" to null)))
        agent.capture(message("cancel-me"))
        val start = System.nanoTime()
        val result = kotlinx.coroutines.withTimeoutOrNull(500) { agent.upload(60.seconds) }
        assertNull(result, "the upload should still be retrying: $result")
        assertTrue((System.nanoTime() - start) / 1_000_000 < 5_000, "cancellation returned promptly")
        // The session lock is released by the abort: a new session starts (and stops on its
        // own short deadline), instead of "an upload is already running". The abort reaches the
        // Rust task on the agent's runtime a moment after the coroutine is cancelled, so a
        // loaded machine may see ALREADY_RUNNING first: allowed for a bounded 5 s, no longer
        // (a lock that is never released still fails).
        val released = System.nanoTime() + 5_000_000_000L
        var next = agent.upload(1.seconds)
        while (next.stopped == StopReason.ALREADY_RUNNING && System.nanoTime() < released) {
            kotlinx.coroutines.delay(20)
            next = agent.upload(1.seconds)
        }
        assertTrue(next.stopped == StopReason.DEADLINE || next.stopped == StopReason.ERROR, "$next")
        assertFalse((next.detail ?: "").contains("already running"), "$next")
        assertTrue(agent.status().queueRecords >= 1u, "nothing was acknowledged, nothing deleted")
        agent.shutdown()
    }
}

/** cancelUpload() (what iOS's expiration handler calls) stops a running upload with CANCELLED. */
suspend fun testCancelUpload() = coroutineScope {
    openAgent().use { agent ->
        // Nothing listens on 127.0.0.1:9: the upload retries with back-off until its deadline.
        agent.applyPolicy(policy(extra = mapOf("archive_url" to "https://127.0.0.1:9/", "archive_ca_pem" to null)))
        agent.capture(message("cancel-me-too"))
        val uploading = async { agent.upload(60.seconds) }
        // The session has started once it records its attempt (no event says so).
        while (agent.status().upload.lastAttemptMs == null) kotlinx.coroutines.delay(5)
        agent.cancelUpload()
        val report = uploading.await()
        assertEquals(StopReason.CANCELLED, report.stopped, "$report")
        assertTrue(agent.status().queueRecords >= 1u, "nothing was acknowledged, nothing deleted")
        agent.shutdown()
    }
}

suspend fun testFullUpload() {
    val archive = ARCHIVE ?: fail("no receiver: VERBATIM_ARCHIVE_URL is not set (scripts/test-kotlin.sh starts one)")
    val network = FakeNetwork(NetworkState.OFFLINE)
    val notices = CopyOnWriteArrayList<AgentNotice>()
    val dir = tempDir("upload")
    openAgent(dir, network, notices).use { agent ->
        agent.applyPolicy(policy(extra = mapOf("capture_attachments" to true)))
        repeat(20) { agent.capture(message("up$it")) }
        val file = File(dir, "doc.pdf").apply { writeBytes(ByteArray(200_000) { 9 }) }
        agent.capture(
            AttachmentEvent(
                meta("att"), messageId = "up1", direction = Direction.OUTBOUND, sender = LINE,
                fileName = "doc.pdf", mimeType = "application/pdf", path = file.absolutePath,
            ),
        )
        // Offline first: nothing sent.
        assertEquals(StopReason.OFFLINE, agent.upload(10.seconds).stopped)
        val before = agent.status()
        assertTrue(before.queueRecords > 20u)

        network.state = NetworkState.UNMETERED
        val report = agent.upload(60.seconds)
        assertEquals(StopReason.DONE, report.stopped, "report: $report")
        assertNull(report.errorKind)
        assertTrue(report.recordsSent >= before.queueRecords, "report: $report")
        assertTrue(report.batches >= 1u)
        assertFalse(report.morePending)
        val after = agent.status()
        assertEquals(0uL, after.queueRecords, "queue empty after a full upload")
        assertEquals(after.lastSeq, after.ackedThrough, "everything acknowledged")
        assertEquals(report.ackedThrough, after.ackedThrough)
        assertNotNull(after.upload.lastSuccessMs)
        assertNull(after.upload.lastError)
        assertTrue(agent.feedback().any { it.key == "verbatim.last_upload_success" && it.severity == FeedbackSeverity.INFO }, "${agent.feedback()}")

        // Nothing new: a second session is a no-op.
        val again = agent.upload(30.seconds)
        assertEquals(StopReason.DONE, again.stopped)
        assertEquals(0uL, again.recordsSent)

        // A wrong token: a typed failure in the report, the queue keeps the new capture.
        agent.applyPolicy(policy(version = "v-bad-token", extra = mapOf("device_token" to "tok-wrong-" + UUID.randomUUID())))
        agent.capture(message("after-bad-token"))
        val refused = agent.upload(30.seconds)
        assertEquals(StopReason.ERROR, refused.stopped, "report: $refused")
        assertEquals(ErrorKind.UNAUTHORIZED, refused.errorKind, "report: $refused")
        assertTrue(agent.status().queueRecords > 0u)
        assertTrue(notices.any { it is AgentNotice.UploadFailed && it.errorKind == ErrorKind.UNAUTHORIZED }, "$notices")
        agent.shutdown()
    }
    println("    archive ${archive.url}: full upload acknowledged")
}

/** Log records reach the sink filtered by the policy's level, without content or secrets. */
suspend fun testLogSinkFiltering() {
    data class Rec(val level: LogLevel, val target: String, val message: String)
    val records = CopyOnWriteArrayList<Rec>()
    VerbatimAgent.setLogSink(logSink { level, target, message -> records.add(Rec(level, target, message)) })
    try {
        val marker = "MARKER-" + UUID.randomUUID()
        val token = "tok-SECRET-" + UUID.randomUUID()
        openAgent().use { agent ->
            // Info: policy applied arrives, capture's debug record does not.
            agent.applyPolicy(policy(token = token, logLevel = "info", version = "log-info", extra = mapOf("device_token" to token)))
            records.clear()
            com.verbatim.ffi.debugLog(LogLevel.TRACE, "trace-probe")
            com.verbatim.ffi.debugLog(LogLevel.DEBUG, "debug-probe")
            com.verbatim.ffi.debugLog(LogLevel.INFO, "info-probe")
            com.verbatim.ffi.debugLog(LogLevel.WARN, "warn-probe")
            seqOf(agent.capture(message("log1", text = "text with $marker")))
            assertTrue(records.none { it.level == LogLevel.TRACE || it.level == LogLevel.DEBUG }, "below info arrived: $records")
            assertTrue(records.any { it.message.contains("info-probe") }, "$records")
            assertTrue(records.any { it.message.contains("warn-probe") }, "$records")

            // Debug: the capture record arrives (metadata only), trace still does not.
            agent.applyPolicy(policy(token = token, logLevel = "debug", version = "log-debug", extra = mapOf("device_token" to token)))
            assertTrue(records.any { it.level == LogLevel.INFO && it.message.contains("policy applied") }, "$records")
            records.clear()
            seqOf(agent.capture(message("log2", text = "more text with $marker")))
            com.verbatim.ffi.debugLog(LogLevel.TRACE, "trace-probe")
            assertTrue(records.any { it.level == LogLevel.DEBUG && it.message.contains("captured") }, "$records")
            assertTrue(records.none { it.level == LogLevel.TRACE }, "$records")
            assertTrue(records.all { it.target.startsWith("verbatim") }, "$records")

            // Error only: info records stop.
            agent.applyPolicy(policy(token = token, logLevel = "error", version = "log-error", extra = mapOf("device_token" to token)))
            records.clear()
            com.verbatim.ffi.debugLog(LogLevel.WARN, "warn-probe")
            agent.capture(message("log3", text = marker))
            assertTrue(records.none { it.level != LogLevel.ERROR }, "$records")
            agent.shutdown()
        }
        // Across everything logged: never the content, never the token.
        val all = records.joinToString("\n") { it.message }
        assertFalse(all.contains(marker), "content leaked into the log")
        assertFalse(all.contains(token), "token leaked into the log")
    } finally {
        VerbatimAgent.setLogSink(null)
    }
}

suspend fun testCallbacksThrowing() {
    // The network provider throws: upload fails with a typed Callback error, the JVM lives on.
    val throwing = networkStateProvider { throw IllegalStateException("provider is broken") }
    val calls = AtomicInteger()
    val observer = agentObserver {
        calls.incrementAndGet()
        throw RuntimeException("observer is broken")
    }
    VerbatimAgent.open(tempDir("callbacks"), throwing, observer).use { agent ->
        // The observer throws on every notice: the operations still succeed.
        agent.applyPolicy(policy())
        assertTrue(calls.get() >= 1, "observer was called")
        seqOf(agent.capture(message("cb1")))
        val e = assertFailsWith<VerbatimException.Callback> { agent.upload(5.seconds) }
        assertEquals(ErrorKind.CALLBACK, e.kind())
        assertContains(e.detail, "provider is broken")
        // The provider throwing a VerbatimException of its own: still Callback.
        val own = VerbatimAgent.open(
            tempDir("callbacks2"),
            networkStateProvider { throw VerbatimException.Network("no radio") },
        )
        own.use {
            it.applyPolicy(policy())
            assertEquals(ErrorKind.CALLBACK, assertFailsWith<VerbatimException> { it.upload(5.seconds) }.kind())
            it.shutdown()
        }
        // A throwing log sink loses its records, nothing else.
        VerbatimAgent.setLogSink(logSink { _, _, _ -> throw RuntimeException("sink is broken") })
        try {
            agent.applyPolicy(policy(logLevel = "trace", version = "v-trace"))
            seqOf(agent.capture(message("cb2")))
        } finally {
            VerbatimAgent.setLogSink(null)
        }
        agent.shutdown()
    }
}

suspend fun testPanicsAreTyped() {
    val sync = assertFailsWith<VerbatimException.Internal> { com.verbatim.ffi.debugPanic() }
    assertEquals(ErrorKind.INTERNAL, sync.kind())
    assertContains(sync.detail, "debug_panic")
    assertFalse(sync.detail.contains("PANIC-PAYLOAD"), "the panic payload must not reach the app")
    val async = assertFailsWith<VerbatimException.Internal> { com.verbatim.ffi.debugPanicAsync() }
    assertContains(async.detail, "debug_panic_async")
    assertFalse(async.detail.contains("PANIC-PAYLOAD"))
    // Without our guard, UniFFI 0.32's scaffolding still catches it: a generic InternalException.
    assertFailsWith<InternalException> { com.verbatim.ffi.debugPanicUnguarded() }
    // And the library still works afterwards.
    openAgent().use { agent ->
        agent.applyPolicy(policy())
        seqOf(agent.capture(message("after-panic")))
        agent.shutdown()
    }
}

suspend fun testCloseAndReopen() {
    val dir = tempDir("reopen")
    val lastSeq: ULong
    openAgent(dir).use { agent ->
        agent.applyPolicy(policy(version = "persisted"))
        repeat(5) { agent.capture(message("p$it")) }
        lastSeq = agent.status().lastSeq
        agent.shutdown()
        agent.shutdown() // idempotent
        val closed = assertFailsWith<VerbatimException.Closed> { agent.capture(message("late")) }
        assertEquals(ErrorKind.CLOSED, closed.kind())
        assertFalse(agent.status().captureEnabled)
    }
    // The directory opens again at once, with the stored policy and the sequence continuing.
    openAgent(dir).use { agent ->
        val s = agent.status()
        assertTrue(s.configured, "policy restored")
        assertEquals("persisted", s.policyVersion)
        assertTrue(s.lastSeq > lastSeq, "a started event follows: ${s.lastSeq} > $lastSeq")
        val (first, _) = seqOf(agent.capture(message("p-after")))
        assertEquals(agent.status().lastSeq, first)
        assertTrue(first > lastSeq)
        agent.shutdown()
    }
    // Closing without shutdown (native object freed) also releases the store.
    val agent = openAgent(dir)
    agent.capture(message("no-shutdown"))
    agent.close()
    openAgent(dir).use { it.shutdown() }
}

suspend fun testFeedback() {
    openAgent().use { agent ->
        val unconfigured = agent.feedback().associateBy { it.key }
        assertEquals(FeedbackSeverity.ERROR, unconfigured.getValue("verbatim.configured").severity)
        agent.applyPolicy(policy(version = "fb-1"))
        agent.capture(message("fb"))
        val items = agent.feedback().associateBy { it.key }
        assertEquals(FeedbackSeverity.INFO, items.getValue("verbatim.configured").severity)
        assertEquals("fb-1", items.getValue("verbatim.policy_version").data)
        assertEquals(agent.status().queueRecords.toString(), items.getValue("verbatim.queue_records").data)
        val published = mutableListOf<String>()
        agent.publishFeedback { list -> published += list.map { it.key } }
        assertContains(published, "verbatim.queue_records")
        agent.shutdown()
    }
}

/**
 * The facade methods added for parity with Swift: the client notice, uncaptured reports, tick,
 * the millisecond overloads (what Java callers use), and unenroll with a selective wipe.
 */
suspend fun testDisclaimerTickUncapturedAndUnenroll() {
    val network = FakeNetwork(NetworkState.OFFLINE)
    val dir = tempDir("parity")
    openAgent(dir, network).use { agent ->
        agent.applyPolicy(
            policy(extra = mapOf("disclaimer_mode" to "first_message", "disclaimer_text" to "Calls and messages are recorded.", "fail_closed" to false)),
        )
        assertEquals("Calls and messages are recorded.", agent.disclaimerDue(Channel.SMS, "conv-1"))
        seqOf(agent.disclaimerShown(meta("notice-1")))
        assertNull(agent.disclaimerDue(Channel.SMS, "conv-1"), "shown once in this conversation")
        val before = agent.status().lastSeq
        agent.reportUncaptured(meta("let-through"), Direction.OUTBOUND, "capture unavailable: test")
        assertTrue(agent.status().lastSeq > before, "the uncaptured communication is recorded")
        agent.tick()
        // The Java-callable overload: milliseconds.
        assertEquals(StopReason.OFFLINE, agent.upload(5_000L).stopped)
        // Selective wipe while offline: the store is destroyed regardless, and the agent closed.
        val report = agent.unenroll(5_000L, force = true)
        assertTrue(report.shredded)
        assertTrue(report.forced)
        assertTrue(report.unsentRecords > 0uL)
        assertFailsWith<VerbatimException.Closed> { agent.capture(message("after-wipe")) }
    }
}

// ------------------------------------------------------------------------------------ JUnit

/**
 * The facade's tests, run by Surefire under Robolectric (API 34): the bindings are the Android
 * flavour the AAR ships (`android = true`, SystemCleaner), which needs the framework classes.
 */
@RunWith(RobolectricTestRunner::class)
@Config(sdk = [34], manifest = Config.NONE)
class AgentFacadeTest {
    private fun run(test: suspend () -> Unit) = runBlocking { withTimeout(60.seconds) { test() } }

    /** tree conversion from Map/List/arrays */
    @Test
    fun treeConversion() = run(::testTreeConversion)

    /** shared value-conversion table (core/tests/data) */
    @Test
    fun sharedConversionTable() = run(::testSharedConversionTable)

    /** policy: valid, then rejected with every key */
    @Test
    fun policyValidAndRejected() = run(::testPolicyValidAndRejected)

    /** capture every event type */
    @Test
    fun captureEveryType() = run(::testCaptureEveryType)

    /** 8 coroutines x 50 captures: all captured, contiguous */
    @Test
    fun concurrentCaptures() = run(::testConcurrentCaptures)

    /** network offline / metered / roaming: nothing sent */
    @Test
    fun networkOfflineAndNotAllowed() = run(::testNetworkOfflineAndNotAllowed)

    /** full upload to the receiver over TLS */
    @Test
    fun fullUpload() = run(::testFullUpload)

    /** cancelled upload stops; the next one runs */
    @Test
    fun uploadCancellation() = run(::testUploadCancellation)

    /** cancelUpload() stops a running upload: CANCELLED */
    @Test
    fun cancelUpload() = run(::testCancelUpload)

    /** log sink: level filter, no content, no secrets */
    @Test
    fun logSinkFiltering() = run(::testLogSinkFiltering)

    /** Kotlin callbacks throwing: typed errors, no crash */
    @Test
    fun callbacksThrowing() = run(::testCallbacksThrowing)

    /** panics become typed errors */
    @Test
    fun panicsAreTyped() = run(::testPanicsAreTyped)

    /** close and reopen */
    @Test
    fun closeAndReopen() = run(::testCloseAndReopen)

    /** disclaimer, uncaptured report, tick, millisecond overloads, unenroll */
    @Test
    fun disclaimerTickUncapturedAndUnenroll() = run(::testDisclaimerTickUncapturedAndUnenroll)

    /** MDM feedback entries */
    @Test
    fun feedback() = run(::testFeedback)
}
