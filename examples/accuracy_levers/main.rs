//! Accuracy levers measured outside the product (issue 14).
//!
//! The candidate stage (`benches/reports/embedding.md`, "Levers measured
//! 2026-12-03"): the modes `vlad`, `hist` and `lsh` learn from synthetic
//! fingers of the training seed (999331) only and report exact search on
//! the evaluation seed (11) that `whorl eval-candidates --synthetic 10000`
//! uses: impression 1 of 1,000 fingers against impression 0 of 10,000; the
//! share of probes whose mate is in the nearest 0.1% / 1% / 5%.
//!
//! The matcher (`benches/reports/accuracy/held-out.md`, "A second,
//! geometric pass"): the mode `second` scores the FVC protocol's pairs with
//! the matcher and a greedy consolidation after it, and prints EER and
//! FMR1000 (averages over the databases) of each and of their fusions.
//! Its greedy form with R_LOC 1000 and pool 3 ships as
//! `whorl::mcc::consensus`; the mode keeps the variants it was chosen
//! among, and `tail` measures the shipped pass at search FMRs.
//!
//! ```text
//! cargo run --release --example accuracy_levers -- vlad K D_BINS AB_BINS D_MAX FINGERS DOUT ALPHA [base]
//!     VLAD (Jegou et al. 2010) of per-minutia pair histograms, K-word codebook,
//!     learned whitening to DOUT; `base` also prints the shipped embedder
//! cargo run --release --example accuracy_levers -- hist FINGERS IMPRESSIONS DOUT CROPS
//!     the shipped pair histogram (8x12x12 bins, 160 px) with learned whitening
//!     from FINGERS x IMPRESSIONS; CROPS > 0 adds that many half-plane crops of
//!     every gallery template as extra vectors (score: the best of them)
//! cargo run --release --example accuracy_levers -- lsh HASHES BITS GALLERY NORM
//!     MCC indexing by locality-sensitive hashing of cylinder bits (Cappelli,
//!     Ferrara, Maltoni, TPAMI 33(5) 2011), naive form: HASHES functions of
//!     BITS random cells, votes per gallery finger (NORM: sqrt, lin, idf),
//!     alone and fused with the shipped embedding
//! cargo run --release --example accuracy_levers -- dump FINGERS DIR
//!     writes the data the learned representations (`learned/`, Python with
//!     JAX: see `learned/README.md`) train and are measured on
//! cargo run --release --example accuracy_levers -- second R_LOC DATA [greedy|kcons] [POOL]
//!     DATA: calibration (FVC2002 DB1_B + DB2_B), held-out (DB3_B + DB4_B),
//!     synthetic or hard (100 synthetic databases of FVC2002's shape, seeds
//!     1-100, hard: twice the calibrated distortion); R_LOC: the radius (px)
//!     within which accepted pairs must agree; a third argument `kcons`
//!     runs the parallel-friendly variant instead of the greedy pass, a
//!     fourth (default 3) sets the greedy pass's pool: POOL·min(n_A, n_B)
//!     pairs of highest γ
//! cargo run --release --example accuracy_levers -- tail FINGERS DATA
//!     DATA: synthetic or hard; the matcher's and the verified score's
//!     (`whorl::mcc::consensus`) FNMR at FMR 1e-3..1e-6, FINGERS synthetic
//!     fingers of seed 77 (impression 1 against impression 0 of all)
//! ```

mod candidates;
mod matcher;

/// Argument `i` parsed, or `default` when absent; exits with a message when it does not parse.
pub fn arg<T: std::str::FromStr>(args: &[String], i: usize, default: T) -> T {
    match args.get(i) {
        None => default,
        Some(s) => s.parse().unwrap_or_else(|_| {
            eprintln!("argument {i} ({s}) does not parse; see the file's header for the usage");
            std::process::exit(2)
        }),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("vlad") => candidates::vlad_main(&args),
        Some("hist") => candidates::hist_main(&args),
        Some("lsh") => candidates::lsh_main(&args),
        Some("dump") => candidates::dump_main(&args),
        Some("second") => matcher::second_main(&args),
        Some("tail") => matcher::tail_main(&args),
        _ => {
            eprintln!("usage: accuracy_levers vlad|hist|lsh|dump|second|tail ... (see main.rs's header)");
            std::process::exit(2);
        }
    }
}
