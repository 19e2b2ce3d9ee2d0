//! The master's end of one child channel, and its queue of deliveries.
//!
//! A channel is two pipes (see `sys::duplex`). Everything here is
//! non-blocking: what the pipe cannot take stays queued, and one `writev`
//! moves as many frames as the pipe accepts.

use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsRawFd, RawFd};

use mio::unix::pipe::{Receiver, Sender};
use mio::{Interest, Registry, Token};

use crate::proto::{Decoder, FRAME_LEN, RawFrame};
use crate::sys::Duplex;

/// Most deliveries encoded for one `writev` (64 KiB): a write the pipe
/// cuts short wastes at most this much encoding.
const MAX_WRITE_FRAMES: usize = 4 * 1024;

/// A child's queue of deliveries, kept as values: the channel encodes them
/// only when it writes them.
pub(super) trait DeliveryQueue {
    /// Deliveries not (fully) written yet.
    fn unwritten(&self) -> usize;
    /// Bytes of the front delivery already written (a short write cut it).
    fn partial(&self) -> usize;
    /// Records how much of the front delivery is written.
    fn set_partial(&mut self, bytes: usize);
    /// Encodes up to `max` deliveries from the front into `out` (cleared
    /// first).
    fn encode_front(&self, max: usize, out: &mut Vec<RawFrame>);
    /// The front `n` deliveries were written whole: they are in flight.
    fn written(&mut self, n: usize);
}

/// One end of a child channel.
pub(super) struct Conn {
    rx: Receiver,
    tx: Sender,
    pub(super) decoder: Decoder,
    /// The last readiness event said readable and no read has hit
    /// `WouldBlock` since (edge-triggered polling).
    pub(super) readable: bool,
    /// Likewise for writing.
    pub(super) writable: bool,
    /// Bytes other than deliveries waiting to go out (replies).
    out: Vec<u8>,
    out_at: usize,
    /// Deliveries encoded for the write under way.
    encoded: Vec<RawFrame>,
}

impl Conn {
    pub(super) fn new(ends: Duplex) -> io::Result<Conn> {
        let rx = Receiver::from(ends.rx);
        let tx = Sender::from(ends.tx);
        rx.set_nonblocking(true)?;
        tx.set_nonblocking(true)?;
        Ok(Conn {
            rx,
            tx,
            decoder: Decoder::default(),
            readable: true,
            writable: true,
            out: Vec::new(),
            out_at: 0,
            encoded: Vec::new(),
        })
    }

    /// Both descriptors.
    pub(super) fn raw_fds(&self) -> [RawFd; 2] {
        [self.rx.as_raw_fd(), self.tx.as_raw_fd()]
    }

    /// Watches both pipes under one token (readable: the child wrote;
    /// writable: its pipe has room again).
    pub(super) fn register(&mut self, reg: &Registry, token: Token) -> io::Result<()> {
        reg.register(&mut self.rx, token, Interest::READABLE)?;
        reg.register(&mut self.tx, token, Interest::WRITABLE)
    }

    /// Stops watching both pipes.
    pub(super) fn deregister(&mut self, reg: &Registry) {
        let _ = reg.deregister(&mut self.rx);
        let _ = reg.deregister(&mut self.tx);
    }

    /// Where replies are appended.
    pub(super) fn out(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    /// Whether anything is waiting to be written.
    pub(super) fn has_output(&self) -> bool {
        self.out_at < self.out.len()
    }

    /// Bytes of replies not written yet.
    pub(super) fn unsent(&self) -> usize {
        self.out.len() - self.out_at
    }

    /// Reads once. `Ok(None)`: nothing to read now; `Ok(Some(0))`: the
    /// child closed its end. A read that does not fill `buf` emptied the
    /// pipe: the next write to it raises a new readiness event, so there is
    /// no need for one more read to see `WouldBlock`.
    pub(super) fn read(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            match (&self.rx).read(buf) {
                Ok(n) => {
                    if n > 0 && n < buf.len() {
                        self.readable = false;
                    }
                    return Ok(Some(n));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.readable = false;
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes pending replies, then queued deliveries (unless `deliver` is
    /// false: a paused child gets replies, and the rest of a frame already
    /// begun, but no new deliveries); a delivery that is fully written
    /// moves to the queue's in-flight list. Stops at `WouldBlock`.
    pub(super) fn flush(
        &mut self,
        queue: &mut impl DeliveryQueue,
        deliver: bool,
    ) -> io::Result<()> {
        while self.writable {
            let partial = queue.partial();
            if partial > 0 {
                // Finish the frame a short write cut: the stream is framed.
                queue.encode_front(1, &mut self.encoded);
                let rest = self.encoded.first().map_or(&[][..], |f| &f[partial..]);
                let n = write_once(&self.tx, &mut self.writable, &[IoSlice::new(rest)])?;
                if partial + n == FRAME_LEN {
                    queue.set_partial(0);
                    queue.written(1);
                } else {
                    queue.set_partial(partial + n);
                }
            } else if self.has_output() {
                self.write_replies()?;
            } else if deliver && queue.unwritten() > 0 {
                queue.encode_front(MAX_WRITE_FRAMES, &mut self.encoded);
                let slices = [IoSlice::new(self.encoded.as_flattened())];
                let n = write_once(&self.tx, &mut self.writable, &slices)?;
                queue.written(n / FRAME_LEN);
                queue.set_partial(n % FRAME_LEN);
            } else {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Writes pending replies only (a channel that carries no deliveries).
    pub(super) fn flush_replies(&mut self) -> io::Result<()> {
        while self.writable && self.has_output() {
            self.write_replies()?;
        }
        Ok(())
    }

    fn write_replies(&mut self) -> io::Result<()> {
        let rest = &self.out[self.out_at..];
        let n = write_once(&self.tx, &mut self.writable, &[IoSlice::new(rest)])?;
        self.out_at += n;
        if self.out_at == self.out.len() {
            self.out.clear();
            self.out_at = 0;
        }
        Ok(())
    }
}

/// One `writev`; `WouldBlock` clears `writable` and writes nothing.
fn write_once(mut stream: &Sender, writable: &mut bool, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    loop {
        match stream.write_vectored(bufs) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                *writable = false;
                return Ok(0);
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::origin::Origin;
    use crate::proto::{Frame, Msg};

    /// Frames already encoded, for the test.
    #[derive(Default)]
    struct Frames {
        outbox: VecDeque<RawFrame>,
        partial: usize,
        inflight: VecDeque<RawFrame>,
    }

    impl DeliveryQueue for Frames {
        fn unwritten(&self) -> usize {
            self.outbox.len()
        }
        fn partial(&self) -> usize {
            self.partial
        }
        fn set_partial(&mut self, bytes: usize) {
            self.partial = bytes;
        }
        fn encode_front(&self, max: usize, out: &mut Vec<RawFrame>) {
            out.clear();
            out.extend(self.outbox.iter().take(max));
        }
        fn written(&mut self, n: usize) {
            self.inflight.extend(self.outbox.drain(..n));
        }
    }

    fn deliver(seq: u64) -> RawFrame {
        Frame::Deliver {
            num: (seq % 256) as u8,
            attempt: 1,
            origin: Origin::Remote,
            seq,
            pooled: false,
        }
        .encode()
    }

    #[test]
    fn flush_moves_written_frames_to_inflight_and_keeps_order() {
        let (master, child) = crate::sys::duplex(64 * 1024).unwrap();
        let mut conn = Conn::new(master).unwrap();
        let b = std::fs::File::from(child.rx);
        let mut q = Frames::default();
        // Far more than a socket buffer holds.
        for seq in 0..200_000 {
            q.outbox.push_back(deliver(seq));
        }
        crate::proto::encode_with_payload(true, 7, &crate::proto::Reply::Ok, conn.out()).unwrap();
        conn.flush(&mut q, true).unwrap();
        assert!(!conn.writable, "stopped at WouldBlock");
        assert!(!q.inflight.is_empty() && !q.outbox.is_empty());

        // Read everything the other side can see while flushing the rest.
        crate::sys::set_nonblocking(&b.try_clone().unwrap().into()).unwrap();
        let mut dec = Decoder::default();
        let mut seen = Vec::new();
        let mut replies = 0;
        let mut buf = vec![0; 65536];
        while seen.len() < 200_000 {
            match (&b).read(&mut buf) {
                Ok(n) => {
                    dec.feed(&buf[..n], &mut |m| {
                        match m {
                            Msg::Frame(Frame::Deliver { seq, .. }) => seen.push(seq),
                            Msg::Payload { .. } => replies += 1,
                            m => panic!("{m:?}"),
                        }
                        true
                    })
                    .unwrap();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.writable = true;
                    conn.flush(&mut q, true).unwrap();
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(replies, 1, "the reply went out first, whole");
        assert!(
            seen.iter().copied().eq(0..200_000),
            "every frame once, in order"
        );
        assert_eq!(q.inflight.len(), 200_000);
        assert!(q.outbox.is_empty() && q.partial == 0);
    }
}
