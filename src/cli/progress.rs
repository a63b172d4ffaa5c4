//! Progress of long phases, on stderr.
//!
//! On a terminal: a bar where the amount of work is known, a spinner with
//! the elapsed time where it is not (an index build). Anywhere else (a log
//! file, a pipe, CI): one plain line when a phase starts and one every
//! `WHORL_PROGRESS_SECS` seconds (10 by default) while it runs, with no
//! terminal control codes (the first after two seconds, so that short
//! phases stay quiet; a new phase of a running display is announced at
//! once). `WHORL_PROGRESS=plain` forces the plain lines,
//! `WHORL_PROGRESS=off` silences both.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use whorl::table::{count, rate, seconds};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Bar,
    Plain,
    Off,
}

fn mode() -> Mode {
    match std::env::var("WHORL_PROGRESS").as_deref() {
        Ok("plain") => Mode::Plain,
        Ok("off") => Mode::Off,
        Ok("bar") => Mode::Bar,
        _ if std::io::stderr().is_terminal() => Mode::Bar,
        _ => Mode::Plain,
    }
}

fn interval() -> Duration {
    let secs = std::env::var("WHORL_PROGRESS_SECS").ok().and_then(|s| s.parse::<f64>().ok()).unwrap_or(10.0);
    Duration::from_secs_f64(secs.clamp(0.1, 3600.0))
}

#[derive(Debug)]
struct State {
    phase: String,
    unit: String,
    pos: u64,
    len: Option<u64>,
    phase_started: Instant,
    finished: bool,
    /// A plain line was printed (later ones report progress).
    printed: bool,
}

impl State {
    /// `building 100,000 templates...` when a phase starts.
    fn start_line(&self) -> String {
        match self.len {
            Some(len) => format!("  {}: {} {}...", self.phase, count(len), self.unit),
            None => format!("  {}...", self.phase),
        }
    }

    /// `building: 45,000 of 100,000 templates (9,812/s), 12 s`
    fn line(&self) -> String {
        let t = self.phase_started.elapsed();
        match self.len {
            Some(len) => format!(
                "  {}: {} of {} {} ({}), {}",
                self.phase,
                count(self.pos),
                count(len),
                self.unit,
                rate(self.pos as f64 / t.as_secs_f64().max(1e-9)),
                seconds(t)
            ),
            None if self.pos > 0 => {
                format!("  {}: {} {}, {}", self.phase, count(self.pos), self.unit, seconds(t))
            }
            None => format!("  {}: {}", self.phase, seconds(t)),
        }
    }
}

type Shared = Arc<(Mutex<State>, Condvar)>;

/// A phase's progress; cleared when finished or dropped.
pub struct Progress {
    mode: Mode,
    shared: Shared,
    bar: Option<indicatif::ProgressBar>,
    ticker: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress").field("mode", &self.mode).finish_non_exhaustive()
    }
}

fn bar_style(counted: bool) -> indicatif::ProgressStyle {
    let template = if counted {
        "{msg:>12} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} {unit} ({rate}, eta {eta})"
    } else {
        "{msg:>12} [{elapsed_precise}] {spinner} {pos_if_any}"
    };
    indicatif::ProgressStyle::with_template(template)
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .with_key("rate", |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = w.write_str(&rate(s.per_sec()));
        })
        .with_key("pos_if_any", |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
            if s.pos() > 0 {
                let _ = w.write_str(&count(s.pos()));
            }
        })
}

impl Progress {
    /// A phase of `len` units of work (`None`: unknown), e.g.
    /// `Progress::new("building", Some(100_000), "templates")`.
    pub fn new(phase: &str, len: Option<u64>, unit: &str) -> Progress {
        let mode = mode();
        let shared: Shared = Arc::new((
            Mutex::new(State {
                phase: phase.to_string(),
                unit: unit.to_string(),
                pos: 0,
                len,
                phase_started: Instant::now(),
                finished: false,
                printed: false,
            }),
            Condvar::new(),
        ));
        let mut p = Progress { mode, shared, bar: None, ticker: None };
        match mode {
            Mode::Off => {}
            Mode::Bar => {
                let bar = indicatif::ProgressBar::new(len.unwrap_or(0));
                if len.is_none() {
                    bar.unset_length();
                }
                let style = bar_style(len.is_some());
                bar.set_style(style.with_key("unit", unit_key(unit)));
                bar.set_message(phase.to_string());
                bar.enable_steady_tick(Duration::from_millis(200));
                p.bar = Some(bar);
            }
            Mode::Plain => {
                let shared = Arc::clone(&p.shared);
                let every = interval();
                p.ticker = std::thread::Builder::new()
                    .name("whorl-progress".into())
                    .spawn(move || ticker(&shared, every))
                    .ok();
            }
        }
        p
    }

    /// A phase whose amount of work is unknown: the elapsed time is shown.
    pub fn spinner(phase: &str) -> Progress {
        Progress::new(phase, None, "")
    }

    fn plain_line(&self) {
        if let Ok(mut s) = self.shared.0.lock() {
            s.printed = true;
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "{}", s.start_line());
        }
    }

    /// Units done so far.
    pub fn set_position(&self, pos: u64) {
        if let Ok(mut s) = self.shared.0.lock() {
            s.pos = pos;
        }
        if let Some(b) = &self.bar {
            b.set_position(pos);
        }
    }

    /// Starts the next phase (a new name, its own amount of work); a plain
    /// line announces it at once. Nothing happens when the phase is unchanged.
    pub fn set_phase(&self, phase: &str, len: Option<u64>, unit: &str) {
        let changed = match self.shared.0.lock() {
            Ok(mut s) if s.phase != phase => {
                s.phase = phase.to_string();
                s.unit = unit.to_string();
                s.len = len;
                s.pos = 0;
                s.phase_started = Instant::now();
                true
            }
            _ => false,
        };
        if !changed {
            return;
        }
        if let Some(b) = &self.bar {
            b.reset();
            match len {
                Some(l) => b.set_length(l),
                None => b.unset_length(),
            }
            b.set_style(bar_style(len.is_some()).with_key("unit", unit_key(unit)));
            b.set_message(phase.to_string());
        }
        if self.mode == Mode::Plain {
            self.plain_line();
        }
    }

    /// Ends the display (the bar is cleared, the ticker stopped).
    pub fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        if let Ok(mut s) = self.shared.0.lock() {
            s.finished = true;
        }
        self.shared.1.notify_all();
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

fn unit_key(
    unit: &str,
) -> impl Fn(&indicatif::ProgressState, &mut dyn std::fmt::Write) + Clone + Send + Sync + 'static {
    let unit = unit.to_string();
    move |_: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
        let _ = w.write_str(&unit);
    }
}

/// Prints the state every `every` until finished.
fn ticker(shared: &Shared, every: Duration) {
    let (lock, cv) = (&shared.0, &shared.1);
    let Ok(mut s) = lock.lock() else { return };
    let mut next = Instant::now() + every.min(Duration::from_secs(2));
    loop {
        if s.finished {
            return;
        }
        let now = Instant::now();
        if now >= next {
            let line = if s.printed { s.line() } else { s.start_line() };
            s.printed = true;
            drop(s);
            let _ = writeln!(std::io::stderr().lock(), "{line}");
            next = now + every;
            s = match lock.lock() {
                Ok(s) => s,
                Err(_) => return,
            };
            continue;
        }
        s = match cv.wait_timeout(s, next - now) {
            Ok((s, _)) => s,
            Err(_) => return,
        };
    }
}
