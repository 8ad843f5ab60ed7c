//! Eventfds: a counter in the kernel that one side adds to and the other waits on, used as a
//! doorbell between a client and its block manager. Its descriptor can be passed to another
//! process.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::event::{EventfdFlags, PollFd, PollFlags};
use rustix::io::Errno;

use crate::error::{Error, Result, sys};

/// A doorbell: [`EventFd::ring`] adds one, [`EventFd::wait`] takes everything rung so far.
#[derive(Debug)]
pub struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    /// A new doorbell that nobody has rung.
    pub fn new() -> Result<EventFd> {
        let fd = sys(
            "eventfd",
            rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK),
        )?;
        Ok(EventFd { fd })
    }

    /// Takes over a doorbell received from another process.
    pub fn from_fd(fd: OwnedFd) -> Result<EventFd> {
        // The kernel names what a descriptor is in its /proc link, without touching it.
        let link = std::fs::read_link(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&fd)
        ))
        .map_err(|e| Error::BadDescriptor {
            reason: format!("cannot inspect it: {e}"),
        })?;
        if link.as_os_str() != "anon_inode:[eventfd]" {
            return Err(Error::BadDescriptor {
                reason: format!("expected an eventfd, got {}", link.display()),
            });
        }
        let flags = sys("fcntl(F_GETFL)", rustix::fs::fcntl_getfl(&fd))?;
        sys(
            "fcntl(F_SETFL)",
            rustix::fs::fcntl_setfl(&fd, flags | rustix::fs::OFlags::NONBLOCK),
        )?;
        Ok(EventFd { fd })
    }

    /// Rings once.
    pub fn ring(&self) -> Result<()> {
        match rustix::io::write(&self.fd, &1u64.to_ne_bytes()) {
            Ok(_) => Ok(()),
            // The counter is saturated: the other side has plenty to wake up for.
            Err(Errno::AGAIN) => Ok(()),
            Err(errno) => Err(Error::Sys {
                op: "write(eventfd)",
                errno,
            }),
        }
    }

    /// Takes the rings so far without waiting: 0 if none.
    pub fn take(&self) -> Result<u64> {
        let mut bytes = [0u8; 8];
        match rustix::io::read(&self.fd, &mut bytes) {
            Ok(_) => Ok(u64::from_ne_bytes(bytes)),
            Err(Errno::AGAIN) => Ok(0),
            Err(errno) => Err(Error::Sys {
                op: "read(eventfd)",
                errno,
            }),
        }
    }

    /// Waits until rung (or `timeout` passes: then 0) and takes the rings.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<u64> {
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        loop {
            let rung = self.take()?;
            if rung > 0 {
                return Ok(rung);
            }
            let left = match deadline {
                Some(d) => {
                    let now = std::time::Instant::now();
                    if now >= d {
                        return Ok(0);
                    }
                    Some(d - now)
                }
                None => None,
            };
            let spec = left.map(|l| rustix::event::Timespec {
                tv_sec: i64::try_from(l.as_secs()).unwrap_or(i64::MAX),
                tv_nsec: i64::from(l.subsec_nanos()),
            });
            let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
            match rustix::event::poll(&mut fds, spec.as_ref()) {
                Ok(_) | Err(Errno::INTR) => {}
                Err(errno) => return Err(Error::Sys { op: "poll", errno }),
            }
        }
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
