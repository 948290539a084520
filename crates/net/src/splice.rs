//! Moving bytes both ways between a client and an upstream socket.
//!
//! On Linux the bytes go socket → pipe → socket with `splice(2)` and never
//! enter user space. Each direction owns its pipe and runs on tokio's
//! readiness (`readable`/`writable` + `try_io`), so both directions share
//! one task and no thread blocks. Where pipes cannot be had (other systems,
//! or out of file descriptors) the relay falls back to
//! `tokio::io::copy_bidirectional` with large buffers.
//!
//! Half-close: when one side ends its stream, the other side's write half is
//! shut down and the opposite direction keeps flowing until it ends too.

use std::io;

use tokio::net::TcpStream;

/// Buffer size of the copy fallback, per direction: large enough that bulk
/// transfers are not syscall-bound.
const COPY_BUFFER: usize = 256 * 1024;

/// Relays until both directions have ended (or one failed). Returns the
/// bytes moved (client → upstream, upstream → client).
pub(crate) async fn relay(
    mut client: TcpStream,
    mut upstream: TcpStream,
    zero_copy: bool,
) -> io::Result<(u64, u64)> {
    #[cfg(target_os = "linux")]
    if zero_copy {
        match (linux::Pipe::new(), linux::Pipe::new()) {
            (Ok(up), Ok(down)) => return linux::splice_both(&client, &upstream, up, down).await,
            (Err(e), _) | (_, Err(e)) => {
                tracing::debug!(error = %e, "no pipe for splice, copying through user space");
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = zero_copy;
    tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, COPY_BUFFER, COPY_BUFFER)
        .await
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

    use tokio::io::Interest;
    use tokio::net::TcpStream;

    /// Pipe capacity asked for: 64 KiB (the default) makes bulk transfers
    /// cost four times the syscalls. The kernel may refuse more than
    /// /proc/sys/fs/pipe-max-size; the default capacity then serves.
    const PIPE_SIZE: libc::c_int = 256 * 1024;

    /// A non-blocking pipe used as splice's in-kernel buffer.
    pub(super) struct Pipe {
        read: OwnedFd,
        write: OwnedFd,
        capacity: usize,
    }

    impl Pipe {
        pub(super) fn new() -> io::Result<Pipe> {
            let mut fds = [0 as RawFd; 2];
            // SAFETY: `fds` has room for the two descriptors pipe2 writes.
            if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: pipe2 succeeded, so both descriptors are open and ours.
            let (read, write) =
                unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
            // SAFETY: fcntl on a descriptor we own; failure is harmless.
            let capacity = unsafe {
                libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE);
                libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ)
            };
            let capacity = if capacity > 0 {
                capacity as usize
            } else {
                64 * 1024
            };
            Ok(Pipe {
                read,
                write,
                capacity,
            })
        }
    }

    pub(super) async fn splice_both(
        client: &TcpStream,
        upstream: &TcpStream,
        up: Pipe,
        down: Pipe,
    ) -> io::Result<(u64, u64)> {
        // Both directions borrow both sockets: tokio lets one task wait for
        // read and write readiness of one socket at the same time.
        tokio::try_join!(
            one_way(client, upstream, up),
            one_way(upstream, client, down)
        )
    }

    /// src → pipe → dst until src ends; then shuts down dst's write half.
    async fn one_way(src: &TcpStream, dst: &TcpStream, pipe: Pipe) -> io::Result<u64> {
        let mut total = 0u64;
        loop {
            // The pipe is empty here, so EAGAIN can only mean "src has
            // nothing to read": try_io may then clear src's readiness.
            let filled = retry(src, Interest::READABLE, || {
                splice(src.as_raw_fd(), pipe.write.as_raw_fd(), pipe.capacity)
            })
            .await?;
            if filled == 0 {
                shutdown_write(dst);
                return Ok(total);
            }
            // The pipe holds `filled` bytes, so EAGAIN can only mean "dst is
            // full".
            let mut left = filled;
            while left > 0 {
                left -= retry(dst, Interest::WRITABLE, || {
                    splice(pipe.read.as_raw_fd(), dst.as_raw_fd(), left)
                })
                .await?;
            }
            total += filled as u64;
        }
    }

    /// Waits for readiness and runs `op` until it does not report WouldBlock.
    ///
    /// Readiness is dropped only on EAGAIN, never after a short splice: a
    /// splice into a pipe also stops short when the pipe runs out of slots
    /// (one per socket buffer fragment) while the socket still holds data,
    /// and no new readiness event would come for that data.
    async fn retry(
        socket: &TcpStream,
        interest: Interest,
        mut op: impl FnMut() -> io::Result<usize>,
    ) -> io::Result<usize> {
        loop {
            socket.ready(interest).await?;
            match socket.try_io(interest, &mut op) {
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::Interrupted =>
                {
                    continue
                }
                other => return other,
            }
        }
    }

    fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
        // SAFETY: both descriptors are open for the duration of the call;
        // null offsets mean "current position", as required for sockets and
        // pipes.
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
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Passes an end of stream on. Fails only when the peer is already gone,
    /// which the other direction notices on its own.
    fn shutdown_write(socket: &TcpStream) {
        // SAFETY: shutdown on a descriptor the stream keeps open.
        unsafe {
            libc::shutdown(socket.as_raw_fd(), libc::SHUT_WR);
        }
    }
}
