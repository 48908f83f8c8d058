package com.verbatim.agent.android

import android.content.BroadcastReceiver
import android.content.Context
import android.content.Intent
import android.content.IntentFilter
import android.content.RestrictionsManager
import android.os.Build
import android.os.Bundle
import com.verbatim.agent.PolicyTree
import com.verbatim.ffi.PolicyValue

/**
 * The managed configuration the MDM pushes (app restrictions, keys declared in
 * res/xml/app_restrictions.xml), as the neutral tree the agent validates. Conversion only: the
 * Rust core validates every key.
 */
class ManagedConfig(context: Context) {
    private val app = context.applicationContext
    private val restrictions = app.getSystemService(RestrictionsManager::class.java)

    /** The current restrictions as the agent's policy tree (an empty dictionary when none). */
    fun read(): PolicyValue = PolicyTree.from(toMap(restrictions.applicationRestrictions))

    /**
     * Calls [onChange] whenever the MDM changes the restrictions (the broadcast is delivered only
     * to receivers registered at run time, while the process lives; re-read on resume as well).
     * Close the result to stop watching.
     */
    fun watch(onChange: () -> Unit): AutoCloseable {
        val receiver = object : BroadcastReceiver() {
            override fun onReceive(context: Context, intent: Intent) = onChange()
        }
        val filter = IntentFilter(Intent.ACTION_APPLICATION_RESTRICTIONS_CHANGED)
        if (Build.VERSION.SDK_INT >= Build.VERSION_CODES.TIRAMISU) {
            // A system broadcast: not exported to other apps, still delivered by the system.
            app.registerReceiver(receiver, filter, Context.RECEIVER_NOT_EXPORTED)
        } else {
            app.registerReceiver(receiver, filter)
        }
        return AutoCloseable { app.unregisterReceiver(receiver) }
    }

    companion object {
        /**
         * A restrictions Bundle as maps and lists: `bundle` entries become maps, `bundle_array`
         * entries (Parcelable[] of Bundles) lists of maps, `multi-select` String[] lists.
         */
        @JvmStatic
        fun toMap(bundle: Bundle): Map<String, Any?> {
            val out = LinkedHashMap<String, Any?>()
            for (key in bundle.keySet()) {
                @Suppress("DEPRECATION")
                out[key] = convert(bundle.get(key))
            }
            return out
        }

        private fun convert(v: Any?): Any? = when (v) {
            is Bundle -> toMap(v)
            is Array<*> -> v.map(::convert)
            else -> v
        }
    }
}
