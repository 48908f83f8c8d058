//! Writing to stdout without panicking when the reader has gone (`verbatim inspect | head -1`).
//!
//! `println!` panics when stdout is a closed pipe, because Rust ignores SIGPIPE. Every command
//! prints through [`outln!`] and [`out!`] instead: a broken pipe ends the printing quietly and the
//! command finishes its work (a capture or an upload is never cut short because a pager closed);
//! any other write error is reported once on stderr.

use std::fmt;
use std::io::{ErrorKind, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once stdout failed: nothing more is written to it.
static CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes to stdout, flushing at once (a harness reading line by line trusts what it read).
pub fn write(args: fmt::Arguments<'_>) {
    if CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        CLOSED.store(true, Ordering::Relaxed);
        if e.kind() != ErrorKind::BrokenPipe {
            eprintln!("warning: cannot write to stdout: {e}");
        }
    }
}

/// `println!` that never panics on a closed stdout.
macro_rules! outln {
    () => {
        $crate::output::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` that never panics on a closed stdout.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write(format_args!($($arg)*))
    };
}

pub(crate) use {out, outln};
