//! `verbatim relay imessage`: the iMessage relay on a managed Mac. Only wiring: the reading,
//! mapping, position and evidence live in `verbatim_core::sources::imessage`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::device_cmd::{open_configured, runtime};
use crate::output::outln;
use verbatim_core::sources::imessage::{self, RelayError, RelayOptions, WatchOptions};

#[derive(clap::Args)]
pub struct ImessageArgs {
    /// Messages' database (`~/Library/Messages/chat.db`); read only, never written.
    #[arg(long)]
    pub chat_db: PathBuf,
    /// The relay's data directory (its sealed queue and source state; created if missing).
    #[arg(long)]
    pub state: PathBuf,
    /// Policy file (XML property list or JSON), as the MDM pushes the managed configuration.
    #[arg(long)]
    pub policy: PathBuf,
    /// What `~/Library/Messages/Attachments` stands for (default: that folder in $HOME).
    #[arg(long)]
    pub attachments_root: Option<PathBuf>,
    /// Scan once, capture, print the pass's report as JSON and exit (no upload).
    #[arg(long)]
    pub once: bool,
    /// While watching, the longest wait between two checks of chat.db, in milliseconds: a
    /// file-change notification from the OS (FSEvents, inotify) ends the wait at once.
    #[arg(long, default_value_t = 1000)]
    pub poll_ms: u64,
    /// Leave uploads to `verbatim upload` (run while the relay is stopped) instead of
    /// uploading in-process on the policy's schedule.
    #[arg(long)]
    pub no_upload: bool,
}

/// `~/...` under $HOME: launchd passes paths as written, and the launch agent names the
/// user's own Messages folder that way.
fn expand_home(path: PathBuf) -> PathBuf {
    match (path.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => path,
    }
}

pub fn imessage(mut args: ImessageArgs) -> ExitCode {
    args.chat_db = expand_home(args.chat_db);
    args.state = expand_home(args.state);
    args.policy = expand_home(args.policy);
    args.attachments_root = args.attachments_root.map(expand_home);
    let agent = match open_configured(&args.state, &args.policy) {
        Ok(agent) => agent,
        Err(code) => return code,
    };
    let options = RelayOptions { chat_db: args.chat_db, attachments_root: args.attachments_root };
    let rt = runtime();
    if args.once {
        // Each id is printed once durable: a harness that kills this process trusts every line.
        let outcome = rt.block_on(imessage::scan_evidenced(&agent, &options, &mut |id| outln!("captured {id}")));
        let _ = imessage::write_status(&agent, outcome.as_ref().ok());
        let _ = rt.block_on(agent.close());
        return match outcome {
            Ok(report) => {
                outln!("{}", serde_json::to_string(&report).expect("report serialises"));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        };
    }
    let stop = Arc::new(AtomicBool::new(false));
    let pacing = WatchOptions {
        poll: Duration::from_millis(args.poll_ms.max(10)),
        upload_deadline: if args.no_upload { None } else { WatchOptions::default().upload_deadline },
        ..WatchOptions::default()
    };
    let result = rt.block_on(async {
        let flag = stop.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            flag.store(true, Ordering::Release);
        });
        imessage::watch(&agent, &options, &pacing, &stop, |outcome| match outcome {
            Ok(report) if report.captured > 0 || report.out_of_scope > 0 => {
                outln!("{}", serde_json::to_string(report).expect("report serialises"))
            }
            Ok(_) => {}
            Err(RelayError::Source(e)) => eprintln!("warning: {e}"),
            Err(e) => eprintln!("error: {e}"),
        })
        .await
    });
    let _ = rt.block_on(agent.close());
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
