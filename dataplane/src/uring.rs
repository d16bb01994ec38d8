//! The io_uring network path for client connections (`--net uring`), on
//! a ring of the shard's own beside glommio's.
//!
//! glommio 0.9 serves a socket by readiness: a `recv` syscall, a poll on
//! its ring when that finds nothing, another `recv` when the poll fires,
//! and a `send` syscall per reply — four kernel entries per request. Here
//! each accepted socket has one multishot receive armed on the shard's
//! second ring, filling buffers the ring provides (a provided-buffer ring:
//! nothing allocated per receive, nothing re-armed per message), and the
//! replies of every connection are sent together: one `io_uring_enter` per
//! batch of the shard's work, however many connections it served.
//!
//! Waking: the shard parks in glommio's ring, which cannot see this one.
//! An eventfd is registered with this ring for completions that arrive
//! asynchronously (`IORING_REGISTER_EVENTFD_ASYNC`) and one read of that
//! eventfd is always pending on glommio's ring, so a receive completing
//! here completes that read there and wakes the shard, all inside the
//! kernel. Completions that happen inside our own submission (a send to a
//! socket with room, which is nearly all of them) signal nothing: they are
//! reaped right after the submission.
//!
//! Two tasks drive the ring: the reaper waits on the eventfd and reaps, the
//! submitter runs once per batch after the connections it woke have written
//! (connections wake it; glommio queues it behind them) and submits every
//! pending receive and send in one call, then reaps what completed inline.
//!
//! A connection sees an [`AsyncRead`] + [`AsyncWrite`] ([`UringStream`]),
//! so the connection loops, their limits and deadlines are the same on both
//! paths. Bytes received wait in the connection's slot; past
//! `URING_RX_PAUSE_BYTES` the receive is cancelled until the connection has
//! read them (no unbounded buffering of a peer that pipelines without
//! reading). Written bytes wait there too, past `URING_TX_PAUSE_BYTES` the
//! writer waits for the sends. A dropped stream's last bytes are still
//! sent (bounded by `URING_CLOSE_SEND_TIMEOUT_MS`), then the socket closes.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::task::{Context, Poll, Waker};

use futures_lite::{AsyncRead, AsyncWrite};
use io_uring::{cqueue, opcode, squeue, types, IoUring};

use crate::limits::{
    URING_BUFFERS, URING_BUFFER_BYTES, URING_CLOSE_SEND_TIMEOUT_MS, URING_ENTRIES,
    URING_RX_PAUSE_BYTES, URING_TX_PAUSE_BYTES,
};

/// Which path a node's client sockets take (`--net`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum NetPath {
    /// A ring of the shard's own: multishot receive into provided
    /// buffers, one submission per batch of sends.
    Uring,
    /// glommio's sockets: a syscall per receive and per send.
    Glommio,
}

/// The provided-buffer group of every receive.
const BUFFER_GROUP: u16 = 0;

/// What a completion was for (the low byte of its user data; the slot is
/// above it).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Recv = 1,
    Send = 2,
    /// Cancels and link timeouts: nothing to do on completion.
    Other = 3,
}

fn user_data(slot: usize, op: Op) -> u64 {
    ((slot as u64) << 8) | op as u64
}

/// How a connection's receiving ended.
#[derive(Clone, Copy, Debug)]
enum RxEnd {
    Eof,
    Errno(i32),
}

/// One connection's state on the ring.
#[derive(Debug)]
struct Slot {
    fd: OwnedFd,
    /// Received, not yet read (from `rx_off`).
    rx: Vec<u8>,
    rx_off: usize,
    rx_end: Option<RxEnd>,
    /// A multishot receive is armed (or its cancellation not yet complete).
    recv_armed: bool,
    /// Its cancellation was asked for (the reader is behind, or closed).
    cancelling: bool,
    reader: Option<Waker>,
    /// Written, not yet handed to the kernel.
    tx: Vec<u8>,
    /// Handed to the kernel, from `flight_off`; untouched until its send
    /// completes (the kernel reads it).
    flight: Vec<u8>,
    flight_off: usize,
    sending: bool,
    tx_err: Option<i32>,
    writer: Option<Waker>,
    /// The stream was dropped: close once the last bytes are sent.
    closed: bool,
    /// Tells this slot from earlier ones at the same index.
    generation: u64,
    /// Whether this slot is in the submitter's list.
    dirty: bool,
}

impl Slot {
    fn buffered(&self) -> usize {
        self.rx.len() - self.rx_off
    }

    /// Bytes written that the kernel has not taken yet.
    fn unsent(&self) -> bool {
        self.flight_off < self.flight.len() || !self.tx.is_empty()
    }

    /// A dropped stream with nothing in flight and nothing left to send.
    fn finished(&self) -> bool {
        self.closed
            && !self.recv_armed
            && !self.sending
            && (!self.unsent() || self.tx_err.is_some())
    }
}

/// A registered ring of provided buffers: the kernel takes one per receive
/// completion; we give it back once its bytes are copied out.
#[derive(Debug)]
struct BufRing {
    /// `URING_BUFFERS` entries, page-aligned (mmap).
    entries: *mut types::BufRingEntry,
    map_bytes: usize,
    tail: u16,
    mem: Box<[u8]>,
}

impl BufRing {
    fn new(ring: &IoUring) -> io::Result<BufRing> {
        let map_bytes = URING_BUFFERS * std::mem::size_of::<types::BufRingEntry>();
        // SAFETY: an anonymous private mapping; checked for failure below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut bufs = BufRing {
            entries: ptr.cast(),
            map_bytes,
            tail: 0,
            mem: vec![0u8; URING_BUFFERS * URING_BUFFER_BYTES].into_boxed_slice(),
        };
        // SAFETY: the mapping outlives the registration (`Inner::drop`
        // unregisters before `BufRing::drop` unmaps).
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                bufs.entries as u64,
                URING_BUFFERS as u16,
                BUFFER_GROUP,
                0,
            )?;
        }
        for bid in 0..URING_BUFFERS as u16 {
            bufs.give_back(bid);
        }
        bufs.publish();
        Ok(bufs)
    }

    /// Queues buffer `bid` for the kernel (seen at the next `publish`).
    fn give_back(&mut self, bid: u16) {
        let at = usize::from(self.tail) & (URING_BUFFERS - 1);
        // SAFETY: `at` < URING_BUFFERS, inside the mapping; the kernel only
        // reads entries up to the published tail, and this one is past it.
        let entry = unsafe { &mut *self.entries.add(at) };
        let start = usize::from(bid) * URING_BUFFER_BYTES;
        entry.set_addr(self.mem[start..].as_ptr() as u64);
        entry.set_len(URING_BUFFER_BYTES as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes the buffers given back visible to the kernel.
    fn publish(&self) {
        // SAFETY: the tail is a u16 inside the first entry of the mapping,
        // shared with the kernel, which reads it atomically.
        let tail = unsafe { &*types::BufRingEntry::tail(self.entries).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
    }

    fn bytes(&self, bid: u16, len: usize) -> &[u8] {
        let start = usize::from(bid) * URING_BUFFER_BYTES;
        &self.mem[start..start + len.min(URING_BUFFER_BYTES)]
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, no longer registered.
        unsafe { libc::munmap(self.entries.cast(), self.map_bytes) };
    }
}

struct Inner {
    ring: IoUring,
    bufs: BufRing,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    /// Slots with something to submit.
    dirty: Vec<usize>,
    submitter: Option<Waker>,
    /// The submitter was woken and has not run yet.
    scheduled: bool,
    generations: u64,
    /// Reused by `reap` (no allocation per batch).
    cqes: Vec<cqueue::Entry>,
    woken: Vec<Waker>,
}

/// A shard's ring for its client connections. See the module doc.
pub(crate) struct Net {
    inner: RefCell<Inner>,
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let connections = self
            .inner
            .try_borrow()
            .map_or(0, |i| i.slots.len() - i.free.len());
        f.debug_struct("Net")
            .field("connections", &connections)
            .finish()
    }
}

impl Net {
    /// Sets up the ring and starts its two tasks on the current (shard)
    /// executor. Fails on a kernel without multishot receive or provided
    /// buffer rings (before 6.0).
    pub fn start() -> io::Result<Rc<Net>> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_cqsize(URING_ENTRIES * 4)
            .build(URING_ENTRIES)?;
        // Blocking, so that glommio's read of it waits (a non-blocking
        // eventfd would answer EAGAIN at once).
        // SAFETY: eventfd has no memory arguments; checked below.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `efd` is a fresh descriptor owned by nothing else.
        let efd = unsafe { OwnedFd::from_raw_fd(efd) };
        ring.submitter().register_eventfd(efd.as_raw_fd())?;
        let bufs = BufRing::new(&ring)?;
        let net = Rc::new(Net {
            inner: RefCell::new(Inner {
                ring,
                bufs,
                slots: Vec::new(),
                free: Vec::new(),
                dirty: Vec::new(),
                submitter: None,
                scheduled: false,
                generations: 0,
                cqes: Vec::with_capacity(URING_ENTRIES as usize * 4),
                woken: Vec::new(),
            }),
        });
        // SAFETY: glommio takes the descriptor over (closed with the file).
        let wake = unsafe {
            <glommio::io::BufferedFile as FromRawFd>::from_raw_fd(
                std::os::fd::IntoRawFd::into_raw_fd(efd),
            )
        };
        let reaper = net.clone();
        glommio::spawn_local(async move {
            let mut failed = false;
            loop {
                if let Err(e) = wake.read_at(0, 8).await {
                    if !std::mem::replace(&mut failed, true) {
                        log::error!("the network ring's eventfd failed ({e}); reaping every ms");
                    }
                    glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
                }
                reaper.reap();
            }
        })
        .detach();
        let submitter = net.clone();
        glommio::spawn_local(async move {
            loop {
                Scheduled(&submitter).await;
                submitter.submit();
            }
        })
        .detach();
        Ok(net)
    }

    /// Serves `stream` (just accepted) on this ring from now on: the
    /// caller drops `stream` on success.
    pub fn adopt(self: &Rc<Self>, stream: &glommio::net::TcpStream) -> io::Result<UringStream> {
        let _ = stream.set_nodelay(true);
        let peer = stream.peer_addr().ok();
        // glommio offers no way to take the descriptor back: a duplicate
        // keeps the socket open when its stream is dropped.
        // SAFETY: dup of a descriptor `stream` holds open; checked below.
        let fd = unsafe { libc::dup(stream.as_raw_fd()) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is fresh and ours.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut inner = self.inner.borrow_mut();
        inner.generations += 1;
        let slot = Slot {
            fd,
            rx: Vec::new(),
            rx_off: 0,
            rx_end: None,
            recv_armed: false,
            cancelling: false,
            reader: None,
            tx: Vec::new(),
            flight: Vec::new(),
            flight_off: 0,
            sending: false,
            tx_err: None,
            writer: None,
            closed: false,
            generation: inner.generations,
            dirty: false,
        };
        let id = match inner.free.pop() {
            Some(id) => {
                inner.slots[id] = Some(slot);
                id
            }
            None => {
                inner.slots.push(Some(slot));
                inner.slots.len() - 1
            }
        };
        inner.mark(id);
        drop(inner);
        self.schedule();
        Ok(UringStream {
            net: self.clone(),
            slot: id,
            peer,
        })
    }

    /// A dropped stream whose last bytes are still not sent after
    /// `URING_CLOSE_SEND_TIMEOUT_MS`: its peer is not reading; give up.
    async fn abandon_later(self: Rc<Self>, id: usize, generation: u64) {
        let ms = URING_CLOSE_SEND_TIMEOUT_MS;
        glommio::timer::sleep(std::time::Duration::from_millis(ms)).await;
        let mut inner = self.inner.borrow_mut();
        let Some(s) = inner.slots[id].as_mut() else {
            return;
        };
        if s.generation != generation {
            return;
        }
        s.tx_err = Some(libc::ETIMEDOUT);
        let cancel =
            opcode::AsyncCancel2::new(types::CancelBuilder::fd(types::Fd(s.fd.as_raw_fd())).all())
                .build()
                .user_data(user_data(id, Op::Other));
        inner.push(&cancel);
        drop(inner);
        self.schedule();
    }

    /// Wakes the submitter (once per batch).
    fn schedule(&self) {
        let mut inner = self.inner.borrow_mut();
        if !inner.scheduled {
            inner.scheduled = true;
            if let Some(w) = inner.submitter.take() {
                w.wake();
            }
        }
    }

    /// Submits every pending receive and send, then reaps what completed
    /// meanwhile.
    fn submit(&self) {
        let mut inner = self.inner.borrow_mut();
        inner.scheduled = false;
        // What completes inside our own submission is reaped below: it
        // need not wake the shard through the eventfd. Safe because every
        // completion of this ring is posted by this thread (task work runs
        // in the thread that issued the request), so none can land between
        // the reap after re-enabling and the next wait unseen.
        inner.ring.completion().disable_eventfd();
        // Reaping can make more work (a partial send's rest): bounded
        // rounds, then the next batch takes it.
        for _ in 0..4 {
            inner.prepare();
            if inner.ring.submission().is_empty() {
                break;
            }
            inner.submit();
            inner.reap();
            if inner.dirty.is_empty() {
                break;
            }
        }
        inner.ring.completion().enable_eventfd();
        inner.reap();
        let more = !inner.dirty.is_empty();
        drop(inner);
        if more {
            self.schedule();
        }
    }

    fn reap(&self) {
        let mut inner = self.inner.borrow_mut();
        inner.reap();
        let more = !inner.dirty.is_empty();
        drop(inner);
        if more {
            self.schedule();
        }
    }
}

/// Ready when the submitter has been scheduled.
struct Scheduled<'a>(&'a Net);

impl std::future::Future for Scheduled<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut inner = self.0.inner.borrow_mut();
        if inner.scheduled {
            Poll::Ready(())
        } else {
            inner.submitter = Some(cx.waker().clone());
            Poll::Pending
        }
    }
}

impl Inner {
    fn slot(&mut self, id: usize) -> &mut Slot {
        self.slots[id].as_mut().expect("a live slot")
    }

    fn mark(&mut self, id: usize) {
        let s = self.slot(id);
        if !s.dirty {
            s.dirty = true;
            self.dirty.push(id);
        }
    }

    fn submit(&mut self) {
        if let Err(e) = self.ring.submit() {
            // EBUSY: the completion queue is full; reaping makes room.
            if !matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EINTR)) {
                log::error!("network ring submission failed: {e}");
            }
        }
    }

    fn push(&mut self, entry: &squeue::Entry) {
        loop {
            // SAFETY: every buffer an entry points at lives in its slot
            // (`flight`, untouched while sending) or in `BufRing`, both kept
            // until its completion is reaped.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return;
            }
            self.submit();
        }
    }

    /// Turns the dirty slots' needs into submission entries.
    fn prepare(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for &id in &dirty {
            let Some(s) = self.slots[id].as_mut() else {
                continue;
            };
            s.dirty = false;
            let fd = types::Fd(s.fd.as_raw_fd());
            let mut entries: [Option<squeue::Entry>; 2] = [None, None];
            let receiving = s.rx_end.is_none() && !s.closed;
            if !s.recv_armed && receiving && s.buffered() < URING_RX_PAUSE_BYTES {
                s.recv_armed = true;
                s.cancelling = false;
                let recv = opcode::RecvMulti::new(fd, BUFFER_GROUP).build();
                entries[0] = Some(recv.user_data(user_data(id, Op::Recv)));
            } else if s.recv_armed
                && !s.cancelling
                && (s.closed || s.buffered() >= URING_RX_PAUSE_BYTES)
            {
                // Stop receiving: the reader is behind, or gone. The
                // receive completes with ECANCELED.
                s.cancelling = true;
                let cancel = opcode::AsyncCancel::new(user_data(id, Op::Recv)).build();
                entries[0] = Some(cancel.user_data(user_data(id, Op::Other)));
            }
            if !s.sending && s.tx_err.is_none() && s.unsent() {
                if s.flight_off >= s.flight.len() {
                    s.flight.clear();
                    s.flight_off = 0;
                    std::mem::swap(&mut s.flight, &mut s.tx);
                    if s.tx.capacity() > URING_TX_PAUSE_BYTES {
                        s.tx = Vec::new(); // a large reply's memory goes back
                    }
                }
                s.sending = true;
                let rest = &s.flight[s.flight_off..];
                let send = opcode::Send::new(fd, rest.as_ptr(), rest.len() as u32)
                    .flags(libc::MSG_NOSIGNAL)
                    .build();
                entries[1] = Some(send.user_data(user_data(id, Op::Send)));
            }
            for e in entries.iter().flatten() {
                self.push(e);
            }
            self.release_if_finished(id);
        }
        // Keep the list's allocation.
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    /// Frees a dropped stream's slot once nothing of it is in flight.
    fn release_if_finished(&mut self, id: usize) {
        if self.slots[id].as_ref().is_some_and(Slot::finished) {
            self.slots[id] = None; // closes the socket
            self.free.push(id);
        }
    }

    /// Handles every completion in the queue.
    fn reap(&mut self) {
        let mut cqes = std::mem::take(&mut self.cqes);
        cqes.extend(self.ring.completion());
        let mut gave_back = false;
        for cqe in cqes.drain(..) {
            let id = (cqe.user_data() >> 8) as usize;
            let op = match cqe.user_data() & 0xff {
                1 => Op::Recv,
                2 => Op::Send,
                _ => continue, // cancels: their targets complete on their own
            };
            let (res, flags) = (cqe.result(), cqe.flags());
            if op == Op::Recv && res > 0 {
                if let Some(bid) = cqueue::buffer_select(flags) {
                    if let Some(s) = self.slots[id].as_mut().filter(|s| !s.closed) {
                        if s.rx_off == s.rx.len() {
                            s.rx.clear();
                            s.rx_off = 0;
                            if s.rx.capacity() > 2 * URING_RX_PAUSE_BYTES {
                                s.rx = Vec::new();
                            }
                        }
                        s.rx.extend_from_slice(self.bufs.bytes(bid, res as usize));
                    }
                    self.bufs.give_back(bid);
                    gave_back = true;
                }
            }
            let Some(s) = self.slots[id].as_mut() else {
                continue;
            };
            match op {
                Op::Recv => {
                    if res == 0 {
                        s.rx_end = Some(RxEnd::Eof);
                    } else if res < 0 && res != -libc::ENOBUFS && res != -libc::ECANCELED {
                        s.rx_end.get_or_insert(RxEnd::Errno(-res));
                    }
                    if !cqueue::more(flags) {
                        s.recv_armed = false;
                    }
                    self.woken.extend(s.reader.take());
                }
                Op::Send => {
                    s.sending = false;
                    if res <= 0 {
                        s.tx_err = Some(if res == 0 { libc::EPIPE } else { -res });
                        self.woken.extend(s.reader.take());
                    } else {
                        s.flight_off += res as usize;
                    }
                    self.woken.extend(s.writer.take());
                }
                Op::Other => {}
            }
            // Re-arm, pause, send the rest, or free.
            self.mark(id);
        }
        self.cqes = cqes;
        if gave_back {
            self.bufs.publish();
        }
        for w in self.woken.drain(..) {
            w.wake();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.ring.submitter().unregister_buf_ring(BUFFER_GROUP);
    }
}

/// A connection served on the shard's ring.
#[derive(Debug)]
pub(crate) struct UringStream {
    net: Rc<Net>,
    slot: usize,
    peer: Option<SocketAddr>,
}

impl UringStream {
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer
    }
}

fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

impl AsyncRead for UringStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut inner = self.net.inner.borrow_mut();
        let s = inner.slot(self.slot);
        let n = s.buffered().min(buf.len());
        if n > 0 {
            buf[..n].copy_from_slice(&s.rx[s.rx_off..s.rx_off + n]);
            s.rx_off += n;
            if s.buffered() == 0 && !s.recv_armed && s.rx_end.is_none() {
                // Paused (or out of buffers): receive again.
                inner.mark(self.slot);
                drop(inner);
                self.net.schedule();
            }
            return Poll::Ready(Ok(n));
        }
        match s.rx_end {
            Some(RxEnd::Eof) => Poll::Ready(Ok(0)),
            Some(RxEnd::Errno(e)) => Poll::Ready(Err(errno(e))),
            None if buf.is_empty() => Poll::Ready(Ok(0)),
            None => {
                s.reader = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for UringStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut inner = self.net.inner.borrow_mut();
        let s = inner.slot(self.slot);
        if let Some(e) = s.tx_err {
            return Poll::Ready(Err(errno(e)));
        }
        if s.tx.len() >= URING_TX_PAUSE_BYTES {
            s.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        s.tx.extend_from_slice(buf);
        inner.mark(self.slot);
        drop(inner);
        self.net.schedule();
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl Drop for UringStream {
    fn drop(&mut self) {
        let mut inner = self.net.inner.borrow_mut();
        let s = inner.slot(self.slot);
        s.closed = true;
        s.reader = None;
        s.writer = None;
        let (sending, generation) = (s.sending || s.unsent(), s.generation);
        inner.mark(self.slot);
        drop(inner);
        self.net.schedule();
        if sending {
            glommio::spawn_local(self.net.clone().abandon_later(self.slot, generation)).detach();
        }
    }
}

/// A client connection on either path.
#[derive(Debug)]
pub(crate) enum Stream {
    Glommio(glommio::net::TcpStream),
    Uring(UringStream),
}

impl Stream {
    /// Takes a just-accepted connection onto `net`'s ring when there is one
    /// (on glommio's path otherwise, or if the ring cannot take it).
    pub fn accepted(stream: glommio::net::TcpStream, net: Option<&Rc<Net>>) -> Stream {
        let Some(net) = net else {
            let _ = stream.set_nodelay(true);
            return Stream::Glommio(stream);
        };
        match net.adopt(&stream) {
            Ok(s) => Stream::Uring(s),
            Err(e) => {
                log::warn!(
                    "a connection stays on glommio's path (the network ring cannot take it: {e})"
                );
                Stream::Glommio(stream)
            }
        }
    }

    pub fn peer_addr(&self) -> Option<SocketAddr> {
        match self {
            Stream::Glommio(s) => s.peer_addr().ok(),
            Stream::Uring(s) => s.peer_addr(),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Glommio(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Uring(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Glommio(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Uring(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Glommio(s) => Pin::new(s).poll_flush(cx),
            Stream::Uring(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Glommio(s) => Pin::new(s).poll_close(cx),
            Stream::Uring(s) => Pin::new(s).poll_close(cx),
        }
    }
}
