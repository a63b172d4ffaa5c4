//! Following hit notifications: `whorl watch` subscribes to a server's (or a
//! router's) `Notifications`, hands each event to the caller and
//! acknowledges it once the caller has dealt with it. A dropped stream is
//! resumed from the last acknowledgement, so an event is seen at least once
//! and, as the server keeps acknowledgements durably, not again after its
//! acknowledgement.

use super::ClientError;
use crate::server::client::Clients;
use crate::server::pb;
use std::collections::HashMap;
use std::time::Duration;

/// What to follow.
#[derive(Debug, Clone, Default)]
pub struct WatchOptions {
    /// Durable subscription name (empty: the token's name).
    pub subscriber: String,
    /// Galleries to follow (empty: every notifying gallery the caller may see).
    pub galleries: Vec<String>,
    /// Only subjects carrying all these labels.
    pub labels: HashMap<String, String>,
    /// Only subjects whose priority label is at least this.
    pub min_priority: i64,
    /// The label holding the priority (empty: the server's default).
    pub priority_label: String,
    /// Acknowledge each event after the handler returned.
    pub ack: bool,
    /// Stop after this many events (none: run until the server goes away
    /// for good or the handler says stop).
    pub max_events: Option<u64>,
    /// Reconnect attempts after a stream breaks (0: none).
    pub retries: u32,
}

impl WatchOptions {
    fn request(&self) -> pb::SubscribeRequest {
        pb::SubscribeRequest {
            subscriber: self.subscriber.clone(),
            galleries: self.galleries.clone(),
            label_filter: self.labels.clone(),
            min_priority: self.min_priority,
            priority_label: self.priority_label.clone(),
        }
    }
}

/// What the handler wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Acknowledge (when asked to) and wait for more.
    Continue,
    /// Acknowledge (when asked to) and stop.
    Stop,
    /// Stop without acknowledging this event (it could not be dealt with:
    /// it will be sent again).
    Abandon,
}

/// Follows events until `max_events`, a handler's [`Next::Stop`], or a
/// failure that retrying did not mend; the number of events handled.
/// Events already handled in this call (the same id seen again after a
/// reconnect, before its acknowledgement landed) are not handed over twice.
pub async fn watch(
    c: &mut Clients,
    o: &WatchOptions,
    mut handle: impl FnMut(&pb::HitEvent) -> Next,
) -> Result<u64, ClientError> {
    let mut handled = 0u64;
    let mut last: HashMap<String, u64> = HashMap::new();
    let mut failures = 0u32;
    loop {
        let stream = c.notifications.subscribe(o.request()).await;
        let mut stream = match stream {
            Ok(s) => s.into_inner(),
            Err(e) if retryable(&e) && failures < o.retries => {
                failures += 1;
                tokio::time::sleep(backoff(failures)).await;
                continue;
            }
            Err(e) => return Err(ClientError::status("subscribing", &e)),
        };
        loop {
            match stream.message().await {
                Ok(Some(ev)) => {
                    failures = 0;
                    if last.get(&ev.gallery).is_some_and(|&s| ev.sequence <= s) {
                        continue;
                    }
                    last.insert(ev.gallery.clone(), ev.sequence);
                    let next = handle(&ev);
                    if next == Next::Abandon {
                        return Ok(handled);
                    }
                    if o.ack {
                        let req = pb::AckRequest {
                            subscriber: o.subscriber.clone(),
                            gallery: ev.gallery.clone(),
                            sequence: ev.sequence,
                        };
                        c.notifications
                            .ack(req)
                            .await
                            .map_err(|e| ClientError::status(format!("acknowledging {}", ev.id), &e))?;
                    }
                    handled += 1;
                    if next == Next::Stop || o.max_events.is_some_and(|m| handled >= m) {
                        return Ok(handled);
                    }
                }
                Ok(None) => break,
                Err(e) if retryable(&e) => break,
                Err(e) => return Err(ClientError::status("following notifications", &e)),
            }
        }
        if failures >= o.retries {
            return Ok(handled);
        }
        failures += 1;
        tokio::time::sleep(backoff(failures)).await;
    }
}

fn retryable(e: &tonic::Status) -> bool {
    matches!(e.code(), tonic::Code::Unavailable | tonic::Code::Internal | tonic::Code::Unknown | tonic::Code::Aborted)
}

fn backoff(n: u32) -> Duration {
    Duration::from_millis(200u64.saturating_mul(1 << n.min(5)))
}

/// One line for a person: time, gallery, sequence, subject, score, labels.
pub fn event_line(ev: &pb::HitEvent) -> String {
    let time = ev.time.as_ref().and_then(|t| utc_time(t.seconds)).unwrap_or_else(|| "-".to_string());
    let mut labels: Vec<String> = ev.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    labels.sort();
    format!(
        "{time}  {}  #{}  subject {}  score {:.2}  priority {}  client {}  transaction {}  labels [{}]",
        ev.gallery,
        ev.sequence,
        ev.subject_id,
        ev.fused_score,
        ev.priority,
        if ev.client.is_empty() { "-" } else { &ev.client },
        if ev.transaction_id.is_empty() { "-" } else { &ev.transaction_id },
        labels.join(", ")
    )
}

/// Seconds since the epoch as an RFC 3339 time (UTC).
fn utc_time(secs: i64) -> Option<String> {
    let t = std::time::UNIX_EPOCH.checked_add(Duration::from_secs(u64::try_from(secs).ok()?))?;
    Some(humantime::format_rfc3339_seconds(t).to_string())
}

/// An event as JSON (one line per event with `--json`).
pub fn event_json(ev: &pb::HitEvent) -> serde_json::Value {
    serde_json::json!({
        "id": ev.id,
        "gallery": ev.gallery,
        "sequence": ev.sequence,
        "time_unix": ev.time.as_ref().map(|t| t.seconds),
        "subject_id": ev.subject_id,
        "labels": ev.labels,
        "priority": ev.priority,
        "fused_score": ev.fused_score,
        "rank": ev.rank,
        "client": ev.client,
        "transaction_id": ev.transaction_id,
        "request_id": ev.request_id,
        "probe_sha256": ev.probe_sha256,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates_read_as_calendar_dates() {
        assert_eq!(super::utc_time(0).unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(super::utc_time(951_782_400 + 3_661).unwrap(), "2000-02-29T01:01:01Z");
        assert_eq!(super::utc_time(-1), None);
    }
}
