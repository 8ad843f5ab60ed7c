//! The copy engine of a block manager that receives transfers from other pools: one worker
//! thread with a window on both pools (the source's slots, mapped read-only once per link, and
//! the destination buffer's mapping, lent to the job), so that the main loop accepts the next
//! transfer while the worker copies this one — transfers pipeline. Jobs complete in the order
//! they were submitted. An optional DMA model (`cosh_pool::engine::DmaModel`: set-up latency
//! and bandwidth) paces jobs as the paper's co-processor engine did; the block manager's
//! status says when it is on, so that no figure measured with it passes for this machine's.
//! Each job reports how long the copy itself took (the engine's busy time, in status).

use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;
use std::time::Instant;

use cosh_pool::engine::DmaModel;
use cosh_sys::eventfd::EventFd;
use cosh_sys::mapping::{Mapping, ReadOnly, ReadWrite};

/// Bytes of a source slot.
pub(crate) struct Piece {
    pub(crate) from: Arc<Mapping<ReadOnly>>,
    pub(crate) offset: usize,
    pub(crate) len: usize,
}

/// One transfer to copy into `to` (none for zero bytes), pieces in order.
pub(crate) struct Job {
    pub(crate) key: (u64, u64),
    pub(crate) to: Option<Mapping<ReadWrite>>,
    pub(crate) pieces: Vec<Piece>,
    pub(crate) submitted: Instant,
}

/// A finished job: the mapping lent to it comes back.
pub(crate) struct Done {
    pub(crate) key: (u64, u64),
    pub(crate) to: Option<Mapping<ReadWrite>>,
    pub(crate) result: Result<(), String>,
    /// How long the copy itself took (not the model's pacing).
    pub(crate) busy: std::time::Duration,
}

pub(crate) struct Copier {
    jobs: Option<Sender<Job>>,
    done: Receiver<Done>,
    bell: Arc<EventFd>,
    thread: Option<JoinHandle<()>>,
    model: Option<DmaModel>,
}

impl Copier {
    pub(crate) fn start(model: Option<DmaModel>) -> Result<Copier, cosh_sys::Error> {
        let bell = Arc::new(EventFd::new()?);
        let (jobs, inbox) = channel::<Job>();
        let (outbox, done) = channel::<Done>();
        let ring = Arc::clone(&bell);
        let thread = std::thread::Builder::new()
            .name("cosh-copier".into())
            .spawn(move || work(&inbox, &outbox, &ring, model))
            .map_err(|e| cosh_sys::Error::BadDescriptor {
                reason: format!("cannot start the copy engine: {e}"),
            })?;
        Ok(Copier {
            jobs: Some(jobs),
            done,
            bell,
            thread: Some(thread),
            model,
        })
    }

    /// The DMA model pacing jobs, if any.
    pub(crate) fn model(&self) -> Option<DmaModel> {
        self.model
    }

    pub(crate) fn submit(&self, job: Job) -> bool {
        self.jobs.as_ref().is_some_and(|j| j.send(job).is_ok())
    }

    /// The eventfd the main loop polls.
    pub(crate) fn bell(&self) -> &EventFd {
        &self.bell
    }

    /// Finished jobs, in order.
    pub(crate) fn finished(&self) -> Vec<Done> {
        let _ = self.bell.take();
        self.done.try_iter().collect()
    }
}

impl Drop for Copier {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Copies `pieces` one after the other into `to` from its start.
pub(crate) fn copy_pieces(
    mut to: Option<&mut Mapping<ReadWrite>>,
    pieces: &[Piece],
) -> Result<(), String> {
    let mut at = 0usize;
    for p in pieces {
        let src = p
            .from
            .as_slice()
            .get(p.offset..p.offset.saturating_add(p.len));
        let dst = to
            .as_mut()
            .and_then(|m| m.as_mut_slice().get_mut(at..at.saturating_add(p.len)));
        match (src, dst) {
            (Some(s), Some(d)) => d.copy_from_slice(s),
            _ => return Err("a piece out of bounds".to_string()),
        }
        at += p.len;
    }
    Ok(())
}

fn work(inbox: &Receiver<Job>, outbox: &Sender<Done>, bell: &EventFd, model: Option<DmaModel>) {
    // When the modelled engine is next free.
    let mut free_at = Instant::now();
    for mut job in inbox {
        let began = Instant::now();
        let result = copy_pieces(job.to.as_mut(), &job.pieces);
        let bytes: u64 = job.pieces.iter().map(|p| p.len as u64).sum();
        let busy = began.elapsed();
        if let Some(m) = model {
            // Set-up may start at submission, overlapping the previous job's transfer; the
            // transfer itself waits for the engine.
            let start = (job.submitted + m.setup).max(free_at);
            free_at = start + m.transfer(bytes);
            let now = Instant::now();
            if free_at > now {
                std::thread::sleep(free_at - now);
            }
        }
        let done = Done {
            key: job.key,
            to: job.to.take(),
            result,
            busy,
        };
        // Drop the source mappings here, not in the main loop.
        drop(job);
        if outbox.send(done).is_err() || bell.ring().is_err() {
            break;
        }
    }
}
