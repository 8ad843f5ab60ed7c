//! Links between block managers: transfers between domains of different pools (paper §4.3).
//!
//! The source block manager checks the transfer exactly as a local one would
//! (`Ledger::export`), keeps the bytes alive with an aggregate of its own *holder* domain,
//! and sends them on its link to the destination's block manager: on this machine the chunk
//! list, with a read-only descriptor of each slot the destination has not seen yet (it maps
//! the slot once); to another host (`crate::remote`) the bytes themselves after a `Stream`
//! frame. The destination accepts the transfer into its copy engine (`Accepted`), copies into
//! a buffer of the receiver's, queues the aggregate (`Ledger::import`), wakes the receiver and
//! answers `Delivered`; the source then drops its hold. Every transfer between pools is a
//! copy, so no mapping changes.
//!
//! When the sender is answered (and downgraded, `Ledger::export_done`): a strong transfer or
//! a copy once `Delivered` (a snapshot; any failure — no such receiver, a full pool, a link
//! that broke — reaches it as a clear error and changes nothing); a weak move or share at
//! once while the link's window has room and the destination has answered on the link at
//! least once (on this machine; to another host at `Accepted`), so that back-to-back
//! transfers pipeline. A receive that finds nothing first reads the
//! links and waits for accepted copies, so it sees what a finished transfer sent. Links are
//! opened by the sending side, on first use, to the address configured for the destination
//! pool (`Config::links`; a connection over TCP is made on the main loop, within 5 s).

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Instant;

use cosh_core::ledger::TransferRequest;
use cosh_core::{AggId, DomainId, ErrorKind, Mode, PoolId, Strength};
use cosh_proto::link::{
    LinkMessage, LinkPiece, MAX_LINK_PIECES, MAX_LINK_SLOTS, answered_on_acceptance,
};
use cosh_proto::ops::Response;
use cosh_proto::{MAX_FRAME, Message, PROTOCOL_VERSIONS, decode, encode, error_code, error_kind};
use cosh_sys::mapping::{Mapping, Prefault, ReadOnly, ReadWrite};
use cosh_sys::memfd::Memfd;
use cosh_sys::socket::SeqPacket;

use super::{Answer, BlockManager, Failure, Phase, fail, now, truncate};
use crate::LinkAddr;
use crate::copier::{Job, Piece};
use crate::remote::{BodyPiece, FromIo, RemoteIo, ToIo, Transport};
use crate::store::SlotId;

/// Frames waiting for room in a link's socket.
#[derive(Default)]
pub(super) struct Outbox {
    queue: VecDeque<(Vec<u8>, Vec<OwnedFd>)>,
}

impl Outbox {
    /// Sends now if nothing waits, else queues. `Err` if the socket broke.
    fn send(
        &mut self,
        sock: &SeqPacket,
        bytes: Vec<u8>,
        fds: Vec<OwnedFd>,
    ) -> Result<(), cosh_sys::Error> {
        if self.queue.is_empty() {
            let borrowed: Vec<_> = fds.iter().map(AsFd::as_fd).collect();
            match sock.send(&bytes, &borrowed) {
                Ok(()) => return Ok(()),
                Err(e) if e.would_block() => {}
                Err(e) => return Err(e),
            }
        }
        self.queue.push_back((bytes, fds));
        Ok(())
    }

    /// Sends what the socket takes now.
    fn flush(&mut self, sock: &SeqPacket) -> Result<(), cosh_sys::Error> {
        while let Some((bytes, fds)) = self.queue.front() {
            let borrowed: Vec<_> = fds.iter().map(AsFd::as_fd).collect();
            match sock.send(bytes, &borrowed) {
                Ok(()) => {
                    self.queue.pop_front();
                }
                Err(e) if e.would_block() => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

/// A link this block manager opened, for its transfers to one other pool.
pub(super) struct OutLink {
    pub(super) chan: OutChan,
    /// Transfers sent and not yet confirmed, by id.
    inflight: HashMap<u64, InFlight>,
    /// Whether the destination has said anything yet (`Opened` first): until then it may
    /// not even have taken the connection, so a weak transfer is not answered early (a
    /// receive there could look before the link is read).
    heard: bool,
}

/// How a link reaches the other block manager.
pub(super) enum OutChan {
    /// On this machine: a socket that passes descriptors.
    Local { sock: SeqPacket, outbox: Outbox },
    /// On another host: a TCP connection served by an I/O thread.
    Remote { io: RemoteIo },
}

impl OutLink {
    /// Sends a frame (with descriptors, on this machine; with a transfer's bytes after it,
    /// to another host).
    fn send(
        &mut self,
        bytes: Vec<u8>,
        fds: Vec<OwnedFd>,
        body: Vec<BodyPiece>,
    ) -> Result<(), String> {
        match &mut self.chan {
            OutChan::Local { sock, outbox } => {
                outbox.send(sock, bytes, fds).map_err(|e| e.to_string())
            }
            OutChan::Remote { io } => {
                if io.send(ToIo::Send { frame: bytes, body }) {
                    Ok(())
                } else {
                    Err("its connection thread stopped".into())
                }
            }
        }
    }

    fn is_remote(&self) -> bool {
        matches!(self.chan, OutChan::Remote { .. })
    }
}

/// A transfer on its way to another pool.
struct InFlight {
    /// The holder's aggregate keeping the bytes alive.
    hold: AggId,
    /// The sender's client, answered once the destination confirms.
    token: u64,
    /// The transfer, to finish in the ledger once confirmed.
    request: TransferRequest,
    /// The sender was answered (when the transfer was sent, or accepted).
    answered: bool,
    /// Bytes.
    len: u64,
    /// The answer to give the sender.
    response: Response,
}

/// A link another block manager opened to this one: its transfers arrive here.
pub(super) struct InLink {
    pub(super) sock: SeqPacket,
    pub(super) outbox: Outbox,
    pool: PoolId,
    /// The source's slots, mapped once and kept until it says to forget them.
    mapped: HashMap<u64, Arc<Mapping<ReadOnly>>>,
    /// The parts of a transfer received so far.
    partial: Option<Partial>,
    /// Transfers read whole, waiting for room on the copy engine (at most the source's
    /// window: see [`WINDOW`]).
    backlog: VecDeque<Partial>,
}

pub(super) struct Partial {
    id: u64,
    source: DomainId,
    receiver: DomainId,
    mode: Mode,
    strength: Strength,
    ticket: Option<u64>,
    pieces: Vec<LinkPiece>,
}

/// A transfer from another pool on the copy engine.
pub(super) struct Importing {
    delivery: Partial,
    len: u64,
    slot: Option<SlotId>,
}

/// Messages read from one link per turn at most (others wait for the next turn).
const BATCH: usize = 64;

/// Transfers from one link on the copy engine at most, and bytes (at least one transfer):
/// the others wait in the link's backlog, unaccepted, and their senders past the window with
/// them (a sender that outruns the copy engine waits instead of piling up memory).
const MAX_IMPORTING: usize = 2;
const MAX_IMPORTING_BYTES: u64 = 64 << 20;

/// Copies of at most this many bytes are made on the main loop when the link has nothing on
/// the copy engine (a hand-off costs two wake-ups: more than copying this much).
const INLINE_COPY: u64 = 256 << 10;

/// A weak move or share is answered as soon as it is sent while at most this many
/// transfers (and bytes) are on their way on its link; past that, its sender waits until
/// the destination accepts it. The destination reads everything the source sends (at most
/// this window), so a receive there can always see what a finished transfer sent.
const WINDOW: usize = 3;
const WINDOW_BYTES: u64 = 64 << 20;

impl BlockManager {
    /// The domain that holds the bytes of transfers in flight to other pools.
    fn holder(&mut self) -> DomainId {
        match self.holder {
            Some(h) => h,
            None => {
                let h = self.ledger.add_domain(self.config.pool);
                self.holder = Some(h);
                h
            }
        }
    }

    /// The link to `pool`, opened now if there is none.
    fn out_link(&mut self, pool: PoolId) -> Result<&mut OutLink, Failure> {
        if !self.out_links.contains_key(&pool)
            && let Some(LinkAddr::Tcp { host, port, tls }) = self.config.links.get(&pool).cloned()
        {
            let io = self.connect_remote(pool, &host, port, tls)?;
            self.out_links.insert(
                pool,
                OutLink {
                    chan: OutChan::Remote { io },
                    inflight: HashMap::new(),
                    heard: false,
                },
            );
        }
        if !self.out_links.contains_key(&pool) {
            let Some(LinkAddr::Unix(path)) = self.config.links.get(&pool) else {
                return Err(fail(
                    ErrorKind::Unavailable,
                    format!(
                        "this block manager (pool {}) has no link to pool {pool}: start it with \
                         --link {}=ADDRESS (cosh up --topology does)",
                        self.config.pool, pool.0
                    ),
                ));
            };
            let unreachable = |e: cosh_sys::Error| {
                fail(
                    ErrorKind::Unavailable,
                    format!(
                        "cannot reach the block manager of pool {pool} at {}: {e}",
                        path.display()
                    ),
                )
            };
            let sock = SeqPacket::connect(path).map_err(unreachable)?;
            let open = Message::Link(LinkMessage::Open {
                pool: self.config.pool.0,
                min_version: *PROTOCOL_VERSIONS.start(),
                max_version: *PROTOCOL_VERSIONS.end(),
            });
            let bytes = encode(&open).map_err(|e| fail(ErrorKind::Protocol, e.to_string()))?;
            sock.send(&bytes, &[]).map_err(unreachable)?;
            sock.set_nonblocking(true).map_err(unreachable)?;
            self.out_links.insert(
                pool,
                OutLink {
                    chan: OutChan::Local {
                        sock,
                        outbox: Outbox::default(),
                    },
                    inflight: HashMap::new(),
                    heard: false,
                },
            );
        }
        self.out_links
            .get_mut(&pool)
            .ok_or_else(|| fail(ErrorKind::Unavailable, "link lost"))
    }

    /// A transfer to a domain of another pool: check, hold, send; the sender is answered now
    /// (a weak move or share within the window) or when the destination accepts or delivers
    /// it (see the module documentation).
    pub(super) fn export_transfer(
        &mut self,
        token: u64,
        request: TransferRequest,
    ) -> Result<Answer, Failure> {
        let pool = request.receiver.pool;
        if self.gone_remote.0.contains(&request.receiver) {
            return Err(fail(
                ErrorKind::UnknownDomain,
                format!(
                    "domain {} of another pool disconnected; nothing can be sent to it",
                    request.receiver
                ),
            ));
        }
        // Reach the destination before touching the sender's rights.
        self.out_link(pool)?;
        let holder = self.holder();
        let export = self.ledger.export(&request, holder)?;
        let mut pieces = Vec::with_capacity(export.chunks.chunks().len());
        for c in export.chunks.chunks() {
            let Some(slot) = self.store.slot_of(c.buffer) else {
                self.drop_hold(export.hold);
                return Err(fail(
                    ErrorKind::Unavailable,
                    format!("internal error: {} has no memory", c.buffer),
                ));
            };
            pieces.push(LinkPiece {
                slot,
                offset: c.offset,
                len: c.len,
            });
        }
        let id = self.next_delivery;
        self.next_delivery += 1;
        let remote = self.out_links.get(&pool).is_some_and(OutLink::is_remote);
        let mut parts: Vec<(Message, Vec<OwnedFd>, Vec<BodyPiece>)> = Vec::new();
        if remote {
            // Another host: the bytes follow the header on the stream, read from this block
            // manager's own mappings of the slots.
            let mut body = Vec::with_capacity(pieces.len());
            for p in &pieces {
                let (Some(map), Ok(offset), Ok(len)) = (
                    self.store.shared_read_map(p.slot),
                    usize::try_from(p.offset),
                    usize::try_from(p.len),
                ) else {
                    self.drop_hold(export.hold);
                    return Err(fail(ErrorKind::Unavailable, "cannot map a buffer to send"));
                };
                body.push(BodyPiece { map, offset, len });
            }
            let m = Message::Link(LinkMessage::Stream {
                id,
                source: request.sender.to_bits(),
                receiver: request.receiver.to_bits(),
                mode: request.mode.into(),
                strength: export.strength.into(),
                ticket: export.ticket.map(|t| t.0),
                len: export.chunks.len(),
            });
            parts.push((m, Vec::new(), body));
        }
        let header = |pieces: Vec<LinkPiece>, new_slots: Vec<u64>, more: bool| {
            Message::Link(LinkMessage::Deliver {
                id,
                source: request.sender.to_bits(),
                receiver: request.receiver.to_bits(),
                mode: request.mode.into(),
                strength: export.strength.into(),
                ticket: export.ticket.map(|t| t.0),
                pieces,
                new_slots,
                more,
            })
        };
        // Parts of at most MAX_LINK_PIECES pieces and MAX_LINK_SLOTS new descriptors.
        let (mut part, mut new_slots, mut fds) = (Vec::new(), Vec::new(), Vec::new());
        for p in pieces.iter().filter(|_| !remote) {
            let fd = match self.store.link_descriptor(p.slot, pool) {
                Ok(fd) => fd,
                Err(e) => {
                    self.drop_hold(export.hold);
                    return Err(fail(
                        ErrorKind::Unavailable,
                        format!("cannot pass a descriptor to pool {pool}: {e}"),
                    ));
                }
            };
            if let Some(fd) = fd {
                new_slots.push(p.slot);
                fds.push(fd);
            }
            part.push(*p);
            if part.len() == MAX_LINK_PIECES || new_slots.len() == MAX_LINK_SLOTS {
                let m = header(
                    std::mem::take(&mut part),
                    std::mem::take(&mut new_slots),
                    true,
                );
                parts.push((m, std::mem::take(&mut fds), Vec::new()));
            }
        }
        if !remote {
            parts.push((header(part, new_slots, false), fds, Vec::new()));
        }
        let mut broken = None;
        {
            let Some(link) = self.out_links.get_mut(&pool) else {
                self.drop_hold(export.hold);
                return Err(fail(
                    ErrorKind::Unavailable,
                    format!("the link to pool {pool} went"),
                ));
            };
            for (m, fds, body) in parts {
                let sent = match encode(&m) {
                    Ok(bytes) => link.send(bytes, fds, body),
                    Err(e) => Err(e.to_string()),
                };
                if let Err(e) = sent {
                    broken = Some(e);
                    break;
                }
            }
            link.inflight.insert(
                id,
                InFlight {
                    hold: export.hold,
                    token,
                    request: request.clone(),
                    answered: false,
                    len: export.chunks.len(),
                    response: Response::Transferred {
                        ticket: export.ticket.map(|t| t.0),
                        report: cosh_proto::ops::TransferReport {
                            referenced_bytes: 0,
                            copied_bytes: export.chunks.len(),
                            sealed_buffers: 0,
                            refused_seals: 0,
                            weak: false,
                        },
                    },
                },
            );
        }
        if let Some(e) = broken {
            if let Some(c) = self.clients.get_mut(&token) {
                c.phase = Phase::Exporting;
            }
            self.link_lost(pool, &e);
            return Ok(Answer::Later);
        }
        // A weak move or share within the window is answered now: the sender goes on while
        // the transfer travels (pipelined).
        // (Not to another host: a receive there could look before the bytes arrive.)
        let early = answered_on_acceptance(request.mode.into(), request.flags.strength.into())
            && self.out_links.get(&pool).is_some_and(|l| {
                !l.is_remote()
                    && l.heard
                    && l.inflight.len() <= WINDOW
                    && l.inflight.values().map(|f| f.len).sum::<u64>() <= WINDOW_BYTES
            });
        if early && let Some((_, response)) = self.answer_in_flight(pool, id) {
            return now(response);
        }
        if let Some(c) = self.clients.get_mut(&token) {
            c.phase = Phase::Exporting;
        }
        Ok(Answer::Later)
    }

    /// The sender of transfer `id` on the link to `pool` is answered before the destination
    /// delivered: it is downgraded now; its client and the answer to give it.
    fn answer_in_flight(&mut self, pool: PoolId, id: u64) -> Option<(u64, Response)> {
        let f = self
            .out_links
            .get_mut(&pool)
            .and_then(|l| l.inflight.get_mut(&id))?;
        f.answered = true;
        let (token, request, response) = (f.token, f.request.clone(), f.response.clone());
        // The sender may have gone meanwhile: nothing left to downgrade.
        let _ = self.ledger.export_done(&request);
        Some((token, response))
    }

    fn drop_hold(&mut self, hold: AggId) {
        if let Some(holder) = self.holder
            && let Ok(release) = self.ledger.decref(holder, hold)
        {
            self.released(&release);
        }
    }

    /// The link to `pool` broke: every transfer in flight on it fails at its sender.
    pub(super) fn link_lost(&mut self, pool: PoolId, why: &str) {
        let Some(link) = self.out_links.remove(&pool) else {
            return;
        };
        self.remote_out.retain(|_, p| *p != pool);
        self.store.forget_link(pool);
        for (_, f) in link.inflight {
            self.drop_hold(f.hold);
            if f.answered {
                // Its sender was told it went: it is lost as if its receiver had died.
                self.counts.lost += 1;
                continue;
            }
            let message = format!(
                "the link to the block manager of pool {pool} broke before domain {} had the \
                 transfer ({why}); it was not delivered and the sender keeps its rights",
                f.request.receiver
            );
            self.finish_export(f.token, Err(fail(ErrorKind::Unavailable, message)));
        }
    }

    fn finish_export(&mut self, token: u64, answer: Result<Answer, Failure>) {
        let Some(c) = self.clients.get_mut(&token) else {
            return;
        };
        if matches!(c.phase, Phase::Exporting) {
            c.phase = Phase::Idle;
            self.answer(token, answer);
        }
    }

    /// Reads what the destination of an outgoing link on this machine said.
    pub(super) fn out_link_readable(&mut self, pool: PoolId) {
        let mut buf = std::mem::take(&mut self.inbox);
        buf.resize(MAX_FRAME, 0);
        for _ in 0..BATCH {
            let Some(OutChan::Local { sock, outbox }) =
                self.out_links.get_mut(&pool).map(|l| &mut l.chan)
            else {
                break;
            };
            if let Err(e) = outbox.flush(sock) {
                self.link_lost(pool, &e.to_string());
                break;
            }
            let message = match sock.recv(&mut buf) {
                Ok(Some(m)) => m,
                Err(e) if e.would_block() => break,
                Ok(None) => {
                    self.link_lost(pool, "it closed the connection");
                    break;
                }
                Err(e) => {
                    self.link_lost(pool, &e.to_string());
                    break;
                }
            };
            let decoded = if message.fds.is_empty() {
                decode(&buf[..message.len]).map_err(|e| e.to_string())
            } else {
                Err("descriptors from a destination".into())
            };
            if !self.on_out_message(pool, decoded) {
                break;
            }
        }
        self.inbox = buf;
    }

    /// What the destination of an outgoing link said; `false` if the link is gone.
    fn on_out_message(&mut self, pool: PoolId, decoded: Result<Message, String>) -> bool {
        if decoded.is_ok()
            && let Some(l) = self.out_links.get_mut(&pool)
        {
            l.heard = true;
        }
        match decoded {
            Ok(Message::Link(LinkMessage::Opened { .. })) => {}
            Ok(Message::Link(LinkMessage::Accepted { id })) => {
                let Some(f) = self
                    .out_links
                    .get_mut(&pool)
                    .and_then(|l| l.inflight.get_mut(&id))
                else {
                    self.link_lost(pool, "it accepted a transfer never sent");
                    return false;
                };
                if !f.answered
                    && answered_on_acceptance(
                        f.request.mode.into(),
                        f.request.flags.strength.into(),
                    )
                    && let Some((token, response)) = self.answer_in_flight(pool, id)
                {
                    self.finish_export(token, now(response));
                }
            }
            Ok(Message::Link(LinkMessage::Delivered { id, error })) => {
                let Some(f) = self
                    .out_links
                    .get_mut(&pool)
                    .and_then(|l| l.inflight.remove(&id))
                else {
                    self.link_lost(pool, "it confirmed a transfer never sent");
                    return false;
                };
                self.drop_hold(f.hold);
                if f.answered {
                    if error.is_some() {
                        self.counts.lost += 1;
                    } else {
                        self.counts.exported += 1;
                    }
                    return true;
                }
                let answer = match error {
                    None => {
                        // The sender may have gone meanwhile: nothing left to downgrade.
                        let _ = self.ledger.export_done(&f.request);
                        self.counts.exported += 1;
                        now(f.response)
                    }
                    Some((code, message)) => Err(fail(
                        error_kind(code).unwrap_or(ErrorKind::Unavailable),
                        message,
                    )),
                };
                self.finish_export(f.token, answer);
            }
            Ok(Message::Link(LinkMessage::Gone { domain })) => {
                if let Err(why) = self.remote_gone(pool, DomainId::from_bits(domain)) {
                    self.link_lost(pool, &why);
                    return false;
                }
            }
            Ok(Message::Refused { reason }) => {
                self.link_lost(pool, &format!("it refused the link: {reason}"));
                return false;
            }
            Ok(other) => {
                self.link_lost(pool, &format!("unexpected {} message", other.name()));
                return false;
            }
            Err(e) => {
                self.link_lost(pool, &format!("protocol violation: {e}"));
                return false;
            }
        }
        true
    }

    /// A client's first message was `Open`: it is another block manager's link.
    pub(super) fn accept_link(&mut self, token: u64, pool: u32, min: u16, max: u16) {
        let Some(client) = self.clients.remove(&token) else {
            return;
        };
        let own = rustix::process::getuid().as_raw();
        let pool = PoolId(pool);
        let refusal = if client.creds.uid != own && client.creds.uid != 0 {
            Some(format!(
                "only block managers running as uid {own} or root may link to this one"
            ))
        } else if pool == self.config.pool {
            Some(format!("pool {pool} is this block manager's own"))
        } else {
            cosh_proto::negotiate(min, max).err().map(|r| r.to_string())
        };
        if let Some(reason) = refusal {
            if let Ok(bytes) = encode(&Message::Refused { reason }) {
                let _ = client.sock.send(&bytes, &[]);
            }
            return;
        }
        let version = cosh_proto::negotiate(min, max).unwrap_or(*PROTOCOL_VERSIONS.end());
        let mut link = InLink {
            sock: client.sock,
            outbox: Outbox::default(),
            pool,
            mapped: HashMap::new(),
            partial: None,
            backlog: VecDeque::new(),
        };
        let opened = Message::Link(LinkMessage::Opened {
            pool: self.config.pool.0,
            version,
        });
        if let Ok(bytes) = encode(&opened)
            && link.outbox.send(&link.sock, bytes, Vec::new()).is_ok()
        {
            self.in_links.insert(token, link);
            self.forget_gone_of(pool);
        }
    }

    /// Whether the copy engine has as much from link `token` as it may: the link waits.
    pub(super) fn link_saturated(&self, token: u64) -> bool {
        let (mut count, mut bytes) = (0, 0);
        for ((t, _), im) in &self.importing {
            if *t == token {
                count += 1;
                bytes += im.len;
            }
        }
        count >= MAX_IMPORTING || bytes >= MAX_IMPORTING_BYTES
    }

    /// Reads what arrives on a link (everything: the source's window bounds it).
    pub(super) fn in_link_readable(&mut self, token: u64) {
        let mut buf = std::mem::take(&mut self.inbox);
        buf.resize(MAX_FRAME, 0);
        for _ in 0..BATCH {
            let Some(link) = self.in_links.get_mut(&token) else {
                break;
            };
            if link.outbox.flush(&link.sock).is_err() {
                self.in_links.remove(&token);
                break;
            }

            let message = match link.sock.recv(&mut buf) {
                Ok(Some(m)) => m,
                Err(e) if e.would_block() => break,
                Ok(None) | Err(_) => {
                    self.in_links.remove(&token);
                    break;
                }
            };
            let result = match decode(&buf[..message.len]) {
                Ok(Message::Link(m)) => self.on_link_message(token, m, message.fds),
                Ok(other) => Err(format!("unexpected {} message on a link", other.name())),
                Err(e) => Err(e.to_string()),
            };
            if let Err(why) = result {
                self.drop_in_link(token, &why);
                break;
            }
        }
        self.inbox = buf;
    }

    fn drop_in_link(&mut self, token: u64, why: &str) {
        if let Some(link) = self.in_links.remove(&token) {
            let error = Message::Error {
                kind: ErrorKind::Protocol,
                message: truncate(&format!("protocol violation on a link: {why}"), 1024),
            };
            if let Ok(bytes) = encode(&error) {
                let _ = link.sock.send(&bytes, &[]);
            }
        }
    }

    /// One message from a linked block manager; `Err` breaks the link.
    fn on_link_message(
        &mut self,
        token: u64,
        m: LinkMessage,
        fds: Vec<OwnedFd>,
    ) -> Result<(), String> {
        let Some(link) = self.in_links.get_mut(&token) else {
            return Ok(());
        };
        match m {
            LinkMessage::Forget { slots } => {
                if !fds.is_empty() {
                    return Err("descriptors with forget".into());
                }
                for s in slots {
                    link.mapped.remove(&s);
                }
                Ok(())
            }
            LinkMessage::Gone { domain } => {
                if !fds.is_empty() {
                    return Err("descriptors with gone".into());
                }
                let from = link.pool;
                self.remote_gone(from, DomainId::from_bits(domain))
            }
            LinkMessage::Deliver {
                id,
                source,
                receiver,
                mode,
                strength,
                ticket,
                pieces,
                new_slots,
                more,
            } => {
                if fds.len() != new_slots.len() {
                    return Err(format!(
                        "{} descriptors for {} new slots",
                        fds.len(),
                        new_slots.len()
                    ));
                }
                for (slot, fd) in new_slots.into_iter().zip(fds) {
                    let map = Memfd::from_fd(fd)
                        .and_then(|m| m.map_read(Prefault::OnFirstTouch))
                        .map_err(|e| format!("slot {slot}: {e}"))?;
                    link.mapped.insert(slot, Arc::new(map));
                }
                let source = DomainId::from_bits(source);
                if source.pool != link.pool {
                    return Err(format!(
                        "a transfer from {source} on the link of pool {}",
                        link.pool
                    ));
                }
                let header = (
                    id,
                    source,
                    DomainId::from_bits(receiver),
                    Mode::from(mode),
                    Strength::from(strength),
                    ticket,
                );
                let partial = link.partial.get_or_insert_with(|| Partial {
                    id,
                    source: header.1,
                    receiver: header.2,
                    mode: header.3,
                    strength: header.4,
                    ticket,
                    pieces: Vec::new(),
                });
                if (
                    partial.id,
                    partial.source,
                    partial.receiver,
                    partial.mode,
                    partial.strength,
                    partial.ticket,
                ) != header
                {
                    return Err("the parts of one transfer disagree".into());
                }
                partial.pieces.extend(pieces);
                if more {
                    return Ok(());
                }
                let Some(d) = link.partial.take() else {
                    return Ok(());
                };
                if link.backlog.len() >= WINDOW * 4 {
                    return Err("more transfers in flight than the window allows".into());
                }
                link.backlog.push_back(d);
                self.accept_backlog(token)
            }
            other => Err(format!("unexpected {other:?}")),
        }
    }

    /// Accepts the transfers of link `token` waiting for room on the copy engine, in order,
    /// while there is room; `Err` breaks the link.
    fn accept_backlog(&mut self, token: u64) -> Result<(), String> {
        while !self.link_saturated(token) {
            let Some(d) = self
                .in_links
                .get_mut(&token)
                .and_then(|l| l.backlog.pop_front())
            else {
                break;
            };
            let id = d.id;
            let reply = match self.accept_delivery(token, d) {
                Ok(true) => continue,
                Ok(false) => LinkMessage::Accepted { id },
                Err(f) if f.kind == ErrorKind::Protocol => return Err(f.message),
                Err(f) => LinkMessage::Delivered {
                    id,
                    error: Some((error_code(f.kind), truncate(&f.message, 1024))),
                },
            };
            self.link_reply(token, reply);
        }
        Ok(())
    }

    /// Reads every link now: a receive that finds nothing must first see what a finished
    /// transfer sent (it is in a link's socket at the latest).
    pub(super) fn drain_links(&mut self) {
        let tokens: Vec<u64> = self.in_links.keys().copied().collect();
        for t in tokens {
            self.in_link_readable(t);
        }
    }

    /// Takes a transfer from another pool: checks its receiver, reserves a buffer of the
    /// receiver's and hands the copy to the copy engine (`Accepted` now, `Delivered` when
    /// done: see [`BlockManager::imports_done`]).
    fn accept_delivery(&mut self, token: u64, d: Partial) -> Result<bool, Failure> {
        let len = d
            .pieces
            .iter()
            .try_fold(0u64, |n, p| n.checked_add(p.len))
            .ok_or_else(|| fail(ErrorKind::Protocol, "a transfer longer than 2^64 bytes"))?;
        self.check_import(d.receiver, len)?;
        self.accept_checked(token, d, len)
    }

    /// Whether a transfer of `len` bytes to `receiver` can be taken now.
    fn check_import(&self, receiver: DomainId, len: u64) -> Result<(), Failure> {
        if receiver.pool != self.config.pool || !self.by_domain.contains_key(&receiver) {
            return Err(fail(
                ErrorKind::UnknownDomain,
                format!(
                    "domain {receiver} is not connected to the block manager of pool {} (it may \
                     have disconnected)",
                    self.config.pool
                ),
            ));
        }
        let waiting = self.ledger.pending_count(receiver);
        if waiting >= self.config.max_pending
            || self.ledger.aggregate_count(receiver) >= self.config.max_aggregates
        {
            return Err(fail(
                ErrorKind::Unavailable,
                format!(
                    "domain {receiver} is not keeping up: {waiting} transfers wait for it; try \
                     again once it has received some"
                ),
            ));
        }
        if len > self.config.max_buffer {
            return Err(cosh_core::Error::TooLarge {
                len,
                max: self.config.max_buffer,
            }
            .into());
        }
        Ok(())
    }

    /// Memory for a transfer of `len` bytes to `receiver`: a reserved slot and its mapping,
    /// lent (none for zero bytes).
    fn reserve_import(
        &mut self,
        receiver: DomainId,
        len: u64,
        sealed: bool,
    ) -> Result<(Option<SlotId>, Option<Mapping<ReadWrite>>), Failure> {
        if len == 0 {
            return Ok((None, None));
        }
        // A buffer to be sealed (a strong share's) takes a fresh slot: a recycled one may
        // still be mapped writable by the receiver, and the seal would be refused.
        let slot = self
            .store
            .reserve_charged(len, receiver, receiver, false, !sealed)
            .map_err(|e| super::store_failure(&e))?;
        let Some(map) = self.store.lend_write_map(slot) else {
            self.store.unreserve(slot, receiver);
            return Err(fail(
                ErrorKind::Unavailable,
                "cannot map a buffer to copy into",
            ));
        };
        Ok((Some(slot), Some(map)))
    }

    /// [`BlockManager::accept_delivery`] once checked; `true` if it is already delivered
    /// (and its source told).
    fn accept_checked(&mut self, token: u64, d: Partial, len: u64) -> Result<bool, Failure> {
        let receiver = d.receiver;
        // Every piece within a slot the source passed, before any memory is reserved.
        let link = self
            .in_links
            .get(&token)
            .ok_or_else(|| fail(ErrorKind::Unavailable, "link gone"))?;
        let mut pieces = Vec::with_capacity(d.pieces.len());
        for p in &d.pieces {
            let map = link
                .mapped
                .get(&p.slot)
                .ok_or_else(|| fail(ErrorKind::Protocol, format!("unknown slot {}", p.slot)))?;
            let (Ok(offset), Ok(n)) = (usize::try_from(p.offset), usize::try_from(p.len)) else {
                return Err(fail(
                    ErrorKind::Protocol,
                    "a piece beyond the address space",
                ));
            };
            if offset.checked_add(n).is_none_or(|end| end > map.len()) {
                return Err(fail(
                    ErrorKind::Protocol,
                    format!("a piece beyond the end of slot {}", p.slot),
                ));
            }
            pieces.push(Piece {
                from: Arc::clone(map),
                offset,
                len: n,
            });
        }
        let sealed = d.mode == Mode::Share && d.strength == Strength::Strong;
        let (slot, to) = self.reserve_import(receiver, len, sealed)?;
        let key = (token, d.id);
        // A short copy with nothing of this link ahead of it on the engine is made here and
        // now: handing it to the engine and back would cost two wake-ups, more than the copy.
        let inline = len <= INLINE_COPY
            && self.copier.model().is_none()
            && !self.importing.keys().any(|(t, _)| *t == token);
        if inline {
            let id = d.id;
            self.importing.insert(
                key,
                Importing {
                    delivery: d,
                    len,
                    slot,
                },
            );
            self.link_reply(token, LinkMessage::Accepted { id });
            let mut to = to;
            let began = Instant::now();
            let copied = crate::copier::copy_pieces(to.as_mut(), &pieces);
            self.counts.engine_busy_us +=
                u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX);
            drop(pieces);
            self.finish_import(key, to, copied);
            return Ok(true);
        }
        let job = Job {
            key,
            to,
            pieces,
            submitted: Instant::now(),
        };
        if !self.copier.submit(job) {
            if let Some(slot) = slot {
                self.store.unreserve(slot, receiver);
            }
            return Err(fail(ErrorKind::Unavailable, "the copy engine stopped"));
        }
        self.importing.insert(
            key,
            Importing {
                delivery: d,
                len,
                slot,
            },
        );
        Ok(false)
    }

    /// Whether a transfer from another pool that `wait` would take is on the copy engine.
    pub(super) fn import_pending(&self, domain: DomainId, wait: &super::Wait) -> bool {
        let wanted = |d: &Partial| {
            d.receiver == domain
                && match wait {
                    super::Wait::Queued(None) => d.ticket.is_none(),
                    super::Wait::Queued(Some(s)) => d.ticket.is_none() && d.source == *s,
                    super::Wait::Ticket(s, t) => d.source == *s && d.ticket == Some(t.0),
                }
        };
        self.importing.values().any(|im| wanted(&im.delivery))
            || self
                .in_links
                .values()
                .any(|l| l.backlog.iter().any(&wanted))
    }

    /// Copies the copy engine finished: queue each for its receiver and tell the source.
    pub(super) fn imports_done(&mut self) {
        for done in self.copier.finished() {
            self.counts.engine_busy_us += u64::try_from(done.busy.as_micros()).unwrap_or(u64::MAX);
            self.finish_import(done.key, done.to, done.result);
            let token = done.key.0;
            if let Err(why) = self.accept_backlog(token) {
                self.drop_in_link(token, &why);
            }
        }
    }

    /// A transfer from another pool is in its buffer (or failed to get there): queue it for
    /// its receiver and tell the source.
    fn finish_import(
        &mut self,
        key: (u64, u64),
        to: Option<Mapping<ReadWrite>>,
        copied: Result<(), String>,
    ) {
        let Some(im) = self.importing.remove(&key) else {
            return;
        };
        let (token, id) = key;
        let d = &im.delivery;
        if let (Some(slot), Some(map)) = (im.slot, to) {
            self.store.return_write_map(slot, map);
        }
        // A strong transfer whose link broke was reported failed to its sender: it must not
        // arrive. A weak one may have been reported done: it arrives.
        let link_up = self.in_links.contains_key(&token) || self.remote_in.contains_key(&token);
        let early = answered_on_acceptance(d.mode.into(), d.strength.into());
        let result = match copied {
            Err(e) => Err(fail(ErrorKind::Unavailable, format!("copy failed: {e}"))),
            Ok(()) if !link_up && !early => Err(fail(ErrorKind::Unavailable, "link gone")),
            Ok(()) => self
                .ledger
                .import(
                    d.receiver,
                    d.source,
                    d.mode,
                    d.strength,
                    im.len,
                    d.ticket.map(cosh_core::Ticket),
                )
                .map_err(Failure::from),
        };
        let error = match result {
            Ok(imported) => {
                self.imported(d, im.len, imported.buffer, im.slot);
                None
            }
            Err(f) => {
                if let Some(slot) = im.slot {
                    self.store.unreserve(slot, d.receiver);
                }
                Some((error_code(f.kind), truncate(&f.message, 1024)))
            }
        };
        let reply = LinkMessage::Delivered { id, error };
        if self.remote_in.contains_key(&token) {
            self.remote_reply(token, &reply);
        } else {
            self.link_reply(token, reply);
        }
    }

    /// A copied transfer is in the ledger: its buffer gets its slot (sealed for a strong
    /// share), and the receiver is woken.
    fn imported(
        &mut self,
        d: &Partial,
        len: u64,
        buffer: Option<cosh_core::ledger::NewBuffer>,
        slot: Option<SlotId>,
    ) {
        if let (Some(nb), Some(slot)) = (buffer, slot) {
            self.store.bind(nb.id, slot);
            if nb.seal
                && let Some(memfd) = self.store.prepare_seal(slot)
            {
                // A fresh buffer nobody has seen: the seal is quick.
                if memfd.seal_write().is_ok() {
                    self.store.mark_sealed(slot);
                    self.counts.by_seal += 1;
                }
            }
        }
        match d.mode {
            Mode::Move => self.counts.moves += 1,
            Mode::Share => self.counts.shares += 1,
            Mode::Copy => self.counts.copies += 1,
        }
        self.counts.by_copy += 1;
        self.counts.copied_bytes += len;
        self.counts.imported += 1;
        self.wake(d.receiver);
    }

    /// Sends a message on an incoming link (dropped with the link if it broke).
    fn link_reply(&mut self, token: u64, m: LinkMessage) {
        let Some(link) = self.in_links.get_mut(&token) else {
            return;
        };
        let sent = encode(&Message::Link(m))
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                link.outbox
                    .send(&link.sock, bytes, Vec::new())
                    .map_err(|e| e.to_string())
            });
        if sent.is_err() {
            self.in_links.remove(&token);
        }
    }

    /// Opens a link over TCP to the block manager of `pool` on another host.
    fn connect_remote(
        &mut self,
        pool: PoolId,
        host: &str,
        port: u16,
        tls: bool,
    ) -> Result<RemoteIo, Failure> {
        let unreachable = |why: String| {
            fail(
                ErrorKind::Unavailable,
                format!("cannot reach the block manager of pool {pool} at {host}:{port}: {why}"),
            )
        };
        let Some(token) = self.config.link_token.clone() else {
            return Err(unreachable(
                "no link token: start this block manager with --link-token-file".into(),
            ));
        };
        use std::net::ToSocketAddrs;
        let addrs: Vec<std::net::SocketAddr> = (host, port)
            .to_socket_addrs()
            .map_err(|e| unreachable(e.to_string()))?
            .collect();
        let mut last = "no address".to_string();
        let mut stream = None;
        for a in addrs {
            match std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_secs(5)) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = e.to_string(),
            }
        }
        let stream = stream.ok_or_else(|| unreachable(last))?;
        let transport = if tls {
            let Some(client) = self.config.tls.as_ref().and_then(|t| t.client.clone()) else {
                return Err(unreachable(
                    "TLS needs the roots to trust: start this block manager with --tls-ca".into(),
                ));
            };
            let name = rustls_pki_types::ServerName::try_from(host.to_string())
                .map_err(|e| unreachable(e.to_string()))?;
            let conn = rustls::ClientConnection::new(client, name)
                .map_err(|e| unreachable(e.to_string()))?;
            Transport::Tls(Box::new(rustls::Connection::Client(conn)), stream)
        } else {
            Transport::Plain(stream)
        };
        let key = self.next_client;
        self.next_client += 1;
        let io = RemoteIo::start(
            key,
            transport,
            self.remote_tx.clone(),
            std::sync::Arc::clone(&self.remote_bell),
        )
        .map_err(unreachable)?;
        let open = Message::Link(LinkMessage::OpenRemote {
            pool: self.config.pool.0,
            min_version: *PROTOCOL_VERSIONS.start(),
            max_version: *PROTOCOL_VERSIONS.end(),
            token,
        });
        let frame = encode(&open).map_err(|e| fail(ErrorKind::Protocol, e.to_string()))?;
        if !io.send(ToIo::Send {
            frame,
            body: Vec::new(),
        }) {
            return Err(unreachable("its connection thread stopped".into()));
        }
        self.remote_out.insert(key, pool);
        Ok(io)
    }

    /// Takes the TCP connections waiting on the listener: links from other hosts.
    pub(super) fn accept_tcp(&mut self) {
        loop {
            let Some(listener) = self.tcp_listener.as_ref() else {
                return;
            };
            let stream = match listener.accept() {
                Ok((s, _)) => s,
                Err(_) => return,
            };
            let transport = match self.config.tls.as_ref().and_then(|t| t.server.clone()) {
                Some(server) => match rustls::ServerConnection::new(server) {
                    Ok(c) => Transport::Tls(Box::new(rustls::Connection::Server(c)), stream),
                    Err(_) => continue,
                },
                None => Transport::Plain(stream),
            };
            let key = self.next_client;
            self.next_client += 1;
            if let Ok(io) = RemoteIo::start(
                key,
                transport,
                self.remote_tx.clone(),
                std::sync::Arc::clone(&self.remote_bell),
            ) {
                self.remote_in.insert(
                    key,
                    RemoteIn {
                        io,
                        pool: None,
                        since: Instant::now(),
                    },
                );
            }
        }
    }

    /// When the next connection from another host that has not opened runs out of time.
    pub(super) fn remote_open_deadline(&self) -> Option<Instant> {
        self.remote_in
            .values()
            .filter(|l| l.pool.is_none())
            .map(|l| l.since + OPEN_WITHIN)
            .min()
    }

    /// Drops the connections from other hosts that did not open in time.
    pub(super) fn expire_remote_opens(&mut self) {
        let now_ = Instant::now();
        let late: Vec<u64> = self
            .remote_in
            .iter()
            .filter(|(_, l)| l.pool.is_none() && l.since + OPEN_WITHIN <= now_)
            .map(|(k, _)| *k)
            .collect();
        for key in late {
            let why = "no OpenRemote within 10 s";
            self.drop_remote_in(key, Some(protocol_error(why)));
        }
    }

    /// What the links' I/O threads heard.
    pub(super) fn remote_ready(&mut self) {
        let _ = self.remote_bell.take();
        while let Ok((key, m)) = self.remote_rx.try_recv() {
            if let Some(&pool) = self.remote_out.get(&key) {
                match m {
                    FromIo::Frame(frame) => {
                        self.on_out_message(pool, Ok(frame));
                    }
                    FromIo::Closed(why) => {
                        self.remote_out.remove(&key);
                        self.link_lost(pool, &why);
                    }
                    FromIo::Stream(_) | FromIo::Filled(..) => {
                        self.link_lost(pool, "it sent a transfer on a link it did not open");
                    }
                }
                continue;
            }
            if self.remote_in.contains_key(&key) {
                self.on_remote_in(key, m);
            }
        }
    }

    /// Something from a block manager on another host that opened a link to this one.
    fn on_remote_in(&mut self, key: u64, m: FromIo) {
        let pool = self.remote_in.get(&key).and_then(|l| l.pool);
        match (pool, m) {
            (_, FromIo::Closed(_)) => self.drop_remote_in(key, None),
            (
                None,
                FromIo::Frame(Message::Link(LinkMessage::OpenRemote {
                    pool,
                    min_version,
                    max_version,
                    token,
                })),
            ) => {
                let expected = self.config.link_token.as_deref().unwrap_or("");
                let refusal = if expected.is_empty() || !same_token(expected, &token) {
                    Some("wrong link token".to_string())
                } else if pool == self.config.pool.0 {
                    Some(format!("pool {pool} is this block manager's own"))
                } else {
                    cosh_proto::negotiate(min_version, max_version)
                        .err()
                        .map(|r| r.to_string())
                };
                if let Some(reason) = refusal {
                    return self.drop_remote_in(key, Some(Message::Refused { reason }));
                }
                let version = cosh_proto::negotiate(min_version, max_version)
                    .unwrap_or(*PROTOCOL_VERSIONS.end());
                if let Some(l) = self.remote_in.get_mut(&key) {
                    l.pool = Some(PoolId(pool));
                }
                self.forget_gone_of(PoolId(pool));
                let opened = Message::Link(LinkMessage::Opened {
                    pool: self.config.pool.0,
                    version,
                });
                self.remote_send(key, &opened);
            }
            (
                Some(from),
                FromIo::Stream(LinkMessage::Stream {
                    id,
                    source,
                    receiver,
                    mode,
                    strength,
                    ticket,
                    len,
                }),
            ) => {
                let d = Partial {
                    id,
                    source: DomainId::from_bits(source),
                    receiver: DomainId::from_bits(receiver),
                    mode: Mode::from(mode),
                    strength: Strength::from(strength),
                    ticket,
                    pieces: Vec::new(),
                };
                if d.source.pool != from {
                    let why = format!("a transfer from {} on the link of pool {from}", d.source);
                    return self.drop_remote_in(key, Some(protocol_error(&why)));
                }
                let sealed = d.mode == Mode::Share && d.strength == Strength::Strong;
                let taken = self
                    .check_import(d.receiver, len)
                    .and_then(|()| self.reserve_import(d.receiver, len, sealed));
                match taken {
                    Ok((slot, to)) => {
                        self.importing.insert(
                            (key, id),
                            Importing {
                                delivery: d,
                                len,
                                slot,
                            },
                        );
                        if let Some(l) = self.remote_in.get(&key) {
                            l.io.send(ToIo::Buffer(to));
                        }
                        self.remote_current.insert(key, id);
                        self.remote_reply(key, &LinkMessage::Accepted { id });
                    }
                    Err(f) => {
                        // The bytes still come: read and drop them.
                        if let Some(l) = self.remote_in.get(&key) {
                            l.io.send(ToIo::Buffer(None));
                        }
                        let error = Some((error_code(f.kind), truncate(&f.message, 1024)));
                        self.remote_reply(key, &LinkMessage::Delivered { id, error });
                    }
                }
            }
            (Some(_), FromIo::Filled(to, result)) => {
                if let Some(id) = self.remote_current.remove(&key) {
                    self.finish_import((key, id), to, result);
                }
            }
            (Some(_), FromIo::Frame(Message::Link(LinkMessage::Forget { .. }))) => {}
            (Some(from), FromIo::Frame(Message::Link(LinkMessage::Gone { domain }))) => {
                if let Err(why) = self.remote_gone(from, DomainId::from_bits(domain)) {
                    self.drop_remote_in(key, Some(protocol_error(&why)));
                }
            }
            (_, FromIo::Frame(other)) => {
                let why = format!("unexpected {} message", other.name());
                self.drop_remote_in(key, Some(protocol_error(&why)));
            }
            (None, _) => self.drop_remote_in(key, Some(protocol_error("expected OpenRemote"))),
            (Some(_), FromIo::Stream(_)) => {
                self.drop_remote_in(key, Some(protocol_error("a malformed transfer")));
            }
        }
    }

    fn remote_send(&mut self, key: u64, m: &Message) {
        let sent = encode(m).ok().is_some_and(|frame| {
            self.remote_in.get(&key).is_some_and(|l| {
                l.io.send(ToIo::Send {
                    frame,
                    body: Vec::new(),
                })
            })
        });
        if !sent {
            self.drop_remote_in(key, None);
        }
    }

    fn remote_reply(&mut self, key: u64, m: &LinkMessage) {
        self.remote_send(key, &Message::Link(m.clone()));
    }

    /// Ends an incoming link from another host (after `last`, if any); the transfers it was
    /// bringing in are dropped and their memory given back.
    fn drop_remote_in(&mut self, key: u64, last: Option<Message>) {
        if let Some(m) = last
            && let Ok(frame) = encode(&m)
            && let Some(l) = self.remote_in.get(&key)
        {
            l.io.send(ToIo::Send {
                frame,
                body: Vec::new(),
            });
        }
        // Dropping the I/O handle joins its thread (after it sent what it had).
        self.remote_in.remove(&key);
        self.remote_current.remove(&key);
        let keys: Vec<(u64, u64)> = self
            .importing
            .keys()
            .filter(|(t, _)| *t == key)
            .copied()
            .collect();
        for k in keys {
            if let Some(im) = self.importing.remove(&k)
                && let Some(slot) = im.slot
            {
                self.store.unreserve(slot, im.delivery.receiver);
            }
        }
    }

    /// Every link, for status.
    pub(super) fn link_status(&self) -> Vec<cosh_proto::ops::LinkStatus> {
        use cosh_proto::ops::LinkStatus;
        let in_flight = |key: u64| self.importing.keys().filter(|(t, _)| *t == key).count() as u64;
        // Every configured link, open or not yet.
        let out = self.config.links.iter().map(|(pool, addr)| {
            let link = self.out_links.get(pool);
            LinkStatus {
                pool: pool.0,
                outgoing: true,
                in_flight: link.map_or(0, |l| l.inflight.len() as u64),
                open: link.is_some(),
                remote: matches!(addr, LinkAddr::Tcp { .. }),
            }
        });
        let incoming = self.in_links.iter().map(|(token, l)| LinkStatus {
            pool: l.pool.0,
            outgoing: false,
            in_flight: in_flight(*token),
            open: true,
            remote: false,
        });
        let remote = self
            .remote_in
            .iter()
            .filter_map(|(key, l)| Some((*key, l.pool?)))
            .map(|(key, pool)| LinkStatus {
                pool: pool.0,
                outgoing: false,
                in_flight: in_flight(key),
                open: true,
                remote: true,
            });
        out.chain(incoming)
            .chain(remote)
            .take(cosh_proto::ops::MAX_STATUS_LINKS)
            .collect()
    }

    /// Tells every block manager this one sends transfers to that `domain` is gone (after
    /// whatever it sent them).
    pub(super) fn tell_links_gone(&mut self, domain: DomainId) {
        let gone = Message::Link(LinkMessage::Gone {
            domain: domain.to_bits(),
        });
        let Ok(bytes) = encode(&gone) else {
            return;
        };
        // Where its transfers went (after them, in order), and where transfers to it may
        // come from (so their senders stop).
        let mut broken = Vec::new();
        for (pool, link) in &mut self.out_links {
            if let Err(e) = link.send(bytes.clone(), Vec::new(), Vec::new()) {
                broken.push((*pool, e));
            }
        }
        for (pool, e) in broken {
            self.link_lost(pool, &e);
        }
        let mut dropped = Vec::new();
        for (token, link) in &mut self.in_links {
            if let Err(e) = link.outbox.send(&link.sock, bytes.clone(), Vec::new()) {
                dropped.push((*token, e.to_string()));
            }
        }
        for (token, why) in dropped {
            self.drop_in_link(token, &why);
        }
        let remote: Vec<u64> = self
            .remote_in
            .iter()
            .filter(|(_, l)| l.pool.is_some())
            .map(|(k, _)| *k)
            .collect();
        for key in remote {
            self.remote_send(key, &gone);
        }
    }

    /// Tells linked block managers which of their mappings of this pool's slots to drop.
    pub(super) fn flush_link_forgets(&mut self) {
        let forgets = self.store.take_link_forgets();
        if forgets.is_empty() {
            return;
        }
        let mut by_pool: HashMap<PoolId, Vec<u64>> = HashMap::new();
        for (pool, slot) in forgets {
            by_pool.entry(pool).or_default().push(slot);
        }
        for (pool, slots) in by_pool {
            let mut broken = None;
            if let Some(link) = self.out_links.get_mut(&pool).filter(|l| !l.is_remote()) {
                for page in slots.chunks(cosh_proto::link::MAX_LINK_FORGET) {
                    let m = Message::Link(LinkMessage::Forget {
                        slots: page.to_vec(),
                    });
                    let Ok(bytes) = encode(&m) else { continue };
                    if let Err(e) = link.send(bytes, Vec::new(), Vec::new()) {
                        broken = Some(e);
                        break;
                    }
                }
            }
            if let Some(e) = broken {
                self.link_lost(pool, &e.to_string());
            }
        }
    }
}

/// An incoming link from another host.
pub(super) struct RemoteIn {
    io: RemoteIo,
    /// The pool it speaks for, once it opened with the right token.
    pool: Option<PoolId>,
    /// When it connected: one that has not opened within [`OPEN_WITHIN`] is dropped.
    since: Instant,
}

/// How long a connection from another host has to present its token.
pub(super) const OPEN_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Compares tokens without stopping at the first difference.
fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

fn protocol_error(why: &str) -> Message {
    Message::Error {
        kind: ErrorKind::Protocol,
        message: truncate(&format!("protocol violation on a link: {why}"), 1024),
    }
}
