//! A client near the kernel's limit on memory mappings (`vm.max_map_count`, 65,530 by
//! default) gets a clear error naming the limit, not a bare `ENOMEM`, and maps again once
//! mappings are freed. In a test binary of its own: it fills the whole process's mappings.

mod support;

use cosh::ErrorKind;
use support::Daemon;

#[test]
fn a_client_near_the_limit_on_mappings_gets_a_clear_error_and_recovers() {
    let Some(max) = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|m| m.trim().parse::<usize>().ok())
        .filter(|m| *m <= 1 << 20)
    else {
        eprintln!("skipped: vm.max_map_count unknown or too large to reach");
        return;
    };
    let daemon = Daemon::start("map-limit");
    let mut d = daemon.connect("mapper");
    // Take the process to 40 mappings short of the limit, with one small memfd mapped over
    // and over (one descriptor, one mapping each time).
    let hog = cosh_sys::memfd::Memfd::create("hog", 4096).expect("memfd");
    let now = || {
        std::fs::read_to_string("/proc/self/maps")
            .map(|m| m.lines().count())
            .unwrap_or(0)
    };
    let mut hogs = Vec::new();
    while now() + 40 < max {
        for _ in 0..(max - 40 - now()).max(1) {
            hogs.push(
                hog.map_read(cosh_sys::mapping::Prefault::OnFirstTouch)
                    .expect("map"),
            );
        }
    }
    let mut aggs = Vec::new();
    let err = loop {
        let agg = d.alloc(64 * 1024).expect("the block manager has room");
        aggs.push(agg);
        if let Err(e) = d.write(agg, 0, b"mapped") {
            break e;
        }
        assert!(aggs.len() < 200, "never ran out of mappings");
    };
    assert!(
        err.to_string().contains("vm.max_map_count"),
        "not a clear error: {err}"
    );
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    drop(hogs);
    let agg = *aggs.last().expect("one");
    d.write(agg, 0, b"mapped")
        .expect("maps again once mappings are free");
    assert_eq!(d.read(agg, 0, 6).expect("read"), b"mapped");
}
