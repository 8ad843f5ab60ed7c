//! Attacks by a domain running as another, non-root uid (the block manager runs as root here):
//! whatever it tries, strongly shared data stays intact, the block manager keeps serving, and
//! every forged or unauthorised request gets a clear error.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Command;

use cosh_core::ErrorKind;
use support::Daemon;
use support::peers::{Peer, peer_binary};

const ATTACKER_UID: u32 = 65534;

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
    std::fs::copy(peer_binary(), &copy).expect("copy cosh-peer");
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).expect("chmod");
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
    let daemon = Daemon::start("attacks");
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
