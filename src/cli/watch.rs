//! `whorl watch`: prints hit notifications as they arrive and acknowledges
//! each once printed.

use super::client::Conn;
use anyhow::Result;
use clap::Args;
use whorl::client::ops;
use whorl::client::watch::{self, Next, WatchOptions};

#[derive(Args)]
pub struct WatchArgs {
    #[command(flatten)]
    conn: Conn,
    /// Gallery to follow (repeatable; default: every notifying gallery the token may see).
    #[arg(long)]
    gallery: Vec<String>,
    /// Durable subscription name: acknowledgements are kept under it, and a
    /// later watch with the same name resumes after the last one (default:
    /// the token's name).
    #[arg(long, default_value = "")]
    subscriber: String,
    /// Only subjects carrying this label (key=value, repeatable).
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Only subjects whose priority label is at least this.
    #[arg(long, default_value_t = 0)]
    min_priority: i64,
    /// The label holding the priority (default: the server's).
    #[arg(long, default_value = "")]
    priority_label: String,
    /// Print events without acknowledging them (they will be sent again).
    #[arg(long)]
    no_ack: bool,
    /// Stop after this many events.
    #[arg(long)]
    count: Option<u64>,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

pub fn run(a: WatchArgs) -> Result<()> {
    let labels = ops::parse_labels(&a.labels)?;
    let o = WatchOptions {
        subscriber: a.subscriber.clone(),
        galleries: a.gallery.clone(),
        labels,
        min_priority: a.min_priority,
        priority_label: a.priority_label.clone(),
        ack: !a.no_ack,
        max_events: a.count,
        retries: 8,
    };
    super::serve::runtime()?.block_on(async move {
        let mut c = a.conn.connect().await?;
        let mut closed = false;
        let n = watch::watch(&mut c, &o, |ev| {
            let line = if a.json { watch::event_json(ev).to_string() } else { watch::event_line(ev) };
            // Printed before the acknowledgement: a closed pipe stops here,
            // leaving the event unacknowledged for the next watch.
            if outln!("{line}").is_err() {
                closed = true;
                return Next::Abandon;
            }
            Next::Continue
        })
        .await?;
        if !closed && !a.json {
            eprintln!("{n} event{} handled", if n == 1 { "" } else { "s" });
        }
        Ok(())
    })
}
