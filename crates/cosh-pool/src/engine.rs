//! The asynchronous copy engine: a worker with a window on both pools that copies buffers
//! between them while the submitter goes on, one job after another (pipelined: a submitter
//! may queue many).
//!
//! An optional model of a DMA engine ([`DmaModel`]: a fixed set-up latency and a bandwidth)
//! reproduces the paper's co-processor experiments: a job then completes no earlier than its
//! model says — set-up overlapping the previous job's transfer, as a real engine's does — even
//! when the memcpy underneath finishes sooner. Every job reports whether the model was on, so
//! that no figure measured with it can be mistaken for one measured without.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{Buffer, EngineView, Error, Pool, Result};

/// An emulated DMA engine's costs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmaModel {
    /// Fixed cost of starting a job (the paper measured about 172 us on its co-processor).
    pub setup: Duration,
    /// Bytes per second once a job runs.
    pub bytes_per_second: u64,
}

impl DmaModel {
    /// The time the model gives a job of `len` bytes once set up.
    pub fn transfer(&self, len: u64) -> Duration {
        if self.bytes_per_second == 0 {
            return Duration::ZERO;
        }
        let nanos = u128::from(len) * 1_000_000_000 / u128::from(self.bytes_per_second);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

/// What a finished job reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Copied {
    /// Bytes copied.
    pub bytes: u64,
    /// From submission to completion.
    pub latency: Duration,
    /// Whether the DMA model paced it (an emulated figure, not this machine's).
    pub emulated: bool,
}

struct Job {
    from: EngineView,
    to: EngineView,
    len: u64,
    submitted: Instant,
    done: Sender<Result<Copied>>,
}

/// A job in flight: wait for it, or drop it (the copy still completes).
#[derive(Debug)]
pub struct Pending {
    done: Receiver<Result<Copied>>,
}

impl Pending {
    /// Waits for the copy; its report, or why it failed.
    pub fn wait(self) -> Result<Copied> {
        self.done.recv().unwrap_or(Err(Error::EngineGone))
    }

    /// The report if the copy is done, without waiting.
    pub fn poll(&self) -> Option<Result<Copied>> {
        self.done.try_recv().ok()
    }
}

/// The copy engine (one worker thread; dropping the engine finishes the queued jobs first).
pub struct CopyEngine {
    jobs: Option<Sender<Job>>,
    worker: Option<JoinHandle<()>>,
    model: Option<DmaModel>,
}

impl CopyEngine {
    /// An engine that copies as fast as memory allows (`None`), or paced by a DMA model.
    pub fn new(model: Option<DmaModel>) -> CopyEngine {
        let (jobs, queue) = channel::<Job>();
        let worker = std::thread::Builder::new()
            .name("cosh-copy-engine".into())
            .spawn(move || work(queue, model))
            .ok();
        CopyEngine {
            jobs: worker.is_some().then_some(jobs),
            worker,
            model,
        }
    }

    /// The model pacing this engine, if any.
    pub fn model(&self) -> Option<DmaModel> {
        self.model
    }

    /// Queues a copy of all of `source` (in `from`) into `target` (in `to`, at least as
    /// long), through the memory of both, not any domain's cache: the sender must have
    /// flushed, and the receiver invalidates once the job is done.
    pub fn submit(
        &self,
        from: &dyn Pool,
        source: &Buffer,
        to: &dyn Pool,
        target: &Buffer,
    ) -> Result<Pending> {
        if target.len() < source.len() {
            return Err(Error::OutOfRange {
                offset: 0,
                len: source.len(),
                size: target.len(),
            });
        }
        let (done, wait) = channel();
        let job = Job {
            from: from.engine(source)?,
            to: to.engine(target)?,
            len: source.len(),
            submitted: Instant::now(),
            done,
        };
        self.jobs
            .as_ref()
            .ok_or(Error::EngineGone)?
            .send(job)
            .map_err(|_| Error::EngineGone)?;
        Ok(Pending { done: wait })
    }
}

impl Drop for CopyEngine {
    fn drop(&mut self) {
        // Closing the queue lets the worker finish what is queued and stop.
        self.jobs = None;
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

fn work(queue: Receiver<Job>, model: Option<DmaModel>) {
    // When the model's engine is next free.
    let mut free_at = Instant::now();
    while let Ok(job) = queue.recv() {
        let copied = job.to.copy_from(&job.from, job.len);
        let report = copied.map(|()| {
            if let Some(m) = model {
                // Set-up may start at submission, overlapping the previous job's transfer;
                // the transfer itself waits for the engine.
                let start = (job.submitted + m.setup).max(free_at);
                free_at = start + m.transfer(job.len);
                let now = Instant::now();
                if free_at > now {
                    std::thread::sleep(free_at - now);
                }
            }
            Copied {
                bytes: job.len,
                latency: job.submitted.elapsed(),
                emulated: model.is_some(),
            }
        });
        // A submitter that stopped waiting does not stop the engine.
        let _ = job.done.send(report);
    }
}
