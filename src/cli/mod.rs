//! Command-line front end: parses arguments with clap and hands each
//! subcommand to its module. `anyhow` is used here and nowhere in the library.
//!
//! Output rules: results go to stdout through [`out!`]/[`outln!`], which
//! return the write error instead of panicking, so a closed pipe (`whorl
//! info G | head -1`) ends the command quietly with status 0; progress and
//! logs go to stderr, with terminal codes only when stderr is a terminal.

/// `print!` that returns the write error (a closed pipe) instead of panicking.
macro_rules! out {
    ($($t:tt)*) => { $crate::cli::write_out(format_args!($($t)*), false) };
}

/// `println!` that returns the write error (a closed pipe) instead of panicking.
macro_rules! outln {
    () => { $crate::cli::write_out(format_args!(""), true) };
    ($($t:tt)*) => { $crate::cli::write_out(format_args!($($t)*), true) };
}

mod bench_rescore;
mod calibrate;
mod candidates;
mod client;
mod cluster;
mod demo;
mod embed;
mod eval;
mod gallery;
mod hnsw_bench;
mod progress;
mod serve;
mod serving_eval;
mod status;
mod synth;
mod template;
mod watch;

use clap::{Parser, Subcommand};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

/// whorl: fingerprint 1:N identification.
#[derive(Parser)]
#[command(name = "whorl", version, about, propagate_version = true)]
struct Cli {
    /// How much to log on stderr: error, warn, info or debug (or per
    /// part, e.g. `warn,whorl=debug`).
    #[arg(long, global = true, env = "WHORL_LOG", default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Inspect and convert template files.
    #[command(subcommand)]
    Template(template::TemplateCmd),
    /// Generate a synthetic gallery (ISO files or one pack file).
    Synth(synth::SynthArgs),
    /// Compare synthetic template statistics with real templates.
    SynthStats(synth::StatsArgs),
    /// Compare match-score distributions of synthetic and real templates.
    SynthCalibrate(synth::CalibrateArgs),
    /// Accuracy of the matcher on FVC-style databases (EER, FMR100, FMR1000, ZeroFMR).
    Eval(eval::EvalArgs),
    /// Build a gallery folder of shards (with their HNSW graphs) from templates.
    Build(gallery::BuildArgs),
    /// Describe a gallery: shards, sizes, bytes per template by section.
    Info(gallery::GalleryArgs),
    /// Check every file's checksums: shards (graphs included), hnsw_rs files, the write-ahead log.
    Verify(gallery::GalleryArgs),
    /// Time opening a gallery (shard mapping alone, with HNSW graphs, with CRC pass).
    OpenTime(gallery::GalleryArgs),
    /// Fold enrolments and deletions into shards and trim the log (refused
    /// while a server serves the gallery: use `whorl shards compact`).
    Compact(gallery::GalleryArgs),
    /// Rewrite older-format shards (or shards without graphs) into the current format, graphs included.
    Migrate(gallery::MigrateArgs),
    /// Enrol synthetic subjects, acknowledging each (crash tests, enrol benchmark).
    #[command(hide = true)]
    EnrollStress(gallery::StressArgs),
    /// Learn the embedding model from synthetic templates.
    EmbedTrain(embed::TrainArgs),
    /// Re-scoring throughput, CPU and GPU backends.
    BenchRescore(bench_rescore::BenchRescoreArgs),
    /// Candidate-stage accuracy: hit rate against penetration.
    EvalCandidates(candidates::CandidatesArgs),
    /// Fit the impostor model (FMR against score) the decision threshold uses.
    CalibrateImpostors(calibrate::CalibrateArgs),
    /// Serve a cluster's public API: fan searches out to its nodes, writes to primaries.
    Route(serve::ServeArgs),
    /// Operate a cluster: create it, look at it, move groups, add galleries.
    #[command(subcommand)]
    Cluster(cluster::ClusterCmd),
    /// Size a cluster for a gallery and a search rate, from measured per-node figures.
    Capacity(cluster::CapacityArgs),
    /// Run the main job on a built-in synthetic gallery.
    Demo(demo::DemoArgs),
    /// Serve a gallery over gRPC.
    Serve(serve::ServeArgs),
    /// A server at a glance: health, gallery, shards, backend, load, latency, errors.
    Status(status::StatusArgs),
    /// Search a server for the person whose fingers these templates are.
    Identify(client::IdentifyArgs),
    /// Compare templates with one enrolled subject on a server (1:1).
    VerifySubject(client::VerifyArgs),
    /// Enrol a subject on a server.
    Enroll(client::EnrollArgs),
    /// Delete a subject on a server.
    Delete(client::DeleteArgs),
    /// List, load and unload a server's shards; its statistics.
    Shards(client::ShardsArgs),
    /// Write synthetic probe files (and their mates) for `bench --probes`.
    Probes(client::ProbesArgs),
    /// Load a server: QPS, latency percentiles, errors, rank-1, FNIR.
    Bench(client::BenchArgs),
    /// Print hit notifications as they arrive and acknowledge them.
    Watch(watch::WatchArgs),
}

/// Runs the command line; errors are printed with their causes.
pub fn main() -> ExitCode {
    quiet_on_closed_stdout();
    let cli = Cli::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .init();
    let result = match cli.command {
        Command::Template(cmd) => template::run(cmd),
        Command::Synth(args) => synth::run(args),
        Command::SynthStats(args) => synth::stats(args),
        Command::SynthCalibrate(args) => synth::calibrate(args),
        Command::Eval(args) => eval::run(args),
        Command::EmbedTrain(args) => embed::train(args),
        Command::Build(args) => gallery::build(args),
        Command::Info(args) => gallery::info(args),
        Command::Verify(args) => gallery::verify(args),
        Command::Compact(args) => gallery::compact(args),
        Command::Migrate(args) => gallery::migrate(args),
        Command::OpenTime(args) => gallery::open_time(args),
        Command::EnrollStress(args) => gallery::enroll_stress(args),
        Command::EvalCandidates(args) => candidates::run(args),
        Command::BenchRescore(args) => bench_rescore::run(args),
        Command::CalibrateImpostors(args) => calibrate::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Cluster(cmd) => cluster::cluster(cmd),
        Command::Route(args) => serve::route(args),
        Command::Capacity(args) => cluster::capacity(args),
        Command::Serve(args) => serve::serve(args),
        Command::Status(args) => status::run(args),
        Command::Identify(args) => client::identify(args),
        Command::VerifySubject(args) => client::verify(args),
        Command::Enroll(args) => client::enroll(args),
        Command::Delete(args) => client::delete(args),
        Command::Shards(args) => client::shards(args),
        Command::Probes(args) => client::probes(args),
        Command::Bench(args) => client::bench(args),
        Command::Watch(args) => watch::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Whether the error is a closed stdout (e.g. `whorl ... | head`): not a failure.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().filter_map(|c| c.downcast_ref::<std::io::Error>()).any(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}

/// Writes to stdout; the error (a closed pipe) is returned, not a panic.
pub fn write_out(args: std::fmt::Arguments<'_>, newline: bool) -> std::io::Result<()> {
    let mut o = std::io::stdout().lock();
    o.write_fmt(args)?;
    if newline {
        o.write_all(b"\n")?;
    }
    Ok(())
}

/// A backstop for commands that still print with `println!`: its panic on
/// a closed stdout ("failed printing to stdout: Broken pipe") ends the
/// process quietly with status 0 instead of a panic message and status 101,
/// as a closed pipe is the reader's choice, not a failure.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

/// A progress bar in whorl's style, hidden when stderr is not a terminal
/// (commands that want plain progress lines there use [`progress::Progress`]).
pub fn progress(len: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    let style = indicatif::ProgressStyle::with_template(
        "{msg:>12} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} ({rate}, eta {eta})",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .with_key("rate", |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
        let _ = w.write_str(&whorl::table::rate(s.per_sec()));
    });
    bar.set_style(style);
    bar.set_message(what.to_string());
    bar
}

/// One line naming this machine (CPU model and core count).
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cpu}, {} cores", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
}

/// Today's date (UTC), YYYY-MM-DD.
pub fn today() -> String {
    let days =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() / 86400).unwrap_or(0)
            as i64;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}
