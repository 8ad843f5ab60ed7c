//! The seal worker: `F_SEAL_WRITE` can block for a long time on pages pinned by a pipe, so it
//! never runs on the main loop. Jobs go in over a channel; results come back over another,
//! with an eventfd rung so that the main loop's poll wakes up.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;

use cosh_sys::eventfd::EventFd;
use cosh_sys::memfd::Memfd;

use crate::store::SlotId;

/// Slots to seal for one client's transfer.
pub(crate) struct Job {
    pub(crate) client: u64,
    pub(crate) slots: Vec<(SlotId, Arc<Memfd>)>,
}

/// What the kernel said.
pub(crate) struct Done {
    pub(crate) client: u64,
    pub(crate) sealed: Vec<SlotId>,
    pub(crate) refused: Vec<SlotId>,
}

/// The worker thread and its channels.
pub(crate) struct Sealer {
    jobs: Option<Sender<Job>>,
    done: Receiver<Done>,
    bell: Arc<EventFd>,
    thread: Option<JoinHandle<()>>,
}

impl Sealer {
    pub(crate) fn start() -> Result<Sealer, cosh_sys::Error> {
        let bell = Arc::new(EventFd::new()?);
        let (jobs, inbox) = channel::<Job>();
        let (outbox, done) = channel::<Done>();
        let ring = Arc::clone(&bell);
        let thread = std::thread::Builder::new()
            .name("cosh-sealer".into())
            .spawn(move || {
                for job in inbox {
                    let mut sealed = Vec::new();
                    let mut refused = Vec::new();
                    for (id, memfd) in job.slots {
                        match memfd.seal_write() {
                            Ok(()) => sealed.push(id),
                            Err(_) => refused.push(id),
                        }
                    }
                    let done = Done {
                        client: job.client,
                        sealed,
                        refused,
                    };
                    if outbox.send(done).is_err() || ring.ring().is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| cosh_sys::Error::BadDescriptor {
                reason: format!("cannot start the seal worker: {e}"),
            })?;
        Ok(Sealer {
            jobs: Some(jobs),
            done,
            bell,
            thread: Some(thread),
        })
    }

    pub(crate) fn submit(&self, job: Job) -> bool {
        self.jobs.as_ref().is_some_and(|j| j.send(job).is_ok())
    }

    /// The eventfd the main loop polls.
    pub(crate) fn bell(&self) -> &EventFd {
        &self.bell
    }

    /// Finished jobs.
    pub(crate) fn finished(&self) -> Vec<Done> {
        let _ = self.bell.take();
        self.done.try_iter().collect()
    }
}

impl Drop for Sealer {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
