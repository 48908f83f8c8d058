package com.verbatim.agent.android.telephony

import android.content.ContentResolver
import android.database.Cursor
import android.net.Uri
import com.verbatim.ffi.TelephonyScan
import com.verbatim.ffi.core.MmsAddr
import com.verbatim.ffi.core.MmsPart
import com.verbatim.ffi.core.MmsRow
import com.verbatim.ffi.core.ScanReport
import com.verbatim.ffi.core.SmsRow
import java.io.File
import kotlin.time.TimeMark

/**
 * Reads the whole Telephony provider into a [TelephonyScan], in bounded pages: `content://sms`
 * then `content://mms` (with each row's `content://mms/part` rows and `content://mms/<id>/addr`
 * rows), each in ascending `_id` (`_id > ?` from the previous page's last id, so memory stays
 * bounded whatever the phone holds). Only reading and type conversion here: which rows are new,
 * edited or deleted is decided in Rust.
 *
 * Media bytes are streamed with `openInputStream(content://mms/part/<_id>)` into one cache file
 * per part, for the rows the scan has not seen before only (`TelephonyScan.unseenMms`), and the
 * files are deleted as soon as their page is handed over.
 */
class TelephonyReader(
    private val resolver: ContentResolver,
    /** App-private cache directory for the part files (created if missing). */
    private val cacheDir: File,
    private val pageSize: Int = DEFAULT_PAGE_SIZE,
) {
    init {
        require(pageSize > 0) { "pageSize must be positive" }
    }

    /** A scan stopped before it saw the whole provider (its time budget ran out). */
    class OutOfTime : Exception("telephony scan: out of time before the whole provider was read")

    /**
     * Hands the whole provider to [scan] and finishes it. Between pages, throws [OutOfTime] once
     * [deadline] has passed: the scan is then abandoned unfinished (what it captured is kept and
     * remembered; deletions are only concluded from a complete scan), and the next one goes on.
     */
    suspend fun readInto(scan: TelephonyScan, deadline: TimeMark? = null): ScanReport {
        var after = 0L
        while (true) {
            deadline.check()
            val page = smsPage(after)
            if (page.isEmpty()) break
            scan.sms(page)
            after = page.last().id
            if (page.size < pageSize) break
        }
        after = 0L
        while (true) {
            deadline.check()
            val page = mmsPage(after)
            if (page.isEmpty()) break
            val files = ArrayList<File>()
            try {
                scan.mms(withMedia(scan, page, files))
            } finally {
                files.forEach { it.delete() }
            }
            after = page.last().id
            if (page.size < pageSize) break
        }
        return scan.finish()
    }

    private fun TimeMark?.check() {
        if (this != null && hasPassedNow()) throw OutOfTime()
    }

    private fun page(uri: Uri, columns: Array<String>, after: Long): Cursor? =
        resolver.query(uri, columns, "_id > ?", arrayOf(after.toString()), "_id ASC LIMIT $pageSize")

    internal fun smsPage(after: Long): List<SmsRow> {
        val rows = ArrayList<SmsRow>()
        page(SMS, SMS_COLUMNS, after)?.use { c ->
            // A provider that ignores LIMIT still gives at most a page: the rest is the next page.
            while (rows.size < pageSize && c.moveToNext()) {
                rows += SmsRow(
                    id = c.long("_id") ?: continue,
                    threadId = c.long("thread_id") ?: 0L,
                    address = c.text("address"),
                    date = c.long("date") ?: 0L,
                    kind = c.long("type") ?: 0L,
                    body = c.text("body"),
                )
            }
        }
        return rows
    }

    internal fun mmsPage(after: Long): List<MmsRow> {
        val rows = ArrayList<MmsRow>()
        page(MMS, MMS_COLUMNS, after)?.use { c ->
            while (rows.size < pageSize && c.moveToNext()) {
                rows += MmsRow(
                    id = c.long("_id") ?: continue,
                    threadId = c.long("thread_id") ?: 0L,
                    date = c.long("date") ?: 0L,
                    msgBox = c.long("msg_box") ?: 0L,
                    ctCls = c.long("ct_cls"),
                    ctT = c.text("ct_t"),
                    parts = emptyList(),
                    addr = emptyList(),
                )
            }
        }
        if (rows.isEmpty()) return emptyList()
        val parts = partsOf(rows.map { it.id })
        return rows.map { it.copy(parts = parts[it.id].orEmpty(), addr = addrOf(it.id)) }
    }

    /** The parts of a page's rows, in one query (`mid IN (...)`), by row. */
    private fun partsOf(ids: List<Long>): Map<Long, List<MmsPart>> {
        val byRow = HashMap<Long, MutableList<MmsPart>>()
        val marks = ids.joinToString(",") { "?" }
        resolver.query(PART, PART_COLUMNS, "mid IN ($marks)", ids.map { it.toString() }.toTypedArray(), "_id ASC")?.use { c ->
            while (c.moveToNext()) {
                val mid = c.long("mid") ?: continue
                byRow.getOrPut(mid) { ArrayList() } += MmsPart(
                    id = c.long("_id") ?: continue,
                    ct = c.text("ct").orEmpty(),
                    text = c.text("text"),
                    name = c.text("name"),
                    fileName = c.text("fn"),
                    data = c.text("_data"),
                    file = null,
                )
            }
        }
        return byRow
    }

    private fun addrOf(id: Long): List<MmsAddr> {
        val addr = ArrayList<MmsAddr>()
        resolver.query(Uri.parse("content://mms/$id/addr"), ADDR_COLUMNS, null, null, null)?.use { c ->
            while (c.moveToNext()) {
                addr += MmsAddr(address = c.text("address") ?: continue, kind = c.long("type") ?: continue)
            }
        }
        return addr
    }

    /**
     * The page with the media parts of its rows not seen before streamed into cache files (added
     * to [files], for deletion once the page is handed over) and pointed at them.
     */
    private suspend fun withMedia(scan: TelephonyScan, page: List<MmsRow>, files: MutableList<File>): List<MmsRow> {
        val candidates = page.filter { r -> r.parts.any { it.hasBytes() } }.map { it.id }
        if (candidates.isEmpty()) return page
        val unseen = scan.unseenMms(candidates).toSet()
        return page.map { row ->
            if (row.id !in unseen) return@map row
            row.copy(
                parts = row.parts.map { part ->
                    if (!part.hasBytes()) return@map part
                    val file = File(cacheDir.apply { mkdirs() }, "part-${part.id}")
                    files += file
                    copyPart(part.id, file)
                    part.copy(file = file.absolutePath)
                },
            )
        }
    }

    private fun copyPart(partId: Long, file: File) {
        val input = resolver.openInputStream(Uri.parse("content://mms/part/$partId"))
            ?: throw java.io.FileNotFoundException("content://mms/part/$partId: no stream")
        input.use { i -> file.outputStream().use { o -> i.copyTo(o) } }
    }

    /** A part whose bytes are read separately: `_data` set, and not the SMIL layout of a real MMS. */
    private fun MmsPart.hasBytes() = data != null && !ct.equals("application/smil", ignoreCase = true)

    private fun Cursor.index(column: String): Int? = getColumnIndex(column).takeIf { it >= 0 && !isNull(it) }
    private fun Cursor.long(column: String): Long? = index(column)?.let { getLong(it) }
    private fun Cursor.text(column: String): String? = index(column)?.let { getString(it) }

    companion object {
        /** Rows per page: a page's text and metadata, never its media bytes, are in memory. */
        const val DEFAULT_PAGE_SIZE = 200

        val SMS: Uri = Uri.parse("content://sms")
        val MMS: Uri = Uri.parse("content://mms")
        val PART: Uri = Uri.parse("content://mms/part")

        private val SMS_COLUMNS = arrayOf("_id", "thread_id", "address", "date", "type", "body")
        private val MMS_COLUMNS = arrayOf("_id", "thread_id", "date", "msg_box", "ct_cls", "ct_t")
        private val PART_COLUMNS = arrayOf("_id", "mid", "ct", "text", "name", "fn", "_data")
        private val ADDR_COLUMNS = arrayOf("address", "type")
    }
}
