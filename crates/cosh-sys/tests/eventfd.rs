//! Eventfd doorbells: rings add up, waiting takes them all, timeouts return 0, and the
//! descriptor works in another process's hands (here: passed over a socket).

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use cosh_sys::Error;
use cosh_sys::eventfd::EventFd;
use cosh_sys::socket::SeqPacket;

#[test]
fn rings_add_up_and_waiting_takes_them_all() {
    let bell = EventFd::new().expect("eventfd");
    assert_eq!(bell.take().expect("take"), 0);
    bell.ring().expect("ring");
    bell.ring().expect("ring");
    assert_eq!(bell.wait(None).expect("wait"), 2);
    assert_eq!(bell.take().expect("take"), 0);
}

#[test]
fn waiting_times_out_with_zero() {
    let bell = EventFd::new().expect("eventfd");
    let start = Instant::now();
    assert_eq!(bell.wait(Some(Duration::from_millis(30))).expect("wait"), 0);
    assert!(start.elapsed() >= Duration::from_millis(30));
}

#[test]
fn a_ring_from_another_thread_wakes_a_waiter() {
    let bell = std::sync::Arc::new(EventFd::new().expect("eventfd"));
    let ringer = {
        let bell = bell.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            bell.ring().expect("ring");
        })
    };
    assert_eq!(bell.wait(Some(Duration::from_secs(10))).expect("wait"), 1);
    ringer.join().expect("join");
}

#[test]
fn a_passed_doorbell_rings_the_original_and_impostors_are_refused() {
    let bell = EventFd::new().expect("eventfd");
    let (a, b) = SeqPacket::pair().expect("pair");
    a.send(b"bell", &[bell.as_fd()]).expect("send");
    let mut buf = [0u8; 8];
    let msg = b.recv(&mut buf).expect("recv").expect("message");
    let theirs = EventFd::from_fd(msg.fds.into_iter().next().expect("fd")).expect("an eventfd");
    theirs.ring().expect("ring");
    assert_eq!(bell.take().expect("take"), 1);
    let (c, _d) = SeqPacket::pair().expect("pair");
    let not_a_bell = rustix::io::dup(c.as_fd()).expect("dup");
    assert!(matches!(
        EventFd::from_fd(not_a_bell),
        Err(Error::BadDescriptor { .. })
    ));
}
