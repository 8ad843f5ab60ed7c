//! Two (or three) hosts as network namespaces joined by veth pairs: a block manager in each,
//! linked over TLS on the namespaces' own addresses, its clients connecting from here (Unix
//! sockets are not namespaced). Needs root and `ip`; skipped with a message otherwise. CI runs
//! the bounded form; `COSH_HEAVY_TESTS=1` adds three hosts, the whole corpus with every domain
//! on a host of its own, large transfers, and a link cut by taking a veth down.

mod support;

use std::process::Command;
use std::time::Duration;

use cosh_core::{ErrorKind, Mode, Rights, Strength, TransferFlags};
use cosh_scenario::Layout;
use support::{Daemon, Linked, assert_corpus_passes_in, scratch_dir};

fn heavy() -> bool {
    std::env::var_os("COSH_HEAVY_TESTS").is_some_and(|v| v != "0")
}

/// Names for one test's namespaces and interfaces: this process and the number of hosts (which
/// tells this file's tests apart).
fn tag(n: usize) -> u32 {
    (std::process::id() % 10_000) * 10 + n as u32
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Namespaces `n` hosts, each joined to the next by a veth pair (host i and i+1 share the
/// subnet 10.77.i.0/24; host i is .1 there and host i+1 is .2). Deleted on drop.
struct Hosts {
    names: Vec<String>,
}

impl Hosts {
    /// `Err` only when namespaces cannot be made here at all (not root, no `ip`, no
    /// permission): the test is skipped. Any later failure fails the test.
    fn new(n: usize) -> Result<Hosts, String> {
        if !rustix::process::geteuid().is_root() {
            return Err("not root".into());
        }
        let tag = tag(n);
        let hosts = Hosts {
            names: (0..n).map(|i| format!("cosh{tag}h{i}")).collect(),
        };
        ip(&["netns", "add", &hosts.names[0]])?;
        let must = |args: &[&str]| ip(args).unwrap_or_else(|e| panic!("{e}"));
        for (i, name) in hosts.names.iter().enumerate() {
            if i > 0 {
                must(&["netns", "add", name]);
            }
            must(&["-n", name, "link", "set", "lo", "up"]);
        }
        // A full mesh: every pair its own veth and subnet.
        for i in 0..n {
            for j in i + 1..n {
                let (a, b) = (format!("v{tag}a{i}{j}"), format!("v{tag}b{i}{j}"));
                let (ni, nj) = (hosts.names[i].as_str(), hosts.names[j].as_str());
                must(&[
                    "link", "add", &a, "netns", ni, "type", "veth", "peer", "name", &b, "netns", nj,
                ]);
                let subnet = 10 * i + j;
                must(&[
                    "-n",
                    ni,
                    "addr",
                    "add",
                    &format!("10.77.{subnet}.1/24"),
                    "dev",
                    &a,
                ]);
                must(&[
                    "-n",
                    nj,
                    "addr",
                    "add",
                    &format!("10.77.{subnet}.2/24"),
                    "dev",
                    &b,
                ]);
                must(&["-n", ni, "link", "set", &a, "up"]);
                must(&["-n", nj, "link", "set", &b, "up"]);
            }
        }
        Ok(hosts)
    }

    /// The address host `i` has towards host `j`.
    fn addr(i: usize, j: usize) -> String {
        let (lo, hi) = (i.min(j), i.max(j));
        format!("10.77.{}.{}", 10 * lo + hi, if i == lo { 1 } else { 2 })
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// A block manager per host, linked over TLS (a certificate for every address of the host).
fn start(hosts: &Hosts, tag: &str) -> Linked {
    let n = hosts.names.len();
    let dir = scratch_dir(tag);
    let token = dir.join("token");
    std::fs::write(&token, "a-token-between-namespaces").expect("token");
    let mut certs = Vec::new();
    let mut ca = String::new();
    for i in 0..n {
        let names: Vec<String> = (0..n)
            .filter(|j| *j != i)
            .map(|j| Hosts::addr(i, j))
            .collect();
        let c = rcgen::generate_simple_self_signed(names).expect("certificate");
        let (cert, key) = (dir.join(format!("h{i}.pem")), dir.join(format!("h{i}.key")));
        std::fs::write(&cert, c.cert.pem()).expect("cert");
        std::fs::write(&key, c.signing_key.serialize_pem()).expect("key");
        ca.push_str(&c.cert.pem());
        certs.push((cert, key));
    }
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca).expect("ca");
    let mut daemons = Vec::new();
    for (i, (cert, key)) in certs.iter().enumerate() {
        let mut args: Vec<String> = vec![
            "netns".into(),
            "exec".into(),
            hosts.names[i].clone(),
            support::coshd().display().to_string(),
            "--socket".into(),
            dir.join(format!("h{i}.sock")).display().to_string(),
            "--quiet".into(),
            "--pool".into(),
            i.to_string(),
            "--listen".into(),
            "0.0.0.0:7070".into(),
            "--link-token-file".into(),
            token.display().to_string(),
            "--tls-cert".into(),
            cert.display().to_string(),
            "--tls-key".into(),
            key.display().to_string(),
            "--tls-ca".into(),
            ca_path.display().to_string(),
        ];
        for j in (0..n).filter(|j| *j != i) {
            args.push("--link".into());
            args.push(format!("{j}=tls://{}:7070", Hosts::addr(j, i)));
        }
        let own = if i + 1 == n {
            dir.clone()
        } else {
            dir.join(format!("keep-{i}"))
        };
        daemons.push(Daemon::spawn_with(
            "ip",
            &args,
            own,
            dir.join(format!("h{i}.sock")),
        ));
    }
    Linked {
        daemons,
        ports: Vec::new(),
    }
}

fn weak() -> TransferFlags {
    TransferFlags {
        strength: Strength::Weak,
        ..TransferFlags::default()
    }
}

#[test]
fn block_managers_in_two_network_namespaces_carry_transfers_both_ways() {
    let hosts = match Hosts::new(2) {
        Ok(h) => h,
        Err(why) => {
            eprintln!("skipped: network namespaces unavailable here ({why})");
            return;
        }
    };
    let pools = start(&hosts, "netns-two");
    let mut a = pools.daemons[0].connect("a");
    let mut b = pools.daemons[1].connect("b");
    let sizes: &[u64] = if heavy() {
        &[0, 1, 4096, 1 << 20, 32 << 20, 64 << 20]
    } else {
        &[0, 1, 4096, 1 << 20, 4 << 20]
    };
    for (i, &len) in sizes.iter().enumerate() {
        let (from, to) = if i % 2 == 0 {
            (&mut a, &mut b)
        } else {
            (&mut b, &mut a)
        };
        let x = from.alloc(len).expect("alloc");
        let data: Vec<u8> = (0..len)
            .map(|k| (k as u8).wrapping_mul(7) ^ i as u8)
            .collect();
        from.write(x, 0, &data).expect("write");
        let mode = [Mode::Move, Mode::Share, Mode::Copy][i % 3];
        from.transfer(x, to.id(), mode, weak())
            .expect("across hosts");
        let got = to
            .receive(Some(from.id()), Some(Duration::ZERO))
            .expect("there once the sender returned");
        assert_eq!(got.mode, mode);
        assert!(
            to.read(got.agg, 0, len).expect("read") == data,
            "transfer {i}"
        );
    }
    assert_corpus_passes_in(Layout::AsWritten, || pools.connections());
}

#[test]
fn three_hosts_run_the_corpus_and_a_cut_link_fails_cleanly() {
    if !heavy() {
        eprintln!("skipped: set COSH_HEAVY_TESTS=1 to run three hosts, the corpus and a link cut");
        return;
    }
    let hosts = match Hosts::new(3) {
        Ok(h) => h,
        Err(why) => {
            eprintln!("skipped: network namespaces unavailable here ({why})");
            return;
        }
    };
    let pools = start(&hosts, "netns-three");
    assert_corpus_passes_in(Layout::PoolPerDomain, || pools.connections());
    // Cut the link between hosts 0 and 1 while a strong move waits for its bytes to cross.
    let mut a = pools.daemons[0].connect("a");
    let b = pools.daemons[1].connect("b");
    let x = a.alloc(256 << 20).expect("alloc");
    let veth = format!("v{}a01", tag(3));
    let cut = {
        let ns = hosts.names[0].clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            ip(&["-n", &ns, "link", "set", &veth, "down"])
        })
    };
    let r = a.transfer(x, b.id(), Mode::Move, TransferFlags::default());
    cut.join().expect("cut").expect("link down");
    match r {
        // The bytes crossed before the cut.
        Ok(_) => assert_eq!(a.rights(x).expect("rights"), Rights::None),
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
            assert_eq!(a.rights(x).expect("rights"), Rights::ReadWrite);
        }
    }
    drop(b);
}
