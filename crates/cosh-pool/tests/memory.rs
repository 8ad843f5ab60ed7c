//! Windows read and write any byte range exactly as a plain byte vector would, whatever the
//! alignment, on every pool (through the memory for the host pool, through the cache and a
//! flush for the non-coherent one).

use cosh_pool::Pool;
use cosh_pool::host::HostPool;
use cosh_pool::nc::{Eviction, NcPool};
use proptest::prelude::*;

const LEN: u64 = 1000;

fn ops() -> impl Strategy<Value = Vec<(u64, usize, u8)>> {
    prop::collection::vec((0..LEN, 0usize..200, any::<u8>()), 1..40)
}

fn check(pool: &dyn Pool, writes: &[(u64, usize, u8)], reads: &[(u64, usize, u8)]) {
    let buffer = pool.create(LEN).expect("create");
    let mut w = pool.window(&buffer).expect("window");
    let mut model = vec![0u8; LEN as usize];
    for (offset, len, seed) in writes {
        let len = (*len).min((LEN - offset) as usize);
        let data: Vec<u8> = (0..len).map(|i| seed.wrapping_add(i as u8)).collect();
        w.write(*offset, &data).expect("write");
        model[*offset as usize..*offset as usize + len].copy_from_slice(&data);
    }
    w.flush().expect("flush");
    // Read back through this window and through a fresh one (memory itself).
    let mut other = pool.window(&buffer).expect("window");
    for (offset, len, _) in reads {
        let len = (*len).min((LEN - offset) as usize);
        let want = &model[*offset as usize..*offset as usize + len];
        for win in [&mut w, &mut other] {
            let mut got = vec![0u8; len];
            win.read(*offset, &mut got).expect("read");
            assert_eq!(&got[..], want, "{len} bytes at {offset}");
        }
    }
}

proptest! {
    #[test]
    fn windows_behave_like_byte_vectors(writes in ops(), reads in ops()) {
        check(&HostPool::new(), &writes, &reads);
        check(&NcPool::new(), &writes, &reads);
        check(&NcPool::with_eviction(Eviction { seed: 7, one_in: 2 }), &writes, &reads);
    }
}
