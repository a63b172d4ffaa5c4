//! Parse and synthesis throughput (templates per second).
//!
//! `cargo bench --bench templates`. Real samples are read from
//! ../shared/data when present; otherwise synthetic ISO records are parsed.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use whorl::synth::{Synth, SynthParams};
use whorl::template::{self, Format};

fn corpus() -> Vec<(String, Vec<Vec<u8>>)> {
    let mut out = Vec::new();
    let synth = Synth::new(SynthParams::default(), 1);
    let iso: Vec<Vec<u8>> = synth
        .batch(0..320, 0..1)
        .iter()
        .map(|r| template::write(std::slice::from_ref(&r.template), Format::Iso2005).expect("writable"))
        .collect();
    if let Some(root) = whorl::data::data_dir() {
        let mut fvc = Vec::new();
        for db in 1..=4 {
            if let Ok(rd) = std::fs::read_dir(root.join(format!("fvc2002/DB{db}_B"))) {
                fvc.extend(rd.filter_map(|e| e.ok()).filter_map(|e| std::fs::read(e.path()).ok()));
            }
        }
        out.push(("iso2005 fvc2002".to_string(), fvc));
        for (name, file) in [("ansi378-2004 sample", "fmr.ansi2004"), ("an2k type-9 efs sample", "type9-efs.an2k")] {
            if let Ok(b) = std::fs::read(root.join("formats").join(file)) {
                out.push((name.to_string(), vec![b]));
            }
        }
    }
    out.push(("iso2005 synthetic".to_string(), iso.clone()));
    let json: Vec<Vec<u8>> = iso
        .iter()
        .map(|b| template::write(&template::parse(b).expect("parses"), Format::Json).expect("json"))
        .collect();
    out.push(("json synthetic".to_string(), json));
    out
}

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    for (name, records) in corpus() {
        let views: u64 = records.iter().map(|r| template::parse(r).map(|t| t.len()).unwrap_or(0) as u64).sum();
        g.throughput(Throughput::Elements(views));
        g.bench_function(&name, |b| {
            b.iter(|| {
                for r in &records {
                    black_box(template::parse(black_box(r)).ok());
                }
            })
        });
    }
    g.finish();
}

fn synthesis(c: &mut Criterion) {
    let mut g = c.benchmark_group("synthesis");
    let synth = Synth::new(SynthParams::default(), 3);
    g.throughput(Throughput::Elements(1000));
    g.bench_function("1000 templates, 1 thread", |b| {
        b.iter(|| {
            for id in 0..500u64 {
                let f = synth.finger(id);
                black_box(synth.impression(&f, 0));
                black_box(synth.impression(&f, 1));
            }
        })
    });
    g.throughput(Throughput::Elements(20_000));
    g.bench_function("20000 templates, all threads (rayon)", |b| b.iter(|| black_box(synth.batch(0..10_000, 0..2))));
    g.finish();
}

criterion_group!(benches, parse, synthesis);
criterion_main!(benches);
