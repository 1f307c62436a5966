//! User-facing output: one printer that knows about `--quiet`, `--json` and progress bars.
//!
//! Diagnostics go through `tracing` (stderr, `-v`); what a person running `berth` reads goes
//! through here: step lines with durations and bars on stderr, results on stdout.

use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Steps, durations and progress bars on stderr.
    Normal,
    /// Only the result on stdout.
    Quiet,
    /// Only one JSON document on stdout.
    Json,
}

pub struct Printer {
    mode: Mode,
    multi: MultiProgress,
    /// Every finished step with its duration, in order (build-metrics.json).
    timings: std::sync::Mutex<Vec<(String, Duration)>>,
}

impl Printer {
    pub fn new(mode: Mode) -> Self {
        let multi = MultiProgress::new();
        if mode != Mode::Normal {
            multi.set_draw_target(ProgressDrawTarget::hidden());
        }
        Printer {
            mode,
            multi,
            timings: Default::default(),
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// A byte-counting bar, or `None` when nothing is drawn (quiet/json, or stderr is not a
    /// terminal: indicatif hides itself then).
    pub fn bytes_bar(&self, len: u64, msg: &str) -> Option<ProgressBar> {
        if self.mode != Mode::Normal {
            return None;
        }
        let bar = self.multi.add(ProgressBar::new(len));
        bar.set_style(
            ProgressStyle::with_template(
                "  {msg:24} [{bar:30}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} {eta:>4}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(msg.to_string());
        Some(bar)
    }

    /// A counter of steps whose total is unknown (a kernel compile), or `None` when nothing is
    /// drawn.
    pub fn counter(&self, msg: &str) -> Option<ProgressBar> {
        if self.mode != Mode::Normal || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            return None;
        }
        let bar = self.multi.add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("  {spinner} {msg:24} {pos:>6} steps {elapsed:>5}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        bar.set_message(msg.to_string());
        Some(bar)
    }

    /// Starts a named step; its duration is printed when [`Step::done`] is called.
    pub fn step(&self, name: &str) -> Step<'_> {
        tracing::debug!(step = name, "start");
        Step {
            printer: self,
            name: name.to_string(),
            start: Instant::now(),
        }
    }

    /// A line of information for the person at the terminal (not shown in quiet/json modes).
    pub fn info(&self, msg: &str) {
        if self.mode == Mode::Normal {
            self.multi.suspend(|| eprintln!("{msg}"));
        }
    }

    /// The result: always printed, on stdout.
    pub fn result(&self, msg: &str) {
        if self.mode != Mode::Json {
            stdout_line(msg);
        }
    }

    /// The steps finished so far, with their durations.
    pub fn timings(&self) -> Vec<(String, Duration)> {
        self.timings.lock().map(|t| t.clone()).unwrap_or_default()
    }

    pub fn is_json(&self) -> bool {
        self.mode == Mode::Json
    }

    pub fn json(&self, v: &serde_json::Value) {
        if self.mode == Mode::Json {
            stdout_line(&serde_json::to_string_pretty(v).unwrap_or_default());
        }
    }
}

/// Writes a line to stdout. A reader that went away (`berth inspect | head`) is not an error
/// of berth's: the rest of the output is dropped quietly, as `cat` and `ls` do, where
/// `println!` would panic.
fn stdout_line(msg: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{msg}").and_then(|()| out.flush());
}

pub struct Step<'a> {
    printer: &'a Printer,
    name: String,
    start: Instant,
}

impl Step<'_> {
    /// Prints `  name .... 1.23s  detail`.
    pub fn done(self, detail: &str) -> Duration {
        let d = self.start.elapsed();
        tracing::info!(step = %self.name, secs = d.as_secs_f64(), "done");
        if let Ok(mut t) = self.printer.timings.lock() {
            t.push((self.name.clone(), d));
        }
        self.printer.info(&format!(
            "  {:<28} {:>7.2}s  {detail}",
            self.name,
            d.as_secs_f64()
        ));
        d
    }
}
