//! Real processes: the corpus with every domain a child process, and dead clients.

mod support;

use support::peers::{Peer, Peers};
use support::{Daemon, assert_corpus_passes};

#[test]
fn the_corpus_passes_with_every_domain_a_child_process() {
    let daemon = Daemon::start("processes");
    assert_corpus_passes(|| Peers::new(&daemon));
}

/// The same with every domain's memory cached by its own process, on a non-coherent pool.
#[test]
fn the_corpus_passes_with_every_domain_a_child_process_on_a_non_coherent_pool() {
    let daemon = Daemon::start_with("processes-nc", &["--kind", "nc"]);
    assert_corpus_passes(|| Peers::new(&daemon));
}

#[test]
fn a_transfer_to_a_dead_process_fails_at_the_sender_and_its_memory_is_reclaimed() {
    let daemon = Daemon::start("dead");
    let mut a = Peer::spawn(&daemon, "a");
    let mut b = Peer::spawn(&daemon, "b");
    let baseline = a.ask("status").expect("status");
    let x = b.ask("fill 100000 7").expect("fill");
    let y = b.ask("fill 3000000 9").expect("fill");
    let _ = (x, y);
    let b_id = b.id.to_bits();
    b.kill();
    let payload = a.ask("fill 4096 1").expect("fill");
    // The block manager notices the death on its own; wait for its accounting.
    let mut status = String::new();
    for _ in 0..2000 {
        status = a.ask("status").expect("status");
        if status.starts_with("domains=1 ") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert!(status.starts_with("domains=1 "), "{status}");
    let err = a
        .ask(&format!("transfer {payload} {b_id} move 0"))
        .expect_err("the receiver is dead");
    assert_eq!(err.kind, Some(cosh_core::ErrorKind::UnknownDomain), "{err}");
    assert!(
        err.message
            .contains(&cosh_core::DomainId::from_bits(b_id).to_string()),
        "{err}"
    );
    // The sender keeps its aggregate; only its own buffer is in use.
    assert_eq!(
        a.ask(&format!("rights {payload}")).expect("rights"),
        "read-write"
    );
    a.ask(&format!("decref {payload}")).expect("decref");
    let accounting = |s: &str| s.split_once(' ').map(|(_, rest)| rest.to_string());
    assert_eq!(
        accounting(&a.ask("status").expect("status")),
        accounting(&baseline)
    );
    assert_eq!(accounting(&baseline).as_deref(), Some("buffers=0 bytes=0"));
}
