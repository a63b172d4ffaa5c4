//! `whorl eval-candidates --serving N`: the candidate stage measured as the
//! server runs it (see `whorl::eval::serving`).

use super::candidates::CandidatesArgs;
use anyhow::Result;
use std::fmt::Write as _;
use whorl::data::Split;
use whorl::embed::Embedder;
use whorl::eval::candidates::RealSet;
use whorl::eval::serving::{self, Outcome, Probe};
use whorl::index::IndexParams;
use whorl::mcc::Matcher;
use whorl::search::SearchConfig;
use whorl::search::impostor::ImpostorModel;
use whorl::synth::Synth;
use whorl::template::FingerPosition;

/// Builds (or reuses) the serving gallery, runs every probe set at every
/// ef, prints the table and returns it as markdown for the report.
pub fn run(a: &CandidatesArgs, e: &Embedder, synth: &Synth, n: u64, real: &[(Split, RealSet)]) -> Result<String> {
    let matcher = Matcher::default();
    let real_gallery: Vec<(String, whorl::template::Template)> =
        real.iter().flat_map(|(_, s)| s.gallery.iter().cloned()).collect();
    let templates = serving::gallery_templates(synth, n, &real_gallery);
    let index = IndexParams { max_connections: a.serving_m, ..IndexParams::default() };
    let key = format!(
        "subjects {n}, seed {}, generator {}, real {}, index {index:?}",
        a.seed,
        serde_json::to_string(synth.params())?,
        real_gallery.len()
    );
    let bar = super::progress(templates.len() as u64, "gallery");
    let t0 = std::time::Instant::now();
    let g = serving::open_or_build(&a.serving_dir, &key, e, &matcher, templates, index, |d, what| {
        bar.set_position(d);
        bar.set_message(what.to_string());
    })?;
    bar.finish_and_clear();
    eprintln!("serving gallery ready in {:.0} s ({})", t0.elapsed().as_secs_f64(), a.serving_dir.display());
    let np = a.probes.min(n);
    let mut sets: Vec<(String, Vec<Probe>)> = vec![
        (
            "synthetic, impression 1, position known (one partition)".into(),
            serving::synthetic_probes(synth, np, 1, true),
        ),
        ("synthetic, impression 1, position unknown (all ten)".into(), serving::synthetic_probes(synth, np, 1, false)),
    ];
    let mut base = 0;
    for (split, set) in real {
        let probes: Vec<Probe> = set
            .probes
            .iter()
            .map(|(t, mate)| Probe {
                template: whorl::template::Template { finger_position: FingerPosition::UNKNOWN, ..t.clone() },
                mate: Some(real_gallery[base + mate].0.clone()),
            })
            .collect();
        base += set.gallery.len();
        sets.push((format!("FVC2002 {}, impressions 2-8, position unknown (all ten)", split.describe()), probes));
    }
    let non_mated = serving::non_mated_probes(synth, n, a.non_mated, 1, true);
    let total = g.subjects.len();
    let defaults = SearchConfig::default();
    let cfg0 = SearchConfig {
        candidates_per_finger: a.serving_k.unwrap_or(defaults.candidates_per_finger),
        verify_subjects: a.serving_verify.unwrap_or(defaults.verify_subjects),
        ..defaults
    };
    cfg0.check().map_err(|e| anyhow::anyhow!("--serving-k/--serving-verify: {e}"))?;
    let model = ImpostorModel::builtin(whorl::shard::mcc_params_crc(matcher.params()))?;
    let synthetic_curves = model.synthetic_curves();
    let mut md = String::new();
    writeln!(
        md,
        "## The serving path, measured as it serves\n\nA gallery folder built by `whorl::gallery::build` ({total} one-finger subjects: {n} synthetic, finger positions spread over the ten, plus impression 1 of each of the {} FVC2002 fingers at positions spread likewise; HNSW M {}, ef_construction {}, one graph per position; partitions of at most {} templates are scanned exactly), searched by `Searcher::identify` with the server's configuration: `candidates_per_finger` {} (the list length k), `ef` as below, CPU re-scoring, the built-in impostor model. *Exact* is the mate among the k best by exact inner product over the same partitions; *served* the mate among the candidates the serving path kept; *rank-1* the mate first after re-scoring and fusion. 95% Clopper-Pearson intervals.\n",
        real_gallery.len(),
        index.max_connections,
        index.ef_construction,
        cfg0.exact_below,
        cfg0.candidates_per_finger
    )?;
    writeln!(
        md,
        "| probes | n | templates searched (mean) | k (share) | ef | exact % | served % | served − exact (points) | rank-1 % |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|---|")?;
    print!("{md}");
    let mut decisions = String::new();
    let efs = if a.serving_ef.is_empty() { vec![cfg0.ef] } else { a.serving_ef.clone() };
    for &ef in &efs {
        let cfg = SearchConfig { ef, ..cfg0.clone() };
        for (name, probes) in &sets {
            let o: Outcome = g.measure(e, &cfg, &model, probes)?;
            let row = format!(
                "| {name} | {} | {:.0} | {} ({:.2}%) | {ef} | {} | {} | {:+.1} | {} |",
                o.probes,
                o.searched,
                cfg.candidates_per_finger,
                100.0 * cfg.candidates_per_finger as f64 / o.searched.max(1.0),
                o.exact.pct(1),
                o.served.pct(1),
                100.0 * (o.served.value - o.exact.value),
                o.rank1.pct(1)
            );
            println!("{row}");
            writeln!(md, "{row}")?;
            if ef == efs[0] {
                let raw = g.measure(e, &cfg, &synthetic_curves, probes)?;
                writeln!(
                    decisions,
                    "| {name} (mated) | {} | FNIR {} | FNIR {} |",
                    o.probes,
                    o.fnir.pct(2),
                    raw.fnir.pct(2)
                )?;
                let count = |e: &whorl::eval::intervals::Estimate| (e.value * o.probes as f64).round();
                writeln!(
                    decisions,
                    "| {name}, another subject over the threshold (mate set aside) | {} | FPIR {} ({}) | FPIR {} ({}) |",
                    o.probes,
                    o.wrong_hit.pct(2),
                    count(&o.wrong_hit),
                    raw.wrong_hit.pct(2),
                    count(&raw.wrong_hit)
                )?;
            }
        }
        if ef == efs[0] && !non_mated.is_empty() {
            let o = g.measure(e, &cfg, &model, &non_mated)?;
            let raw = g.measure(e, &cfg, &synthetic_curves, &non_mated)?;
            let count = |o: &Outcome| (o.fpir.value * o.probes as f64).round();
            writeln!(
                decisions,
                "| synthetic subjects never enrolled, position known (non-mated) | {} | FPIR {} ({} false positives) | FPIR {} ({}) |",
                o.probes,
                o.fpir.pct(2),
                count(&o),
                raw.fpir.pct(2),
                count(&raw)
            )?;
        }
    }
    let shipped = match whorl::search::plan::verifier(&model, cfg0.verify_subjects) {
        Some(v) => format!(
            "The built-in impostor models as shipped: the strongest {} subjects of each search verified by the second, geometric pass and decided on the verified score's model (its synthetic curves × {:.2}), the others ranked on the matcher's (× {:.2}), both corrections measured on the real impostors of the calibration part",
            cfg0.verify_subjects,
            v.correction_factor(),
            model.correction_factor()
        ),
        None => format!(
            "The built-in impostor model with the second pass off (`verify_subjects` 0): every subject decided on the matcher's model (its synthetic curves × {:.2}, measured on the real impostors of the calibration part)",
            model.correction_factor()
        ),
    };
    let head = format!(
        "\n### Decisions at the default target FPIR {} (ef {})\n\nFNIR: mated searches that are not a hit with the mate first; FPIR: non-mated searches that are a hit, and mated searches in which a subject other than the mate reaches the threshold (the search a probe would be with its mate set aside: the only FPIR the real probes can give here). 95% Clopper-Pearson intervals: {} non-mated searches bound the FPIR to about ±{:.1} points. {shipped}; and the synthetic curves alone, on the same searches.\n\n| probes | n | rate % [95% CI], as shipped | synthetic curves alone |\n|---|---|---|---|\n",
        cfg0.default_fpir,
        efs[0],
        a.non_mated,
        100.0 * 1.96 * (cfg0.default_fpir * (1.0 - cfg0.default_fpir) / a.non_mated.max(1) as f64).sqrt(),
    );
    print!("{head}{decisions}");
    md.push_str(&head);
    md.push_str(&decisions);
    Ok(md)
}
