//! The matcher lever: a second, geometric pass after LSS-R.

use crate::arg;
use rayon::prelude::*;
use std::time::Instant;
use whorl::data::Split;
use whorl::synth::{Synth, SynthParams};

fn fail(msg: &str) -> ! {
    eprintln!("second: {msg}");
    std::process::exit(1)
}

/// How two scores are combined.
type Fusion = dyn Fn(f32, f32) -> f32;

/// Mode 4: a second, local-geometry pass after the cylinder matcher, for
/// distorted impressions: pairs of cylinders, by γ, are accepted greedily
/// when they agree (LSS-R's ρ) with the accepted pairs near them, so only
/// local geometry has to hold. EER and FMR1000 (averages over databases,
/// FVC protocol) of the matcher alone, the second pass alone and fusions.
pub fn second_main(args: &[String]) {
    use whorl::eval::{Database, load_database, metrics, protocol_pairs};
    use whorl::mcc::{Matcher, Prepared, Scratch, lssr::rho};
    let r_loc: f32 = arg(args, 2, 100.0);
    let what: String = arg(args, 3, "calibration".to_string());
    let variant: String = arg(args, 4, "greedy".to_string());
    let pool: usize = arg(args, 5, 3);
    let m = Matcher::default();
    let dbs: Vec<Database> = match what.as_str() {
        "calibration" | "held-out" => {
            let split = if what == "calibration" { Split::Calibration } else { Split::HeldOut };
            let dirs = match whorl::data::fvc2002_split(split) {
                Ok(Some(d)) => d,
                Ok(None) => fail("no FVC2002 data folder (see ../shared/data or WHORL_TEST_DATA)"),
                Err(e) => fail(&e.to_string()),
            };
            dirs.iter().map(|d| load_database(d).unwrap_or_else(|e| fail(&e.to_string()))).collect()
        }
        "synthetic" | "hard" => {
            let mut sp = SynthParams::default();
            if what == "hard" {
                sp.distortion_sd = 6.9;
            }
            (0..100)
                .map(|k| Database::from_synthetic(&format!("s{k}"), Synth::new(sp.clone(), 1 + k).batch(0..10, 0..8)))
                .collect()
        }
        _ => {
            eprintln!("second: calibration, held-out, synthetic or hard");
            std::process::exit(2);
        }
    };
    let r8 = (r_loc * 8.0) as u32;
    let second = |a: &Prepared, b: &Prepared, s: &mut Scratch| -> (f32, f32) {
        let (av, bv) = (a.view(), b.view());
        let mcc = m.score(av, bv, s);
        if av.is_empty() || bv.is_empty() {
            return (mcc, 0.0);
        }
        let nb = bv.len();
        let mut keys: Vec<u64> = m.gamma_keys(av, bv, s).to_vec();
        keys.sort_unstable_by(|x, y| y.cmp(x));
        if variant == "kcons" {
            // Parallel-friendly: the top n_R = min(n_A, n_B) pairs LSS-R relaxes; K = the n_P it keeps;
            // a pair counts when no better pair shares a minutia with it and it is K or agrees with half of K.
            let l = m.luts();
            keys.truncate(av.len().min(nb));
            let pairs: Vec<(usize, usize)> =
                keys.iter().map(|&k| (!(k as u32) as usize / nb, !(k as u32) as usize % nb)).collect();
            let n = pairs.len();
            let lam0: Vec<f64> = keys.iter().map(|&k| (k >> 32) as f64).collect();
            let mut lam = lam0.clone();
            if n >= 2 {
                for _ in 0..l.n_rel {
                    let next: Vec<f64> = (0..n)
                        .map(|t| {
                            let sup: f64 = (0..n)
                                .filter(|&k| k != t)
                                .map(|k| rho(l, av, bv, pairs[t], pairs[k]) as f64 / 32768.0 * lam[k])
                                .sum();
                            (lam[t] + sup / (n - 1) as f64) / 2.0
                        })
                        .collect();
                    lam = next;
                }
            }
            let n_p = (l.np[av.len().min(nb).min(255)] as usize).min(n);
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by(|&x, &y| (lam[y] / lam0[y]).total_cmp(&(lam[x] / lam0[x])).then(x.cmp(&y)));
            let kept: Vec<usize> = order[..n_p].to_vec();
            let acc = (0..n)
                .filter(|&t| !(0..t).any(|k| pairs[k].0 == pairs[t].0 || pairs[k].1 == pairs[t].1))
                .filter(|&t| {
                    kept.contains(&t)
                        || 2 * kept.iter().filter(|&&k| rho(l, av, bv, pairs[t], pairs[k]) > 1 << 14).count()
                            >= kept.len()
                })
                .count();
            return (mcc, (acc * acc) as f32 / (av.len() * nb) as f32);
        }
        keys.truncate(pool * av.len().min(nb));
        let pairs: Vec<(usize, usize)> =
            keys.iter().map(|&k| (!(k as u32) as usize / nb, !(k as u32) as usize % nb)).collect();
        let mut best = 0usize;
        for seed in 0..pairs.len().min(3) {
            let mut acc: Vec<(usize, usize)> = vec![pairs[seed]];
            let (mut ua, mut ub) = (vec![false; av.len()], vec![false; nb]);
            ua[pairs[seed].0] = true;
            ub[pairs[seed].1] = true;
            for _pass in 0..2 {
                for &(i, j) in &pairs {
                    if ua[i] || ub[j] {
                        continue;
                    }
                    let (mut local, mut comp) = (0, 0);
                    for &(k, l) in &acc {
                        if av.geometry(i, k).0 < r8 {
                            local += 1;
                            if rho(m.luts(), av, bv, (i, j), (k, l)) > 1 << 14 {
                                comp += 1;
                            }
                        }
                    }
                    if comp >= 1 && 2 * comp >= local {
                        acc.push((i, j));
                        ua[i] = true;
                        ub[j] = true;
                    }
                }
            }
            best = best.max(acc.len());
        }
        let n2 = (best * best) as f32 / (av.len() * nb) as f32;
        (mcc, n2)
    };
    let fusions: [(&str, &Fusion); 5] = [
        ("mcc", &|a, _| a),
        ("second", &|_, b| b),
        ("mcc*sqrt(second)", &|a, b| a * b.sqrt()),
        ("0.5mcc+0.5sqrt(second)", &|a, b| 0.5 * a + 0.5 * b.sqrt()),
        ("0.75mcc+0.25sqrt(second)", &|a, b| 0.75 * a + 0.25 * b.sqrt()),
    ];
    let mut sums = vec![(0f64, 0f64); fusions.len()];
    let (mut t_mcc, mut t_both) = (0f64, 0f64);
    for db in &dbs {
        let prep: Vec<Prepared> = db.entries.par_iter().map(|e| m.prepare(&e.template)).collect();
        let (g, i) = protocol_pairs(db);
        let sc = |p: &[(usize, usize)]| -> Vec<(f32, f32)> {
            p.par_iter().map_init(Scratch::new, |s, &(x, y)| second(&prep[x], &prep[y], s)).collect()
        };
        let t = Instant::now();
        let plain: f32 =
            i.par_iter().map_init(Scratch::new, |s, &(x, y)| m.score(prep[x].view(), prep[y].view(), s)).sum();
        t_mcc += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let (gs, is) = (sc(&g), sc(&i));
        t_both += t.elapsed().as_secs_f64() * i.len() as f64 / (i.len() + g.len()) as f64;
        std::hint::black_box(plain);
        for (k, (_, f)) in fusions.iter().enumerate() {
            let gv: Vec<f32> = gs.iter().map(|&(a, b)| f(a, b)).collect();
            let iv: Vec<f32> = is.iter().map(|&(a, b)| f(a, b)).collect();
            let r = metrics::rates(&gv, &iv);
            sums[k].0 += r.eer;
            sums[k].1 += r.fmr1000;
        }
    }
    let n = dbs.len() as f64;
    println!("{what}: time per comparison, matcher and second pass / matcher alone: {:.2}", t_both / t_mcc);
    for (k, (name, _)) in fusions.iter().enumerate() {
        println!(
            "{what} {variant} pool {pool} r_loc {r_loc}: {name}: EER {:.2} FMR1000 {:.2}",
            100.0 * sums[k].0 / n,
            100.0 * sums[k].1 / n
        );
    }
}

/// Mode `tail`: the matcher's and the verified score's false non-match
/// rates at the false match rates a 1:N search works at (1e-4..1e-6):
/// FINGERS synthetic fingers of seed 77, impression 1 against impression 0
/// of the same finger (genuine) and impression 0 of every other finger
/// (impostors, unordered pairs).
pub fn tail_main(args: &[String]) {
    use whorl::mcc::{Matcher, Prepared, Scratch, threshold::threshold_for_fmr};
    let fingers: u64 = arg(args, 2, 2000);
    let what: String = arg(args, 3, "synthetic".to_string());
    let mut sp = SynthParams::default();
    match what.as_str() {
        "synthetic" => {}
        "hard" => sp.distortion_sd = 6.9,
        _ => fail("DATA is synthetic or hard"),
    }
    let m = Matcher::default();
    let recs = Synth::new(sp, 77).batch(0..fingers, 0..2);
    let prep: Vec<Prepared> = recs.par_iter().map(|r| m.prepare(&r.template)).collect();
    let first: Vec<usize> = (0..recs.len()).filter(|&k| recs[k].impression == 0).collect();
    let second: Vec<usize> = (0..recs.len()).filter(|&k| recs[k].impression == 1).collect();
    let t = Instant::now();
    let genuine: Vec<(f32, f32)> = second
        .par_iter()
        .map_init(Scratch::new, |s, &p| {
            let g = first.iter().find(|&&g| recs[g].finger == recs[p].finger).expect("the mate's impression 0");
            let v = m.verify_parts(prep[p].view(), prep[*g].view(), s);
            (v.parts.score(), v.score())
        })
        .collect();
    let first_ref = &first;
    let impostor: Vec<(f32, f32)> = (0..first.len())
        .into_par_iter()
        .flat_map_iter(|x| (x + 1..first_ref.len()).map(move |y| (first_ref[x], first_ref[y])))
        .map_init(Scratch::new, |s, (x, y)| {
            let v = m.verify_parts(prep[x].view(), prep[y].view(), s);
            (v.parts.score(), v.score())
        })
        .collect();
    println!(
        "{what}: {} genuine, {} impostor comparisons, {:.0} s",
        genuine.len(),
        impostor.len(),
        t.elapsed().as_secs_f64()
    );
    println!("| score | FMR | impostors above | threshold | FNMR % |");
    println!("|---|---|---|---|---|");
    for (name, pick) in [("matcher", 0usize), ("verified", 1)] {
        let get = |p: &(f32, f32)| if pick == 0 { p.0 } else { p.1 };
        let imp: Vec<f32> = impostor.iter().map(get).collect();
        for fmr in [1e-3, 1e-4, 1e-5, 1e-6] {
            let op = threshold_for_fmr(&imp, fmr).unwrap_or_else(|e| fail(&e.to_string()));
            let above = imp.iter().filter(|&&s| s >= op.threshold).count();
            let fnmr = genuine.iter().filter(|g| get(g) < op.threshold).count() as f64 / genuine.len() as f64;
            println!("| {name} | {fmr:.0e} | {above} | {:.4} | {:.2} |", op.threshold, 100.0 * fnmr);
        }
    }
}
