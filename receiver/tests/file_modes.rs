//! The receiver's data directory is its owner's only: the directory 0700, the database, its
//! WAL files and the lock 0600; created so, and narrowed when an existing one is wider.
#![cfg(unix)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use support::*;
use verbatim_receiver::add_device;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o777
}

fn set_mode(p: &Path, m: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
}

/// Starts a receiver on `data`, stores one batch (so that the WAL files exist), and checks every
/// file's mode while it runs.
async fn run_and_check(data: &Path, stream: &str) {
    let rx = start(config(data)).await;
    let token = add_device(&tokens_path(data), "acme", "dev-1").unwrap();
    let client = client(rx.ca_pem().unwrap());
    let mut dev = Device::new(&archive_keys(), "acme", "dev-1", stream);
    dev.push_n(2);
    assert_eq!(post(&client, &rx.url(), token.expose(), &dev.batch(1, 2)).await.ack().acked_through, 2);
    assert_eq!(mode(data), 0o700, "data directory");
    for f in ["archive.db", "archive.db-wal", "archive.db-shm", "receiver.lock", "tokens.jsonl", "server-key.pem"] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
    rx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_and_database_are_created_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    // A parent that does not exist yet is created owner-only too.
    let data = dir.path().join("archive").join("data");
    run_and_check(&data, "s-1").await;
    assert_eq!(mode(&dir.path().join("archive")), 0o700);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_world_readable_data_directory_is_narrowed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    run_and_check(&data, "s-1").await;
    // As an older receiver (or a umask of 022) left them.
    set_mode(&data, 0o755);
    for f in ["archive.db", "receiver.lock"] {
        set_mode(&data.join(f), 0o644);
    }
    for f in ["archive.db-wal", "archive.db-shm"] {
        if data.join(f).exists() {
            set_mode(&data.join(f), 0o644);
        }
    }
    run_and_check(&data, "s-2").await;
}
