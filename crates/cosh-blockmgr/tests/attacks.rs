//! Attacks by a domain running as another, non-root uid (the block manager runs as root here):
//! whatever it tries, strongly shared data stays intact, the block manager keeps serving, and
//! every forged or unauthorised request gets a clear error.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Command;

use cosh_core::ErrorKind;
use support::Daemon;
use support::peers::{Peer, PeerError, peer_binary};

const ATTACKER_UID: u32 = 65534;

/// One attack test at a time: each copies cosh-peer and executes the copy, and a process
/// forked meanwhile by another test's thread would hold the copy open for writing until it
/// executes (`ETXTBSY`).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn field<'a>(answer: &'a str, name: &str) -> &'a str {
    answer
        .split_whitespace()
        .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {name} in {answer:?}"))
}

/// An attacker process as uid 65534, from a copy of cosh-peer it may execute.
fn attacker(daemon: &Daemon) -> Option<Peer> {
    if rustix::process::geteuid().as_raw() != 0 {
        return None;
    }
    let copy = daemon.dir.join("cosh-peer");
    // Copied once per daemon (a copy already running cannot be written over).
    if !copy.exists() {
        std::fs::copy(peer_binary(), &copy).expect("copy cosh-peer");
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    // Let other users reach the socket (the directory is already searchable).
    std::fs::set_permissions(&daemon.dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(&daemon.socket, std::fs::Permissions::from_mode(0o666))
        .expect("chmod");
    let mut command = Command::new(copy);
    command.uid(ATTACKER_UID).gid(ATTACKER_UID);
    Some(Peer::spawn_with(command, daemon, "attacker"))
}

fn loc_of(peer: &mut Peer, agg: &str) -> String {
    let pieces = peer.ask(&format!("iter {agg} read 0")).expect("iter");
    assert_eq!(pieces.split_whitespace().count(), 1, "{pieces}");
    pieces
}

#[test]
fn an_attacker_under_another_uid_cannot_touch_strongly_shared_data() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // Strong shares seal (a copy instead exposes nothing: see transfers.rs).
    let daemon = Daemon::start_with("attacks", &["--share-copy-max", "0"]);
    let Some(mut evil) = attacker(&daemon) else {
        eprintln!("skipped: switching uid needs root");
        return;
    };
    let mut victim = Peer::spawn(&daemon, "victim");
    let (v, e) = (victim.id.to_bits(), evil.id.to_bits());

    // 1. The victim shares 1 MiB strongly with the attacker.
    let data = victim.ask("fill 1048576 5").expect("fill");
    let sum = victim.ask(&format!("checksum {data}")).expect("checksum");
    victim
        .ask(&format!("transfer {data} {e} share 0"))
        .expect("share");
    let got = evil.ask(&format!("receive {v} 1000")).expect("receive");
    let got = got.split_whitespace().next().expect("agg").to_string();
    let piece = loc_of(&mut evil, &got);
    let report = evil.ask(&format!("attack {piece}")).expect("attack");
    assert_eq!(field(&report, "ro_fd"), "ok", "{report}");
    assert_eq!(field(&report, "ro_reopen_rw"), "EACCES", "{report}");
    for what in ["ro_pwrite", "ro_truncate", "ro_punch", "ro_map_write"] {
        assert_ne!(field(&report, what), "ok", "{what}: {report}");
    }
    assert_eq!(field(&report, "rw_fd"), "fault", "{report}");
    let err = evil
        .ask(&format!("poke {piece} 4556494c"))
        .expect_err("read-only");
    assert_eq!(err.kind, Some(ErrorKind::Fault), "{err}");

    // 2. Rights are never upgraded; forged handles, buffers and tickets are refused.
    let err = evil
        .ask(&format!("transfer {got} {v} move 0"))
        .expect_err("no rights");
    assert_eq!(err.kind, Some(ErrorKind::InsufficientRights), "{err}");
    let err = evil
        .ask(&format!("downgrade {got} read-write"))
        .expect_err("upgrade");
    assert_eq!(err.kind, Some(ErrorKind::RightsUpgrade), "{err}");
    let secret = victim.ask("fill 65536 9").expect("fill");
    let secret_sum = victim.ask(&format!("checksum {secret}")).expect("checksum");
    let secret_piece = loc_of(&mut victim, &secret);
    let err = evil
        .ask(&format!("read {secret} 0 16"))
        .expect_err("not its aggregate");
    assert_eq!(err.kind, Some(ErrorKind::UnknownAggregate), "{err}");
    let report = evil.ask(&format!("attack {secret_piece}")).expect("attack");
    assert_eq!(field(&report, "ro_fd"), "fault", "{report}");
    assert_eq!(field(&report, "rw_fd"), "fault", "{report}");
    let err = evil
        .ask(&format!("peek {secret_piece}"))
        .expect_err("never mapped");
    assert_eq!(err.kind, Some(ErrorKind::Fault), "{err}");
    let err = evil
        .ask(&format!("attach_recv {v} 77 0"))
        .expect_err("forged ticket");
    assert_eq!(err.kind, Some(ErrorKind::UnknownTicket), "{err}");
    let small = victim.ask("fill 100 3").expect("fill");
    let ticket = victim
        .ask(&format!("attach {small} {e} copy 0"))
        .expect("attach");
    evil.ask(&format!("attach_recv {v} {ticket} 0"))
        .expect("the real ticket");
    let err = evil
        .ask(&format!("attach_recv {v} {ticket} 0"))
        .expect_err("replayed");
    assert_eq!(err.kind, Some(ErrorKind::TicketReused), "{err}");

    // 3. As a sender, the attacker keeps a read/write descriptor across its own strong share:
    //    the seal holds against it.
    let own = evil.ask("fill 1048576 11").expect("fill");
    let own_piece = loc_of(&mut evil, &own);
    evil.ask(&format!("keepfd {own_piece}")).expect("keepfd");
    let report = evil
        .ask(&format!("transfer {own} {v} share 0"))
        .expect("share");
    assert_eq!(field(&report, "sealed"), "1", "{report}");
    let mine = victim.ask(&format!("receive {e} 1000")).expect("receive");
    let mine = mine.split_whitespace().next().expect("agg").to_string();
    let mine_sum = victim.ask(&format!("checksum {mine}")).expect("checksum");
    let kept = evil.ask("fdattack").expect("fdattack");
    for what in [
        "kept_pwrite",
        "kept_truncate",
        "kept_punch",
        "kept_map_write",
    ] {
        assert_eq!(field(&kept, what), "EPERM", "{what}: {kept}");
    }

    // 4. ... and if it keeps a writable mapping, the seal is refused and the receiver gets a
    //    copy that later scribbles cannot reach.
    let held = evil.ask("fill 1048576 13").expect("fill");
    let held_piece = loc_of(&mut evil, &held);
    evil.ask(&format!("hold {held_piece}")).expect("hold");
    let report = evil
        .ask(&format!("transfer {held} {v} share 0"))
        .expect("share");
    assert_eq!(field(&report, "refused"), "1", "{report}");
    assert_eq!(field(&report, "copied"), "1048576", "{report}");
    let copy = victim.ask(&format!("receive {e} 1000")).expect("receive");
    let copy = copy.split_whitespace().next().expect("agg").to_string();
    let copy_sum = victim.ask(&format!("checksum {copy}")).expect("checksum");
    assert_eq!(evil.ask("scribble 4556494c").expect("scribble"), "1");
    assert_eq!(
        victim.ask(&format!("checksum {copy}")).expect("checksum"),
        copy_sum
    );

    // The block manager still serves, and nothing of the victim's changed.
    assert_eq!(
        victim.ask(&format!("checksum {data}")).expect("checksum"),
        sum
    );
    assert_eq!(
        victim.ask(&format!("checksum {secret}")).expect("checksum"),
        secret_sum
    );
    assert_eq!(
        victim.ask(&format!("checksum {mine}")).expect("checksum"),
        mine_sum
    );
    evil.kill();
    let status = victim.ask("status").expect("status");
    assert!(status.starts_with("domains=1 "), "{status}");
}

/// Allocates 1 MiB aggregates until refused (failing past `expected`): those made, and why
/// the next was refused.
fn alloc_mib_until_refused(peer: &mut Peer, expected: usize) -> (Vec<String>, PeerError) {
    let mut made = Vec::new();
    loop {
        match peer.ask("alloc 1048576") {
            Ok(agg) => made.push(agg),
            Err(e) => return (made, e),
        }
        assert!(made.len() <= expected, "no quota stopped it");
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn frame(m: &cosh_proto::Message) -> Vec<u8> {
    cosh_proto::encode(m).expect("encodes")
}

/// A frame of kind `kind` around `body`, exactly as the wire lays it out.
fn framed(kind: u16, body: &[u8]) -> Vec<u8> {
    let mut f = cosh_proto::MAGIC.to_vec();
    f.extend_from_slice(&cosh_proto::FRAME_VERSION.to_le_bytes());
    f.extend_from_slice(&kind.to_le_bytes());
    f.extend_from_slice(&(body.len() as u32).to_le_bytes());
    f.extend_from_slice(body);
    f
}

/// Attacks on the protocol, the rings, the name service, the quotas and strong shares, by a
/// domain of another uid. Each is answered with a clear error (or a refusal) and the
/// attacker's connection dropped where the protocol was broken; the block manager keeps
/// serving, and the victim's data stays intact.
#[test]
fn an_attacker_under_another_uid_cannot_break_the_protocol_rings_names_or_quotas() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    use cosh_proto::Message;
    use cosh_proto::ops::Request;
    let daemon = Daemon::start_with(
        "attacks-raw",
        &[
            "--max-uid-connections",
            "64",
            "--max-sender-pending",
            "50",
            "--domain-quota-mib",
            "16",
            "--uid-quota-mib",
            "24",
        ],
    );
    let Some(mut evil) = attacker(&daemon) else {
        eprintln!("skipped: switching uid needs root");
        return;
    };
    let mut victim = Peer::spawn(&daemon, "victim");
    let (v, e) = (victim.id.to_bits(), evil.id.to_bits());
    let data = victim.ask("fill 1048576 7").expect("fill");
    let sum = victim.ask(&format!("checksum {data}")).expect("checksum");
    let answer = |evil: &mut Peer, hello: u8, fds: u8, bytes: &[u8]| {
        evil.ask(&format!("raw {hello} {fds} {}", hex(bytes)))
            .expect("raw")
    };
    let status = frame(&Message::Request(Request::Status));

    // 17. Garbage before the handshake.
    let a = answer(&mut evil, 0, 0, b"\xde\xad\xbe\xef garbage");
    assert_eq!(a, "answer=error:protocol then=closed", "garbage");
    // 18. A request before the handshake.
    let a = answer(&mut evil, 0, 0, &status);
    assert_eq!(
        a, "answer=error:protocol then=closed",
        "request before hello"
    );
    // 19. A hello with no version in common.
    let bad_hello = frame(&Message::Hello {
        min_version: 900,
        max_version: 901,
        name: "x".into(),
    });
    let a = answer(&mut evil, 0, 0, &bad_hello);
    assert_eq!(a, "answer=refused then=closed", "impossible version");
    // 20. A frame longer than any the protocol allows.
    let a = answer(&mut evil, 1, 0, &vec![0x41; cosh_proto::MAX_FRAME + 100]);
    assert!(a.ends_with("then=closed"), "oversized: {a}");
    // 21. A header that lies about the length.
    let mut lying = status.clone();
    lying[6] = lying[6].wrapping_add(5);
    let a = answer(&mut evil, 1, 0, &lying);
    assert_eq!(a, "answer=error:protocol then=closed", "lying length");
    // 22. A non-canonical encoding (an overlong integer: alloc of 1 byte as 0x81 0x00).
    let a = answer(&mut evil, 1, 0, &framed(5, &[0x00, 0x81, 0x00]));
    assert_eq!(a, "answer=error:protocol then=closed", "overlong integer");
    // 23. Descriptors passed to the block manager.
    let a = answer(&mut evil, 1, 3, &status);
    assert_eq!(a, "answer=error:protocol then=closed", "descriptors");
    // 24. A message of the protocol between block managers, on a client's socket.
    let link = frame(&Message::Link(cosh_proto::link::LinkMessage::Forget {
        slots: vec![1, 2, 3],
    }));
    let a = answer(&mut evil, 1, 0, &link);
    assert_eq!(a, "answer=error:protocol then=closed", "link message");

    // 25. The name service: the attacker registers a name before the victim's service does.
    //     Each user has its own names: the victim's lookups never find the attacker's.
    evil.ask("register victim-service")
        .expect("its own namespace");
    let err = victim
        .ask("lookup victim-service")
        .expect_err("the attacker's name is not the victim's");
    assert_eq!(err.kind, Some(ErrorKind::UnknownName), "{err}");
    victim
        .ask("register victim-service")
        .expect("the victim's own namespace");
    assert_eq!(
        victim.ask("lookup victim-service").expect("lookup"),
        v.to_string()
    );
    assert_eq!(
        evil.ask(&format!(
            "lookup victim-service@{}",
            rustix::process::getuid().as_raw()
        ))
        .expect("another user's name, asked for by uid"),
        v.to_string()
    );
    let err = evil.ask("register trick@0").expect_err("'@' marks a user");
    assert_eq!(err.kind, Some(ErrorKind::Protocol), "{err}");

    // 26. Allocations past the domain's quota, and its user's; the victim still allocates.
    let (held, err) = alloc_mib_until_refused(&mut evil, 16);
    assert_eq!(held.len(), 16);
    assert_eq!(err.kind, Some(ErrorKind::OverQuota), "{err}");
    let mine = victim
        .ask("alloc 1048576")
        .expect("the victim is not held back");
    victim.ask(&format!("decref {mine}")).expect("decref");
    // ... and a second domain of the same user stops at the user's quota (24 MiB in all).
    let mut accomplice = attacker(&daemon).expect("root");
    let (more, err) = alloc_mib_until_refused(&mut accomplice, 8);
    assert_eq!(more.len(), 8);
    assert_eq!(err.kind, Some(ErrorKind::OverQuota), "{err}");
    assert!(err.message.contains("uid 65534"), "{err}");
    drop(accomplice);
    for agg in held {
        evil.ask(&format!("decref {agg}")).expect("decref");
    }
    // 27. An allocation of every byte there is.
    let err = evil
        .ask(&format!("alloc {}", u64::MAX))
        .expect_err("too large");
    assert_eq!(err.kind, Some(ErrorKind::TooLarge), "{err}");

    // 28. A flood of transfers to a victim that never receives them: held back at 50, and
    //     the victim still receives from others.
    let mut helper = Peer::spawn(&daemon, "helper");
    let flood = evil.ask(&format!("pump {v} copy 0 1000 64")).expect("pump");
    assert_eq!(flood, "sent=50 end=over_quota", "flood");
    let h = helper.id.to_bits();
    let note = helper.ask("fill 4096 3").expect("fill");
    helper
        .ask(&format!("transfer {note} {v} move 0"))
        .expect("others still reach the victim");
    victim
        .ask(&format!("receive {h} 1000"))
        .expect("the victim receives from others");
    assert_eq!(
        victim
            .ask(&format!("drain {e} 50 2000"))
            .expect("the victim takes the flood when it likes"),
        "received=50 corrupt=0 end=done"
    );

    // 29. Connections: the attacker opens as many as it can; its uid is held at 64 and the
    //     victim's user still connects.
    let conns = evil.ask("conns 200").expect("conns");
    assert!(
        conns.starts_with("opened=") && conns.ends_with("refused=error:over_quota"),
        "{conns}"
    );
    let opened: usize = field(&conns, "opened").parse().expect("a count");
    assert!(opened < 64, "{conns}");
    let mut late = Peer::spawn(&daemon, "late");
    late.ask("status")
        .expect("the victim's user still connects");
    evil.ask("dropconns").expect("dropconns");

    // 30. A strong share raced by writes through a kept descriptor, from another thread:
    //     what the victim received never changes afterwards.
    let raced = evil.ask("fill 1048576 21").expect("fill");
    let report = evil.ask(&format!("race {raced} {v}")).expect("race");
    let got = victim.ask(&format!("receive {e} 2000")).expect("receive");
    let got = got.split_whitespace().next().expect("agg").to_string();
    let first = victim.ask(&format!("checksum {got}")).expect("checksum");
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(
        victim.ask(&format!("checksum {got}")).expect("checksum"),
        first,
        "the shared data changed after it was received ({report})"
    );
    if field(&report, "sealed") == "1" {
        assert_eq!(field(&report, "landed_after"), "0", "{report}");
    } else {
        assert_eq!(field(&report, "copied"), "1048576", "{report}");
    }

    // 31. The attacker corrupts the ring it shares with the block manager (its request
    //     ring's head, word 16): the block manager drops it and serves everyone else.
    //     (Its own next request would write its true head back over the scribble, so the
    //     victim's request is what turns the block manager's loop, which looks at every
    //     ring.)
    evil.ask("ringscribble 16 4294901760").expect("scribble");
    victim.ask("status").expect("the victim is served");
    let err = evil.ask("status").expect_err("cut off");
    assert!(
        matches!(err.kind, Some(ErrorKind::Unavailable | ErrorKind::Protocol)),
        "{err}"
    );

    // Nothing of the victim's changed, and the block manager still serves.
    assert_eq!(
        victim.ask(&format!("checksum {data}")).expect("checksum"),
        sum
    );
    let status = victim.ask("status").expect("status");
    assert!(status.starts_with("domains="), "{status}");
}
