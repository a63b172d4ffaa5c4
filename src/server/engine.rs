//! Where searches run: a fixed set of worker threads fed through one
//! queue, behind an admission limit.
//!
//! * **Admission.** At most `max_in_flight` searches are admitted (running
//!   or queued). A unary request that finds the server full is refused at
//!   once with RESOURCE_EXHAUSTED (load shedding: a bounded queue, never an
//!   unbounded one); a stream waits for room instead (back-pressure).
//! * **Isolation.** Each worker owns its own rayon pool, so a search's
//!   parallel steps (fingers, shards, candidates) never steal and run
//!   another request's work, which would add that request's whole service
//!   time to this one's latency.
//! * **Abandoned work is stopped.** When the caller goes away (deadline
//!   answered, client cancelled, connection closed) the job's [`Cancel`] is
//!   set: a queued job gives its slot back at once and is skipped when a
//!   worker reaches it; a running one stops at its next check (see
//!   [`crate::search`]) and frees its slot then.

use crate::cancel::{Cancel, Stop};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

type Job = Box<dyn FnOnce() + Send + 'static>;

/// The worker pool.
#[derive(Debug)]
pub struct Engine {
    tx: Option<crossbeam_channel::Sender<Job>>,
    admission: Arc<Semaphore>,
    max: usize,
    queued: Arc<AtomicUsize>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// A slot in the engine, held from admission to reply.
#[derive(Debug)]
pub struct Permit(#[allow(dead_code)] OwnedSemaphorePermit);

/// Why a job gave no result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotRun {
    /// The engine is shutting down.
    ShuttingDown,
    /// The job was stopped before it started (deadline passed while queued).
    Stopped(Stop),
}

/// The caller's side of a submitted job: when dropped (the caller went
/// away), cancels the job and, if no worker has taken it yet, frees its slot.
struct Abandon {
    cancel: Cancel,
    slot: Arc<Mutex<Option<Permit>>>,
}

impl Drop for Abandon {
    fn drop(&mut self) {
        self.cancel.cancel();
        let queued = self.slot.lock().ok().and_then(|mut s| s.take());
        drop(queued);
    }
}

/// What a job reports besides its result.
#[derive(Debug, Clone, Copy)]
pub struct Ran {
    /// Time spent queued before a worker took it.
    pub queued: std::time::Duration,
}

impl Engine {
    /// `workers` threads, each running searches on a rayon pool of
    /// `threads_per_search` threads; `max_in_flight` admitted at once.
    pub fn new(workers: usize, threads_per_search: usize, max_in_flight: usize) -> std::io::Result<Engine> {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let queued = Arc::new(AtomicUsize::new(0));
        let mut threads = Vec::new();
        for w in 0..workers.max(1) {
            let rx = rx.clone();
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads_per_search.max(1))
                .thread_name(move |i| format!("whorl-search-{w}.{i}"))
                .build()
                .map_err(std::io::Error::other)?;
            threads.push(std::thread::Builder::new().name(format!("whorl-worker-{w}")).spawn(move || {
                while let Ok(job) = rx.recv() {
                    pool.install(job);
                }
            })?);
        }
        Ok(Engine {
            tx: Some(tx),
            admission: Arc::new(Semaphore::new(max_in_flight)),
            max: max_in_flight,
            queued,
            threads,
        })
    }

    /// A slot now, or `None` when the server is full.
    pub fn try_admit(&self) -> Option<Permit> {
        Arc::clone(&self.admission).try_acquire_owned().ok().map(Permit)
    }

    /// A slot, waiting for one.
    pub async fn admit(&self) -> Option<Permit> {
        Arc::clone(&self.admission).acquire_owned().await.ok().map(Permit)
    }

    /// Searches admitted and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.max - self.admission.available_permits()
    }

    /// Worker threads (searches running at once).
    pub fn workers(&self) -> usize {
        self.threads.len()
    }

    /// The admission limit.
    pub fn max_in_flight(&self) -> usize {
        self.max
    }

    /// Jobs waiting for a worker.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Runs `f` on a worker. The permit is released when the job ends, or
    /// at once when the caller goes away while the job is still queued;
    /// `cancel` is set when the caller goes away (`f` should check it).
    pub async fn run<R: Send + 'static>(
        &self,
        permit: Permit,
        cancel: Cancel,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<(R, Ran), NotRun> {
        let (tx, rx) = oneshot::channel::<Result<(R, Ran), NotRun>>();
        let submitted = Instant::now();
        let queued = Arc::clone(&self.queued);
        let slot = Arc::new(Mutex::new(Some(permit)));
        let abandon = Abandon { cancel: cancel.clone(), slot: Arc::clone(&slot) };
        queued.fetch_add(1, Ordering::Relaxed);
        let job: Job = Box::new(move || {
            queued.fetch_sub(1, Ordering::Relaxed);
            // The worker takes the slot; if it is gone, the caller left and freed it.
            let Some(held) = slot.lock().ok().and_then(|mut s| s.take()) else { return };
            if tx.is_closed() {
                return; // nobody waits for it any more
            }
            if let Err(stop) = cancel.check() {
                drop(held);
                let _ = tx.send(Err(NotRun::Stopped(stop)));
                return;
            }
            let ran = Ran { queued: submitted.elapsed() };
            let r = f();
            // Free the slot before replying, so a caller that saw its reply
            // never sees its own search still counted in flight.
            drop(held);
            let _ = tx.send(Ok((r, ran)));
        });
        let Some(jobs) = self.tx.as_ref() else { return Err(NotRun::ShuttingDown) };
        jobs.send(job).map_err(|_| NotRun::ShuttingDown)?;
        let out = rx.await.unwrap_or(Err(NotRun::ShuttingDown));
        drop(abandon);
        out
    }

    /// Stops taking jobs, lets the workers finish what is queued, and joins them.
    pub fn shutdown(&mut self) {
        self.tx = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.tx = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn admission_is_bounded_and_jobs_run() {
        let mut e = Engine::new(2, 1, 3).unwrap();
        let p: Vec<Permit> = (0..3).map(|_| e.try_admit().unwrap()).collect();
        assert!(e.try_admit().is_none());
        assert_eq!(e.in_flight(), 3);
        let mut it = p.into_iter();
        let (r, _) = e.run(it.next().unwrap(), Cancel::default(), rayon::current_num_threads).await.unwrap();
        assert_eq!(r, 1, "each search runs on its worker's own pool");
        drop(it);
        assert_eq!(e.in_flight(), 0);
        let permit = e.admit().await.unwrap();
        assert_eq!(e.run(permit, Cancel::default(), || 7).await.unwrap().0, 7);
        e.shutdown();
    }
}
