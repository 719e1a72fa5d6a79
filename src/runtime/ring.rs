//! The io_uring: setup, the operations ringws submits (one `match` turns an [`Op`] into an SQE),
//! a backlog for a full submission queue, and one `match` that turns each completion, errno by
//! errno, into a named [`Event`] (the TigerBeetle `io/linux.zig` shape).
//!
//! # `user_data` layout
//!
//! ```text
//!  63        56 55                    32 31                              0
//! +------------+------------------------+---------------------------------+
//! |  op tag    | slot generation (24 b) |          slot index             |
//! +------------+------------------------+---------------------------------+
//! ```
//!
//! Operations that belong to no connection (accept, the wake-up read) carry index and generation 0.
//! A completion whose generation does not match its slot's is stale and is ignored.

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;

use io_uring::{IoUring, cqueue, opcode, squeue, types};

/// Generations are kept to 24 bits so that they fit in `user_data` and in a `ConnId`.
pub const GENERATION_MASK: u32 = (1 << 24) - 1;

/// A connection slot: its index in the slab and its generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub index: u32,
    pub generation: u32,
}

/// The kind of operation, the top byte of `user_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Tag {
    Accept = 1,
    Recv = 2,
    Send = 3,
    NoDelay = 4,
    Shutdown = 5,
    Close = 6,
    Wake = 7,
    CancelAccept = 8,
    SendZc = 9,
    CancelRecv = 10,
    Hangup = 11,
    CancelHangup = 12,
}

impl Tag {
    fn from_u8(v: u8) -> Option<Tag> {
        Some(match v {
            1 => Tag::Accept,
            2 => Tag::Recv,
            3 => Tag::Send,
            4 => Tag::NoDelay,
            5 => Tag::Shutdown,
            6 => Tag::Close,
            7 => Tag::Wake,
            8 => Tag::CancelAccept,
            9 => Tag::SendZc,
            10 => Tag::CancelRecv,
            11 => Tag::Hangup,
            12 => Tag::CancelHangup,
            _ => return None,
        })
    }
}

fn user_data(tag: Tag, key: Key) -> u64 {
    debug_assert!(key.generation <= GENERATION_MASK);
    (tag as u64) << 56 | u64::from(key.generation & GENERATION_MASK) << 32 | u64::from(key.index)
}

fn split_user_data(ud: u64) -> (Option<Tag>, Key) {
    let tag = Tag::from_u8((ud >> 56) as u8);
    let key = Key {
        index: ud as u32,
        generation: (ud >> 32) as u32 & GENERATION_MASK,
    };
    (tag, key)
}

const NO_KEY: Key = Key {
    index: 0,
    generation: 0,
};

/// `user_data` of the start-up probe (`Ring::set_recv_share`) and, one below, of its cancel: top
/// byte 0 is no tag, so no event is ever made of them.
const PROBE_USER_DATA: u64 = 0x0000_0000_0000_0002;

/// TCP_NODELAY's value, for the SetSockOpt command (must outlive the operation: it is static).
static ONE: libc::c_int = 1;

/// An operation to submit. Pointers inside must stay valid until the operation completes.
#[derive(Debug, Clone, Copy)]
pub enum Op {
    /// Multishot accept on the listener into a kernel-chosen direct descriptor.
    /// Accept into a direct descriptor: multishot while the table has room for a whole backlog
    /// burst, else one connection at a time.
    Accept { listener: RawFd, multishot: bool },
    /// Cancels the multishot accept (shutdown).
    CancelAccept,
    /// Multishot receive into buffers of the provided-buffer group.
    Recv { key: Key, fd: u32, group: u16 },
    /// Cancels a connection's multishot receive (reading pauses: backpressure, memory budget).
    /// It names the receive by its `user_data`, so one for a slot since reused matches nothing
    /// (the generation differs); it points at no memory and is not counted in the slot's ops.
    CancelRecv { key: Key },
    /// A one-shot poll for the peer's hang-up (FIN, reset, error) on a connection whose reading
    /// is paused: with no receive armed, it is how a peer that leaves is seen. Counted in the
    /// slot's ops.
    WatchHangup { key: Key, fd: u32 },
    /// Cancels that poll (reading resumes, or the connection ends); like `CancelRecv`, it names
    /// the poll by its `user_data` and is not counted.
    CancelHangup { key: Key },
    /// One send of a contiguous buffer.
    Send {
        key: Key,
        fd: u32,
        buf: *const u8,
        len: u32,
    },
    /// One write of a run of bytes inside registered (fixed) buffer `index`.
    SendFixed {
        key: Key,
        fd: u32,
        buf: *const u8,
        len: u32,
        index: u16,
    },
    /// One sendmsg of an iovec array (all frames queued in a turn leave in one send).
    SendMsg {
        key: Key,
        fd: u32,
        msg: *const libc::msghdr,
    },
    /// A zero-copy sendmsg (large batches only): two completions, the bytes then a
    /// notification once the kernel no longer reads the buffers.
    SendMsgZc {
        key: Key,
        fd: u32,
        msg: *const libc::msghdr,
    },
    /// TCP_NODELAY on a direct descriptor (SOCKET_URING_OP_SETSOCKOPT).
    NoDelay { key: Key, fd: u32 },
    /// shutdown(SHUT_WR) (we end TCP first) or SHUT_RDWR (forced end: wakes a pending recv).
    Shutdown { key: Key, fd: u32, how: i32 },
    /// Closes a direct descriptor (frees its fixed-file slot).
    Close { key: Key, fd: u32 },
    /// Reads the eventfd other threads write to wake this worker.
    Wake { fd: RawFd, buf: *mut u64 },
}

/// Byte offset of `optlen` in a submission entry (`struct io_uring_sqe`, include/uapi/linux/
/// io_uring.h: the union of `splice_fd_in`, `file_index` and `optlen` at bytes 44..48). The
/// io-uring crate has no setter for it on a receive.
const SQE_OPTLEN_OFFSET: usize = 44;

/// Sets `optlen` of a multishot receive: the total it may take before it ends (the kernel's
/// `IORING_RECV_MSHOT_LIM`, Linux 6.16 and later).
fn set_recv_total_limit(entry: &mut squeue::Entry, bytes: u32) {
    const _: () = assert!(std::mem::size_of::<squeue::Entry>() == 64);
    let at = (entry as *mut squeue::Entry).cast::<u8>();
    // SAFETY: `squeue::Entry` is `repr(C)` around the 64-byte `io_uring_sqe` (asserted above),
    // so bytes 44..48 are inside it and are the `optlen` member of its last union; it is
    // written unaligned, as a plain u32, through the only reference to the entry.
    unsafe {
        at.add(SQE_OPTLEN_OFFSET)
            .cast::<u32>()
            .write_unaligned(bytes)
    };
}

impl Op {
    /// The submission entry; `recv_share_bytes` (0: none) caps what one multishot receive takes
    /// before it ends and is armed again behind the others ([`Ring::set_recv_share`]).
    fn entry(self, recv_share_bytes: u32) -> squeue::Entry {
        match self {
            // No SOCK_CLOEXEC: the kernel refuses it for direct descriptors (which never reach
            // an exec anyway).
            Op::Accept {
                listener,
                multishot: true,
            } => opcode::AcceptMulti::new(types::Fd(listener))
                .allocate_file_index(true)
                .build()
                .user_data(user_data(Tag::Accept, NO_KEY)),
            // One connection only: used when the fixed-file table is nearly full, so that the
            // kernel never takes a connection off the backlog without a slot for it (ENFILE
            // would drop it with no answer).
            Op::Accept {
                listener,
                multishot: false,
            } => opcode::Accept::new(
                types::Fd(listener),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
            .file_index(Some(types::DestinationSlot::auto_target()))
            .build()
            .user_data(user_data(Tag::Accept, NO_KEY)),
            Op::CancelAccept => opcode::AsyncCancel::new(user_data(Tag::Accept, NO_KEY))
                .build()
                .user_data(user_data(Tag::CancelAccept, NO_KEY)),
            Op::Recv { key, fd, group } => {
                let mut entry = opcode::RecvMulti::new(types::Fixed(fd), group)
                    .build()
                    .user_data(user_data(Tag::Recv, key));
                if recv_share_bytes > 0 {
                    set_recv_total_limit(&mut entry, recv_share_bytes);
                }
                entry
            }
            Op::CancelRecv { key } => opcode::AsyncCancel::new(user_data(Tag::Recv, key))
                .build()
                .user_data(user_data(Tag::CancelRecv, key)),
            Op::WatchHangup { key, fd } => opcode::PollAdd::new(
                types::Fixed(fd),
                (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) as u32,
            )
            .build()
            .user_data(user_data(Tag::Hangup, key)),
            Op::CancelHangup { key } => opcode::AsyncCancel::new(user_data(Tag::Hangup, key))
                .build()
                .user_data(user_data(Tag::CancelHangup, key)),
            Op::Send { key, fd, buf, len } => opcode::Send::new(types::Fixed(fd), buf, len)
                .flags(libc::MSG_NOSIGNAL)
                .build()
                .user_data(user_data(Tag::Send, key)),
            // write(2) on a socket is send(2) without flags; SIGPIPE is ignored process-wide
            // (`sys::ignore_sigpipe`) since there is no MSG_NOSIGNAL here. Offset 0: sockets
            // refuse any other.
            Op::SendFixed {
                key,
                fd,
                buf,
                len,
                index,
            } => opcode::WriteFixed::new(types::Fixed(fd), buf, len, index)
                .offset(0)
                .build()
                .user_data(user_data(Tag::Send, key)),
            Op::SendMsg { key, fd, msg } => opcode::SendMsg::new(types::Fixed(fd), msg)
                .flags(libc::MSG_NOSIGNAL as u32)
                .build()
                .user_data(user_data(Tag::Send, key)),
            Op::SendMsgZc { key, fd, msg } => opcode::SendMsgZc::new(types::Fixed(fd), msg)
                .flags(libc::MSG_NOSIGNAL as u32)
                .build()
                .user_data(user_data(Tag::SendZc, key)),
            Op::NoDelay { key, fd } => opcode::SetSockOpt::new(
                types::Fixed(fd),
                libc::IPPROTO_TCP as u32,
                libc::TCP_NODELAY as u32,
                (&ONE as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            )
            .build()
            .user_data(user_data(Tag::NoDelay, key)),
            Op::Shutdown { key, fd, how } => opcode::Shutdown::new(types::Fixed(fd), how)
                .build()
                .user_data(user_data(Tag::Shutdown, key)),
            Op::Close { key, fd } => opcode::Close::new(types::Fixed(fd))
                .build()
                .user_data(user_data(Tag::Close, key)),
            Op::Wake { fd, buf } => opcode::Read::new(types::Fd(fd), buf.cast(), 8)
                .build()
                .user_data(user_data(Tag::Wake, NO_KEY)),
        }
    }
}

/// Result of one multishot-accept completion.
#[derive(Debug)]
pub enum Accepted {
    /// A connection, in this direct-descriptor slot.
    Socket(u32),
    /// The fixed-file table is full (ENFILE): stop accepting until a descriptor is closed.
    TableFull,
    /// The accept was cancelled (shutdown).
    Canceled,
    /// The peer went away before the accept finished, or a transient shortage: just go on.
    Transient,
    /// Anything else: reported, and the accept is re-armed.
    Failed(io::Error),
}

/// Result of one multishot-recv completion.
#[derive(Debug)]
pub enum Received {
    /// `len` bytes in provided buffer `bid`.
    Data { bid: u16, len: u32 },
    /// The peer ended its side of TCP.
    Eof,
    /// The buffer group ran dry (ENOBUFS): re-arm once buffers are back.
    NoBuffers,
    /// The peer reset the connection, or it broke (ECONNRESET, EPIPE, ETIMEDOUT…).
    Reset,
    /// Cancelled by us (reading paused): not an end of input.
    Canceled,
}

/// What the hang-up poll of a paused connection saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hangup {
    /// The peer sent FIN: its input ends after what is still unread.
    Fin,
    /// The socket was reset or broke: the connection is over.
    Reset,
    /// We cancelled it (reading resumed, or the connection ends).
    Canceled,
}

/// Result of one send completion.
#[derive(Debug)]
pub enum Sent {
    /// This many bytes went out (may be fewer than asked).
    Bytes(u32),
    /// The peer is gone (EPIPE, ECONNRESET) or the socket broke.
    PeerGone,
}

/// A completion turned into what it means.
#[derive(Debug)]
pub enum Event {
    Accept {
        result: Accepted,
        more: bool,
    },
    Recv {
        key: Key,
        result: Received,
        buffer: Option<u16>,
        more: bool,
    },
    Send {
        key: Key,
        result: Sent,
    },
    /// A zero-copy send: the result (first completion) or the notification (`result: None`);
    /// `more` says whether another completion follows.
    SendZc {
        key: Key,
        result: Option<Sent>,
        more: bool,
    },
    /// TCP_NODELAY on an accepted socket; `ok` is false if the kernel refused it.
    NoDelay {
        key: Key,
        ok: bool,
    },
    Shutdown {
        key: Key,
    },
    Close {
        key: Key,
    },
    /// The hang-up poll of a paused connection completed.
    Hangup {
        key: Key,
        seen: Hangup,
    },
    Wake,
    CancelAccept,
    CancelRecv,
}

/// A raw completion, copied out of the CQ so that the loop runs it later (no recursion).
#[derive(Debug, Clone, Copy)]
pub struct Completion {
    pub user_data: u64,
    pub result: i32,
    pub flags: u32,
}

impl Completion {
    /// The one place where results become outcomes, errno by errno.
    pub fn event(self) -> Option<Event> {
        let (tag, key) = split_user_data(self.user_data);
        let more = cqueue::more(self.flags);
        let res = self.result;
        Some(match tag? {
            Tag::Accept => Event::Accept {
                more,
                result: match -res {
                    // Success: the result is the direct-descriptor index.
                    _ if res >= 0 => Accepted::Socket(res as u32),
                    // No free slot in the fixed-file table.
                    libc::ENFILE | libc::EMFILE => Accepted::TableFull,
                    // Cancelled at shutdown.
                    libc::ECANCELED => Accepted::Canceled,
                    // The peer aborted, or a short kernel memory/buffer shortage: keep accepting.
                    libc::ECONNABORTED
                    | libc::EINTR
                    | libc::EAGAIN
                    | libc::ENOBUFS
                    | libc::ENOMEM
                    | libc::EPROTO
                    | libc::EPERM => Accepted::Transient,
                    errno => Accepted::Failed(io::Error::from_raw_os_error(errno)),
                },
            },
            Tag::Recv => Event::Recv {
                key,
                more,
                buffer: cqueue::buffer_select(self.flags),
                result: match -res {
                    // Zero bytes: the peer sent FIN.
                    0 => Received::Eof,
                    // Data in the selected buffer.
                    _ if res > 0 => match cqueue::buffer_select(self.flags) {
                        Some(bid) => Received::Data {
                            bid,
                            len: res as u32,
                        },
                        // Cannot happen with buffer select; treat as a broken connection.
                        None => Received::Reset,
                    },
                    // The provided-buffer ring is empty.
                    libc::ENOBUFS => Received::NoBuffers,
                    // We cancelled it.
                    libc::ECANCELED => Received::Canceled,
                    // Reset, broken pipe, timeout, or anything else: the connection is over.
                    _ => Received::Reset,
                },
            },
            Tag::Send => Event::Send {
                key,
                result: match -res {
                    _ if res >= 0 => Sent::Bytes(res as u32),
                    // EPIPE, ECONNRESET, ECANCELED, ETIMEDOUT…: no more sends on this socket.
                    _ => Sent::PeerGone,
                },
            },
            Tag::SendZc => Event::SendZc {
                key,
                more,
                result: match -res {
                    // The notification: the kernel is done with the buffers.
                    _ if cqueue::notif(self.flags) => None,
                    _ if res >= 0 => Some(Sent::Bytes(res as u32)),
                    // As for Send: the socket is broken.
                    _ => Some(Sent::PeerGone),
                },
            },
            // Failure only costs latency (Nagle); nothing to do either way.
            Tag::NoDelay => Event::NoDelay { key, ok: res >= 0 },
            // ENOTCONN (peer already gone) and success end the same way: go on to Close.
            Tag::Shutdown => Event::Shutdown { key },
            // Close of a direct descriptor cannot fail in a way we could act on.
            Tag::Close => Event::Close { key },
            // A read of the eventfd (or EAGAIN): drain the mailbox and re-arm.
            Tag::Wake => Event::Wake,
            // ENOENT/EALREADY (accept already finished) and success are the same to us.
            Tag::CancelAccept => Event::CancelAccept,
            // ENOENT (the receive had already ended) and success are the same: the receive's
            // own last completion says when it stopped.
            Tag::CancelRecv => Event::CancelRecv,
            Tag::Hangup => Event::Hangup {
                key,
                seen: match -res {
                    _ if res >= 0 && res & i32::from(libc::POLLHUP | libc::POLLERR) != 0 => {
                        Hangup::Reset
                    }
                    _ if res >= 0 => Hangup::Fin,
                    libc::ECANCELED => Hangup::Canceled,
                    // The poll itself failed: the socket is not usable.
                    _ => Hangup::Reset,
                },
            },
            // As for CancelRecv: the poll's own completion says when it stopped.
            Tag::CancelHangup => Event::CancelRecv,
        })
    }
}

/// Which taskrun mode the kernel accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    DeferTaskrun,
    CoopTaskrun,
    Plain,
}

/// One worker's ring, with its backlog and the completions of the last wait.
pub struct Ring {
    uring: IoUring,
    backlog: VecDeque<squeue::Entry>,
    pub flavor: Flavor,
    /// The fair share of one multishot receive, 0 for none ([`Ring::set_recv_share`]).
    recv_share_bytes: u32,
}

fn unavailable(e: io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        format!(
            "io_uring is unavailable ({e}); ringws needs Linux >= 6.1 with io_uring enabled \
             (check /proc/sys/kernel/io_uring_disabled and seccomp filters)"
        ),
    )
}

impl Ring {
    /// Sets up a ring on the calling thread (SINGLE_ISSUER binds it to this thread): DEFER_TASKRUN
    /// if the kernel has it, else COOP_TASKRUN, else plain.
    pub fn new(entries: u32) -> io::Result<Ring> {
        let cq = entries.saturating_mul(4);
        let attempts = [Flavor::DeferTaskrun, Flavor::CoopTaskrun, Flavor::Plain];
        let mut last = None;
        for flavor in attempts {
            let mut b = IoUring::builder();
            b.setup_cqsize(cq).setup_submit_all();
            match flavor {
                Flavor::DeferTaskrun => b.setup_single_issuer().setup_defer_taskrun(),
                Flavor::CoopTaskrun => b.setup_coop_taskrun(),
                Flavor::Plain => &mut b,
            };
            match b.build(entries) {
                Ok(uring) => {
                    return Ok(Ring {
                        uring,
                        backlog: VecDeque::new(),
                        flavor,
                        recv_share_bytes: 0,
                    });
                }
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = Some(e),
                Err(e) => return Err(unavailable(e)),
            }
        }
        Err(unavailable(
            last.unwrap_or_else(|| io::Error::other("no ring")),
        ))
    }

    /// Caps what one armed multishot receive takes, `bytes` in all, before it ends: the
    /// connection is then armed again, behind the others. Without it a receive that always
    /// finds data takes up to 32 buffers each time the kernel runs it, and a connection whose
    /// few bytes arrive behind a thousand such ones waits for all of them (#16: echoes of one
    /// well-behaved client took 1-3 s beside 1,000 flooding ones, 67-150 ms with 32 KiB).
    ///
    /// Kernels before 6.16 refuse the limit (EINVAL at prep); it is probed once here on a
    /// socket pair, and without support reads go on uncapped. Returns whether it took effect.
    /// Call it before anything else is submitted: the probe reaps every completion there is.
    pub fn set_recv_share(&mut self, bytes: u32) -> bool {
        self.recv_share_bytes = 0;
        if bytes == 0 || !self.recv_limit_supported() {
            return false;
        }
        self.recv_share_bytes = bytes;
        true
    }

    /// Whether the kernel takes a total limit on a multishot receive: one byte waits on a
    /// socket pair, and a capped receive of it from buffer group 0xffff (never registered) ends
    /// with ENOBUFS where the limit is known (EINVAL at prep where it is not). Anything else, or
    /// no answer within a second, counts as unknown. Every wait is bounded, and a receive that
    /// has not answered is cancelled before the sockets close.
    fn recv_limit_supported(&mut self) -> bool {
        let mut fds = [0; 2];
        let kind = libc::SOCK_STREAM | libc::SOCK_CLOEXEC;
        // SAFETY: socketpair writes two descriptors into the array it is given.
        if unsafe { libc::socketpair(libc::AF_UNIX, kind, 0, fds.as_mut_ptr()) } != 0 {
            return false;
        }
        // SAFETY: fds[1] is the socket just made; one byte from a static.
        let sent = unsafe { libc::write(fds[1], b"x".as_ptr().cast(), 1) };
        let mut entry = opcode::RecvMulti::new(types::Fd(fds[0]), u16::MAX)
            .build()
            .user_data(PROBE_USER_DATA);
        set_recv_total_limit(&mut entry, 1);
        // SAFETY: the entry carries no pointers; the socket outlives it (closed below, after
        // its completion or its cancel).
        let submitted = sent == 1
            && self.backlog.is_empty()
            && unsafe { self.uring.submission().push(&entry) }.is_ok()
            && self.uring.submit().is_ok_and(|n| n == 1);
        let mut result = None;
        if submitted {
            result = self.wait_probe(PROBE_USER_DATA);
            if result.is_none() {
                let cancel = opcode::AsyncCancel::new(PROBE_USER_DATA)
                    .build()
                    .user_data(PROBE_USER_DATA - 1);
                // SAFETY: the cancel carries no pointers.
                if unsafe { self.uring.submission().push(&cancel) }.is_ok() {
                    let _ = self.wait_probe(PROBE_USER_DATA);
                }
            }
        }
        // SAFETY: both descriptors are ours and the ring is done with them (the receive
        // answered or was cancelled; a request still in the kernel holds its own reference
        // to the file).
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
        result == Some(-libc::ENOBUFS)
    }

    /// Waits at most a second in all for the completion tagged `user_data`; its result. Other
    /// completions seen meanwhile (the probe's cancel) are dropped.
    fn wait_probe(&mut self, user_data: u64) -> Option<i32> {
        let ts = types::Timespec::new().nsec(100_000_000);
        for _ in 0..10 {
            let args = types::SubmitArgs::new().timespec(&ts);
            match self.uring.submitter().submit_with_args(1, &args) {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR)) => {}
                Err(_) => return None,
            }
            let mut found = None;
            for c in self.uring.completion() {
                if c.user_data() == user_data {
                    found = Some(c.result());
                }
            }
            if found.is_some() {
                return found;
            }
        }
        None
    }

    /// The submitter, for registrations.
    pub fn submitter(&self) -> io_uring::Submitter<'_> {
        self.uring.submitter()
    }

    /// Queues an operation; it goes to the kernel at the next [`Ring::submit_and_wait`]. If the
    /// submission queue is full, it waits in the backlog.
    ///
    /// # Safety
    ///
    /// Every pointer in `op` (send buffers, msghdr and its iovecs, the wake buffer) must stay valid
    /// and unmoved until the operation's completion has been reaped.
    pub unsafe fn push(&mut self, op: Op) {
        let entry = op.entry(self.recv_share_bytes);
        if !self.backlog.is_empty() {
            self.backlog.push_back(entry);
            return;
        }
        let mut sq = self.uring.submission();
        // SAFETY: the caller guarantees the pointers in `op` outlive the operation.
        if unsafe { sq.push(&entry) }.is_err() {
            drop(sq);
            self.backlog.push_back(entry);
        }
    }

    /// Moves backlog entries into the SQ, submitting when it fills.
    fn drain_backlog(&mut self) -> io::Result<()> {
        while !self.backlog.is_empty() {
            {
                let mut sq = self.uring.submission();
                while let Some(entry) = self.backlog.front() {
                    // SAFETY: the entry was built from an `Op` whose pointers the pusher
                    // guaranteed (see `push`).
                    if unsafe { sq.push(entry) }.is_err() {
                        break;
                    }
                    self.backlog.pop_front();
                }
            }
            if !self.backlog.is_empty() {
                match self.uring.submit() {
                    Ok(_) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => break,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// The one enter of a loop turn: submits everything queued and waits for at least one
    /// completion or `timeout_ms`, then copies all completions into `out`.
    pub fn submit_and_wait(
        &mut self,
        timeout_ms: Option<u64>,
        out: &mut Vec<Completion>,
    ) -> io::Result<()> {
        self.drain_backlog()?;
        let res = match timeout_ms {
            Some(ms) => {
                let ts = types::Timespec::new()
                    .sec(ms / 1000)
                    .nsec((ms % 1000) as u32 * 1_000_000);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.uring.submitter().submit_with_args(1, &args)
            }
            None => self.uring.submitter().submit_and_wait(1),
        };
        match res {
            Ok(_) => {}
            // Timed out, interrupted, or the CQ is full (reap and come back): all fine.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) => {}
            Err(e) => return Err(e),
        }
        out.clear();
        let mut cq = self.uring.completion();
        cq.sync();
        out.extend(cq.map(|c| Completion {
            user_data: c.user_data(),
            result: c.result(),
            flags: c.flags(),
        }));
        Ok(())
    }

    /// Submits without waiting (used while shutting down).
    pub fn submit(&mut self) -> io::Result<()> {
        self.drain_backlog()?;
        self.uring.submit().map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_round_trips() {
        for (tag, index, generation) in [
            (Tag::Recv, 0, 0),
            (Tag::Send, 19_999, GENERATION_MASK),
            (Tag::Close, u32::MAX, 7),
        ] {
            let ud = user_data(tag, Key { index, generation });
            let (t, k) = split_user_data(ud);
            assert_eq!(t, Some(tag));
            assert_eq!(k, Key { index, generation });
        }
        assert_eq!(split_user_data(0).0, None);
    }

    #[test]
    fn recv_errnos_are_named() {
        let ud = user_data(
            Tag::Recv,
            Key {
                index: 3,
                generation: 1,
            },
        );
        let ev = |result, flags| {
            Completion {
                user_data: ud,
                result,
                flags,
            }
            .event()
            .unwrap()
        };
        assert!(matches!(
            ev(0, 0),
            Event::Recv {
                result: Received::Eof,
                ..
            }
        ));
        assert!(matches!(
            ev(-libc::ENOBUFS, 0),
            Event::Recv {
                result: Received::NoBuffers,
                ..
            }
        ));
        assert!(matches!(
            ev(-libc::ECONNRESET, 0),
            Event::Recv {
                result: Received::Reset,
                ..
            }
        ));
        // IORING_CQE_F_BUFFER is bit 0; the buffer id is in the top 16 bits.
        let flags = 1 | (5 << 16);
        match ev(10, flags) {
            Event::Recv {
                result: Received::Data { bid, len },
                key,
                ..
            } => {
                assert_eq!((bid, len, key.index, key.generation), (5, 10, 3, 1));
            }
            other => panic!("{other:?}"),
        }
    }

    /// Linux's version as (major, minor), from uname.
    fn kernel_version() -> (u32, u32) {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut parts = release
            .trim()
            .split(['.', '-'])
            .map(|p| p.parse().unwrap_or(0));
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
    }

    /// The fair share: a multishot receive with 10 KiB waiting takes 4 KiB in 1 KiB buffers,
    /// then ends (no MORE); armed again, it takes the next 4 KiB.
    #[test]
    fn a_shared_receive_ends_after_its_share() {
        let mut ring = Ring::new(64).unwrap();
        let supported = ring.set_recv_share(4096);
        // Older kernels may have it backported: only a new one must.
        if kernel_version() >= (6, 16) {
            assert!(supported, "Linux 6.16 and later cap a multishot receive");
        }
        if !supported {
            return;
        }
        let mut fds = [0; 2];
        // SAFETY: socketpair fills the array.
        let made =
            unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, fds.as_mut_ptr()) };
        assert_eq!(made, 0);
        ring.submitter().register_files(&[fds[0]]).unwrap();
        let mut pool =
            crate::runtime::buffers::RecvPool::new(&ring.submitter(), 3, 16, 1024).unwrap();
        let data = vec![9u8; 10 * 1024];
        // SAFETY: fds[1] is ours; data outlives the call.
        let wrote = unsafe { libc::write(fds[1], data.as_ptr().cast(), data.len()) };
        assert_eq!(wrote, 10 * 1024);
        let key = Key {
            index: 5,
            generation: 1,
        };
        let mut out = Vec::new();
        for _round in 0..2 {
            // SAFETY: a receive carries no pointers.
            unsafe {
                ring.push(Op::Recv {
                    key,
                    fd: 0,
                    group: 3,
                })
            };
            let (mut got, mut ended) = (0, false);
            while !ended {
                ring.submit_and_wait(Some(1000), &mut out).unwrap();
                assert!(!out.is_empty(), "the receive answers");
                for c in &out {
                    let Some(Event::Recv { result, more, .. }) = c.event() else {
                        panic!("{c:?}")
                    };
                    if let Received::Data { bid, len } = result {
                        got += len;
                        pool.give_back(bid);
                    }
                    ended |= !more;
                }
            }
            assert_eq!(got, 4096, "one share per arming");
        }
        // SAFETY: both descriptors are ours.
        unsafe {
            libc::close(fds[1]);
        }
        ring.submitter().unregister_files().unwrap();
        // SAFETY: as above.
        unsafe {
            libc::close(fds[0]);
        }
    }
}
