//! The `sealong` command line: argument parsing, files, progress and model provisioning around
//! the core library. Only this crate knows clap, the terminal, the process environment and pip.
//! Output goes through [`output`] (`outln!`, `errln!`), which a closed pipe cannot panic.
#![deny(clippy::print_stdout, clippy::print_stderr)]

#[macro_use]
pub mod output;

pub mod args;
pub mod cli;
pub mod commands;
pub mod decode;
pub mod device;
pub mod openai;
pub mod pool;
pub mod progress;
pub mod provision;
pub mod resume;

pub use cli::run;

/// Keeps freed memory in the process instead of handing it back to the kernel.
///
/// burn's CPU backend allocates a fresh buffer for every tensor op; glibc serves buffers above
/// its (dynamic) mmap threshold with `mmap` and trims the heap top eagerly, so a training step
/// spent ~10% of its time in page faults zeroing pages it had just returned. Serving everything
/// under 32 MiB from the heap and never trimming it made a LoRA ORPO step 1.3x faster (perf:
/// `exc_page_fault` 10.6% -> gone). The process keeps its peak heap, which it needs again on
/// the next step anyway.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    const M_TRIM_THRESHOLD: i32 = -1;
    const M_MMAP_THRESHOLD: i32 = -3;
    // SAFETY: mallopt only sets allocator parameters; called first thing in main, before any
    // other thread exists.
    unsafe {
        mallopt(M_MMAP_THRESHOLD, 32 << 20);
        mallopt(M_TRIM_THRESHOLD, i32::MAX);
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
unsafe extern "C" {
    fn mallopt(param: i32, value: i32) -> i32;
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

/// The whole `sealong` program: parse the command line, set up logging, run, and print errors
/// with their causes. Here, not in main.rs, so that the test package can build the same program
/// as a binary of its own (cargo hands a package's integration tests only its own binaries) and
/// run it as an installed copy.
pub fn main() -> std::process::ExitCode {
    use clap::Parser;
    use tracing_subscriber::EnvFilter;
    tune_allocator();
    let cli = cli::Cli::parse();
    let default_level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A closed stderr would otherwise be reported by an `eprintln!` that panics.
        .log_internal_errors(false)
        .init();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            errln!("error: {e}");
            for cause in e.chain().skip(1) {
                errln!("  caused by: {cause}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}
