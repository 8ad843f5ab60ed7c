//! The iceoryx2 baseline (feature `iceoryx2`): zero-copy publish/subscribe between the two
//! benchmark processes. The sender fills a loaned sample of the size measured (untimed, as a
//! producer would), writes its clock into the first eight bytes and sends; the receiver reads
//! the clock as soon as `receive` returns it (one way) and answers with an eight-byte sample,
//! which the sender waits for (round trip). Twice: both sides busy-polling, and both sides
//! blocking, woken by iceoryx2's events (a notifier's `notify` after each `send`, a
//! listener's `blocking_wait` before each `receive`), as iceoryx2's own examples of
//! event-driven publish/subscribe do.
//!
//! *Single*: one sample at a time, taken exactly as Cosh's single transfers are and in turn
//! with them (the receiver says it is about to wait, the sender pauses 200 µs, stamps its
//! clock into a sample it loaned and filled untimed and sends; the receiver reads a byte of
//! every page as Cosh's does): to a receiver asleep on its events (the sender notifies), the
//! like-for-like baseline for a single transfer to a receiver that sleeps; and to one that
//! busy-polls `receive`, for a single transfer to a receiver that busy-polls. The ping-pongs
//! above measure another thing: one sample after another, each side's code and data hot in
//! its caches.

use iceoryx2::prelude::*;

use crate::{Receiver, now_ns};

type Error = Box<dyn core::error::Error>;
type Bytes =
    iceoryx2::service::port_factory::publish_subscribe::PortFactory<ipc::Service, [u8], ()>;

type Events = iceoryx2::service::port_factory::event::PortFactory<ipc::Service>;

fn services(tag: &str) -> Result<(Node<ipc::Service>, Bytes, Bytes), Error> {
    set_log_level(LogLevel::Error);
    let node = NodeBuilder::new().create::<ipc::Service>()?;
    let ping = node
        .service_builder(&format!("cosh-bench/{tag}/ping").as_str().try_into()?)
        .publish_subscribe::<[u8]>()
        .open_or_create()?;
    let pong = node
        .service_builder(&format!("cosh-bench/{tag}/pong").as_str().try_into()?)
        .publish_subscribe::<[u8]>()
        .open_or_create()?;
    Ok((node, ping, pong))
}

/// The two event services that wake a blocked receiver (`ping`) and a blocked sender
/// (`pong`).
fn events(node: &Node<ipc::Service>, tag: &str) -> Result<(Events, Events), Error> {
    let ping = node
        .service_builder(&format!("cosh-bench/{tag}/ping-event").as_str().try_into()?)
        .event()
        .open_or_create()?;
    let pong = node
        .service_builder(&format!("cosh-bench/{tag}/pong-event").as_str().try_into()?)
        .event()
        .open_or_create()?;
    Ok((ping, pong))
}

/// Waits for the next sample: spinning on `receive`, or blocked on `listener` between tries.
fn next(
    subscriber: &iceoryx2::port::subscriber::Subscriber<ipc::Service, [u8], ()>,
    listener: Option<&iceoryx2::port::listener::Listener<ipc::Service>>,
) -> Result<iceoryx2::sample::Sample<ipc::Service, [u8], ()>, Error> {
    loop {
        if let Some(sample) = subscriber.receive()? {
            return Ok(sample);
        }
        match listener {
            Some(l) => {
                l.blocking_wait(|_| {})?;
            }
            None => std::hint::spin_loop(),
        }
    }
}

/// The receiver's side: `n` one-way samples, each answered; busy-polling, or blocking when
/// `blocks`.
pub(crate) fn echo(tag: &str, n: usize, blocks: bool) -> Result<Vec<u64>, String> {
    let run = || -> Result<Vec<u64>, Error> {
        let (node, ping, pong) = services(tag)?;
        let subscriber = ping.subscriber_builder().create()?;
        let publisher = pong.publisher_builder().initial_max_slice_len(8).create()?;
        let wake = if blocks {
            let (ping, pong) = events(&node, tag)?;
            Some((
                ping.listener_builder().create()?,
                pong.notifier_builder().create()?,
            ))
        } else {
            None
        };
        let answer = |value: u8| -> Result<(), Error> {
            publisher
                .loan_slice_uninit(8)?
                .write_from_fn(|_| value)
                .send()?;
            if let Some((_, notifier)) = &wake {
                notifier.notify()?;
            }
            Ok(())
        };
        let mut samples = Vec::with_capacity(n);
        // Ready: the sender waits for this first answer before it starts.
        answer(0)?;
        while samples.len() < n {
            let sample = next(&subscriber, wake.as_ref().map(|w| &w.0))?;
            let t1 = now_ns();
            let mut head = [0u8; 8];
            head.copy_from_slice(&sample.payload()[..8]);
            let t0 = u64::from_le_bytes(head);
            drop(sample);
            samples.push(t1.saturating_sub(t0));
            answer(1)?;
        }
        Ok(samples)
    };
    run().map_err(|e| format!("iceoryx2: {e}"))
}

/// The sender's side at `size` bytes, `n` round trips each (`round`: which of the calls at
/// this size, for services of its own): the one-way and round-trip samples with both sides
/// busy-polling, and the same two with both sides blocking, by row name.
pub(crate) fn samples(
    rx: &mut Receiver,
    size: u64,
    n: usize,
    round: usize,
) -> Result<Vec<(&'static str, Vec<u64>)>, String> {
    let size = usize::try_from(size).map_err(|_| "too large")?.max(8);
    let mut rows = Vec::new();
    for blocks in [false, true] {
        let tag = format!("{}-{size}-{}-{round}", std::process::id(), u8::from(blocks));
        let run = |rx: &mut Receiver| -> Result<Vec<u64>, Error> {
            let (node, ping, pong) = services(&tag)?;
            let publisher = ping
                .publisher_builder()
                .initial_max_slice_len(size)
                .create()?;
            let subscriber = pong.subscriber_builder().create()?;
            let wake = if blocks {
                let (ping, pong) = events(&node, &tag)?;
                Some((
                    pong.listener_builder().create()?,
                    ping.notifier_builder().create()?,
                ))
            } else {
                None
            };
            rx.tell(&format!(
                "iceoryx2 {tag} {n} {}",
                if blocks { "blocks" } else { "polls" }
            ))?;
            // The receiver is ready once its first answer arrives.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while subscriber.receive()?.is_none() {
                if std::time::Instant::now() > deadline {
                    return Err("the receiver never connected".into());
                }
                std::thread::yield_now();
            }
            let mut rtt = Vec::with_capacity(n);
            for i in 0..n {
                let sample = publisher.loan_slice_uninit(size)?;
                let mut sample = sample.write_from_fn(|k| (k + i) as u8);
                let t0 = now_ns();
                sample.payload_mut()[..8].copy_from_slice(&t0.to_le_bytes());
                sample.send()?;
                if let Some((_, notifier)) = &wake {
                    notifier.notify()?;
                }
                next(&subscriber, wake.as_ref().map(|w| &w.0))?;
                rtt.push(now_ns() - t0);
            }
            Ok(rtt)
        };
        let rtt = run(rx).map_err(|e| format!("iceoryx2: {e}"))?;
        let line = rx.line()?;
        let one_way: Vec<u64> = line
            .split_whitespace()
            .map(|w| w.parse().map_err(|_| format!("the receiver said {line:?}")))
            .collect::<Result<_, _>>()?;
        if blocks {
            rows.push(("iceoryx2 one-way, blocks", one_way));
            rows.push(("iceoryx2 round trip, blocks", rtt));
        } else {
            rows.push(("iceoryx2 one-way", one_way));
            rows.push(("iceoryx2 round trip", rtt));
        }
    }
    Ok(rows)
}

/// The sender's half of iceoryx2 single transfers at one size (see the module's *Single*).
pub(crate) struct Single {
    publisher: iceoryx2::port::publisher::Publisher<ipc::Service, [u8], ()>,
    notifier: iceoryx2::port::notifier::Notifier<ipc::Service>,
    size: usize,
    // Dropped last, after its ports.
    _node: Node<ipc::Service>,
}

impl Single {
    /// Opens the services for `size`-byte samples, and the receiver's half.
    pub(crate) fn open(rx: &mut Receiver, size: u64) -> Result<Single, String> {
        let size = usize::try_from(size).map_err(|_| "too large")?.max(8);
        let tag = format!("{}-{size}-single", std::process::id());
        let open = || -> Result<Single, Error> {
            let (node, ping, _) = services(&tag)?;
            let (ping_event, _) = events(&node, &tag)?;
            Ok(Single {
                publisher: ping
                    .publisher_builder()
                    .initial_max_slice_len(size)
                    .create()?,
                notifier: ping_event.notifier_builder().create()?,
                _node: node,
                size,
            })
        };
        let single = open().map_err(|e| format!("iceoryx2: {e}"))?;
        let answer = rx.ask(&format!("iceoryx2-single {tag}"))?;
        if answer != "ok" {
            return Err(format!("the receiver said {answer:?}"));
        }
        Ok(single)
    }

    /// One sample filled with `fill` (untimed), then the clock stamped into its first eight
    /// bytes, sent, and the receiver woken (when it `sleeps`; one that busy-polls needs no
    /// notification).
    pub(crate) fn send(&self, fill: u8, sleeps: bool) -> Result<(), String> {
        let run = || -> Result<(), Error> {
            let mut sample = self
                .publisher
                .loan_slice_uninit(self.size)?
                .write_from_fn(|_| fill);
            let t0 = now_ns();
            sample.payload_mut()[..8].copy_from_slice(&t0.to_le_bytes());
            sample.send()?;
            if sleeps {
                self.notifier.notify()?;
            }
            Ok(())
        };
        run().map_err(|e| format!("iceoryx2: {e}"))
    }
}

/// The receiver's half of iceoryx2 single transfers.
pub(crate) struct SingleRx {
    subscriber: iceoryx2::port::subscriber::Subscriber<ipc::Service, [u8], ()>,
    listener: iceoryx2::port::listener::Listener<ipc::Service>,
    // Dropped last, after its ports.
    _node: Node<ipc::Service>,
}

impl SingleRx {
    /// Opens the services the sender made under `tag`.
    pub(crate) fn open(tag: &str) -> Result<SingleRx, String> {
        let open = || -> Result<SingleRx, Error> {
            let (node, ping, _) = services(tag)?;
            let (ping_event, _) = events(&node, tag)?;
            Ok(SingleRx {
                subscriber: ping.subscriber_builder().create()?,
                listener: ping_event.listener_builder().create()?,
                _node: node,
            })
        };
        open().map_err(|e| format!("iceoryx2: {e}"))
    }

    /// Waits (asleep, or busy-polling when `polls`; at most `timeout`) for one sample; returns
    /// the nanoseconds from the sender's stamp until it was delivered and until a byte of
    /// every page was read, and its last byte.
    pub(crate) fn take(
        &self,
        timeout: std::time::Duration,
        polls: bool,
    ) -> Result<(u64, u64, u8), String> {
        let run = || -> Result<(u64, u64, u8), Error> {
            let deadline = std::time::Instant::now() + timeout;
            let mut looks = 0u32;
            let sample = loop {
                if let Some(sample) = self.subscriber.receive()? {
                    break sample;
                }
                looks = looks.wrapping_add(1);
                if polls && !looks.is_multiple_of(1024) {
                    // The clock is read now and then only, not between two looks.
                    std::hint::spin_loop();
                    continue;
                }
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return Err("no sample came".into());
                }
                if !polls {
                    self.listener.timed_wait(|_| {}, left)?;
                }
            };
            let delivered = now_ns();
            let bytes = sample.payload();
            let pages = bytes
                .iter()
                .step_by(4096)
                .fold(0u64, |sum, b| sum.wrapping_add(u64::from(*b)));
            std::hint::black_box(pages);
            let readable = now_ns();
            let mut head = [0u8; 8];
            head.copy_from_slice(bytes.get(..8).ok_or("a short sample")?);
            let t0 = u64::from_le_bytes(head);
            let last = bytes.last().copied().unwrap_or(0);
            Ok((
                delivered.saturating_sub(t0),
                readable.saturating_sub(t0),
                last,
            ))
        };
        run().map_err(|e| format!("iceoryx2: {e}"))
    }
}
