//! Everything the commands print goes through here, never through `println!`/`eprintln!`
//! (denied crate-wide by clippy's `print_stdout`/`print_stderr`): those panic when the reader
//! has gone away (`sealong models inspect M | head -1`), and the process exits 101 with a panic
//! message. Here a closed stdout (`EPIPE`) ends the printing quietly: this and every later write
//! to stdout succeed and write nothing, the command finishes its work (a stage's product is the
//! files it writes, not its summary) and exits 0. Other write errors (a full disk behind a
//! redirect) stay errors. Writes to stderr never fail a command: there is nowhere left to report
//! that failure to.

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};

/// Set once a write to stdout met a closed pipe.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Whether stdout's reader has gone away (a write met `EPIPE`).
pub fn stdout_closed() -> bool {
    STDOUT_CLOSED.load(Ordering::Relaxed)
}

/// The process's stdout as a writer that turns a closed pipe into a quiet end of output.
pub struct Stdout;

impl Stdout {
    fn quiet<T>(r: io::Result<T>, closed: T) -> io::Result<T> {
        match r {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                STDOUT_CLOSED.store(true, Ordering::Relaxed);
                Ok(closed)
            }
            r => r,
        }
    }
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if stdout_closed() {
            return Ok(buf.len());
        }
        Self::quiet(io::stdout().write(buf), buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if stdout_closed() {
            return Ok(());
        }
        Self::quiet(io::stdout().flush(), ())
    }
}

/// Writes formatted text to stdout (see the module comment); use [`outln!`](crate::outln).
pub fn print(args: fmt::Arguments<'_>) -> Result<()> {
    let mut out = Stdout;
    out.write_fmt(args)
        .and_then(|()| out.flush())
        .context("writing to stdout")
}

/// Writes formatted text to stderr, ignoring failures; use [`errln!`](crate::errln).
pub fn eprint(args: fmt::Arguments<'_>) {
    let mut err = io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|()| err.flush());
}

/// `println!` that ends quietly when stdout's reader has gone away; returns
/// `anyhow::Result<()>` for other write errors.
#[macro_export]
macro_rules! outln {
    () => {
        $crate::output::print(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::print(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprintln!` that never panics (a closed stderr loses the line).
#[macro_export]
macro_rules! errln {
    () => {
        $crate::output::eprint(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::eprint(format_args!("{}\n", format_args!($($arg)*)))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_pipe_is_remembered_and_other_errors_are_not() {
        let e = Stdout::quiet::<usize>(Err(io::ErrorKind::PermissionDenied.into()), 3);
        assert_eq!(e.expect_err("other error").kind(), io::ErrorKind::PermissionDenied);
        assert!(!stdout_closed());
        assert_eq!(
            Stdout::quiet::<usize>(Err(io::ErrorKind::BrokenPipe.into()), 3).expect("quiet"),
            3
        );
        assert!(stdout_closed());
        // From now on nothing reaches stdout and nothing fails.
        assert_eq!(Stdout.write(b"dropped").expect("write"), 7);
        crate::outln!("dropped too").expect("print");
    }
}
