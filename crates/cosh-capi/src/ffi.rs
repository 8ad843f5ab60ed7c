//! The C functions of libcosh (declared in `include/cosh.h`). The only module of the crate
//! with unsafe code: reading C strings, taking buffers the caller lends, and writing through
//! out-parameters, each after a NULL check, with a SAFETY argument resting on the contract the
//! function's documentation states.
//!
//! Conventions for every function: functions returning `int` return `COSH_OK` or a negative
//! `COSH_ERR_*` code (`cosh_fs_*`: a negative errno); functions returning a pointer return
//! NULL on failure; either way `cosh_last_error()` then says why. Nothing here panics into C.
//! Thread safety: any thread may call any function; calls on the process's domain are
//! serialized.
//!
//! **Ownership.** Every `cosh_agg *` a function returns is a new reference the caller owns
//! and must release with `cosh_agg_decref` (or hand on by `cosh_agg_transfer` with
//! `COSH_MOVE` and then release). A reference passed in is borrowed unless the function says
//! it consumes it.

#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_int, c_void};
use std::time::Duration;

use cosh::{DomainId, Options, Ticket};

use crate::{
    COSH_ANY_DOMAIN, COSH_BAD_LENGTH, COSH_BAD_RIGHTS, COSH_ERR_EXISTS, COSH_ERR_INVALID, COSH_OK,
    Failure, ITERS, Iter, Outcome, agg_handle, agg_of, call, cosh_agg, cosh_agg_iter,
    cosh_attach_ticket, cosh_domainid, cosh_rights, cosh_status, cosh_tx_flags, cosh_tx_mode,
    domain, flags_of, mode_code, mode_of, rights_code, rights_of, strength_code, with_domain,
};

fn status(code: cosh_status) -> cosh_status {
    code
}

fn null_agg(_: cosh_status) -> *mut cosh_agg {
    std::ptr::null_mut()
}

/// A C string argument as UTF-8.
///
/// # Safety
/// `s` is NULL or points to a NUL-terminated string that stays valid for the call.
unsafe fn text<'a>(s: *const c_char, what: &str) -> Outcome<&'a str> {
    if s.is_null() {
        return Err(Failure::new(COSH_ERR_INVALID, format!("{what} is NULL")));
    }
    // SAFETY: not NULL (checked above), and the caller promises a NUL-terminated string
    // that outlives the call, which is as long as the borrow returned is used.
    let c = unsafe { CStr::from_ptr(s) };
    c.to_str()
        .map_err(|_| Failure::new(COSH_ERR_INVALID, format!("{what} is not UTF-8")))
}

/// Stores `value` through an out-parameter.
///
/// # Safety
/// `out` is NULL or points to writable memory for a `T`.
unsafe fn put<T>(out: *mut T, value: T, what: &str) -> Outcome<()> {
    if out.is_null() {
        return Err(Failure::new(COSH_ERR_INVALID, format!("{what} is NULL")));
    }
    // SAFETY: not NULL (checked above), and the caller promises writable memory for a `T`;
    // `write` does not read or drop what was there (plain C data).
    unsafe { out.write(value) };
    Ok(())
}

/// `len` bytes the caller lends for reading.
///
/// # Safety
/// `buf` points to `len` readable bytes not written during the call (or is NULL when `len`
/// is 0).
unsafe fn lent<'a>(buf: *const c_void, len: usize) -> Outcome<&'a [u8]> {
    if len == 0 {
        return Ok(&[]);
    }
    if buf.is_null() {
        return Err(Failure::new(COSH_ERR_INVALID, "the buffer is NULL"));
    }
    // SAFETY: not NULL (checked above), and the caller promises `len` readable bytes that
    // nothing writes while the slice is used (within the call).
    Ok(unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) })
}

/// `len` bytes the caller lends for writing.
///
/// # Safety
/// `buf` points to `len` writable bytes nothing else touches during the call (or is NULL
/// when `len` is 0).
unsafe fn lent_mut<'a>(buf: *mut c_void, len: usize) -> Outcome<&'a mut [u8]> {
    if len == 0 {
        return Ok(&mut []);
    }
    if buf.is_null() {
        return Err(Failure::new(COSH_ERR_INVALID, "the buffer is NULL"));
    }
    // SAFETY: not NULL (checked above), and the caller promises `len` writable bytes that
    // nothing else reads or writes while the slice is used (within the call).
    Ok(unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), len) })
}

fn connect(options: Options) -> Outcome<()> {
    let mut guard = domain();
    if guard.is_some() {
        return Err(Failure::new(
            COSH_ERR_EXISTS,
            "already connected (one domain per process)",
        ));
    }
    *guard = Some(cosh::Domain::connect_with(&options)?);
    Ok(())
}

/// Connects this process to its block manager as a domain named `name`, starting one with
/// embedded defaults if none answers at the default socket (`$COSH_SOCKET`, else the
/// runtime directory's).
///
/// # Safety
/// `name` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cosh_connect(name: *const c_char) -> c_int {
    call(status, || {
        // SAFETY: the caller's contract, as documented.
        let name = unsafe { text(name, "name") }?;
        connect(Options::new(name))?;
        Ok(COSH_OK)
    })
}

/// Connects as `cosh_connect` does, to the block manager at `socket`, starting none.
///
/// # Safety
/// `name` and `socket` are NULL or NUL-terminated strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cosh_connect_at(name: *const c_char, socket: *const c_char) -> c_int {
    call(status, || {
        // SAFETY: the caller's contract, as documented.
        let (name, socket) = unsafe { (text(name, "name")?, text(socket, "socket")?) };
        connect(Options::new(name).socket(socket).no_spawn())?;
        Ok(COSH_OK)
    })
}

/// Disconnects: the block manager releases every aggregate the domain still holds. Handles
/// name nothing afterwards.
#[unsafe(no_mangle)]
pub extern "C" fn cosh_disconnect() -> c_int {
    call(status, || {
        let mut guard = domain();
        match guard.take() {
            Some(_) => Ok(COSH_OK),
            None => Err(Failure::new(crate::COSH_ERR_NOT_CONNECTED, "not connected")),
        }
    })
}

/// This domain's id (0 when not connected).
#[unsafe(no_mangle)]
pub extern "C" fn cosh_domain_id() -> cosh_domainid {
    call(|_| 0, || with_domain(|d| Ok(d.id().to_bits())))
}

/// Why the last failing call of this thread failed. The string stays valid until this
/// thread's next failing call; it is never NULL.
#[unsafe(no_mangle)]
pub extern "C" fn cosh_last_error() -> *const c_char {
    crate::last_error_ptr()
}

/// `alloc`: a new read/write aggregate of `len` zeroed bytes. The caller owns the reference.
#[unsafe(no_mangle)]
pub extern "C" fn cosh_agg_alloc(len: usize) -> *mut cosh_agg {
    call(null_agg, || {
        with_domain(|d| Ok(agg_handle(d.alloc(len as u64)?)))
    })
}

/// `incref`: one more reference to `agg` (release it with `cosh_agg_decref`).
#[unsafe(no_mangle)]
pub extern "C" fn cosh_agg_incref(agg: *mut cosh_agg) -> c_int {
    call(status, || {
        let a = agg_of(agg)?;
        with_domain(|d| Ok(d.incref(a)?))?;
        Ok(COSH_OK)
    })
}

/// `decref`: releases one reference; the handle names nothing once the last one is gone (a
/// second release then fails with `COSH_ERR_BAD_HANDLE`).
#[unsafe(no_mangle)]
pub extern "C" fn cosh_agg_decref(agg: *mut cosh_agg) -> c_int {
    call(status, || {
        let a = agg_of(agg)?;
        with_domain(|d| Ok(d.decref(a)?))?;
        Ok(COSH_OK)
    })
}

/// `getlen`: the aggregate's length in bytes; `COSH_BAD_LENGTH` on failure.
#[unsafe(no_mangle)]
pub extern "C" fn cosh_agg_getlen(agg: *mut cosh_agg) -> usize {
    call(
        |_| COSH_BAD_LENGTH,
        || {
            let a = agg_of(agg)?;
            with_domain(|d| Ok(d.len(a)? as usize))
        },
    )
}

/// `getrights`: this domain's rights on the aggregate; `COSH_BAD_RIGHTS` on failure.
#[unsafe(no_mangle)]
pub extern "C" fn cosh_agg_getrights(agg: *mut cosh_agg) -> cosh_rights {
    call(
        |_| COSH_BAD_RIGHTS,
        || {
            let a = agg_of(agg)?;
            with_domain(|d| Ok(rights_code(d.rights(a)?)))
        },
    )
}

/// `select`: a new aggregate of bytes `offset..offset + len` of `agg` (sharing its buffers).
/// The caller owns the new reference; `agg` is only borrowed.
#[unsafe(no_mangle)]
pub extern "C" fn cosh_agg_select(agg: *mut cosh_agg, offset: usize, len: usize) -> *mut cosh_agg {
    call(null_agg, || {
        let a = agg_of(agg)?;
        with_domain(|d| Ok(agg_handle(d.select(a, offset as u64, len as u64)?)))
    })
}

/// `concat`: a new aggregate of `first`'s bytes then `second`'s (sharing their buffers). The
/// caller owns the new reference; both inputs are only borrowed.
#[unsafe(no_mangle)]
pub extern "C" fn cosh_agg_concat(first: *mut cosh_agg, second: *mut cosh_agg) -> *mut cosh_agg {
    call(null_agg, || {
        let (a, b) = (agg_of(first)?, agg_of(second)?);
        with_domain(|d| Ok(agg_handle(d.concat(a, b)?)))
    })
}

/// `downgrade`: lowers this domain's rights on `agg` to `rights` (never raises them).
#[unsafe(no_mangle)]
pub extern "C" fn cosh_agg_downgrade(agg: *mut cosh_agg, rights: cosh_rights) -> c_int {
    call(status, || {
        let a = agg_of(agg)?;
        let r = rights_of(rights)?;
        with_domain(|d| Ok(d.downgrade(a, r)?))?;
        Ok(COSH_OK)
    })
}

/// `find_related`: the aggregates of this domain related to `agg` that hold at least
/// `min_rights`. Up to `capacity` of them are stored in `out` (new references the caller
/// owns), and `*count` says how many there are in all (call again with more room if that is
/// more than `capacity`; those not stored are not referenced).
///
/// # Safety
/// `out` points to room for `capacity` handles (or is NULL when `capacity` is 0); `count` is
/// a writable `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cosh_agg_find_related(
    agg: *mut cosh_agg,
    min_rights: cosh_rights,
    out: *mut *mut cosh_agg,
    capacity: usize,
    count: *mut usize,
) -> c_int {
    call(status, || {
        let a = agg_of(agg)?;
        let r = rights_of(min_rights)?;
        if capacity > 0 && out.is_null() {
            return Err(Failure::new(COSH_ERR_INVALID, "out is NULL"));
        }
        if count.is_null() {
            return Err(Failure::new(COSH_ERR_INVALID, "count is NULL"));
        }
        let related = with_domain(|d| Ok(d.find_related(a, r)?))?;
        for (i, x) in related.iter().take(capacity).enumerate() {
            with_domain(|d| Ok(d.incref(*x)?))?;
            // SAFETY: `out` is not NULL when `capacity` > 0 (checked above), and the caller
            // promises room for `capacity` handles; `i` < `capacity`.
            unsafe { out.add(i).write(agg_handle(*x)) };
        }
        // SAFETY: the caller's contract for `count`, checked not NULL above.
        unsafe { put(count, related.len(), "count") }?;
        Ok(COSH_OK)
    })
}

/// Starts an iteration over the pieces of `agg` from byte `offset`, for reading (`write` 0)
/// or writing (`write` not 0, which needs read/write rights). End it with
/// `cosh_agg_iter_end`.
#[unsafe(no_mangle)]
pub extern "C" fn cosh_agg_iter_start(
    agg: *mut cosh_agg,
    offset: usize,
    write: c_int,
) -> *mut cosh_agg_iter {
    call(
        |_| std::ptr::null_mut(),
        || {
            let a = agg_of(agg)?;
            let write = write != 0;
            let pieces = with_domain(|d| {
                Ok(if write {
                    d.write_pieces(a, offset as u64)?
                        .into_iter()
                        .map(|p| p.0)
                        .collect()
                } else {
                    d.read_pieces(a, offset as u64)?
                        .into_iter()
                        .map(|p| p.0)
                        .collect()
                })
            })?;
            Ok(ITERS.add(Iter {
                pieces,
                next: 0,
                write,
            }) as *mut cosh_agg_iter)
        },
    )
}

/// The next piece of an iteration: its first byte in `*base` and its length in `*len`.
/// Returns 1 with a piece, 0 at the end (nothing stored), or an error code. A piece stays
/// mapped while this domain holds a reference to an aggregate of its buffer; write only to
/// pieces of an iteration started for writing.
///
/// # Safety
/// `base` and `len` are writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cosh_agg_iter_next(
    iter: *mut cosh_agg_iter,
    base: *mut *mut c_void,
    len: *mut usize,
) -> c_int {
    call(status, || {
        if base.is_null() || len.is_null() {
            return Err(Failure::new(COSH_ERR_INVALID, "base or len is NULL"));
        }
        let piece = ITERS.with(iter as usize, |it| {
            let p = it.pieces.get(it.next).copied();
            if p.is_some() {
                it.next += 1;
            }
            p.map(|p| (p, it.write))
        })?;
        let Some((piece, write)) = piece else {
            return Ok(0);
        };
        let (ptr, n) = with_domain(|d| {
            Ok(if write {
                let b = d.location_bytes_mut(&piece)?;
                (b.as_mut_ptr().cast::<c_void>(), b.len())
            } else {
                let b = d.location_bytes(&piece)?;
                (b.as_ptr().cast_mut().cast::<c_void>(), b.len())
            })
        })?;
        // SAFETY: both checked not NULL above; the caller promises they are writable.
        unsafe {
            put(base, ptr, "base")?;
            put(len, n, "len")?;
        }
        Ok(1)
    })
}

/// Ends an iteration (its handle names nothing afterwards).
#[unsafe(no_mangle)]
pub extern "C" fn cosh_agg_iter_end(iter: *mut cosh_agg_iter) -> c_int {
    call(status, || {
        ITERS.take(iter as usize)?;
        Ok(COSH_OK)
    })
}

/// Copies `len` bytes from `src` into `agg` at `offset` (needs read/write rights).
///
/// # Safety
/// `src` points to `len` readable bytes (or is NULL when `len` is 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cosh_agg_write(
    agg: *mut cosh_agg,
    offset: usize,
    src: *const c_void,
    len: usize,
) -> c_int {
    call(status, || {
        let a = agg_of(agg)?;
        // SAFETY: the caller's contract, as documented.
        let bytes = unsafe { lent(src, len) }?;
        with_domain(|d| Ok(d.write(a, offset as u64, bytes)?))?;
        Ok(COSH_OK)
    })
}

/// Copies `len` bytes of `agg` from `offset` into `dst`.
///
/// # Safety
/// `dst` points to `len` writable bytes (or is NULL when `len` is 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cosh_agg_read(
    agg: *mut cosh_agg,
    offset: usize,
    dst: *mut c_void,
    len: usize,
) -> c_int {
    call(status, || {
        let a = agg_of(agg)?;
        if len > 0 && dst.is_null() {
            return Err(Failure::new(COSH_ERR_INVALID, "dst is NULL"));
        }
        let bytes = with_domain(|d| Ok(d.read(a, offset as u64, len as u64)?))?;
        if len > 0 {
            // SAFETY: not NULL (checked above), the caller promises `len` writable bytes,
            // and `bytes` holds exactly `len` (the read fails otherwise); the two cannot
            // overlap (`bytes` is this library's own allocation).
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst.cast::<u8>(), len) };
        }
        Ok(COSH_OK)
    })
}

/// `transfer`: sends `agg` to domain `dest` by `mode` with `flags`. The sender's reference
/// stays (with the rights the mode leaves it: none after a move); release it as usual.
#[unsafe(no_mangle)]
pub extern "C" fn cosh_agg_transfer(
    agg: *mut cosh_agg,
    dest: cosh_domainid,
    mode: cosh_tx_mode,
    flags: cosh_tx_flags,
) -> c_int {
    call(status, || {
        let a = agg_of(agg)?;
        let (m, f) = (mode_of(mode)?, flags_of(flags)?);
        with_domain(|d| Ok(d.transfer(a, DomainId::from_bits(dest), m, f)?))?;
        Ok(COSH_OK)
    })
}

/// `receive`: waits for the next transfer from `src` (`COSH_ANY_DOMAIN`: from anyone) and
/// stores the new aggregate (a reference the caller owns), its mode and its flags.
///
/// # Safety
/// `agg`, `mode` and `flags` are writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cosh_agg_receive(
    src: cosh_domainid,
    agg: *mut *mut cosh_agg,
    mode: *mut cosh_tx_mode,
    flags: *mut cosh_tx_flags,
) -> c_int {
    call(status, || {
        if agg.is_null() || mode.is_null() || flags.is_null() {
            return Err(Failure::new(COSH_ERR_INVALID, "agg, mode or flags is NULL"));
        }
        let source = (src != COSH_ANY_DOMAIN).then(|| DomainId::from_bits(src));
        let got = with_domain(|d| Ok(d.receive(source, None)?))?;
        // SAFETY: checked not NULL above; the caller promises they are writable.
        unsafe {
            put(agg, agg_handle(got.agg), "agg")?;
            put(mode, mode_code(got.mode), "mode")?;
            put(flags, strength_code(got.strength), "flags")?;
        }
        Ok(COSH_OK)
    })
}

/// `attach_transfer`: like `cosh_agg_transfer`, and stores the ticket that names this
/// transfer for the receiver's `cosh_attach_recv` (send it in a message of your own).
///
/// # Safety
/// `ret_tkt` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cosh_attach_transfer(
    agg: *mut cosh_agg,
    dest: cosh_domainid,
    mode: cosh_tx_mode,
    flags: cosh_tx_flags,
    ret_tkt: *mut cosh_attach_ticket,
) -> c_int {
    call(status, || {
        let a = agg_of(agg)?;
        let (m, f) = (mode_of(mode)?, flags_of(flags)?);
        if ret_tkt.is_null() {
            return Err(Failure::new(COSH_ERR_INVALID, "ret_tkt is NULL"));
        }
        let t = with_domain(|d| Ok(d.attach_transfer(a, DomainId::from_bits(dest), m, f)?))?;
        // SAFETY: checked not NULL above; the caller promises it is writable.
        unsafe { put(ret_tkt, t.0, "ret_tkt") }?;
        Ok(COSH_OK)
    })
}

/// `attach_recv`: waits for the transfer `tkt` from `src` and stores its mode, its flags and
/// the new aggregate (a reference the caller owns).
///
/// # Safety
/// `mode`, `flags` and `agg` are writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cosh_attach_recv(
    src: cosh_domainid,
    tkt: cosh_attach_ticket,
    mode: *mut cosh_tx_mode,
    flags: *mut cosh_tx_flags,
    agg: *mut *mut cosh_agg,
) -> c_int {
    call(status, || {
        if agg.is_null() || mode.is_null() || flags.is_null() {
            return Err(Failure::new(COSH_ERR_INVALID, "mode, flags or agg is NULL"));
        }
        let got =
            with_domain(|d| Ok(d.attach_recv(DomainId::from_bits(src), Ticket(tkt), None)?))?;
        // SAFETY: checked not NULL above; the caller promises they are writable.
        unsafe {
            put(agg, agg_handle(got.agg), "agg")?;
            put(mode, mode_code(got.mode), "mode")?;
            put(flags, strength_code(got.strength), "flags")?;
        }
        Ok(COSH_OK)
    })
}

/// Lets weak transfers from `peer` keep this domain's mappings (trust it not to write what
/// it shares).
#[unsafe(no_mangle)]
pub extern "C" fn cosh_trust(peer: cosh_domainid) -> c_int {
    call(status, || {
        with_domain(|d| Ok(d.trust(DomainId::from_bits(peer))?))?;
        Ok(COSH_OK)
    })
}

/// Registers `name` for this domain at its block manager, for others' `cosh_name_lookup`.
///
/// # Safety
/// `name` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cosh_name_register(name: *const c_char) -> c_int {
    call(status, || {
        // SAFETY: the caller's contract, as documented.
        let name = unsafe { text(name, "name") }?;
        with_domain(|d| Ok(d.register(name)?))?;
        Ok(COSH_OK)
    })
}

/// Looks up the domain registered as `name`, waiting up to `timeout_ms` milliseconds for it
/// to appear (0: not at all).
///
/// # Safety
/// `name` is NULL or a NUL-terminated string; `id` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cosh_name_lookup(
    name: *const c_char,
    timeout_ms: u32,
    id: *mut cosh_domainid,
) -> c_int {
    call(status, || {
        // SAFETY: the caller's contract, as documented.
        let name = unsafe { text(name, "name") }?;
        if id.is_null() {
            return Err(Failure::new(COSH_ERR_INVALID, "id is NULL"));
        }
        let deadline = std::time::Instant::now() + Duration::from_millis(u64::from(timeout_ms));
        let found = loop {
            match with_domain(|d| Ok(d.lookup(name)?)) {
                Ok(found) => break found,
                Err(e)
                    if e.code == crate::COSH_ERR_NOT_FOUND
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => return Err(e),
            }
        };
        // SAFETY: checked not NULL above; the caller promises it is writable.
        unsafe { put(id, found.to_bits(), "id") }?;
        Ok(COSH_OK)
    })
}

/// Runs one `cosh_fs_*` call: failures are negative errno values (`-EINVAL` for a bad
/// argument, `-EBADF` for a bad handle, `-EIO` for a bug caught at the boundary).
fn fs_call<T: From<i32>>(f: impl FnOnce() -> Outcome<T>) -> T {
    call(
        |code| {
            T::from(match code {
                COSH_ERR_INVALID => -EINVAL,
                crate::COSH_ERR_PANIC => -EIO,
                c => c,
            })
        },
        f,
    )
}

const EINVAL: i32 = 22;
const EIO: i32 = 5;

/// Connects a CoshFS client: a domain of its own named `name` at the block manager whose
/// socket is `block_manager`, speaking to the CoshFS service at `service`. NULL on failure.
/// Release it with `cosh_fs_disconnect`.
///
/// # Safety
/// The three strings are NULL or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cosh_fs_connect(
    name: *const c_char,
    block_manager: *const c_char,
    service: *const c_char,
) -> *mut crate::fs::cosh_fs {
    call(
        |_| std::ptr::null_mut(),
        || {
            // SAFETY: the caller's contract, as documented.
            let (name, bm, svc) = unsafe {
                (
                    text(name, "name")?,
                    text(block_manager, "block_manager")?,
                    text(service, "service")?,
                )
            };
            crate::fs::connect(name, bm, svc)
        },
    )
}

/// Closes the client's open files and disconnects it (reporting a write made behind that
/// failed, as `close(2)` would); the handle names nothing afterwards.
#[unsafe(no_mangle)]
pub extern "C" fn cosh_fs_disconnect(fs: *mut crate::fs::cosh_fs) -> c_int {
    fs_call(|| {
        crate::fs::with_client(fs, true, |c, handles| {
            let mut first = Ok(());
            for (_, fh) in std::mem::take(handles) {
                let closed = c.close(fh);
                if first.is_ok() {
                    first = closed;
                }
            }
            first
        })?;
        Ok(COSH_OK)
    })
}

/// Opens `path` (flags: `COSH_FS_CREATE`, `COSH_FS_EXCL`, `COSH_FS_TRUNC`; `mode` for a new
/// file, 0 for 0644). Returns a file handle (≥ 0) or a negative errno.
///
/// # Safety
/// `path` is NULL or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cosh_fs_open(
    fs: *mut crate::fs::cosh_fs,
    path: *const c_char,
    flags: u32,
    mode: u32,
) -> i64 {
    fs_call(|| {
        // SAFETY: the caller's contract, as documented.
        let path = unsafe { text(path, "path") }?;
        crate::fs::with_client(fs, false, |c, handles| {
            let fh = c.open(path, crate::fs::open_flags(flags, mode)?)?;
            handles.insert(fh.raw(), fh);
            Ok(fh.raw() as i64)
        })
    })
}

/// Closes a file handle; a negative errno reports a write made behind that failed.
#[unsafe(no_mangle)]
pub extern "C" fn cosh_fs_close(fs: *mut crate::fs::cosh_fs, fh: i64) -> c_int {
    fs_call(|| {
        crate::fs::with_client(fs, false, |c, handles| {
            let h = crate::fs::handle(handles, fh)?;
            handles.remove(&h.raw());
            c.close(h)
        })?;
        Ok(COSH_OK)
    })
}

/// Reads up to `len` bytes at `offset` into `buf`; returns how many (0 at or past the end) or
/// a negative errno. A read that starts after a write completed sees it.
///
/// # Safety
/// `buf` points to `len` writable bytes (or is NULL when `len` is 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cosh_fs_read(
    fs: *mut crate::fs::cosh_fs,
    fh: i64,
    offset: u64,
    buf: *mut c_void,
    len: usize,
) -> i64 {
    fs_call(|| {
        // SAFETY: the caller's contract, as documented.
        let out = unsafe { lent_mut(buf, len) }?;
        crate::fs::with_client(fs, false, |c, handles| {
            let h = crate::fs::handle(handles, fh)?;
            Ok(c.read_into(h, offset, out)? as i64)
        })
    })
}

/// Writes `len` bytes from `buf` at `offset`; returns `len` or a negative errno. Small writes
/// to a file this client holds the write lease of are made behind (see `cosh_fs_fsync`).
///
/// # Safety
/// `buf` points to `len` readable bytes (or is NULL when `len` is 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cosh_fs_write(
    fs: *mut crate::fs::cosh_fs,
    fh: i64,
    offset: u64,
    buf: *const c_void,
    len: usize,
) -> i64 {
    fs_call(|| {
        // SAFETY: the caller's contract, as documented.
        let data = unsafe { lent(buf, len) }?;
        crate::fs::with_client(fs, false, |c, handles| {
            let h = crate::fs::handle(handles, fh)?;
            Ok(c.write_from(h, offset, data)? as i64)
        })
    })
}

/// Waits until the service has applied every write of this client, and reports one that
/// failed (a negative errno).
#[unsafe(no_mangle)]
pub extern "C" fn cosh_fs_fsync(fs: *mut crate::fs::cosh_fs, fh: i64) -> c_int {
    fs_call(|| {
        crate::fs::with_client(fs, false, |c, handles| {
            let h = crate::fs::handle(handles, fh)?;
            c.fsync(h)
        })?;
        Ok(COSH_OK)
    })
}

/// The attributes of `path` (`fh` < 0) or of the open file `fh`, in `*out`.
///
/// # Safety
/// `path` is NULL or NUL-terminated (it may be NULL when `fh` ≥ 0); `out` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cosh_fs_stat(
    fs: *mut crate::fs::cosh_fs,
    path: *const c_char,
    fh: i64,
    out: *mut crate::fs::cosh_fs_attrs,
) -> c_int {
    fs_call(|| {
        if out.is_null() {
            return Err(Failure::new(-EINVAL, "out is NULL"));
        }
        let path = if fh < 0 {
            // SAFETY: the caller's contract, as documented.
            Some(unsafe { text(path, "path") }?)
        } else {
            None
        };
        let stat = crate::fs::with_client(fs, false, |c, handles| match path {
            Some(p) => c.stat(p),
            None => c.fstat(crate::fs::handle(handles, fh)?),
        })?;
        // SAFETY: checked not NULL above; the caller promises it is writable.
        unsafe { put(out, stat.into(), "out") }?;
        Ok(COSH_OK)
    })
}

/// Makes the directory `path` (0755).
///
/// # Safety
/// `path` is NULL or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cosh_fs_mkdir(fs: *mut crate::fs::cosh_fs, path: *const c_char) -> c_int {
    fs_call(|| {
        // SAFETY: the caller's contract, as documented.
        let path = unsafe { text(path, "path") }?;
        crate::fs::with_client(fs, false, |c, _| c.mkdir(path))?;
        Ok(COSH_OK)
    })
}

/// Removes the name `path` of a file (open handles keep reading it) or, with `dir` not 0, the
/// empty directory `path`.
///
/// # Safety
/// `path` is NULL or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cosh_fs_remove(
    fs: *mut crate::fs::cosh_fs,
    path: *const c_char,
    dir: c_int,
) -> c_int {
    fs_call(|| {
        // SAFETY: the caller's contract, as documented.
        let path = unsafe { text(path, "path") }?;
        crate::fs::with_client(fs, false, |c, _| {
            if dir != 0 {
                c.rmdir(path)
            } else {
                c.unlink(path)
            }
        })?;
        Ok(COSH_OK)
    })
}

/// Renames `from` to `to`, replacing what `to` named.
///
/// # Safety
/// Both are NULL or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cosh_fs_rename(
    fs: *mut crate::fs::cosh_fs,
    from: *const c_char,
    to: *const c_char,
) -> c_int {
    fs_call(|| {
        // SAFETY: the caller's contract, as documented.
        let (from, to) = unsafe { (text(from, "from")?, text(to, "to")?) };
        crate::fs::with_client(fs, false, |c, _| c.rename(from, to))?;
        Ok(COSH_OK)
    })
}

/// Opens one end of the Cosh pipe `name` (a byte stream between two processes, met by name
/// at the block manager whose socket is `block_manager`): the sending end if `send` is not 0,
/// else the receiving end, which lets `window` bytes be in flight (the sender waits beyond).
/// Waits up to `wait_ms` milliseconds for the other end. NULL on failure. Close it with
/// `cosh_pipe_close`. An end is used by one thread at a time.
///
/// # Safety
/// `block_manager` and `name` are NULL or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cosh_pipe_open(
    block_manager: *const c_char,
    name: *const c_char,
    send: c_int,
    wait_ms: u32,
    window: u64,
) -> *mut crate::pipe::cosh_pipe {
    call(
        |_| std::ptr::null_mut(),
        || {
            // SAFETY: the caller's contract, as documented.
            let (bm, name) =
                unsafe { (text(block_manager, "block_manager")?, text(name, "name")?) };
            crate::pipe::open(
                bm,
                name,
                send != 0,
                Duration::from_millis(u64::from(wait_ms)),
                window,
            )
        },
    )
}

/// Writes all `len` bytes of `buf` into the sending end (waiting for credit if the receiver
/// is behind); returns `len` or a negative code.
///
/// # Safety
/// `buf` points to `len` readable bytes (or is NULL when `len` is 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cosh_pipe_write(
    pipe: *mut crate::pipe::cosh_pipe,
    buf: *const c_void,
    len: usize,
) -> i64 {
    call(i64::from, || {
        // SAFETY: the caller's contract, as documented.
        let data = unsafe { lent(buf, len) }?;
        crate::pipe::write(pipe, data)
    })
}

/// Reads up to `len` bytes from the receiving end into `buf`, waiting for some; returns how
/// many, 0 once the sender has closed and everything was read, or a negative code.
///
/// # Safety
/// `buf` points to `len` writable bytes (or is NULL when `len` is 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cosh_pipe_read(
    pipe: *mut crate::pipe::cosh_pipe,
    buf: *mut c_void,
    len: usize,
) -> i64 {
    call(i64::from, || {
        // SAFETY: the caller's contract, as documented.
        let out = unsafe { lent_mut(buf, len) }?;
        crate::pipe::read(pipe, out)
    })
}

/// Closes an end (the handle names nothing afterwards): the sender's close ends the stream
/// after what it wrote; the receiver's tells the sender to stop.
#[unsafe(no_mangle)]
pub extern "C" fn cosh_pipe_close(pipe: *mut crate::pipe::cosh_pipe) -> c_int {
    call(status, || {
        crate::pipe::close(pipe)?;
        Ok(COSH_OK)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_handles_and_no_domain_are_codes_not_crashes() {
        let stray = 0x1234_5678usize as *mut cosh_agg;
        assert_eq!(cosh_agg_incref(stray), crate::COSH_ERR_BAD_HANDLE);
        assert_eq!(
            cosh_agg_decref(std::ptr::null_mut()),
            crate::COSH_ERR_BAD_HANDLE
        );
        assert_eq!(cosh_agg_getlen(stray), COSH_BAD_LENGTH);
        // A well-formed handle with no domain to ask.
        let looks_right = crate::agg_handle(cosh::Agg(7));
        assert_eq!(cosh_agg_decref(looks_right), crate::COSH_ERR_NOT_CONNECTED);
        assert!(cosh_agg_alloc(10).is_null());
        // SAFETY: cosh_last_error never returns NULL, and the string lives until this
        // thread's next failing call (none before this borrow ends).
        let why = unsafe { CStr::from_ptr(cosh_last_error()) };
        assert!(why.to_string_lossy().contains("cosh_connect"), "{why:?}");
        assert_eq!(
            cosh_agg_transfer(looks_right, 1, 99, 0),
            crate::COSH_ERR_INVALID
        );
        assert_eq!(cosh_agg_iter_end(stray.cast()), crate::COSH_ERR_BAD_HANDLE);
        // SAFETY: NULL strings are refused before anything is read.
        assert_eq!(unsafe { cosh_connect(std::ptr::null()) }, COSH_ERR_INVALID);
        let _ = COSH_ANY_DOMAIN;
    }
}
