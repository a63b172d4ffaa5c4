//! `whorl demo`: the README's main command.

use anyhow::Result;
use clap::Args;
use std::time::Instant;
use whorl::synth::{Synth, SynthParams};
use whorl::template::{self, Format};

#[derive(Args)]
pub struct DemoArgs {
    /// Number of synthetic fingers.
    #[arg(long, default_value_t = 10_000)]
    fingers: u64,
    /// Random seed.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

pub fn run(a: DemoArgs) -> Result<()> {
    let synth = Synth::new(SynthParams::default(), a.seed);
    let t0 = Instant::now();
    let records = synth.batch(0..a.fingers, 0..2);
    let gen_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let mut bytes = 0usize;
    let mut minutiae = 0usize;
    for r in &records {
        let iso = template::write(std::slice::from_ref(&r.template), Format::Iso2005)?;
        bytes += iso.len();
        let back = template::parse(&iso)?;
        minutiae += back.iter().map(|t| t.minutiae.len()).sum::<usize>();
    }
    let rt_s = t1.elapsed().as_secs_f64();
    println!("whorl demo: synthetic gallery of {} fingers x 2 impressions", a.fingers);
    println!("  synthesised {} templates in {gen_s:.2} s", records.len());
    println!("  wrote and parsed back {bytes} bytes of ISO 19794-2:2005 ({minutiae} minutiae) in {rt_s:.2} s");
    Ok(())
}
