//! libcosh: the Cosh aggregate API for C programs, under the paper's names (Table 2:
//! `cosh_agg_alloc`, `cosh_agg_select`, `cosh_agg_transfer`, `cosh_attach_recv`, ...), declared
//! in `include/cosh.h` (generated from [`ffi`] by cbindgen; a test fails when it is stale).
//!
//! - [`ffi`]: the C functions, the only module with unsafe code (C strings, out-parameters).
//!   Every one catches panics (a panic never crosses into C: it becomes [`COSH_ERR_PANIC`]),
//!   checks every handle and pointer it is given, and reports failures by return code with a
//!   message for [`ffi::cosh_last_error`].
//! - [`fs`]: CoshFS clients for C (`cosh_fs_*`), each with a domain of its own.
//! - [`pipe`]: Cosh pipes for C (`cosh_pipe_*`), byte streams between processes.
//! - This module: the codes, the handles and the process's domain, in safe Rust.
//!
//! **Handles.** A `cosh_agg *` names an aggregate of the process's domain: its number with a
//! tag in the low bits, never an address, so nothing behind it can dangle; a pointer that
//! does not carry the tag (NULL, a stray address) is refused with [`COSH_ERR_BAD_HANDLE`], and
//! one that carries it but names no aggregate of the domain (already released, say) is
//! refused by the block manager with the same code. Iterators are named the same way.
//!
//! **The domain.** One per process (`cosh_connect`), shared by every thread: calls are
//! serialized, and a receive that waits holds the others until it returns.

#![allow(non_camel_case_types)]

pub mod ffi;
pub mod fs;
pub mod pipe;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::CString;
use std::sync::{Mutex, MutexGuard};

use cosh::{Agg, Domain, ErrorKind, Location, Mode, Rights, Strength, TransferFlags};

/// What a call that returns `int` says: [`COSH_OK`], or one of the negative codes below
/// (the message is in `cosh_last_error()`).
pub type cosh_status = i32;
/// A domain's id (its pool in the high 32 bits).
pub type cosh_domainid = u64;
/// A transfer mode: [`COSH_MOVE`], [`COSH_SHARE`] or [`COSH_COPY`].
pub type cosh_tx_mode = u32;
/// Transfer flags: [`COSH_TRANSFER_STRONG`] or [`COSH_TRANSFER_WEAK`], optionally with
/// [`COSH_TRANSFER_FAIL_IF_RELATED`].
pub type cosh_tx_flags = u32;
/// Access rights: [`COSH_RIGHTS_NONE`], [`COSH_RIGHTS_READ`] or [`COSH_RIGHTS_READ_WRITE`].
pub type cosh_rights = u32;
/// A ticket naming one attached transfer between a source and a destination.
pub type cosh_attach_ticket = u64;

/// An aggregate of the process's domain (opaque: see the module documentation).
pub struct cosh_agg {
    _opaque: [u8; 0],
}

/// An iteration over an aggregate's pieces (opaque).
pub struct cosh_agg_iter {
    _opaque: [u8; 0],
}

/// Success.
pub const COSH_OK: cosh_status = 0;
/// A bad argument: a NULL pointer where one is needed, an unknown mode, flag or rights value,
/// a string that is not UTF-8.
pub const COSH_ERR_INVALID: cosh_status = -1;
/// Not an aggregate (or iterator) of this domain: never one, or already released.
pub const COSH_ERR_BAD_HANDLE: cosh_status = -2;
/// No `cosh_connect` yet (or after `cosh_disconnect`).
pub const COSH_ERR_NOT_CONNECTED: cosh_status = -3;
/// The domain's rights on the aggregate do not allow it (or would go up).
pub const COSH_ERR_RIGHTS: cosh_status = -4;
/// Past the aggregate's end, or too large.
pub const COSH_ERR_RANGE: cosh_status = -5;
/// No such domain, name or ticket.
pub const COSH_ERR_NOT_FOUND: cosh_status = -6;
/// Nothing to receive (yet).
pub const COSH_ERR_AGAIN: cosh_status = -7;
/// The block manager cannot be reached or cannot serve it now.
pub const COSH_ERR_UNAVAILABLE: cosh_status = -8;
/// The block manager and the library disagree (a bug, or a mismatched version).
pub const COSH_ERR_PROTOCOL: cosh_status = -9;
/// Related aggregates hold more rights and the flags said to fail rather than copy.
pub const COSH_ERR_RELATED: cosh_status = -10;
/// Already there: the name is taken, or the process is already connected.
pub const COSH_ERR_EXISTS: cosh_status = -11;
/// A fault: the domain has no mapping of a buffer it reached for.
pub const COSH_ERR_FAULT: cosh_status = -12;
/// A quota of the block manager: the domain made too many bytes or buffers that are still
/// alive, has too many transfers waiting for their receivers, or its user too many
/// connections. Free some (or let receivers catch up) and try again.
pub const COSH_ERR_QUOTA: cosh_status = -13;
/// A bug in libcosh (a panic, caught at the boundary).
pub const COSH_ERR_PANIC: cosh_status = -99;

/// Move: the sender needs read/write and keeps nothing; the receiver gets read/write.
pub const COSH_MOVE: cosh_tx_mode = 1;
/// Share: the sender needs read and keeps read-only; the receiver gets read-only.
pub const COSH_SHARE: cosh_tx_mode = 2;
/// Copy: the sender keeps its rights; the receiver gets a read/write copy.
pub const COSH_COPY: cosh_tx_mode = 3;

/// A strong transfer (the default).
pub const COSH_TRANSFER_STRONG: cosh_tx_flags = 0;
/// A weak transfer (between domains that trust each other).
pub const COSH_TRANSFER_WEAK: cosh_tx_flags = 1;
/// Fail rather than copy when related aggregates hold more rights.
pub const COSH_TRANSFER_FAIL_IF_RELATED: cosh_tx_flags = 2;

/// No access.
pub const COSH_RIGHTS_NONE: cosh_rights = 0;
/// Read-only.
pub const COSH_RIGHTS_READ: cosh_rights = 1;
/// Read and write.
pub const COSH_RIGHTS_READ_WRITE: cosh_rights = 3;

/// `cosh_agg_receive`'s source for "from any domain".
pub const COSH_ANY_DOMAIN: cosh_domainid = 0xFFFF_FFFF_FFFF_FFFF;
/// What `cosh_agg_getlen` returns when it fails.
pub const COSH_BAD_LENGTH: usize = usize::MAX;
/// What `cosh_agg_getrights` returns when it fails.
pub const COSH_BAD_RIGHTS: cosh_rights = 0xFFFF_FFFF;

/// A failure on its way to C: a code and a message.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: cosh_status,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(code: cosh_status, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }
}

impl From<cosh::Error> for Failure {
    fn from(e: cosh::Error) -> Failure {
        let code = match e.kind() {
            ErrorKind::UnknownAggregate => COSH_ERR_BAD_HANDLE,
            ErrorKind::InsufficientRights | ErrorKind::RightsUpgrade => COSH_ERR_RIGHTS,
            ErrorKind::OutOfRange | ErrorKind::TooLarge | ErrorKind::TooFragmented => {
                COSH_ERR_RANGE
            }
            ErrorKind::UnknownDomain | ErrorKind::UnknownTicket | ErrorKind::UnknownName => {
                COSH_ERR_NOT_FOUND
            }
            ErrorKind::NothingPending => COSH_ERR_AGAIN,
            ErrorKind::RelatedAggregates => COSH_ERR_RELATED,
            ErrorKind::NameTaken | ErrorKind::TicketReused => COSH_ERR_EXISTS,
            ErrorKind::Fault => COSH_ERR_FAULT,
            ErrorKind::SelfTransfer => COSH_ERR_INVALID,
            ErrorKind::Unavailable | ErrorKind::StalePlan => COSH_ERR_UNAVAILABLE,
            ErrorKind::Protocol => COSH_ERR_PROTOCOL,
            ErrorKind::OverQuota => COSH_ERR_QUOTA,
        };
        Failure::new(code, e.to_string())
    }
}

pub(crate) type Outcome<T> = std::result::Result<T, Failure>;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Keeps `message` as this thread's last error.
pub(crate) fn set_last_error(message: &str) {
    let text = CString::new(message.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = text);
}

/// This thread's last error, as a C string that lives until the thread's next failure.
pub(crate) fn last_error_ptr() -> *const std::ffi::c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// Runs `f` as one C call: a panic becomes [`COSH_ERR_PANIC`], a failure is kept for
/// `cosh_last_error` and turned into `fail(code)`.
pub(crate) fn call<T>(fail: impl FnOnce(cosh_status) -> T, f: impl FnOnce() -> Outcome<T>) -> T {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            set_last_error(&e.message);
            fail(e.code)
        }
        Err(_) => {
            set_last_error("a bug in libcosh (a panic, stopped at the C boundary)");
            fail(COSH_ERR_PANIC)
        }
    }
}

static DOMAIN: Mutex<Option<Domain>> = Mutex::new(None);

/// The process's domain, locked (a panic that poisoned the lock left no broken state behind:
/// the domain's own calls keep it consistent).
pub(crate) fn domain() -> MutexGuard<'static, Option<Domain>> {
    DOMAIN.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `f` with the connected domain.
pub(crate) fn with_domain<T>(f: impl FnOnce(&mut Domain) -> Outcome<T>) -> Outcome<T> {
    let mut guard = domain();
    let d = guard.as_mut().ok_or_else(|| {
        Failure::new(
            COSH_ERR_NOT_CONNECTED,
            "not connected: call cosh_connect first",
        )
    })?;
    f(d)
}

const TAG_BITS: u32 = 4;
const AGG_TAG: usize = 0xA;

/// A number with `tag` in its low bits: what C sees as a handle.
fn tagged(id: usize, tag: usize) -> usize {
    id << TAG_BITS | tag
}

/// The number behind a handle that carries `tag`; `None` for anything else.
fn untagged(bits: usize, tag: usize) -> Option<usize> {
    (bits & ((1 << TAG_BITS) - 1) == tag).then_some(bits >> TAG_BITS)
}

/// The handle C sees for `agg`.
pub(crate) fn agg_handle(agg: Agg) -> *mut cosh_agg {
    tagged(agg.0 as usize, AGG_TAG) as *mut cosh_agg
}

/// The aggregate a handle names, or why it names none.
pub(crate) fn agg_of(handle: *const cosh_agg) -> Outcome<Agg> {
    untagged(handle as usize, AGG_TAG)
        .map(|id| Agg(id as u64))
        .ok_or_else(|| {
            Failure::new(
                COSH_ERR_BAD_HANDLE,
                format!("{handle:p} is not a cosh_agg handle"),
            )
        })
}

/// Objects C holds by handle (iterations, file system clients, pipe ends): each kept under a
/// number of its own, named by that number with the registry's tag, so that a handle of the
/// wrong kind, a stray pointer or one already ended is refused, never followed.
pub(crate) struct Registry<T> {
    tag: usize,
    /// What C calls it, for messages.
    what: &'static str,
    next: std::sync::atomic::AtomicUsize,
    items: Mutex<BTreeMap<usize, T>>,
}

impl<T> Registry<T> {
    pub(crate) const fn new(tag: usize, what: &'static str) -> Registry<T> {
        Registry {
            tag,
            what,
            next: std::sync::atomic::AtomicUsize::new(1),
            items: Mutex::new(BTreeMap::new()),
        }
    }

    fn items(&self) -> MutexGuard<'_, BTreeMap<usize, T>> {
        self.items.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `item`; returns its handle's bits.
    pub(crate) fn add(&self, item: T) -> usize {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.items().insert(id, item);
        tagged(id, self.tag)
    }

    fn bad(&self, bits: usize) -> Failure {
        Failure::new(
            COSH_ERR_BAD_HANDLE,
            format!("{:p} is not {}", bits as *const u8, self.what),
        )
    }

    /// Runs `f` on what a handle names (holding the registry meanwhile).
    pub(crate) fn with<R>(&self, bits: usize, f: impl FnOnce(&mut T) -> R) -> Outcome<R> {
        let id = untagged(bits, self.tag).ok_or_else(|| self.bad(bits))?;
        let mut items = self.items();
        let item = items.get_mut(&id).ok_or_else(|| self.bad(bits))?;
        Ok(f(item))
    }

    /// Forgets what a handle names, handing it back.
    pub(crate) fn take(&self, bits: usize) -> Outcome<T> {
        let id = untagged(bits, self.tag).ok_or_else(|| self.bad(bits))?;
        self.items().remove(&id).ok_or_else(|| self.bad(bits))
    }
}

/// Decodes a transfer mode.
pub(crate) fn mode_of(mode: cosh_tx_mode) -> Outcome<Mode> {
    match mode {
        COSH_MOVE => Ok(Mode::Move),
        COSH_SHARE => Ok(Mode::Share),
        COSH_COPY => Ok(Mode::Copy),
        m => Err(Failure::new(
            COSH_ERR_INVALID,
            format!("{m} is not a transfer mode (COSH_MOVE, COSH_SHARE, COSH_COPY)"),
        )),
    }
}

/// Encodes a transfer mode.
pub(crate) fn mode_code(mode: Mode) -> cosh_tx_mode {
    match mode {
        Mode::Move => COSH_MOVE,
        Mode::Share => COSH_SHARE,
        Mode::Copy => COSH_COPY,
    }
}

/// Decodes transfer flags.
pub(crate) fn flags_of(flags: cosh_tx_flags) -> Outcome<TransferFlags> {
    TransferFlags::from_bits(flags).map_err(|unknown| {
        Failure::new(
            COSH_ERR_INVALID,
            format!("unknown transfer flags {unknown:#x}"),
        )
    })
}

/// The flags a receiver learns: the strength.
pub(crate) fn strength_code(strength: Strength) -> cosh_tx_flags {
    match strength {
        Strength::Weak => COSH_TRANSFER_WEAK,
        Strength::Strong => COSH_TRANSFER_STRONG,
    }
}

/// Decodes rights.
pub(crate) fn rights_of(rights: cosh_rights) -> Outcome<Rights> {
    match rights {
        COSH_RIGHTS_NONE => Ok(Rights::None),
        COSH_RIGHTS_READ => Ok(Rights::Read),
        COSH_RIGHTS_READ_WRITE => Ok(Rights::ReadWrite),
        r => Err(Failure::new(
            COSH_ERR_INVALID,
            format!("{r} is not a rights value"),
        )),
    }
}

/// Encodes rights.
pub(crate) fn rights_code(rights: Rights) -> cosh_rights {
    match rights {
        Rights::None => COSH_RIGHTS_NONE,
        Rights::Read => COSH_RIGHTS_READ,
        Rights::ReadWrite => COSH_RIGHTS_READ_WRITE,
    }
}

/// An iteration in progress: the pieces, and the next one.
pub(crate) struct Iter {
    pub(crate) pieces: Vec<Location>,
    pub(crate) next: usize,
    pub(crate) write: bool,
}

/// Iterations in progress.
pub(crate) static ITERS: Registry<Iter> = Registry::new(0xC, "an iteration in progress");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_stops_at_the_boundary_as_a_code() {
        let code = call(|c| c, || -> Outcome<cosh_status> { panic!("a bug") });
        assert_eq!(code, COSH_ERR_PANIC);
        let said = LAST_ERROR.with(|e| e.borrow().to_string_lossy().into_owned());
        assert!(said.contains("panic"), "{said}");
        // And the next call works.
        assert_eq!(call(|c| c, || Ok(COSH_OK)), COSH_OK);
    }

    #[test]
    fn the_c_constants_are_the_libraries_own() {
        assert_eq!(COSH_TRANSFER_WEAK, TransferFlags::WEAK_BIT);
        assert_eq!(
            COSH_TRANSFER_FAIL_IF_RELATED,
            TransferFlags::FAIL_IF_RELATED_BIT
        );
        assert_eq!(COSH_ANY_DOMAIN, u64::MAX);
        assert_eq!(COSH_BAD_RIGHTS, u32::MAX);
        assert_eq!(COSH_BAD_LENGTH, usize::MAX);
    }
}
