//! The kill storm: clients in two linked pools (one coherent, one not) transfer to each
//! other in every mode, within a pool and across, and one side of each pair is killed with
//! SIGKILL at a random moment. After every round each block manager's accounting is back to
//! its baseline — no domain, buffer or byte left, and as many descriptors and shared-memory
//! mappings as before the first round — and every survivor received only intact data (each aggregate
//! carries a stamp of its index, checked in full).
//!
//! CI runs 3 rounds of 4 pairs (12 kills); `COSH_TEST_SCALE=N` runs N times as many, and
//! `COSH_HEAVY_TESTS=1` 84 times (the soak, 1,008 kills:
//! `COSH_HEAVY_TESTS=1 cargo test --release -p cosh-blockmgr --test kills`).

mod support;

use std::time::{Duration, Instant};

use support::peers::Peer;
use support::{Daemon, Linked};

/// A small deterministic generator (xorshift), so that a failure can be replayed by seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn field<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    answer
        .split_whitespace()
        .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
}

/// The block manager's open descriptors and mappings of shared memory, from /proc.
fn resources(d: &Daemon) -> (usize, usize) {
    let pid = d.child.id();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|e| e.count())
        .unwrap_or(0);
    // Mappings of shared memory (buffers, rings): the allocator's own mappings of private
    // memory come and go with the heap.
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map(|m| m.lines().filter(|l| l.contains("/memfd:")).count())
        .unwrap_or(0);
    (fds, maps)
}

/// What the block manager's descriptors point at, and its mappings of shared memory, for a
/// failure message.
fn inventory(d: &Daemon) -> String {
    let pid = d.child.id();
    let mut fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|e| {
            e.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|p| p.display().to_string())
                .collect()
        })
        .unwrap_or_default();
    fds.sort();
    let maps: Vec<String> = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map(|m| {
            m.lines()
                .filter(|l| l.contains("memfd"))
                .map(|l| l.split_whitespace().skip(5).collect::<Vec<_>>().join(" "))
                .collect()
        })
        .unwrap_or_default();
    format!("descriptors {fds:?}; shared mappings {maps:?}")
}

/// Waits (up to 5 s) until `daemon`, seen by `observer`, holds nothing but the observer and
/// `baseline` descriptors and mappings; returns what it last saw.
fn settled(daemon: &Daemon, observer: &mut Peer, baseline: Option<(usize, usize)>) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = observer.ask("status").expect("status");
        let now = resources(daemon);
        let clean = status == "domains=1 buffers=0 bytes=0" && baseline.is_none_or(|b| b == now);
        if clean || Instant::now() > deadline {
            return format!("{status} fds={} maps={}", now.0, now.1);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn killed_clients_leave_nothing_behind_and_survivors_see_intact_data() {
    let pools = Linked::start("kills", &["host", "nc"], &[]);
    let rounds = 3 * support::scale_or_heavy(84) as usize;
    // Warm up the links between the pools (each block manager opens its link at the first
    // transfer across), then take the baseline with one observer per pool connected.
    {
        let mut warm: Vec<Peer> = pools
            .daemons
            .iter()
            .map(|d| Peer::spawn(d, "warm"))
            .collect();
        for (from, to) in [(0, 1), (1, 0)] {
            let dest = warm[to].id.to_bits();
            let agg = warm[from].ask("fill 4096 1").expect("fill");
            warm[from]
                .ask(&format!("transfer {agg} {dest} copy 0"))
                .expect("transfer");
            warm[from].ask(&format!("decref {agg}")).expect("decref");
            let got = warm[to].ask("receive - 5000").expect("receive");
            let got = got.split_whitespace().next().expect("agg").to_string();
            warm[to].ask(&format!("decref {got}")).expect("decref");
        }
    }
    let mut observers: Vec<Peer> = pools
        .daemons
        .iter()
        .map(|d| Peer::spawn(d, "observer"))
        .collect();
    let inventories: Vec<String> = pools.daemons.iter().map(inventory).collect();
    let baselines: Vec<(usize, usize)> = pools
        .daemons
        .iter()
        .zip(&mut observers)
        .map(|(d, o)| {
            settled(d, o, None);
            resources(d)
        })
        .collect();

    let mut seeder = Rng(0x9e37_79b9_7f4a_7c15);
    let modes = ["move 0", "share 0", "copy 0", "move 1", "share 1", "copy 1"];
    let (mut checked, mut kills, mut across) = (0u64, 0usize, 0usize);
    let started = Instant::now();
    for round in 0..rounds {
        let seed = seeder.below(u64::MAX) | 1;
        let mut rng = Rng(seed);
        let mut pairs = Vec::new();
        for p in 0..4 {
            let (from, to) = (rng.below(2) as usize, rng.below(2) as usize);
            across += usize::from(from != to);
            let mut sender = Peer::spawn(&pools.daemons[from], "sender");
            let mut receiver = Peer::spawn(&pools.daemons[to], "receiver");
            let mode = modes[(round * 4 + p) % modes.len()];
            if mode.ends_with('1') {
                receiver
                    .ask(&format!("trust {}", sender.id.to_bits()))
                    .expect("trust");
            }
            let len = [4096, 65536, 300_000, 2 << 20][p];
            receiver
                .tell(&format!("drain {} 100000 3000", sender.id.to_bits()))
                .expect("drain");
            sender
                .tell(&format!(
                    "pump {} {mode} 100000 {len}",
                    receiver.id.to_bits()
                ))
                .expect("pump");
            pairs.push((
                sender,
                receiver,
                format!("{mode} {len} B pool {from} -> {to}"),
            ));
        }
        // Kill one side of each pair at a random moment.
        let mut killed = Vec::new();
        for (sender, receiver, _) in &mut pairs {
            std::thread::sleep(Duration::from_millis(rng.below(60)));
            if rng.below(2) == 0 {
                sender.kill();
                killed.push("sender");
            } else {
                receiver.kill();
                killed.push("receiver");
            }
            kills += 1;
        }
        for ((sender, receiver, what), who) in pairs.iter_mut().zip(&killed) {
            let survivor = if *who == "sender" { receiver } else { sender };
            let answer = survivor.answer().expect("the survivor answers");
            let context = format!("round {round} (seed {seed:#x}), {what}, {who} killed");
            if let Some(corrupt) = field(&answer, "corrupt") {
                assert_eq!(corrupt, "0", "{context}: {answer}");
                checked += field(&answer, "received")
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
            }
            let end = field(&answer, "end").unwrap_or("");
            assert_eq!(end, "unknown_domain", "{context}: {answer}");
        }
        drop(pairs);
        // Every client of the round is dead: each block manager is back to its baseline.
        for (((d, o), b), before) in pools
            .daemons
            .iter()
            .zip(&mut observers)
            .zip(&baselines)
            .zip(&inventories)
        {
            let seen = settled(d, o, Some(*b));
            assert_eq!(
                seen,
                format!("domains=1 buffers=0 bytes=0 fds={} maps={}", b.0, b.1),
                "round {round} (seed {seed:#x}); before: {before}; now: {}; status: {}",
                inventory(d),
                o.ask("status").unwrap_or_default()
            );
        }
    }
    assert!(checked > 0, "no transfer was received before the kills");
    eprintln!(
        "{kills} clients killed in {rounds} rounds ({across} pairs across pools) in {:.1} s; \
         {checked} aggregates received intact by survivors; every block manager back to its \
         baseline after each round",
        started.elapsed().as_secs_f64()
    );
}
