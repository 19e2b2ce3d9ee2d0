//! The master's end of one child channel, and its queue of deliveries.
//!
//! A channel is two pipes (see `sys::duplex`). Everything here is
//! non-blocking: what the pipe cannot take stays queued, and one `writev`
//! moves as many frames as the pipe accepts.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsRawFd, RawFd};

use mio::unix::pipe::{Receiver, Sender};
use mio::{Interest, Registry, Token};

use crate::proto::{Decoder, FRAME_LEN, RawFrame};
use crate::sys::Duplex;

/// Most frames handed to one `writev`.
const MAX_WRITE_FRAMES: usize = 16 * 1024;

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
    /// moves to `inflight`. Stops at `WouldBlock`.
    pub(super) fn flush(
        &mut self,
        outbox: &mut Outbox,
        inflight: &mut VecDeque<RawFrame>,
        deliver: bool,
    ) -> io::Result<()> {
        while self.writable {
            let result = if outbox.partial > 0 {
                // Finish the frame a short write cut: the stream is framed.
                let rest = outbox
                    .frames
                    .front()
                    .map_or(&[][..], |f| &f[outbox.partial..]);
                write_once(&self.tx, &mut self.writable, &[IoSlice::new(rest)]).map(|n| {
                    outbox.partial += n;
                    if outbox.partial == FRAME_LEN {
                        outbox.partial = 0;
                        inflight.extend(outbox.frames.pop_front());
                    }
                })
            } else if self.has_output() {
                let rest = &self.out[self.out_at..];
                write_once(&self.tx, &mut self.writable, &[IoSlice::new(rest)]).map(|n| {
                    self.out_at += n;
                    if self.out_at == self.out.len() {
                        self.out.clear();
                        self.out_at = 0;
                    }
                })
            } else if deliver && !outbox.frames.is_empty() {
                let (a, b) = outbox.frames.as_slices();
                let a = &a[..a.len().min(MAX_WRITE_FRAMES)];
                let b = &b[..b.len().min(MAX_WRITE_FRAMES - a.len())];
                let slices = [
                    IoSlice::new(a.as_flattened()),
                    IoSlice::new(b.as_flattened()),
                ];
                write_once(&self.tx, &mut self.writable, &slices).map(|n| {
                    let whole = n / FRAME_LEN;
                    inflight.extend(outbox.frames.drain(..whole));
                    outbox.partial = n % FRAME_LEN;
                })
            } else {
                return Ok(());
            };
            result?;
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

/// Deliveries queued for one child, not yet (fully) written.
#[derive(Default)]
pub(super) struct Outbox {
    pub(super) frames: VecDeque<RawFrame>,
    /// Bytes of the front frame already written.
    pub(super) partial: usize,
}

impl Outbox {
    pub(super) fn len(&self) -> usize {
        self.frames.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::origin::Origin;
    use crate::proto::{Frame, Msg};

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
        let mut outbox = Outbox::default();
        let mut inflight = VecDeque::new();
        // Far more than a socket buffer holds.
        for seq in 0..200_000 {
            outbox.frames.push_back(deliver(seq));
        }
        crate::proto::encode_with_payload(true, 7, &crate::proto::Reply::Ok, conn.out()).unwrap();
        conn.flush(&mut outbox, &mut inflight, true).unwrap();
        assert!(!conn.writable, "stopped at WouldBlock");
        assert!(!inflight.is_empty() && !outbox.frames.is_empty());

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
                    conn.flush(&mut outbox, &mut inflight, true).unwrap();
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(replies, 1, "the reply went out first, whole");
        assert!(
            seen.iter().copied().eq(0..200_000),
            "every frame once, in order"
        );
        assert_eq!(inflight.len(), 200_000);
        assert!(outbox.frames.is_empty() && outbox.partial == 0);
    }
}
