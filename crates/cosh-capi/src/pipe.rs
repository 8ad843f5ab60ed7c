//! Cosh pipes for C (`cosh_pipe_*` in [`crate::ffi`]): a byte stream from one process to
//! another through `cosh-pipe` — aggregates by strong move, with the receiver's credit window
//! bounding what is in flight. Each end has a domain of its own and meets the other by name
//! at their block manager (`NAME.send` and `NAME.recv`, as `cosh pipe send|recv NAME` does).

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ::cosh_pipe::{PipeReader, PipeWriter, Window};
use cosh::{Domain, ErrorKind, Options};

use crate::{COSH_ERR_BAD_HANDLE, COSH_ERR_UNAVAILABLE, Failure, Outcome, Registry};

/// One end of a Cosh pipe of a C program (opaque).
pub struct cosh_pipe {
    _opaque: [u8; 0],
}

enum End {
    Send(PipeWriter),
    Recv(PipeReader),
}

type Shared = Arc<Mutex<Option<End>>>;

/// Each end is locked on its own: one thread's wait holds no other pipe.
static PIPES: Registry<Shared> = Registry::new(0x6, "an open cosh_pipe");

fn broken(e: impl std::fmt::Display) -> Failure {
    Failure::new(COSH_ERR_UNAVAILABLE, format!("the pipe broke: {e}"))
}

/// Opens the sending (`send`) or receiving end of the pipe `name` at the block manager at
/// `socket`, waiting up to `wait` for the other end; the receiver grants `window` bytes.
pub(crate) fn open(
    socket: &str,
    name: &str,
    send: bool,
    wait: Duration,
    window: u64,
) -> Outcome<*mut cosh_pipe> {
    let (me, peer) = if send {
        ("send", "recv")
    } else {
        ("recv", "send")
    };
    let mut d = Domain::connect_with(
        &Options::new(&format!("cosh-pipe-{me}"))
            .socket(socket)
            .no_spawn(),
    )?;
    d.register(&format!("{name}.{me}"))?;
    let deadline = Instant::now() + wait;
    let other = loop {
        match d.lookup(&format!("{name}.{peer}")) {
            Ok(id) => break id,
            Err(e) if e.kind() == ErrorKind::UnknownName && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e.into()),
        }
    };
    let end = if send {
        End::Send(PipeWriter::open(d, other).map_err(broken)?)
    } else {
        let window = Window {
            messages: 64,
            bytes: window.max(1),
        };
        End::Recv(PipeReader::open(d, other, window).map_err(broken)?)
    };
    Ok(PIPES.add(Arc::new(Mutex::new(Some(end)))) as *mut cosh_pipe)
}

/// The end a handle names (`forget`: and drops it from the table).
fn end_of(handle: *const cosh_pipe, forget: bool) -> Outcome<Shared> {
    if forget {
        PIPES.take(handle as usize)
    } else {
        PIPES.with(handle as usize, |end| end.clone())
    }
}

/// Writes all of `data` into the sending end.
pub(crate) fn write(handle: *const cosh_pipe, data: &[u8]) -> Outcome<i64> {
    let end = end_of(handle, false)?;
    let mut guard = end.lock().unwrap_or_else(|p| p.into_inner());
    match guard.as_mut() {
        Some(End::Send(w)) => {
            w.write_all(data).map_err(broken)?;
            Ok(data.len() as i64)
        }
        _ => Err(Failure::new(
            COSH_ERR_BAD_HANDLE,
            "not the sending end of a pipe",
        )),
    }
}

/// Reads what has arrived (waiting for something) into `buf`; 0 once the sender closed.
pub(crate) fn read(handle: *const cosh_pipe, buf: &mut [u8]) -> Outcome<i64> {
    let end = end_of(handle, false)?;
    let mut guard = end.lock().unwrap_or_else(|p| p.into_inner());
    match guard.as_mut() {
        Some(End::Recv(r)) => Ok(r.read(buf).map_err(broken)? as i64),
        _ => Err(Failure::new(
            COSH_ERR_BAD_HANDLE,
            "not the receiving end of a pipe",
        )),
    }
}

/// Closes an end: the sender's close ends the stream after what it wrote; the receiver's
/// tells the sender to stop.
pub(crate) fn close(handle: *const cosh_pipe) -> Outcome<()> {
    let end = end_of(handle, true)?;
    let mut guard = end.lock().unwrap_or_else(|p| p.into_inner());
    match guard.take() {
        Some(End::Send(w)) => {
            w.finish().map_err(broken)?;
        }
        Some(End::Recv(r)) => {
            r.close().map_err(broken)?;
        }
        None => {}
    }
    Ok(())
}
