//! The iceoryx2 baseline (feature `iceoryx2`): zero-copy publish/subscribe between the two
//! benchmark processes, both busy-polling. The sender fills a loaned sample of the size
//! measured (untimed, as a producer would), writes its clock into the first eight bytes and
//! sends; the receiver reads the clock as soon as `receive` returns it (one way) and answers
//! with an eight-byte sample, which the sender waits for (round trip).

use iceoryx2::prelude::*;

use crate::{Receiver, Row, now_ns, summarize};

type Error = Box<dyn core::error::Error>;
type Bytes =
    iceoryx2::service::port_factory::publish_subscribe::PortFactory<ipc::Service, [u8], ()>;

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

/// The receiver's side: `n` one-way samples, each answered.
pub(crate) fn echo(tag: &str, n: usize) -> Result<Vec<u64>, String> {
    let run = || -> Result<Vec<u64>, Error> {
        let (_node, ping, pong) = services(tag)?;
        let subscriber = ping.subscriber_builder().create()?;
        let publisher = pong.publisher_builder().initial_max_slice_len(8).create()?;
        let mut samples = Vec::with_capacity(n);
        // Ready: the sender waits for this first answer before it starts.
        publisher
            .loan_slice_uninit(8)?
            .write_from_fn(|_| 0)
            .send()?;
        while samples.len() < n {
            let Some(sample) = subscriber.receive()? else {
                std::hint::spin_loop();
                continue;
            };
            let t1 = now_ns();
            let mut head = [0u8; 8];
            head.copy_from_slice(&sample.payload()[..8]);
            let t0 = u64::from_le_bytes(head);
            drop(sample);
            samples.push(t1.saturating_sub(t0));
            publisher
                .loan_slice_uninit(8)?
                .write_from_fn(|_| 1)
                .send()?;
        }
        Ok(samples)
    };
    run().map_err(|e| format!("iceoryx2: {e}"))
}

/// The sender's side at `size` bytes: a one-way row and a round-trip row.
pub(crate) fn measure(rx: &mut Receiver, size: u64, n: usize) -> Result<Vec<Row>, String> {
    let size = usize::try_from(size).map_err(|_| "too large")?.max(8);
    let tag = format!("{}-{size}", std::process::id());
    let run = |rx: &mut Receiver| -> Result<Vec<u64>, Error> {
        let (_node, ping, pong) = services(&tag)?;
        let publisher = ping
            .publisher_builder()
            .initial_max_slice_len(size)
            .create()?;
        let subscriber = pong.subscriber_builder().create()?;
        rx.tell(&format!("iceoryx2 {tag} {n}"))?;
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
            loop {
                if subscriber.receive()?.is_some() {
                    break;
                }
                std::hint::spin_loop();
            }
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
    Ok(vec![
        summarize("iceoryx2 one-way", size as u64, one_way.clone(), one_way),
        summarize("iceoryx2 round trip", size as u64, rtt.clone(), rtt),
    ])
}
