//! Clients killed with SIGKILL at random points of their transfers leave nothing behind, and
//! survivors receive only intact data.

mod support;

use std::time::Duration;

use support::Daemon;
use support::peers::Peer;

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

#[test]
fn killed_clients_leave_no_buffer_behind_and_survivors_see_intact_data() {
    let daemon = Daemon::start("kills");
    // COSH_TEST_SCALE=N runs N times as many rounds (the soak setting).
    let scale: usize = std::env::var("COSH_TEST_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let mut seeder = Rng(0x9e37_79b9_7f4a_7c15);
    let seeds: Vec<u64> = (0..3 * scale).map(|_| seeder.below(u64::MAX) | 1).collect();
    let modes = ["move 0", "share 0", "copy 0", "share 1", "move 1"];
    let mut checked = 0;
    for (round, seed) in seeds.iter().enumerate() {
        let mut rng = Rng(*seed);
        let mut pairs = Vec::new();
        for p in 0..3 {
            let mut sender = Peer::spawn(&daemon, "sender");
            let mut receiver = Peer::spawn(&daemon, "receiver");
            let mode = modes[(round * 3 + p) % modes.len()];
            if mode.ends_with('1') {
                receiver
                    .ask(&format!("trust {}", sender.id.to_bits()))
                    .expect("trust");
            }
            let len = [4096, 65536, 300_000][p];
            receiver
                .tell(&format!("drain {} 100000 2000", sender.id.to_bits()))
                .expect("drain");
            sender
                .tell(&format!(
                    "pump {} {mode} 100000 {len}",
                    receiver.id.to_bits()
                ))
                .expect("pump");
            pairs.push((sender, receiver));
        }
        // Kill one side of each pair at a random moment.
        let mut killed = Vec::new();
        for (i, (sender, receiver)) in pairs.iter_mut().enumerate() {
            std::thread::sleep(Duration::from_millis(rng.below(60)));
            if rng.below(2) == 0 {
                sender.kill();
                killed.push((i, "sender"));
            } else {
                receiver.kill();
                killed.push((i, "receiver"));
            }
        }
        for ((sender, receiver), (_, who)) in pairs.iter_mut().zip(&killed) {
            let survivor = if *who == "sender" { receiver } else { sender };
            let answer = survivor.answer().expect("the survivor answers");
            if let Some(corrupt) = field(&answer, "corrupt") {
                assert_eq!(corrupt, "0", "round {round}: {answer}");
                checked += field(&answer, "received")
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
            }
            let end = field(&answer, "end").unwrap_or("");
            assert_eq!(end, "unknown_domain", "round {round}: {answer}");
        }
        drop(pairs);
        // Every domain is dead: the block manager's accounting returns to nothing.
        let mut observer = Peer::spawn(&daemon, "observer");
        let mut status = String::new();
        for _ in 0..3000 {
            status = observer.ask("status").expect("status");
            if status == "domains=1 buffers=0 bytes=0" {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(status, "domains=1 buffers=0 bytes=0", "round {round}");
    }
    assert!(
        checked > 0,
        "no transfer was received intact before the kills"
    );
}
