//! Buffers that the kernel reads from or writes into.
//!
//! - [`RecvPool`]: a provided-buffer ring. All receive buffers are allocated once, up front; the
//!   kernel picks one per multishot-recv completion, the worker parses it in place and gives it
//!   back at once. A connection holds no receive buffer between completions.
//! - [`SendArena`]: the worker's registered (fixed) send memory, allocated and registered with the
//!   ring once; each pooled send queue owns two of its chunks for its whole life.
//! - [`SendQueue`]: a connection's outgoing bytes, borrowed from a per-worker [`SendPool`] only
//!   while something is queued or in flight. Own frames (echo, pongs, closes) are copied into the
//!   batch's registered chunk (or, past its size, a reused byte vector); shared frames
//!   (broadcast, publish) are `Bytes` encoded once and sent to every subscriber by reference. A
//!   batch that is one run of bytes in its chunk leaves in one `WRITE_FIXED`; any other batch in
//!   one `sendmsg` (an iovec per segment). At most one send per connection is in flight, which
//!   keeps order.

use std::alloc::{self, Layout};
use std::io;
use std::mem;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use bytes::Bytes;
use io_uring::types::BufRingEntry;

use super::ring::Ring;

/// Most iovecs in one sendmsg (IOV_MAX); the rest leave in the next send.
const IOV_MAX: usize = 1024;

/// A provided-buffer ring registered with the kernel as one buffer group.
pub struct RecvPool {
    entries: NonNull<BufRingEntry>,
    entries_layout: Layout,
    memory: NonNull<u8>,
    memory_layout: Layout,
    buffer_bytes: u32,
    count: u16,
    tail: u16,
    pub group: u16,
}

impl RecvPool {
    /// Allocates `count` buffers of `buffer_bytes` (count a power of two) and registers them as
    /// buffer group `group` of `ring`.
    pub fn new(
        submitter: &io_uring::Submitter<'_>,
        group: u16,
        count: u16,
        buffer_bytes: u32,
    ) -> io::Result<RecvPool> {
        assert!(count.is_power_of_two() && count <= 1 << 15);
        let entries_layout =
            Layout::from_size_align(usize::from(count) * mem::size_of::<BufRingEntry>(), 4096)
                .map_err(io::Error::other)?;
        // 16-byte alignment lets the allocator hand out fresh zero pages lazily (calloc/mmap).
        let memory_layout = Layout::from_size_align(usize::from(count) * buffer_bytes as usize, 16)
            .map_err(io::Error::other)?;
        // SAFETY: both layouts have a non-zero size (count >= 1, buffer_bytes >= 512).
        let (entries, memory) = unsafe {
            (
                alloc::alloc_zeroed(entries_layout),
                alloc::alloc_zeroed(memory_layout),
            )
        };
        let (Some(entries), Some(memory)) = (NonNull::new(entries), NonNull::new(memory)) else {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        };
        let mut pool = RecvPool {
            entries: entries.cast(),
            entries_layout,
            memory,
            memory_layout,
            buffer_bytes,
            count,
            tail: 0,
            group,
        };
        // SAFETY: the entry array is page aligned, `count` entries long, and lives until `pool`
        // is dropped; the worker drops the pool only after the ring is quiescent or gone.
        unsafe {
            submitter.register_buf_ring_with_flags(
                pool.entries.as_ptr() as u64,
                count,
                group,
                0,
            )?;
        }
        for bid in 0..count {
            pool.put(bid);
        }
        pool.publish();
        Ok(pool)
    }

    /// Writes buffer `bid` into the next ring entry (not yet visible to the kernel).
    fn put(&mut self, bid: u16) {
        assert!(bid < self.count);
        let slot = usize::from(self.tail & (self.count - 1));
        // SAFETY: `slot < count`, so the entry is inside the allocation; the kernel only reads
        // entries before the published tail, and this one is at or after it.
        let entry = unsafe { &mut *self.entries.as_ptr().add(slot) };
        // SAFETY: `bid < count`, so the buffer lies inside `memory`.
        let addr = unsafe {
            self.memory
                .as_ptr()
                .add(usize::from(bid) * self.buffer_bytes as usize)
        };
        entry.set_addr(addr as u64);
        entry.set_len(self.buffer_bytes);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes the entries written so far visible to the kernel.
    /// Makes every buffer put back so far visible to the kernel.
    pub fn publish(&self) {
        // SAFETY: `entries` is the base of the registered ring and its entries are initialised.
        let tail = unsafe { BufRingEntry::tail(self.entries.as_ptr()) };
        // SAFETY: the tail field is a naturally aligned u16 shared with the kernel, which only
        // reads it; an atomic view with Release orders the entry writes before it.
        unsafe { (*(tail as *const AtomicU16)).store(self.tail, Ordering::Release) };
    }

    /// The bytes the kernel wrote into buffer `bid`.
    pub fn buffer(&mut self, bid: u16, len: u32) -> &mut [u8] {
        assert!(bid < self.count && len <= self.buffer_bytes);
        // SAFETY: `bid < count` and `len <= buffer_bytes`, so the range is inside `memory`. The
        // kernel handed this buffer to us in a completion and does not touch it until it is given
        // back; `&mut self` makes this the only view.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.memory
                    .as_ptr()
                    .add(usize::from(bid) * self.buffer_bytes as usize),
                len as usize,
            )
        }
    }

    /// Returns buffer `bid` to the kernel.
    pub fn give_back(&mut self, bid: u16) {
        self.put(bid);
        self.publish();
    }

    /// Puts buffer `bid` back without publishing it yet (a caller that returns many buffers in
    /// one turn publishes once, with [`RecvPool::publish`]).
    pub fn put_back(&mut self, bid: u16) {
        self.put(bid);
    }
}

impl Drop for RecvPool {
    fn drop(&mut self) {
        // SAFETY: both pointers came from `alloc_zeroed` with these layouts. The worker drops the
        // pool only once no receive is in flight (or forgets it).
        unsafe {
            alloc::dealloc(self.entries.as_ptr().cast(), self.entries_layout);
            alloc::dealloc(self.memory.as_ptr(), self.memory_layout);
        }
    }
}

/// Registered send memory: `count` chunks of `chunk_bytes`, registered with the ring as fixed
/// buffers `0..count`. Allocated once; freed only when the worker ends, after its ring.
pub struct SendArena {
    memory: NonNull<u8>,
    layout: Layout,
    chunk_bytes: u32,
    free: Vec<u16>,
}

/// One registered chunk, owned by one batch at a time.
#[derive(Debug, Clone, Copy)]
struct Chunk {
    ptr: NonNull<u8>,
    cap: u32,
    index: u16,
}

impl Chunk {
    /// Whether `[p, p + len)` lies inside this chunk.
    fn holds(&self, p: *const u8, len: usize) -> bool {
        let start = self.ptr.as_ptr() as usize;
        let p = p as usize;
        p >= start && p + len <= start + self.cap as usize
    }
}

impl SendArena {
    /// Allocates `count` chunks of `chunk_bytes` and registers them with `ring`.
    pub fn new(ring: &Ring, count: u16, chunk_bytes: u32) -> io::Result<SendArena> {
        assert!(count > 0 && chunk_bytes > 0);
        let layout = Layout::from_size_align(usize::from(count) * chunk_bytes as usize, 4096)
            .map_err(io::Error::other)?;
        // SAFETY: the layout has a non-zero size (count > 0, chunk_bytes > 0).
        let memory = NonNull::new(unsafe { alloc::alloc_zeroed(layout) })
            .ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        let arena = SendArena {
            memory,
            layout,
            chunk_bytes,
            free: (0..count).rev().collect(),
        };
        let iovecs: Vec<libc::iovec> = (0..count)
            .map(|i| libc::iovec {
                iov_base: arena.chunk_ptr(i).as_ptr().cast(),
                iov_len: chunk_bytes as usize,
            })
            .collect();
        // SAFETY: every iovec describes memory of `arena`, which stays allocated until the
        // arena is dropped; the worker drops its ring (unregistering them) before its pool.
        unsafe { ring.submitter().register_buffers(&iovecs) }?;
        Ok(arena)
    }

    fn chunk_ptr(&self, i: u16) -> NonNull<u8> {
        // SAFETY: i < count, so the offset stays inside the allocation.
        unsafe { self.memory.add(usize::from(i) * self.chunk_bytes as usize) }
    }

    fn take(&mut self) -> Option<Chunk> {
        let index = self.free.pop()?;
        Some(Chunk {
            ptr: self.chunk_ptr(index),
            cap: self.chunk_bytes,
            index,
        })
    }

    fn give_back(&mut self, c: Chunk) {
        self.free.push(c.index);
    }
}

impl Drop for SendArena {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; no send is in flight once the worker
        // drops its pool (its ring is gone).
        unsafe { alloc::dealloc(self.memory.as_ptr(), self.layout) };
    }
}

/// A piece of a batch: bytes in the batch's registered chunk or its own vector, or a shared
/// frame.
enum Seg {
    Fixed { start: usize, end: usize },
    Own { start: usize, end: usize },
    Shared(Bytes),
}

/// Frames queued in one turn.
#[derive(Default)]
struct Batch {
    /// Registered memory for own bytes, if the pool had a chunk for this queue.
    chunk: Option<Chunk>,
    chunk_len: usize,
    own: Vec<u8>,
    segs: Vec<Seg>,
    bytes: usize,
}

impl Batch {
    fn push_own(&mut self, parts: &[&[u8]]) {
        let n: usize = parts.iter().map(|p| p.len()).sum();
        if let Some(c) = self.chunk
            && self.chunk_len + n <= c.cap as usize
        {
            return self.push_fixed(c, parts, n);
        }
        let start = self.own.len();
        self.own.reserve(n);
        for p in parts {
            self.own.extend_from_slice(p);
        }
        let end = self.own.len();
        self.bytes += end - start;
        if let Some(Seg::Own { end: last, .. }) = self.segs.last_mut()
            && *last == start
        {
            *last = end;
            return;
        }
        self.segs.push(Seg::Own { start, end });
    }

    /// Copies `parts` (`n` bytes, known to fit) into the registered chunk.
    fn push_fixed(&mut self, c: Chunk, parts: &[&[u8]], n: usize) {
        let start = self.chunk_len;
        // SAFETY: the chunk is owned by this batch alone (taken from the arena for this queue);
        // the kernel reads it only while this batch is in flight, and nothing is pushed to a
        // batch in flight (the queue fills the other one). `start + n <= cap` was checked.
        let mem = unsafe { std::slice::from_raw_parts_mut(c.ptr.as_ptr(), c.cap as usize) };
        let mut at = start;
        for p in parts {
            mem[at..at + p.len()].copy_from_slice(p);
            at += p.len();
        }
        debug_assert_eq!(at - start, n);
        self.note_fixed(start, at);
    }

    /// The bytes of one of this batch's segments.
    fn seg_bytes<'a>(&'a self, seg: &'a Seg) -> &'a [u8] {
        match seg {
            Seg::Fixed { start, end } => {
                let c = self.chunk.expect("a fixed segment has its chunk");
                // SAFETY: `start..end` was written by `push_fixed` (or `push_sealed`) inside
                // the chunk, which this batch owns; it is only read here and by the kernel.
                unsafe { std::slice::from_raw_parts(c.ptr.as_ptr().add(*start), end - start) }
            }
            Seg::Own { start, end } => &self.own[*start..*end],
            Seg::Shared(b) => b,
        }
    }

    /// Encrypts `plain` with `seal` into the registered chunk while records fit there, the
    /// rest into the heap vector.
    fn push_sealed(&mut self, mut plain: &[u8], seal: &mut Seal<'_>) -> Result<(), SealError> {
        while !plain.is_empty() {
            let room = self
                .chunk
                .map_or(0, |c| (c.cap as usize).saturating_sub(self.chunk_len));
            if room > SEAL_OVERHEAD_BYTES_MAX {
                let c = self.chunk.expect("room implies a chunk");
                let take = plain.len().min(room - SEAL_OVERHEAD_BYTES_MAX);
                let start = self.chunk_len;
                // SAFETY: the chunk is owned by this batch alone and the batch is not in flight
                // (sealing fills the idle batch); `start + room <= cap`.
                let mem =
                    unsafe { std::slice::from_raw_parts_mut(c.ptr.as_ptr().add(start), room) };
                match seal(&plain[..take], mem) {
                    Ok(n) => {
                        self.note_fixed(start, start + n);
                        plain = &plain[take..];
                        continue;
                    }
                    Err(SealError::TooSmall(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            let start = self.own.len();
            let mut room = plain.len() + SEAL_OVERHEAD_BYTES_MAX * (plain.len() / 16_384 + 1);
            loop {
                self.own.resize(start + room, 0);
                match seal(plain, &mut self.own[start..]) {
                    Ok(n) => {
                        self.own.truncate(start + n);
                        break;
                    }
                    Err(SealError::TooSmall(need)) if need > room => room = need,
                    Err(e) => {
                        self.own.truncate(start);
                        return Err(e);
                    }
                }
            }
            let end = self.own.len();
            self.bytes += end - start;
            self.segs.push(Seg::Own { start, end });
            return Ok(());
        }
        Ok(())
    }

    /// Records `start..end` of the chunk as written.
    fn note_fixed(&mut self, start: usize, end: usize) {
        self.chunk_len = end;
        self.bytes += end - start;
        if let Some(Seg::Fixed { end: last, .. }) = self.segs.last_mut()
            && *last == start
        {
            *last = end;
            return;
        }
        self.segs.push(Seg::Fixed { start, end });
    }

    fn push_shared(&mut self, frame: Bytes) {
        self.bytes += frame.len();
        self.segs.push(Seg::Shared(frame));
    }

    fn clear(&mut self) {
        self.chunk_len = 0;
        self.own.clear();
        self.segs.clear();
        self.bytes = 0;
    }
}

/// Bound on what TLS adds to one record (header, nonce, tag, content type and some padding
/// room): a record of plaintext up to the room left in a chunk less this always fits.
const SEAL_OVERHEAD_BYTES_MAX: usize = 64;

/// Why encrypting a batch failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealError {
    /// The output needs this many bytes.
    TooSmall(usize),
    /// The TLS connection cannot encrypt (not ready, or broken).
    Failed,
}

/// Encrypts plaintext into an output buffer, returning the bytes written (TLS: one or more
/// records).
pub type Seal<'a> = dyn FnMut(&[u8], &mut [u8]) -> Result<usize, SealError> + 'a;

/// What the worker must submit for a connection's next send.
pub enum SendOp {
    /// One contiguous buffer.
    Buf(*const u8, u32),
    /// A msghdr with several iovecs.
    Msg(*const libc::msghdr),
    /// One contiguous run inside registered buffer `index`.
    Fixed(*const u8, u32, u16),
}

/// A connection's send queue: the batch in flight (untouched until it completes) and the batch
/// being filled.
pub struct SendQueue {
    inflight: Batch,
    queued: Batch,
    iov: Vec<libc::iovec>,
    iov_pos: usize,
    inflight_left: usize,
    msg: libc::msghdr,
    in_flight: bool,
    /// The result of a zero-copy send, kept until its notification arrives (`u32::MAX`: the
    /// send failed).
    pub zc_result: Option<u32>,
}

impl Default for SendQueue {
    fn default() -> Self {
        SendQueue {
            inflight: Batch::default(),
            queued: Batch::default(),
            iov: Vec::new(),
            iov_pos: 0,
            inflight_left: 0,
            // SAFETY: msghdr is plain old data; all-zero (null pointers, zero lengths) is valid.
            msg: unsafe { mem::zeroed() },
            in_flight: false,
            zc_result: None,
        }
    }
}

impl SendQueue {
    /// Queues bytes of our own (copied), e.g. a frame header and its payload.
    pub fn push_own(&mut self, parts: &[&[u8]]) {
        self.queued.push_own(parts);
    }

    /// Queues a shared frame (by reference).
    pub fn push_shared(&mut self, frame: Bytes) {
        self.queued.push_shared(frame);
    }

    /// Bytes not yet handed to the kernel or not yet acknowledged by it.
    pub fn bytes(&self) -> usize {
        self.inflight_left + self.queued.bytes
    }

    /// Heap bytes this queue holds of its own (its two batches' vectors, by capacity). Shared
    /// frames are not in it: each is counted once, wherever it is queued (`budget::counted`).
    pub fn heap_bytes(&self) -> usize {
        self.inflight.own.capacity() + self.queued.own.capacity()
    }

    /// Bytes of the batch in flight not yet acknowledged.
    pub fn inflight_bytes(&self) -> usize {
        self.inflight_left
    }

    /// Whether a send is in flight.
    pub fn in_flight(&self) -> bool {
        self.in_flight
    }

    /// Whether nothing is queued or in flight.
    pub fn is_empty(&self) -> bool {
        !self.in_flight && self.queued.segs.is_empty()
    }

    /// Starts sending the queued batch. Returns `None` if a send is in flight or nothing is queued.
    /// The returned pointers stay valid until [`SendQueue::complete`] says the batch is done,
    /// provided the queue itself is not moved (it lives in a `Box`).
    pub fn start(&mut self) -> Option<SendOp> {
        if self.in_flight || self.queued.segs.is_empty() {
            return None;
        }
        mem::swap(&mut self.inflight, &mut self.queued);
        Some(self.arm())
    }

    /// Starts sending through TLS: `prefix` (records already framed, e.g. handshake messages
    /// and alerts) and then the queued plaintext, each segment encrypted by `seal` into the
    /// idle batch's registered chunk while it fits (else its heap vector). The plaintext batch
    /// is then cleared, keeping its chunk for the next frames. `Ok(None)` if a send is in
    /// flight or there is nothing to send. On a seal error nothing is sent and the plaintext
    /// is dropped.
    pub fn start_sealed(
        &mut self,
        prefix: &[u8],
        seal: &mut Seal<'_>,
    ) -> Result<Option<SendOp>, SealError> {
        if self.in_flight || (self.queued.segs.is_empty() && prefix.is_empty()) {
            return Ok(None);
        }
        let out = &mut self.inflight;
        out.clear();
        if !prefix.is_empty() {
            out.push_own(&[prefix]);
        }
        let mut result = Ok(());
        for seg in &self.queued.segs {
            let plain = self.queued.seg_bytes(seg);
            if let Err(e) = out.push_sealed(plain, seal) {
                result = Err(e);
                break;
            }
        }
        self.queued.clear();
        if let Err(e) = result {
            self.inflight.clear();
            return Err(e);
        }
        Ok(Some(self.arm()))
    }

    /// Makes the `inflight` batch the send in flight.
    fn arm(&mut self) -> SendOp {
        self.iov.clear();
        for seg in &self.inflight.segs {
            let s = self.inflight.seg_bytes(seg);
            if !s.is_empty() {
                self.iov.push(libc::iovec {
                    iov_base: s.as_ptr() as *mut _,
                    iov_len: s.len(),
                });
            }
        }
        self.iov_pos = 0;
        self.inflight_left = self.inflight.bytes;
        self.in_flight = true;
        self.op()
    }

    /// The same send as a msghdr (for a zero-copy sendmsg).
    pub fn msg(&mut self) -> *const libc::msghdr {
        let rest = &self.iov[self.iov_pos..];
        self.msg.msg_iov = rest.as_ptr() as *mut libc::iovec;
        self.msg.msg_iovlen = rest.len().min(IOV_MAX);
        &self.msg
    }

    fn op(&mut self) -> SendOp {
        let rest = &self.iov[self.iov_pos..];
        if rest.len() == 1 {
            let (p, len) = (rest[0].iov_base as *const u8, rest[0].iov_len);
            if let Some(c) = self.inflight.chunk
                && c.holds(p, len)
            {
                return SendOp::Fixed(p, len as u32, c.index);
            }
            return SendOp::Buf(
                rest[0].iov_base as *const u8,
                rest[0].iov_len.min(1 << 30) as u32,
            );
        }
        self.msg.msg_iov = rest.as_ptr() as *mut libc::iovec;
        self.msg.msg_iovlen = rest.len().min(IOV_MAX);
        SendOp::Msg(&self.msg)
    }

    /// Records that `n` bytes of the in-flight batch went out. Returns the next op if the batch is
    /// not finished (a short write), or `None` when it is (the queue is then ready to `start`).
    pub fn complete(&mut self, mut n: usize) -> Option<SendOp> {
        assert!(self.in_flight, "send completion without a send in flight");
        assert!(n <= self.inflight_left, "kernel sent more than asked");
        self.inflight_left -= n;
        while n > 0 {
            let v = &mut self.iov[self.iov_pos];
            let step = n.min(v.iov_len);
            // SAFETY: `step <= iov_len`, so the new base stays inside (or at the end of) the
            // segment this iovec describes.
            v.iov_base = unsafe { (v.iov_base as *mut u8).add(step) }.cast();
            v.iov_len -= step;
            n -= step;
            if v.iov_len == 0 {
                self.iov_pos += 1;
            }
        }
        while self.iov_pos < self.iov.len() && self.iov[self.iov_pos].iov_len == 0 {
            self.iov_pos += 1;
        }
        if self.iov_pos < self.iov.len() {
            return Some(self.op());
        }
        self.inflight.clear();
        self.in_flight = false;
        None
    }

    /// Forgets everything, in flight included. Only when no send is in flight in the kernel
    /// (its completion has been reaped), e.g. after the peer is gone.
    pub fn abort(&mut self) {
        self.inflight.clear();
        self.queued.clear();
        self.iov.clear();
        self.iov_pos = 0;
        self.inflight_left = 0;
        self.in_flight = false;
        self.zc_result = None;
    }

    /// Drops everything queued (not in flight), e.g. when the peer is gone.
    pub fn discard_queued(&mut self) {
        self.queued.clear();
    }
}

/// Send queues not in use, kept for reuse so that steady traffic allocates nothing.
#[derive(Default)]
#[allow(clippy::vec_box)] // boxed: a queue's address must not change while a send is in flight
pub struct SendPool {
    free: Vec<Box<SendQueue>>,
    arena: Option<SendArena>,
}

/// Queues kept in the pool at most.
const POOL_KEPT_MAX: usize = 256;
/// A queue whose own vector grew past this is shrunk before being kept.
const OWN_KEPT_BYTES_MAX: usize = 16 * 1024;

impl SendPool {
    /// A pool whose new queues get registered chunks from `arena` while it has two to give.
    pub fn with_arena(arena: Option<SendArena>) -> SendPool {
        SendPool {
            free: Vec::new(),
            arena,
        }
    }

    /// A queue for a connection that has something to send.
    pub fn take(&mut self) -> Box<SendQueue> {
        if let Some(q) = self.free.pop() {
            return q;
        }
        let mut q = Box::<SendQueue>::default();
        if let Some(arena) = self.arena.as_mut()
            && arena.free.len() >= 2
        {
            q.inflight.chunk = arena.take();
            q.queued.chunk = arena.take();
        }
        q
    }

    /// Drops the heap vectors of the queues kept (their registered chunks stay).
    pub fn trim(&mut self) {
        for q in &mut self.free {
            for b in [&mut q.inflight, &mut q.queued] {
                b.own = Vec::new();
                b.segs = Vec::new();
            }
            q.iov = Vec::new();
        }
    }

    /// Gives back an empty queue.
    pub fn give_back(&mut self, mut q: Box<SendQueue>) {
        assert!(
            q.is_empty(),
            "a send queue goes back to the pool only when empty"
        );
        if self.free.len() >= POOL_KEPT_MAX {
            if let Some(arena) = self.arena.as_mut() {
                for b in [&mut q.inflight, &mut q.queued] {
                    if let Some(c) = b.chunk.take() {
                        arena.give_back(c);
                    }
                }
            }
            return;
        }
        for b in [&mut q.inflight, &mut q.queued] {
            b.clear();
            if b.own.capacity() > OWN_KEPT_BYTES_MAX {
                b.own = Vec::new();
            }
            if b.segs.capacity() > IOV_MAX {
                b.segs = Vec::new();
            }
        }
        if q.iov.capacity() > IOV_MAX {
            q.iov = Vec::new();
        }
        self.free.push(q);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of(op: &SendOp) -> Vec<u8> {
        match *op {
            // SAFETY: the op points into a live queue in this test.
            SendOp::Buf(p, n) | SendOp::Fixed(p, n, _) => {
                // SAFETY: as above.
                unsafe { std::slice::from_raw_parts(p, n as usize) }.to_vec()
            }
            SendOp::Msg(m) => {
                let mut out = Vec::new();
                // SAFETY: the msghdr and its iovecs live in the queue for this test.
                let m = unsafe { &*m };
                for i in 0..m.msg_iovlen {
                    // SAFETY: as above; each iovec describes live bytes.
                    let v = unsafe { &*m.msg_iov.add(i) };
                    // SAFETY: as above.
                    out.extend_from_slice(unsafe {
                        std::slice::from_raw_parts(v.iov_base as *const u8, v.iov_len)
                    });
                }
                out
            }
        }
    }

    #[test]
    fn short_writes_resume_in_order() {
        let mut q = SendQueue::default();
        q.push_own(&[b"ab", b"cd"]);
        q.push_shared(Bytes::from_static(b"EFG"));
        q.push_own(&[b"h"]);
        assert_eq!(q.bytes(), 8);
        let op = q.start().unwrap();
        assert_eq!(bytes_of(&op), b"abcdEFGh");
        // New frames queued while in flight wait for the next batch.
        q.push_own(&[b"ij"]);
        assert!(q.start().is_none());
        let op = q.complete(5).unwrap();
        assert_eq!(bytes_of(&op), b"FGh");
        assert_eq!(q.bytes(), 5);
        assert!(q.complete(3).is_none());
        let op = q.start().unwrap();
        assert_eq!(bytes_of(&op), b"ij");
        assert!(q.complete(2).is_none());
        assert!(q.is_empty());
        let mut pool = SendPool::default();
        pool.give_back(Box::new(q));
        assert!(pool.take().is_empty());
    }

    fn chunk_of(mem: &mut [u8], index: u16) -> Option<Chunk> {
        Some(Chunk {
            ptr: NonNull::new(mem.as_mut_ptr()).unwrap(),
            cap: mem.len() as u32,
            index,
        })
    }

    #[test]
    fn own_bytes_in_a_chunk_leave_as_one_fixed_write() {
        let (mut a, mut b) = (vec![0u8; 16], vec![0u8; 16]);
        let mut q = SendQueue::default();
        q.inflight.chunk = chunk_of(&mut a, 3);
        q.queued.chunk = chunk_of(&mut b, 4);
        q.push_own(&[b"he", b"ad"]);
        q.push_own(&[b"payload"]);
        let op = q.start().unwrap();
        assert!(matches!(op, SendOp::Fixed(_, 11, 4)), "one run in chunk 4");
        assert_eq!(bytes_of(&op), b"headpayload");
        // While that batch is in flight the other chunk fills; a short write resumes fixed.
        q.push_own(&[b"next"]);
        let op = q.complete(4).unwrap();
        assert!(matches!(op, SendOp::Fixed(_, 7, 4)));
        assert_eq!(bytes_of(&op), b"payload");
        assert!(q.complete(7).is_none());
        let op = q.start().unwrap();
        assert!(
            matches!(op, SendOp::Fixed(_, 4, 3)),
            "the batches swapped chunks"
        );
        assert_eq!(bytes_of(&op), b"next");
        assert!(q.complete(4).is_none());
        // Too big for the chunk: the vector; mixed with a shared frame: sendmsg.
        q.push_own(&[&[7u8; 20]]);
        assert!(matches!(q.start().unwrap(), SendOp::Buf(_, 20)));
        assert!(q.complete(20).is_none());
        q.push_own(&[b"ab"]);
        q.push_shared(Bytes::from_static(b"CD"));
        let op = q.start().unwrap();
        assert!(matches!(op, SendOp::Msg(_)));
        assert_eq!(bytes_of(&op), b"abCD");
        // A short write that leaves only the shared frame is no fixed write.
        let op = q.complete(2).unwrap();
        assert!(matches!(op, SendOp::Buf(_, 2)));
        assert!(q.complete(2).is_none());
        assert!(q.is_empty());
    }

    /// A stand-in cipher: each record is a 4-byte length, the bytes XORed with 0x55, and a
    /// 4-byte tag; `open` is its reference decoder.
    fn fake_seal(plain: &[u8], out: &mut [u8]) -> Result<usize, SealError> {
        let need = plain.len() + 8;
        if out.len() < need {
            return Err(SealError::TooSmall(need));
        }
        out[..4].copy_from_slice(&(plain.len() as u32).to_be_bytes());
        for (o, p) in out[4..].iter_mut().zip(plain) {
            *o = p ^ 0x55;
        }
        out[4 + plain.len()..need].copy_from_slice(b"TAG!");
        Ok(need)
    }

    fn open(mut wire: &[u8]) -> Vec<u8> {
        let mut plain = Vec::new();
        while !wire.is_empty() {
            let n = u32::from_be_bytes(wire[..4].try_into().unwrap()) as usize;
            plain.extend(wire[4..4 + n].iter().map(|b| b ^ 0x55));
            assert_eq!(&wire[4 + n..8 + n], b"TAG!");
            wire = &wire[8 + n..];
        }
        plain
    }

    #[test]
    fn sealed_batches_carry_the_prefix_then_every_queued_byte() {
        let (mut a, mut b) = (vec![0u8; 4096], vec![0u8; 4096]);
        for sizes in [&[10usize][..], &[3000, 3000], &[5000], &[1, 4100, 7, 9000]] {
            let mut q = SendQueue::default();
            q.inflight.chunk = chunk_of(&mut a, 1);
            q.queued.chunk = chunk_of(&mut b, 2);
            let mut expect = Vec::new();
            for (i, &n) in sizes.iter().enumerate() {
                let part: Vec<u8> = (0..n).map(|j| (i * 7 + j) as u8).collect();
                if i % 2 == 0 {
                    q.push_own(&[&part]);
                } else {
                    q.push_shared(Bytes::from(part.clone()));
                }
                expect.extend_from_slice(&part);
            }
            let op = q.start_sealed(b"PREFIX", &mut fake_seal).unwrap().unwrap();
            let wire = bytes_of(&op);
            assert_eq!(&wire[..6], b"PREFIX");
            assert_eq!(open(&wire[6..]), expect, "sizes {sizes:?}");
            if sizes == [10] {
                assert!(
                    matches!(op, SendOp::Fixed(_, 24, 1)),
                    "one run in the idle chunk"
                );
            }
            assert!(q.start_sealed(b"", &mut fake_seal).unwrap().is_none());
            assert!(q.complete(wire.len()).is_none());
            assert!(q.is_empty());
        }
    }
}
