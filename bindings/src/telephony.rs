//! `TelephonyScan`: one scan of the Android Telephony provider (Google Messages' archival mode),
//! fed by the platform in pages. Every decision (what is new, an edit, a deletion, history) is
//! the core's `sources::telephony::Scanner`; this file only moves the pages onto the agent's
//! runtime and keeps the scanner between calls.

use std::sync::Arc;

use tokio::sync::Mutex;
use verbatim_core::sources::telephony::{MmsRow, ScanOptions, ScanReport, Scanner, SmsRow};

use crate::error::{Result, VerbatimError};
use crate::runtime::{self, OnCancel};

/// One scan in progress: hand it every page of `content://sms` in ascending `_id` (`sms`),
/// then every page of `content://mms` in ascending `_id` with each row's parts and addresses
/// (`mms`; a media part's `file` names a file holding its bytes, readable until the call
/// returns), then `finish`. Rows missing from the pages are taken as deleted, so a scan must
/// see the whole provider. One call at a time; after `finish` (or an error) the scan is over.
#[derive(uniffi::Object)]
pub struct TelephonyScan {
    scanner: Arc<Mutex<Option<Scanner>>>,
}

impl TelephonyScan {
    pub(crate) async fn begin(core: verbatim_core::Agent) -> Result<Arc<TelephonyScan>> {
        runtime::spawn("begin_telephony_scan", OnCancel::Finish, async move {
            let options = ScanOptions::from_policy(&core)?;
            let scanner = Scanner::begin(&core, options).await?;
            Ok(Arc::new(TelephonyScan { scanner: Arc::new(Mutex::new(Some(scanner))) }))
        })
        .await
    }
}

fn over() -> VerbatimError {
    VerbatimError::from(verbatim_core::Error::new(
        verbatim_core::ErrorKind::Rejected,
        "telephony scan: already finished or failed; begin a new one",
    ))
}

#[uniffi::export]
impl TelephonyScan {
    /// The next page of `content://sms`, in ascending `_id` after the previous page's.
    pub async fn sms(&self, rows: Vec<SmsRow>) -> Result<()> {
        let scanner = self.scanner.clone();
        runtime::spawn("telephony_sms", OnCancel::Finish, async move {
            let mut slot = scanner.lock().await;
            let s = slot.as_mut().ok_or_else(over)?;
            let result = s.sms(rows.iter()).await;
            if result.is_err() {
                *slot = None;
            }
            Ok(result?)
        })
        .await
    }

    /// The next page of `content://mms`, in ascending `_id` after the previous page's.
    pub async fn mms(&self, rows: Vec<MmsRow>) -> Result<()> {
        let scanner = self.scanner.clone();
        runtime::spawn("telephony_mms", OnCancel::Finish, async move {
            let mut slot = scanner.lock().await;
            let s = slot.as_mut().ok_or_else(over)?;
            let result = s.mms(rows.iter()).await;
            if result.is_err() {
                *slot = None;
            }
            Ok(result?)
        })
        .await
    }

    /// Of these `content://mms` ids, the rows not seen before: stream the media parts of these
    /// alone into files before handing their page to `mms`.
    pub async fn unseen_mms(&self, ids: Vec<i64>) -> Result<Vec<i64>> {
        let scanner = self.scanner.clone();
        runtime::spawn("telephony_unseen_mms", OnCancel::Finish, async move {
            let slot = scanner.lock().await;
            Ok(slot.as_ref().ok_or_else(over)?.unseen_mms(&ids)?)
        })
        .await
    }

    /// Every page was handed over: rows remembered but not seen are captured as deleted.
    pub async fn finish(&self) -> Result<ScanReport> {
        let scanner = self.scanner.clone();
        runtime::spawn("telephony_finish", OnCancel::Finish, async move {
            let s = scanner.lock().await.take().ok_or_else(over)?;
            let report = s.finish().await?;
            tracing::info!(
                events = report.events.len(),
                baseline = report.baseline,
                unchanged = report.unchanged,
                out_of_scope = report.out_of_scope,
                "telephony scan finished"
            );
            Ok(report)
        })
        .await
    }
}
