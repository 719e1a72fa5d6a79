//! Sockets, descriptors, limits and signals: every libc call of the runtime goes through
//! `syscall!`, which turns -1 into `io::Error` (the mio habit).

use std::io;
use std::mem;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Return types of libc calls that signal failure with -1.
pub trait MinusOne: Copy + PartialEq {
    const MINUS_ONE: Self;
}
impl MinusOne for i32 {
    const MINUS_ONE: Self = -1;
}
impl MinusOne for isize {
    const MINUS_ONE: Self = -1;
}

/// Turns a libc return value into `io::Result`: -1 becomes `io::Error::last_os_error()`.
pub fn cvt<T: MinusOne>(res: T) -> io::Result<T> {
    if res == T::MINUS_ONE {
        Err(io::Error::last_os_error())
    } else {
        Ok(res)
    }
}

/// `syscall!(fn(args…))` calls `libc::fn(args…)` and turns -1 into `io::Error`.
///
/// The macro contains the `unsafe` block; every call site states why its arguments are valid.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        // SAFETY: the arguments are valid for this call; each call site says why, above it.
        $crate::runtime::sys::cvt(unsafe { libc::$fn($($arg),*) })
    }};
}

const ONE: libc::c_int = 1;

fn set_int_option(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<()> {
    // `ONE` is a live c_int and its exact size is passed.
    syscall!(setsockopt(
        fd,
        level,
        name,
        (&ONE as *const libc::c_int).cast(),
        mem::size_of::<libc::c_int>() as libc::socklen_t,
    ))
    .map(drop)
}

fn sockaddr_of(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// A listening TCP socket with SO_REUSEADDR, SO_REUSEPORT (one per worker on the same port) and
/// TCP_NODELAY (accepted sockets inherit it on Linux; the worker also sets it per connection).
pub fn listener(addr: SocketAddr, backlog: u32) -> io::Result<OwnedFd> {
    let family = match addr.ip() {
        IpAddr::V4(_) => libc::AF_INET,
        IpAddr::V6(_) => libc::AF_INET6,
    };
    // Plain integer arguments.
    let fd = syscall!(socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0))?;
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    set_int_option(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR)?;
    set_int_option(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEPORT)?;
    set_int_option(fd.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_NODELAY)?;
    let (storage, len) = sockaddr_of(addr);
    // `storage` holds a sockaddr of `len` bytes and lives across the call.
    syscall!(bind(
        fd.as_raw_fd(),
        (&storage as *const libc::sockaddr_storage).cast(),
        len
    ))?;
    let backlog = backlog.min(libc::c_int::MAX as u32) as libc::c_int;
    // Plain integer arguments on a socket we own.
    syscall!(listen(fd.as_raw_fd(), backlog))?;
    Ok(fd)
}

/// The port a socket is bound to (to read back port 0).
pub fn local_port(fd: RawFd) -> io::Result<u16> {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // `storage` and `len` are live and `len` holds the size of `storage`.
    syscall!(getsockname(
        fd,
        (&mut storage as *mut libc::sockaddr_storage).cast(),
        &mut len
    ))?;
    let port = match storage.ss_family as libc::c_int {
        // SAFETY: the family says the storage holds a sockaddr_in.
        libc::AF_INET => unsafe { (*(&storage as *const _ as *const libc::sockaddr_in)).sin_port },
        // SAFETY: the family says the storage holds a sockaddr_in6.
        _ => unsafe { (*(&storage as *const _ as *const libc::sockaddr_in6)).sin6_port },
    };
    Ok(u16::from_be(port))
}

/// A (blocking: io_uring arms a poll for it) eventfd used to wake a worker's ring from another thread.
pub fn eventfd() -> io::Result<OwnedFd> {
    // Plain integer arguments.
    let fd = syscall!(eventfd(0, libc::EFD_CLOEXEC))?;
    // SAFETY: `fd` was just returned by eventfd(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds 1 to an eventfd's counter, waking the ring that has a read armed on it.
pub fn eventfd_wake(fd: RawFd) {
    let one: u64 = 1;
    // `one` is a live u64 and its exact size is passed. EAGAIN (counter saturated) means a wake
    // is already pending, so the error is ignored.
    let _ = syscall!(write(
        fd,
        (&one as *const u64).cast(),
        mem::size_of::<u64>()
    ));
}

/// Raises the soft RLIMIT_NOFILE to the hard limit and checks that `needed` descriptors fit.
pub fn ensure_nofile(needed: u64) -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // `lim` is a live rlimit.
    syscall!(getrlimit(libc::RLIMIT_NOFILE, &mut lim))?;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // `lim` is a live rlimit with cur <= max.
        syscall!(setrlimit(libc::RLIMIT_NOFILE, &lim))?;
    }
    if needed > lim.rlim_cur {
        return Err(io::Error::other(format!(
            "RLIMIT_NOFILE is {} but the fixed-file table needs {needed} entries per worker \
             (connections_per_worker_max + spare): raise `ulimit -n` or lower \
             --connections-per-worker-max",
            lim.rlim_cur
        )));
    }
    Ok(lim.rlim_cur)
}

/// The signal set {SIGINT, SIGTERM, SIGHUP} (SIGHUP: reload the TLS certificates).
pub fn shutdown_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain old data; sigemptyset initialises it right after.
    let mut set: libc::sigset_t = unsafe { mem::zeroed() };
    // `set` is a live sigset_t; the signal numbers are valid.
    let _ = syscall!(sigemptyset(&mut set));
    let _ = syscall!(sigaddset(&mut set, libc::SIGINT));
    let _ = syscall!(sigaddset(&mut set, libc::SIGTERM));
    let _ = syscall!(sigaddset(&mut set, libc::SIGHUP));
    set
}

/// Ignores SIGPIPE for the whole process: sends from registered buffers are `write`s, which
/// have no MSG_NOSIGNAL, and a peer that is gone must cost an EPIPE, not the process.
pub fn ignore_sigpipe() -> io::Result<()> {
    // SAFETY: setting a signal's disposition to SIG_IGN has no memory-safety requirement.
    let old = unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    if old == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Blocks SIGINT, SIGTERM and SIGHUP in the calling thread (threads spawned later inherit the mask), so
/// that only the thread waiting in [`wait_signal`] receives them.
pub fn block_shutdown_signals() -> io::Result<()> {
    let set = shutdown_signals();
    // SAFETY: `set` is a valid, initialised sigset_t; the old mask is not wanted.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        Err(io::Error::from_raw_os_error(rc))
    } else {
        Ok(())
    }
}

/// Waits for SIGINT, SIGTERM or SIGHUP (which must be blocked) and returns its number.
pub fn wait_signal() -> io::Result<libc::c_int> {
    let set = shutdown_signals();
    let mut sig: libc::c_int = 0;
    // SAFETY: `set` is initialised and `sig` is a live c_int.
    let rc = unsafe { libc::sigwait(&set, &mut sig) };
    if rc != 0 {
        Err(io::Error::from_raw_os_error(rc))
    } else {
        Ok(sig)
    }
}

/// Milliseconds on the monotonic clock (CLOCK_MONOTONIC).
pub fn now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // `ts` is a live timespec; CLOCK_MONOTONIC always exists on Linux.
    let _ = syscall!(clock_gettime(libc::CLOCK_MONOTONIC, &mut ts));
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// Gives the allocator's free memory back to the kernel (glibc `malloc_trim(0)`: every arena,
/// including free pages inside them). Elsewhere it does nothing. Called after a burst, at most
/// once per `budget::TRIM_INTERVAL_MS` (`budget.rs`), never on the hot path.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; glibc locks each arena while it trims it.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Fixes glibc's mmap threshold at `bytes` (`mallopt(M_MMAP_THRESHOLD)`), which also turns off
/// its dynamic growth: every allocation of at least `bytes` (a large message's reassembly
/// buffer, a large send queue) is its own mapping, returned to the kernel when it is freed,
/// instead of a piece of a heap that fragments and keeps its pages. 0 leaves the allocator as
/// it is; elsewhere than glibc it does nothing.
pub fn fix_mmap_threshold(bytes: usize) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if let Ok(n) = libc::c_int::try_from(bytes)
        && n > 0
    {
        // SAFETY: mallopt has no memory preconditions; it only changes a tunable of glibc's
        // allocator (M_MMAP_THRESHOLD, at most 32 MiB on 64-bit: a larger value is refused).
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, n);
        }
    }
}
