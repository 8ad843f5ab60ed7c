//! The scenario corpus against a real block manager, every domain a connection of its own.

mod support;

use support::{Connections, Daemon, assert_corpus_passes};

#[test]
fn the_corpus_passes_against_the_block_manager() {
    let daemon = Daemon::start("corpus");
    assert_corpus_passes(|| Connections::new(&daemon));
}

/// Invariant 5: the same corpus, unchanged, against a pool whose memory is not coherent
/// (every domain caches what it maps; the library writes back and refreshes around
/// transfers).
#[test]
fn the_corpus_passes_against_a_non_coherent_pool() {
    let daemon = Daemon::start_with("corpus-nc", &["--kind", "nc"]);
    let probe = daemon.connect("probe");
    assert!(!probe.coherent(), "the block manager serves an nc pool");
    drop(probe);
    assert_corpus_passes(|| Connections::new(&daemon));
}

/// And with the clients' caches evicting lines at random (one request in three), as hardware
/// caches do: a correct program still cannot tell.
#[test]
fn the_corpus_passes_against_a_non_coherent_pool_with_random_eviction() {
    let daemon = Daemon::start_with("corpus-nc-evict", &["--kind", "nc", "--nc-eviction", "3"]);
    assert_corpus_passes(|| Connections::new(&daemon));
}
