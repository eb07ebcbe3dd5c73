//! Subcommand implementations. They only orchestrate library calls.

pub mod appliance;
pub mod bench;
mod bench_device;
pub mod calibrate_psf;
pub mod convert;
pub mod demo;
pub mod dose;
pub mod eval;
pub mod history;
pub mod inspect;
pub mod phantom;
pub mod segment;
pub mod self_check;

use organdose::config::Config;

/// Logs go to stderr; `RUST_LOG` wins over the config's level.
pub fn init_logging(cfg: &Config) {
    // notify logs "unable to remove watch descriptor from inotify" at INFO for
    // every removed watched folder (a race it calls harmless): warnings only from
    // it, unless RUST_LOG asks otherwise (issue 42).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{},notify=warn", cfg.log.level))
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// A progress callback for long jobs: one log line per whole percent or new
/// stage, not one per batch of slices.
pub fn progress_logger() -> impl Fn(&str, f64) {
    let last = std::cell::RefCell::new((String::new(), -1i64));
    move |stage: &str, f: f64| {
        let pct = (100.0 * f).floor() as i64;
        let mut l = last.borrow_mut();
        if l.0 != stage || l.1 != pct {
            tracing::info!("[{pct:>3} %] {stage}");
            *l = (stage.to_string(), pct);
        }
    }
}

/// Writes a command's output to stdout at once. A reader that stops early
/// (`| head`) closes the pipe: that ends the output and is no fault (without
/// this `organdose inspect DIR | head -3` panicked on the broken pipe).
pub fn print_out(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    match o.write_all(text.as_bytes()).and_then(|_| o.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}
