package com.verbatim.agent.android.telephony

import android.app.Notification
import android.app.NotificationChannel
import android.app.NotificationManager
import android.app.Service
import android.content.Context
import android.content.Intent
import android.content.pm.ServiceInfo
import android.os.Build
import android.os.IBinder
import android.util.Log
import com.verbatim.agent.android.AndroidAgent
import kotlin.time.Duration.Companion.minutes
import kotlinx.coroutines.CoroutineExceptionHandler
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.SupervisorJob
import kotlinx.coroutines.cancel
import kotlinx.coroutines.launch

/**
 * The archival component Google Messages starts on a fully managed phone (action
 * [ACTION_ARCHIVAL_UPDATE], for every message sent, received, edited or deleted, and for status
 * changes). Exported, protected by `android.permission.WRITE_SMS` so that only the default SMS
 * app can start it, and a foreground service of type `shortService` (see the manifest).
 *
 * The start is a wake-up, never a payload: each one scans the whole provider
 * ([TelephonyArchival.wake], one scan at a time, overlapping wake-ups coalesced) under a
 * persistent notice naming the organisation, and the service stops itself when the scan is
 * done, well within the short-service limit (3 minutes). [EXTRA_ARCHIVAL_URI] is ignored: it
 * may name a row, a box, a stale row or a private URI, and is never logged.
 */
class ArchivalService : Service() {
    private val scope = CoroutineScope(
        SupervisorJob() + Dispatchers.Default +
            CoroutineExceptionHandler { _, e -> Log.e(TAG, "archival wake-up failed: ${e.javaClass.simpleName}") },
    )

    override fun onBind(intent: Intent?): IBinder? = null

    override fun onStartCommand(intent: Intent?, flags: Int, startId: Int): Int {
        // In the foreground at once (the system requires it soon after the start), with the notice.
        startInForeground(this)
        if (intent?.action != null && intent.action != ACTION_ARCHIVAL_UPDATE) {
            Log.w(TAG, "archival service started for another action: scanning anyway")
        }
        scope.launch {
            try {
                // Opening the agent tells us the organisation: the notice names it from then on.
                val before = TelephonyArchival.organizationName
                AndroidAgent.get(applicationContext).status().organizationName?.let { name ->
                    TelephonyArchival.organizationName = name
                    if (name != before) notifications(this@ArchivalService).notify(NOTIFICATION_ID, notice(this@ArchivalService))
                }
                TelephonyArchival.wake(applicationContext, SCAN_BUDGET)
            } finally {
                // Stops only when no later start is pending (each start's pass runs first).
                stopSelf(startId)
            }
        }
        return START_NOT_STICKY
    }

    /** The short-service time limit was reached (API 34+): stop now; the next scan goes on. */
    override fun onTimeout(startId: Int) {
        Log.w(TAG, "archival service reached the short-service time limit")
        scope.cancel()
        stopSelf()
    }

    override fun onDestroy() {
        scope.cancel()
        super.onDestroy()
    }

    companion object {
        private const val TAG = "Verbatim"

        /** The action Google Messages starts the archival app with (observed bare). */
        const val ACTION_ARCHIVAL_UPDATE = "GOOGLE_MESSAGES_ARCHIVAL_UPDATE"

        /** A Parcelable `Uri` Google Messages may add: a hint at best, ignored. */
        const val EXTRA_ARCHIVAL_URI = "com.google.android.apps.messaging.EXTRA_ARCHIVAL_URI"

        /** Well within the short-service limit (3 minutes), with room to stop. */
        val SCAN_BUDGET = 2.minutes

        const val NOTIFICATION_ID = 0x56_45_52_10
        const val CHANNEL_ID = "verbatim_archival"

        private fun notifications(context: Context) = context.getSystemService(NotificationManager::class.java)

        /** The persistent notice while archiving: what happens, and for whom. */
        fun noticeText(organization: String?): String =
            "Messages on this phone are archived for compliance by ${organization ?: "your organisation"}."

        internal fun notice(context: Context): Notification {
            if (Build.VERSION.SDK_INT >= Build.VERSION_CODES.O) {
                notifications(context).createNotificationChannel(
                    NotificationChannel(CHANNEL_ID, "Message archiving", NotificationManager.IMPORTANCE_LOW),
                )
            }
            val text = noticeText(TelephonyArchival.organizationName)
            val builder = if (Build.VERSION.SDK_INT >= Build.VERSION_CODES.O) {
                Notification.Builder(context, CHANNEL_ID)
            } else {
                @Suppress("DEPRECATION")
                Notification.Builder(context)
            }
            return builder
                .setSmallIcon(android.R.drawable.ic_dialog_info)
                .setContentTitle("Compliance archiving")
                .setContentText(text)
                .setStyle(Notification.BigTextStyle().bigText(text))
                .setOngoing(true)
                .build()
        }

        private fun startInForeground(service: Service) {
            val notice = notice(service)
            if (Build.VERSION.SDK_INT >= Build.VERSION_CODES.UPSIDE_DOWN_CAKE) {
                service.startForeground(NOTIFICATION_ID, notice, ServiceInfo.FOREGROUND_SERVICE_TYPE_SHORT_SERVICE)
            } else {
                service.startForeground(NOTIFICATION_ID, notice)
            }
        }
    }
}
