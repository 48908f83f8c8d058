package com.verbatim.agent.android.telephony

import com.verbatim.agent.PEER
import com.verbatim.agent.openAgent
import com.verbatim.agent.policy
import com.verbatim.ffi.VerbatimException
import com.verbatim.ffi.core.SmsRow
import com.verbatim.agent.android.AndroidAgent
import com.verbatim.agent.android.app
import com.verbatim.agent.android.eventually
import com.verbatim.agent.android.jobScheduler
import com.verbatim.agent.android.managedPolicy
import com.verbatim.agent.android.resetAndroidAgent
import com.verbatim.agent.android.setRestrictions
import java.io.File
import java.util.concurrent.CountDownLatch
import java.util.concurrent.TimeUnit
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertNotNull
import kotlin.test.assertTrue
import kotlin.time.Duration.Companion.minutes
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.async
import kotlinx.coroutines.runBlocking
import org.junit.After
import org.junit.Before
import org.junit.Test
import org.junit.runner.RunWith
import org.robolectric.Robolectric
import org.robolectric.RobolectricTestRunner
import org.robolectric.annotation.Config

/** The reader's paging and part files, the coalescing of wake-ups, the reconciliation job. */
@RunWith(RobolectricTestRunner::class)
@Config(sdk = [34], manifest = Config.NONE)
class TelephonyArchivalTest {
    @Before
    fun setUp() {
        resetAndroidAgent()
        FakeTelephonyProvider.reset()
        Robolectric.setupContentProvider(FakeTelephonyProvider::class.java, "sms")
        Robolectric.setupContentProvider(FakeTelephonyProvider::class.java, "mms")
        setRestrictions(managedPolicy("tel-unit", mapOf("capture_channels" to "sms,mms,rcs", "capture_attachments" to true)))
    }

    @After
    fun tearDown() {
        FakeTelephonyProvider.beforeQuery = null
        resetAndroidAgent()
    }

    @Test
    fun theReaderPagesByIdAndDeletesPartFilesAfterEachPage() = runBlocking {
        val agent = AndroidAgent.get(app())
        agent.beginTelephonyScan().use { TelephonyReader(app().contentResolver, File(app().cacheDir, "p")).readInto(it) } // baseline
        val nowMs = System.currentTimeMillis()
        for (id in 1L..5L) FakeTelephonyProvider.sms(id, 1, PEER, "sms $id", nowMs - 1000 * id)
        for (id in 10L..12L) {
            FakeTelephonyProvider.rcs(id, 1, PEER, listOf(com.verbatim.agent.LINE), nowMs / 1000 - id, "rcs $id")
            FakeTelephonyProvider.part(id * 10 + 1, id, "image/png", name = "p$id.png", bytes = ByteArray(1000) { id.toByte() })
        }
        val cache = File(app().cacheDir, "parts")
        FakeTelephonyProvider.queries.clear()
        val report = agent.beginTelephonyScan().use { TelephonyReader(app().contentResolver, cache, pageSize = 2).readInto(it) }
        assertEquals(8, report.events.count { it.kind == "message" }, "${report.events}")
        assertEquals(3, report.events.count { it.kind == "attachment" }, "${report.events}")
        // Bounded pages in _id order: each page starts after the previous page's last _id.
        val smsPages = FakeTelephonyProvider.queries.filter { it.startsWith("content://sms ") }
        assertEquals(listOf("0", "2", "4"), smsPages.map { it.split(" ")[1] }, "$smsPages")
        assertTrue(smsPages.all { it.endsWith("_id ASC LIMIT 2") }, "$smsPages")
        val mmsPages = FakeTelephonyProvider.queries.filter { it.startsWith("content://mms ") }
        assertEquals(listOf("0", "11"), mmsPages.map { it.split(" ")[1] }, "$mmsPages")
        assertEquals(emptyList(), cache.listFiles()?.toList().orEmpty(), "part files are deleted after their page")
    }

    @Test
    fun overlappingWakeUpsRunOneScanAtATimeAndOneMorePass() = runBlocking {
        AndroidAgent.get(app())
        TelephonyArchival.wake(app(), 1.minutes) // baseline
        val inScan = CountDownLatch(1)
        val release = CountDownLatch(1)
        FakeTelephonyProvider.beforeQuery = { uri ->
            if (uri.toString() == "content://sms" && inScan.count > 0) {
                inScan.countDown()
                release.await(30, TimeUnit.SECONDS)
            }
        }
        val first = async(Dispatchers.Default) { TelephonyArchival.wake(app(), 1.minutes) }
        assertTrue(inScan.await(30, TimeUnit.SECONDS), "the first scan did not start")
        // While it reads: a new row, and three more wake-ups.
        FakeTelephonyProvider.sms(7, 1, PEER, "during the scan", System.currentTimeMillis())
        val others = (1..3).map { async(Dispatchers.Default) { TelephonyArchival.wake(app(), 1.minutes) } }
        eventually(what = "the three wake-ups wait for the scan in progress") { TelephonyArchival.waiting.get() == 3 }
        release.countDown()
        val firstReports = first.await()
        val otherReports = others.map { it.await() }
        // One more pass covers all three wake-ups, and it sees the row written meanwhile.
        val passes = firstReports.size + otherReports.sumOf { it.size }
        assertEquals(2, passes, "first: $firstReports, others: $otherReports")
        val all = firstReports + otherReports.flatten()
        assertEquals(listOf("sms:7"), all.flatMap { r -> r.events.filter { it.kind == "message" }.map { it.id } })
    }

    @Test
    fun misuseOfAScanIsATypedErrorNeverACrash() = runBlocking {
        openAgent().use { agent ->
            // No policy: no line to file the texts under, the scan fails closed.
            assertFailsWith<VerbatimException.NotConfigured> { agent.beginTelephonyScan() }
            agent.applyPolicy(policy(extra = mapOf("capture_channels" to "sms,mms,rcs")))
            val now = System.currentTimeMillis()
            agent.beginTelephonyScan().use { scan ->
                scan.sms(listOf(SmsRow(5, 2, PEER, now, 1, "five")))
                // Pages must come in ascending _id: refused by row, and the scan is over.
                val e = assertFailsWith<VerbatimException.InvalidEvent> { scan.sms(listOf(SmsRow(3, 2, PEER, now, 1, "three"))) }
                assertTrue("_id 3" in e.message.orEmpty() && "three" !in e.message.orEmpty(), "${e.message}")
                assertFailsWith<VerbatimException.Rejected> { scan.finish() }
            }
            // A date in seconds in content://sms: that row is evidenced and passed over (one bad
            // row must not stop every scan), and the rows after it are captured. (The first
            // scan was cut short above: one finished scan ends the baseline first, so that row
            // 10 is new, not history.)
            agent.beginTelephonyScan().use { it.finish() }
            agent.beginTelephonyScan().use { scan ->
                scan.sms(listOf(SmsRow(9, 2, PEER, now / 1000, 1, "secret"), SmsRow(10, 2, PEER, now, 1, "ten")))
                val report = scan.finish()
                assertEquals(listOf("sms:10"), report.events.filter { it.kind == "message" }.map { it.id })
            }
            agent.shutdown()
        }
    }

    @Test
    fun theReconciliationJobIsPeriodicPersistedAndItsIdConfigurable() {
        assertTrue(TelephonyArchival.start(app(), jobId = 4245))
        val job = assertNotNull(jobScheduler().getPendingJob(4245))
        assertEquals(TelephonyArchival.RECONCILIATION_PERIOD_MINUTES * 60_000L, job.intervalMillis)
        assertTrue(job.isPersisted)
        assertEquals(ReconciliationJobService::class.java.name, job.service.className)
        // Moved to another id: the old one is cancelled.
        assertTrue(TelephonyArchival.start(app(), jobId = 4246))
        assertEquals(null, jobScheduler().getPendingJob(4245))
        assertNotNull(jobScheduler().getPendingJob(4246))
        TelephonyArchival.stop(app())
        assertEquals(null, jobScheduler().getPendingJob(4246))
    }
}
