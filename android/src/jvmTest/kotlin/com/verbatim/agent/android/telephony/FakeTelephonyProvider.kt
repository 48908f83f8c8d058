package com.verbatim.agent.android.telephony

import android.content.ContentProvider
import android.content.ContentValues
import android.database.Cursor
import android.database.sqlite.SQLiteDatabase
import android.net.Uri
import java.io.ByteArrayInputStream
import org.robolectric.RuntimeEnvironment
import org.robolectric.Shadows.shadowOf

/**
 * The Telephony provider as observed on a fully managed phone, for the `sms` and `mms`
 * authorities: `content://sms`, `content://mms`, `content://mms/part` (and the bytes of
 * `content://mms/part/<_id>`), `content://mms/<id>/addr`, over an in-memory SQLite database
 * with the observed columns. One database for both authorities (two provider instances).
 */
class FakeTelephonyProvider : ContentProvider() {
    override fun onCreate() = true

    override fun query(uri: Uri, projection: Array<String>?, selection: String?, args: Array<String>?, sortOrder: String?): Cursor {
        beforeQuery?.invoke(uri)
        queries += "$uri ${args?.joinToString(",").orEmpty()} ${sortOrder.orEmpty()}".trim()
        val segments = uri.pathSegments
        return when {
            uri.authority == "sms" && segments.isEmpty() -> db.query("sms", projection, selection, args, null, null, sortOrder)
            uri.authority == "mms" && segments.isEmpty() -> db.query("pdu", projection, selection, args, null, null, sortOrder)
            uri.authority == "mms" && segments == listOf("part") -> db.query("part", projection, selection, args, null, null, sortOrder)
            uri.authority == "mms" && segments.size == 2 && segments[1] == "addr" -> {
                require(selection == null) { "addr rows are read per message" }
                db.query("addr", projection, "msg_id = ?", arrayOf(segments[0]), null, null, sortOrder)
            }
            else -> throw IllegalArgumentException("not a Telephony URI the reader should use: $uri")
        }
    }

    override fun getType(uri: Uri): String? = null
    override fun insert(uri: Uri, values: ContentValues?): Uri? = throw UnsupportedOperationException()
    override fun delete(uri: Uri, selection: String?, args: Array<String>?): Int = throw UnsupportedOperationException()
    override fun update(uri: Uri, values: ContentValues?, selection: String?, args: Array<String>?): Int =
        throw UnsupportedOperationException()

    companion object {
        lateinit var db: SQLiteDatabase
        /** Called before each query (a test holds a scan there). */
        @Volatile
        var beforeQuery: ((Uri) -> Unit)? = null

        /** Every query: its URI, arguments and sort order. */
        val queries: MutableList<String> = java.util.Collections.synchronizedList(ArrayList())

        /** Part ids whose bytes were opened. */
        val reads: MutableList<Long> = java.util.Collections.synchronizedList(ArrayList())

        fun reset() {
            reads.clear()
            queries.clear()
            beforeQuery = null
            db = SQLiteDatabase.create(null)
            db.execSQL(
                "CREATE TABLE sms (_id INTEGER PRIMARY KEY, thread_id INTEGER, address TEXT, person INTEGER, date INTEGER, " +
                    "date_sent INTEGER, protocol INTEGER, read INTEGER, status INTEGER, type INTEGER, reply_path_present INTEGER, " +
                    "subject TEXT, body TEXT, service_center TEXT, locked INTEGER, sub_id INTEGER, error_code INTEGER, " +
                    "creator TEXT, seen INTEGER)",
            )
            db.execSQL(
                "CREATE TABLE pdu (_id INTEGER PRIMARY KEY, thread_id INTEGER, date INTEGER, date_sent INTEGER, msg_box INTEGER, " +
                    "read INTEGER, m_id TEXT, sub TEXT, sub_cs INTEGER, ct_t TEXT, ct_l TEXT, exp INTEGER, m_cls TEXT, m_type INTEGER, " +
                    "v INTEGER, m_size INTEGER, pri INTEGER, rr INTEGER, rpt_a INTEGER, resp_st INTEGER, st INTEGER, tr_id TEXT, " +
                    "retr_st INTEGER, retr_txt TEXT, retr_txt_cs INTEGER, read_status INTEGER, ct_cls INTEGER, resp_txt TEXT, " +
                    "d_tm INTEGER, d_rpt INTEGER, locked INTEGER, sub_id INTEGER, seen INTEGER, creator TEXT, text_only INTEGER)",
            )
            db.execSQL(
                "CREATE TABLE part (_id INTEGER PRIMARY KEY, mid INTEGER, seq INTEGER, ct TEXT, name TEXT, chset INTEGER, cd TEXT, " +
                    "fn TEXT, cid TEXT, cl TEXT, ctt_s INTEGER, ctt_t TEXT, _data TEXT, text TEXT, sub_id INTEGER)",
            )
            db.execSQL("CREATE TABLE addr (_id INTEGER PRIMARY KEY, msg_id INTEGER, contact_id INTEGER, address TEXT, type INTEGER, charset INTEGER)")
        }

        fun sms(id: Long, type: Int, address: String, body: String, dateMs: Long, threadId: Long = 2) {
            db.insertOrThrow(
                "sms", null,
                ContentValues().apply {
                    put("_id", id); put("thread_id", threadId); put("address", address); put("date", dateMs)
                    put("date_sent", if (type == 1) dateMs - 1000 else 0L); put("type", type); put("body", body)
                    put("read", 1); put("seen", 1); put("status", -1); put("creator", "com.google.android.apps.messaging")
                },
            )
        }

        /** An RCS row (`ct_cls` 135, `m_size` 0): `from` sends it to `to`. */
        fun rcs(id: Long, msgBox: Int, from: String, to: List<String>, dateS: Long, text: String, threadId: Long = 3) {
            db.insertOrThrow(
                "pdu", null,
                ContentValues().apply {
                    put("_id", id); put("thread_id", threadId); put("date", dateS); put("date_sent", dateS); put("msg_box", msgBox)
                    put("ct_cls", 135); put("ct_t", "text/plain"); put("m_size", 0); put("m_type", if (msgBox == 1) 132 else 128)
                    put("read", 1); put("seen", 1); put("text_only", 1)
                },
            )
            part(id * 10, id, "text/plain", text = text)
            addr(id, from, 137)
            to.forEach { addr(id, it, 151) }
        }

        fun part(id: Long, mid: Long, ct: String, text: String? = null, name: String? = null, bytes: ByteArray? = null) {
            db.insertOrThrow(
                "part", null,
                ContentValues().apply {
                    put("_id", id); put("mid", mid); put("seq", 0); put("ct", ct); put("text", text); put("name", name)
                    put("chset", 106)
                    if (bytes != null) put("_data", "/data/user/0/com.android.providers.telephony/app_parts/PART_$id")
                },
            )
            if (bytes != null) {
                // The bytes behind `openInputStream(content://mms/part/<_id>)`. (Robolectric's
                // ParcelFileDescriptor path needs JDK internals opened; the resolver's own stream
                // registry serves the same call.)
                shadowOf(RuntimeEnvironment.getApplication().contentResolver)
                    .registerInputStreamSupplier(Uri.parse("content://mms/part/$id")) {
                        reads += id
                        ByteArrayInputStream(bytes)
                    }
            }
        }

        fun addr(msgId: Long, address: String, type: Int) {
            db.insertOrThrow("addr", null, ContentValues().apply { put("msg_id", msgId); put("address", address); put("type", type); put("charset", 106) })
        }

        /** A deletion on the phone: the row and its parts and addresses go, no tombstone. */
        fun deleteSms(id: Long) = db.delete("sms", "_id = ?", arrayOf(id.toString()))

        fun deleteMms(id: Long) {
            db.delete("pdu", "_id = ?", arrayOf(id.toString()))
            db.delete("part", "mid = ?", arrayOf(id.toString()))
            db.delete("addr", "msg_id = ?", arrayOf(id.toString()))
        }
    }
}

