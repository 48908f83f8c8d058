package com.verbatim.agent.android

import android.content.Intent
import android.os.Bundle
import android.os.Parcelable
import com.verbatim.ffi.PolicyValue
import java.util.concurrent.atomic.AtomicInteger
import kotlin.test.assertEquals
import kotlin.test.assertFalse
import kotlin.test.assertTrue
import org.junit.Test
import org.junit.runner.RunWith
import org.robolectric.RobolectricTestRunner
import org.robolectric.Shadows.shadowOf
import org.robolectric.annotation.Config

@RunWith(RobolectricTestRunner::class)
@Config(sdk = [34], manifest = Config.NONE)
class ManagedConfigTest {
    @Test
    fun aRestrictionsBundleBecomesTheTree() {
        val inner = Bundle().apply { putString("name", "desk") }
        setRestrictions(
            Bundle().apply {
                putString("archive_url", "https://archive.example")
                putBoolean("fail_closed", true)
                putInt("upload_interval_minutes", 30)
                putStringArray("capture_channels", arrayOf("sms", "voice"))
                putBundle("nested", inner)
                putParcelableArray("desks", arrayOf<Parcelable>(inner, Bundle().apply { putInt("n", 2) }))
            },
        )
        val tree = ManagedConfig(app()).read() as PolicyValue.Dict
        val v = tree.entries
        assertEquals(PolicyValue.Text("https://archive.example"), v["archive_url"])
        assertEquals(PolicyValue.Bool(true), v["fail_closed"])
        assertEquals(PolicyValue.Integer(30), v["upload_interval_minutes"])
        assertEquals(PolicyValue.Items(listOf(PolicyValue.Text("sms"), PolicyValue.Text("voice"))), v["capture_channels"])
        assertEquals(PolicyValue.Dict(mapOf("name" to PolicyValue.Text("desk"))), v["nested"])
        assertEquals(
            PolicyValue.Items(
                listOf(
                    PolicyValue.Dict(mapOf("name" to PolicyValue.Text("desk"))),
                    PolicyValue.Dict(mapOf("n" to PolicyValue.Integer(2))),
                ),
            ),
            v["desks"],
        )
        setRestrictions(Bundle())
        assertEquals(PolicyValue.Dict(emptyMap()), ManagedConfig(app()).read())
    }

    @Test
    fun watchHearsTheBroadcastUntilClosed() {
        val changes = AtomicInteger()
        val intent = Intent(Intent.ACTION_APPLICATION_RESTRICTIONS_CHANGED)
        val watch = ManagedConfig(app()).watch { changes.incrementAndGet() }
        assertTrue(shadowOf(app()).hasReceiverForIntent(intent))
        app().sendBroadcast(intent)
        idleMainLooper()
        assertEquals(1, changes.get())
        watch.close()
        assertFalse(shadowOf(app()).hasReceiverForIntent(intent))
        app().sendBroadcast(intent)
        idleMainLooper()
        assertEquals(1, changes.get(), "no delivery after close")
    }
}
