//! The scenario corpus against a real block manager, every domain a connection of its own.

mod support;

use support::{Connections, Daemon, assert_corpus_passes};

#[test]
fn the_corpus_passes_against_the_block_manager() {
    let daemon = Daemon::start("corpus");
    assert_corpus_passes(|| Connections::new(&daemon));
}
