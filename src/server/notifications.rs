//! Hit notifications on the wire: raising the events of an Identify's hits
//! (durably, before the reply), and the `Notifications` service (Subscribe,
//! Ack) for the `notify` role. Shared by the server (events in its folder)
//! and the cluster router (events in etcd).

use super::audit::Event;
use super::auth::{Auth, Caller};
use super::config::Role;
use super::metrics::Metrics;
use super::pb;
use crate::notify::{EventStore, Filter, HitEvent, NewEvent, priority_of, valid_subscriber};
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Code, Request, Response, Status};

/// Raises events for hits, and serves subscribers.
pub struct Notifier {
    /// Where events are kept.
    pub store: Arc<dyn EventStore>,
    /// The subject label holding an integer priority.
    pub priority_label: String,
    /// The impostor model named in events.
    pub model: String,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier").field("priority_label", &self.priority_label).finish_non_exhaustive()
    }
}

/// Who searched, for the events an Identify raises.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// The caller, as the audit trail names it.
    pub client: String,
    /// The caller's transaction id.
    pub transaction_id: String,
    /// The caller's request id.
    pub request_id: String,
    /// SHA-256 of the probe's bytes.
    pub probe_sha256: String,
}

impl Notifier {
    /// The events the hits of `sections` raise: every hit candidate of a
    /// gallery that notifies (per `notifies`).
    pub fn events(
        &self,
        sections: &[pb::GalleryResult],
        notifies: &(dyn Fn(&str) -> bool + Sync),
        o: &Origin,
    ) -> Vec<NewEvent> {
        let mut out = Vec::new();
        for s in sections.iter().filter(|s| s.error.is_none() && notifies(&s.gallery)) {
            let op = s.operating_point.clone().unwrap_or_default();
            for c in s.candidates.iter().filter(|c| c.hit) {
                let mut labels: Vec<(String, String)> = c.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                labels.sort();
                out.push(NewEvent {
                    gallery: s.gallery.clone(),
                    subject: c.subject_id.clone(),
                    priority: priority_of(&labels, &self.priority_label),
                    labels,
                    fused: c.fused_score,
                    threshold: op.threshold,
                    target_fpir: op.target_fpir,
                    gallery_subjects: op.gallery_subjects,
                    subject_fmr: op.subject_fmr,
                    model: self.model.clone(),
                    rank: c.rank,
                    client: o.client.clone(),
                    transaction_id: o.transaction_id.clone(),
                    request_id: o.request_id.clone(),
                    probe_sha256: o.probe_sha256.clone(),
                });
            }
        }
        out
    }

    /// Raises the events of `sections`' hits and names them in their
    /// sections; returns once they are durable. A failure here fails the
    /// Identify (UNAVAILABLE: retry with the same transaction id).
    pub async fn raise(
        &self,
        sections: &mut [pb::GalleryResult],
        notifies: &(dyn Fn(&str) -> bool + Sync),
        o: &Origin,
        metrics: &Metrics,
    ) -> Result<(), Status> {
        let events = self.events(sections, notifies, o);
        if events.is_empty() {
            return Ok(());
        }
        let raised = self.store.append(events).await.map_err(|e| {
            Status::unavailable(format!(
                "a hit was found but its notification could not be recorded ({e}); retry with the same transaction_id"
            ))
        })?;
        for e in raised {
            metrics.notification_raised(&e.hit.gallery);
            if let Some(s) = sections.iter_mut().find(|s| s.gallery == e.hit.gallery) {
                s.notifications.push(e.id());
            }
        }
        Ok(())
    }

    /// Publishes the backlog as metrics (called periodically), and drops
    /// events past the retention.
    pub async fn housekeep(&self, metrics: &Metrics) {
        if let Err(e) = self.store.expire().await {
            tracing::warn!("{e}");
        }
        for (g, b) in self.store.backlog().await {
            metrics.set_notification_backlog(&g, &b);
        }
    }
}

/// An event on the wire.
pub fn event_pb(e: &HitEvent) -> pb::HitEvent {
    let h = &e.hit;
    pb::HitEvent {
        id: e.id(),
        gallery: h.gallery.clone(),
        sequence: e.sequence,
        time: Some(prost_types::Timestamp {
            seconds: (e.time_ms / 1000) as i64,
            nanos: ((e.time_ms % 1000) * 1_000_000) as i32,
        }),
        subject_id: h.subject.clone(),
        labels: h.labels.iter().cloned().collect(),
        priority: h.priority,
        fused_score: h.fused,
        operating_point: Some(pb::OperatingPoint {
            target_fpir: h.target_fpir,
            gallery_subjects: h.gallery_subjects,
            subject_fmr: h.subject_fmr,
            threshold: h.threshold,
            model: h.model.clone(),
        }),
        rank: h.rank,
        client: h.client.clone(),
        transaction_id: h.transaction_id.clone(),
        request_id: h.request_id.clone(),
        probe_sha256: h.probe_sha256.clone(),
    }
}

/// The galleries that notify, by name (the catalog's or the cluster's).
pub type NotifyingGalleries = Arc<dyn Fn() -> Vec<String> + Send + Sync>;
/// Where the service's audit lines go.
pub type AuditSink = Arc<dyn Fn(Event) + Send + Sync>;

/// The `Notifications` service.
#[derive(Clone)]
pub struct NotificationService {
    notifier: Arc<Notifier>,
    auth: Arc<Auth>,
    galleries: NotifyingGalleries,
    audit: AuditSink,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for NotificationService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotificationService").finish_non_exhaustive()
    }
}

impl NotificationService {
    /// The service.
    pub fn new(
        notifier: Arc<Notifier>,
        auth: Arc<Auth>,
        galleries: NotifyingGalleries,
        audit: AuditSink,
        metrics: Arc<Metrics>,
    ) -> NotificationService {
        NotificationService { notifier, auth, galleries, audit, metrics }
    }

    fn who<T>(&self, req: &Request<T>, method: &str) -> Result<Caller, Status> {
        self.auth.authorize(req, Role::Notify).map_err(|d| {
            let e = Event::now(d.who, method, d.status.code());
            (self.audit)(e);
            self.metrics.request(method, d.status.code(), Duration::ZERO);
            d.status
        })
    }

    fn subscriber(caller: &Caller, asked: &str) -> Result<String, Status> {
        let s = if asked.is_empty() { caller.name.clone() } else { asked.to_string() };
        valid_subscriber(&s).map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(s)
    }

    fn galleries(&self, caller: &Caller, asked: &[String]) -> Result<Vec<String>, Status> {
        let notifying = (self.galleries)();
        if asked.is_empty() {
            let v: Vec<String> = notifying.into_iter().filter(|g| caller.may(g)).collect();
            if v.is_empty() {
                return Err(Status::failed_precondition("no gallery that notifies is open to this caller"));
            }
            return Ok(v);
        }
        let mut out = Vec::new();
        for g in asked {
            if !notifying.contains(g) {
                return Err(Status::not_found(format!("gallery '{g}' raises no notifications")));
            }
            caller.check_gallery(g)?;
            if !out.contains(g) {
                out.push(g.clone());
            }
        }
        Ok(out)
    }
}

type EventStream = Pin<Box<dyn futures::Stream<Item = Result<pb::HitEvent, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl pb::notifications_server::Notifications for NotificationService {
    type SubscribeStream = EventStream;

    async fn subscribe(&self, req: Request<pb::SubscribeRequest>) -> Result<Response<Self::SubscribeStream>, Status> {
        let caller = self.who(&req, "Subscribe")?;
        let r = req.into_inner();
        let sub = Self::subscriber(&caller, &r.subscriber)?;
        let galleries = self.galleries(&caller, &r.galleries)?;
        if r.label_filter.len() > 32 {
            return Err(Status::invalid_argument("at most 32 label filters"));
        }
        let label = if r.priority_label.is_empty() { self.notifier.priority_label.clone() } else { r.priority_label };
        let filter = Filter { labels: r.label_filter.into_iter().collect(), min_priority: r.min_priority };
        let mut cursors: BTreeMap<String, u64> = BTreeMap::new();
        for g in &galleries {
            let a = self.notifier.store.acked(&sub, g).await.map_err(|e| Status::unavailable(e.to_string()))?;
            cursors.insert(g.clone(), a);
        }
        let mut e = Event::now(caller.describe(), "Subscribe", Code::Ok);
        e.subject = Some(format!("subscriber={sub} galleries={}", galleries.join(",")));
        (self.audit)(e);
        self.metrics.request("Subscribe", Code::Ok, Duration::ZERO);
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<pb::HitEvent, Status>>(64);
        let store = Arc::clone(&self.notifier.store);
        tokio::spawn(async move {
            loop {
                let mut sent = false;
                for (g, cur) in cursors.iter_mut() {
                    let batch = match store.read(g, *cur, 256).await {
                        Ok(b) => b,
                        Err(e) => {
                            let _ = tx.send(Err(Status::unavailable(e.to_string()))).await;
                            return;
                        }
                    };
                    for ev in batch {
                        *cur = ev.sequence;
                        // Priority read from the subscriber's label name.
                        let mut ev = ev;
                        ev.hit.priority = priority_of(&ev.hit.labels, &label);
                        if !filter.accepts(&ev) {
                            continue;
                        }
                        sent = true;
                        if tx.send(Ok(event_pb(&ev))).await.is_err() {
                            return; // the subscriber left
                        }
                    }
                }
                if tx.is_closed() {
                    return;
                }
                if !sent {
                    let now: Vec<(String, u64)> = cursors.iter().map(|(g, c)| (g.clone(), *c)).collect();
                    store.wait(&now, Duration::from_secs(1)).await;
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn ack(&self, req: Request<pb::AckRequest>) -> Result<Response<pb::AckResponse>, Status> {
        let caller = self.who(&req, "Ack")?;
        let r = req.into_inner();
        let sub = Self::subscriber(&caller, &r.subscriber)?;
        caller.check_gallery(&r.gallery)?;
        let res = self.notifier.store.ack(&sub, &r.gallery, r.sequence).await.map_err(|e| match e {
            crate::notify::NotifyError::Invalid(m) => Status::invalid_argument(m),
            e => Status::unavailable(e.to_string()),
        });
        let code = res.as_ref().map_or_else(|s| s.code(), |_| Code::Ok);
        let mut e = Event::now(caller.describe(), "Ack", code);
        e.subject = Some(format!("subscriber={sub} gallery={} sequence={}", r.gallery, r.sequence));
        (self.audit)(e);
        self.metrics.request("Ack", code, Duration::ZERO);
        res.map(|acknowledged| Response::new(pb::AckResponse { acknowledged }))
    }
}
