//! Body bytes moved between two plain sockets through a pipe with splice(2): the kernel hands
//! the pages of one socket's receive queue to the other's send queue without copying them
//! into the proxy and back, as HAProxy's `option splice-response` and nginx's plain paths do.
//! A 64 KB response then costs the proxy a read of its head and two splices instead of
//! copies of every byte both ways (the profile had most of its time in those copies).
//!
//! The pipe is always emptied before it is filled again, so a fill that would block can only
//! mean the source socket has nothing, and a drain that would block only that the target's
//! send buffer is full: the readiness tokio keeps for each socket stays right.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Idle pipes a worker thread keeps for the next body (at most); one in use per connection
/// that is splicing a body.
const SPARE_PIPES: usize = 16;
/// The capacity asked of a new pipe: room for a 64 KB body however the socket's pages are
/// cut, and a 1 MB upload in four rounds rather than sixteen.
const PIPE_SIZE: usize = 256 * 1024;

/// Pipes open now, in use or kept (the `l7_splice_pipes` gauge).
pub static PIPES_OPEN: AtomicU64 = AtomicU64::new(0);

struct Fds {
    read: OwnedFd,
    write: OwnedFd,
    /// What the kernel granted: what one fill may ask for.
    size: usize,
}

impl Drop for Fds {
    fn drop(&mut self) {
        PIPES_OPEN.fetch_sub(1, Ordering::Relaxed);
    }
}

thread_local! {
    static SPARE: std::cell::RefCell<Vec<Fds>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A pipe lent to one body transfer. Given back to its thread's spares when dropped empty;
/// closed when dropped with bytes in it (a transfer that failed half-way), which are then
/// lost with it and can never reach another connection.
pub struct Pipe {
    fds: Option<Fds>,
    /// Bytes in the pipe now.
    held: usize,
}

impl Pipe {
    pub fn take() -> io::Result<Pipe> {
        let spare = SPARE.try_with(|s| s.borrow_mut().pop()).ok().flatten();
        let fds = match spare {
            Some(f) => f,
            None => open()?,
        };
        Ok(Pipe {
            fds: Some(fds),
            held: 0,
        })
    }

    pub fn held(&self) -> usize {
        self.held
    }

    fn fds(&self) -> io::Result<&Fds> {
        self.fds
            .as_ref()
            .ok_or_else(|| io::Error::other("pipe already closed"))
    }

    /// The most one fill may move now.
    pub fn room(&self) -> usize {
        self.fds
            .as_ref()
            .map_or(0, |f| f.size - self.held.min(f.size))
    }

    /// One splice from the socket `from` into the pipe, of at most `max` bytes; 0 at the
    /// socket's end.
    pub(crate) fn fill(&mut self, from: RawFd, max: usize) -> io::Result<usize> {
        let n = splice(from, self.fds()?.write.as_raw_fd(), max)?;
        self.held += n;
        Ok(n)
    }

    /// One splice of what the pipe holds to the socket `to`.
    pub(crate) fn drain(&mut self, to: RawFd) -> io::Result<usize> {
        let n = splice(self.fds()?.read.as_raw_fd(), to, self.held)?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        self.held -= n;
        Ok(n)
    }

    /// Fills the pipe from a socket of the reactor.
    pub fn poll_fill_from(
        &mut self,
        cx: &mut Context<'_>,
        from: &TcpStream,
        max: usize,
    ) -> Poll<io::Result<usize>> {
        let fd = from.as_raw_fd();
        loop {
            ready!(from.poll_read_ready(cx))?;
            match from.try_io(Interest::READABLE, || self.fill(fd, max)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                r => return Poll::Ready(r),
            }
        }
    }

    /// Drains (part of) the pipe into a socket of the reactor.
    pub fn poll_drain_to(
        &mut self,
        cx: &mut Context<'_>,
        to: &TcpStream,
    ) -> Poll<io::Result<usize>> {
        let fd = to.as_raw_fd();
        loop {
            ready!(to.poll_write_ready(cx))?;
            match to.try_io(Interest::WRITABLE, || self.drain(fd)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                r => return Poll::Ready(r),
            }
        }
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        let Some(fds) = self.fds.take() else {
            return;
        };
        if self.held != 0 {
            return;
        }
        // At thread exit the spares are gone already: the pipe is closed.
        let _ = SPARE.try_with(|s| {
            let mut s = s.borrow_mut();
            if s.len() < SPARE_PIPES {
                s.push(fds);
            }
        });
    }
}

fn open() -> io::Result<Fds> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `pipe2` writes two descriptors into the array on success, which are then owned
    // here alone.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    PIPES_OPEN.fetch_add(1, Ordering::Relaxed);
    // A larger pipe when the kernel grants it (it may not, past the user's pipe pages); the
    // default otherwise. What it is either way is asked back.
    // SAFETY: fcntl on a descriptor owned here; no pointers.
    unsafe {
        libc::fcntl(
            write.as_raw_fd(),
            libc::F_SETPIPE_SZ,
            PIPE_SIZE as libc::c_int,
        )
    };
    let size = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) };
    let size = usize::try_from(size).unwrap_or(0).max(4096);
    Ok(Fds { read, write, size })
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    loop {
        // SAFETY: no offsets (both ends are a socket or a pipe); the descriptors are open
        // for the call's length.
        let n = unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                to,
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Whether anything (bytes, or the end) waits on `stream` already: after a body spliced to
/// its exact end, more from the server means the connection is not at a clean boundary and
/// must not be reused. The peek goes through the reactor so that its "nothing" clears the
/// readiness the splices left set: the idle list's probe of the connection when it is next
/// taken then costs no system call (as after a short read on the copying path).
pub fn has_more(stream: &TcpStream) -> bool {
    let peek = || {
        let mut byte = 0u8;
        // SAFETY: a peek of at most one byte into a live byte; nothing is consumed.
        let n = unsafe {
            libc::recv(
                stream.as_raw_fd(),
                (&raw mut byte).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    !matches!(
        stream.try_io(Interest::READABLE, peek),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipe_given_back_empty_is_reused_and_one_with_bytes_is_closed() {
        let p = Pipe::take().expect("pipe");
        let fd = p.fds().expect("open").read.as_raw_fd();
        drop(p);
        let mut p = Pipe::take().expect("pipe");
        assert_eq!(
            p.fds().expect("open").read.as_raw_fd(),
            fd,
            "the spare is reused"
        );
        // Bytes left in it: it must not serve another transfer.
        let w = p.fds().expect("open").write.as_raw_fd();
        // SAFETY: a write of 3 bytes from a live buffer to the pipe owned by `p`.
        assert_eq!(unsafe { libc::write(w, b"abc".as_ptr().cast(), 3) }, 3);
        p.held = 3;
        drop(p);
        let p = Pipe::take().expect("pipe");
        assert_eq!(p.held(), 0);
        let mut byte = 0u8;
        // SAFETY: a read of at most one byte into a live byte.
        let n = unsafe {
            libc::read(
                p.fds().expect("open").read.as_raw_fd(),
                (&raw mut byte).cast(),
                1,
            )
        };
        assert_eq!(
            n, -1,
            "a fresh pipe is empty (EAGAIN), not the one with bytes in it"
        );
    }
}
