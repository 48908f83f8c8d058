package com.verbatim.agent.android.telephony

import android.app.NotificationManager
import android.content.Intent
import android.net.Uri
import com.verbatim.agent.ARCHIVE
import com.verbatim.agent.LINE
import com.verbatim.agent.PEER
import com.verbatim.agent.android.AndroidAgent
import com.verbatim.agent.android.app
import com.verbatim.agent.android.eventually
import com.verbatim.agent.android.managedPolicy
import com.verbatim.agent.android.resetAndroidAgent
import com.verbatim.agent.android.setRestrictions
import com.verbatim.agent.android.validatedNetwork
import com.verbatim.ffi.core.StopReason
import java.nio.file.Files
import java.util.UUID
import java.util.concurrent.TimeUnit
import kotlin.test.assertEquals
import kotlin.test.assertTrue
import kotlin.test.fail
import kotlin.time.Duration.Companion.seconds
import kotlinx.coroutines.runBlocking
import org.json.JSONObject
import org.junit.After
import org.junit.Before
import org.junit.Test
import org.junit.runner.RunWith
import org.robolectric.Robolectric
import org.robolectric.RobolectricTestRunner
import org.robolectric.Shadows.shadowOf
import org.robolectric.annotation.Config
import org.robolectric.shadows.ShadowLog

/**
 * Google Messages' archival mode end to end: a Telephony provider with the observed tables and
 * columns, [ArchivalService] started as Google Messages starts it, the real [TelephonyReader],
 * the Rust scan through JNA, an upload to the reference receiver over TLS on 127.0.0.1, and the
 * archive opened with its private key (`verbatim export`) and checked.
 */
@RunWith(RobolectricTestRunner::class)
@Config(sdk = [34], manifest = Config.NONE)
class ArchivalServiceTest {
    private val org = "Acme Securities"
    private val marker = UUID.randomUUID().toString().take(8)

    @Before
    fun setUp() {
        resetAndroidAgent()
        ShadowLog.stream = System.out // the library's log lines (metadata only) explain a failure
        FakeTelephonyProvider.reset()
        Robolectric.setupContentProvider(FakeTelephonyProvider::class.java, "sms")
        Robolectric.setupContentProvider(FakeTelephonyProvider::class.java, "mms")
        setRestrictions(
            managedPolicy(
                "tel-1",
                mapOf("capture_channels" to "sms,mms,rcs", "capture_attachments" to true, "organization_name" to org),
            ),
        )
    }

    @After
    fun tearDown() = resetAndroidAgent()

    private var startId = 0

    /** What Google Messages does: start the service with the bare action and a Parcelable Uri hint. */
    private fun wakeUp(): ArchivalService {
        val intent = Intent(ArchivalService.ACTION_ARCHIVAL_UPDATE)
            .putExtra(ArchivalService.EXTRA_ARCHIVAL_URI, Uri.parse("content://sms/inbox/7"))
        val service = Robolectric.buildService(ArchivalService::class.java, intent).create().startCommand(0, ++startId).get()
        eventually(what = "the archival service stops itself after its scan") { shadowOf(service).isStoppedBySelf }
        return service
    }

    private fun lastSeq() = runBlocking { AndroidAgent.get(app()).status().lastSeq }

    @Test
    fun wakeUpsCaptureNewMessagesEditsAndDeletionsAndAnUnchangedProviderNothing() = runBlocking {
        val nowMs = System.currentTimeMillis()
        val nowS = nowMs / 1000
        // History on the phone before archival: the first wake-up takes it as the baseline.
        FakeTelephonyProvider.sms(1, 1, PEER, "history $marker", nowMs - 86_400_000)
        wakeUp()
        val afterBaseline = lastSeq()

        // An SMS in, an SMS out, an RCS message with a photo in a group.
        FakeTelephonyProvider.sms(2, 1, PEER, "sms in $marker", nowMs - 5_000)
        FakeTelephonyProvider.sms(3, 2, PEER, "sms out $marker", nowMs - 4_000)
        FakeTelephonyProvider.rcs(10, 1, PEER, listOf(LINE, "+15550177"), nowS - 30, "rcs original $marker")
        val photo = ByteArray(50_000) { (it % 251).toByte() }
        FakeTelephonyProvider.part(101, 10, "image/jpeg", name = "photo.jpg", bytes = photo)
        val first = wakeUp()
        assertTrue(lastSeq() > afterBaseline, "the new messages were captured")
        assertEquals(listOf(101L), FakeTelephonyProvider.reads, "the photo's bytes were streamed once")
        // The notice names the organisation (from the policy, once the agent is open).
        val notice = shadowOf(app().getSystemService(NotificationManager::class.java)).getNotification(ArchivalService.NOTIFICATION_ID)
        assertTrue(notice.extras.getCharSequence("android.text").toString().contains(org), "notice: ${notice.extras}")
        assertTrue(shadowOf(first).lastForegroundNotification != null, "the service ran in the foreground")

        // The RCS message is edited (a new row, same thread, sender and time), and SMS 2 deleted.
        FakeTelephonyProvider.rcs(11, 1, PEER, listOf(LINE, "+15550177"), nowS - 30, "rcs edited $marker")
        FakeTelephonyProvider.deleteSms(2)
        wakeUp()
        val afterChanges = lastSeq()
        assertTrue(afterChanges > afterBaseline)

        // A read receipt or a repeated wake-up: the provider is unchanged, nothing is captured.
        wakeUp()
        assertEquals(afterChanges, lastSeq(), "an unchanged provider emits nothing")
        assertEquals(listOf(101L), FakeTelephonyProvider.reads, "media of rows already seen is never streamed again")

        // Upload to the real receiver over TLS, then open the archive and check it.
        val archive = ARCHIVE ?: fail("no receiver: VERBATIM_ARCHIVE_URL is not set (scripts/test-kotlin.sh starts one)")
        validatedNetwork()
        val report = AndroidAgent.get(app()).upload(60.seconds)
        assertEquals(StopReason.DONE, report.stopped, "${report.detail}")
        val lines = exported().filter { it.toString().contains(marker) || it.optString("type") in setOf("unsend", "attachment_start") }
        fun of(type: String) = lines.filter { it.optString("type") == type }
        val messages = of("message").associateBy { it.getJSONObject("meta").getString("source_id") }
        assertEquals(setOf("sms:2", "sms:3", "mms:10"), messages.keys, "history is not captured; the edit is not a message")
        assertEquals("sms in $marker", messages.getValue("sms:2").getString("text"))
        assertEquals("inbound", messages.getValue("sms:2").getString("direction"))
        assertEquals("outbound", messages.getValue("sms:3").getString("direction"))
        val rcs = messages.getValue("mms:10")
        assertEquals(listOf("rcs", PEER), listOf(rcs.getJSONObject("meta").getString("channel"), rcs.getString("sender")))
        val edit = of("edit").single()
        assertEquals(listOf("mms:10", "rcs edited $marker"), listOf(edit.getString("target_message_id"), edit.getString("new_text")))
        val unsends = of("unsend").filter { it.getString("target_message_id").startsWith("sms:") }
        assertEquals(listOf("sms:2"), unsends.map { it.getString("target_message_id") }, "the deletion is evidenced once")
        assertTrue(of("attachment_start").any { it.toString().contains("photo.jpg") }, "the photo is archived: $lines")
        println("    archive ${archive.url}: telephony messages, edit and unsend exported")
        Unit
    }

    /** The receiver's archive opened with its private key: every exported JSON line. */
    private fun exported(): List<JSONObject> {
        val env = System.getenv()
        val out = Files.createTempDirectory("verbatim-export-").toFile()
        try {
            val process = ProcessBuilder(
                env.getValue("VERBATIM_CLI"), "export", "--data", env.getValue("VERBATIM_RECEIVER_DATA"),
                "--key", env.getValue("VERBATIM_ARCHIVE_SECRET_KEY"), "--out", out.absolutePath,
            ).redirectErrorStream(true).start()
            val output = process.inputStream.bufferedReader().readText()
            assertTrue(process.waitFor(60, TimeUnit.SECONDS), "export did not finish")
            assertEquals(0, process.exitValue(), output)
            return out.walkTopDown().filter { it.isFile && it.extension == "jsonl" }
                .flatMap { f -> f.readLines().filter { it.isNotBlank() }.map { JSONObject(it) } }.toList()
        } finally {
            out.deleteRecursively()
        }
    }
}
