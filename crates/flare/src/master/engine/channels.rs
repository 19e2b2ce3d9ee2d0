//! The child channels: reading raises, acks and requests in batches,
//! answering requests, settling what children handled, and writing
//! deliveries and replies.

use std::sync::atomic::Ordering::{Relaxed, Release, SeqCst};

use super::deliveries::Sender;
use super::token::Channel;
use super::{Engine, Phase, READS_PER_TURN};
use crate::error::RegistrationError;
use crate::origin::Origin;
use crate::proto::{Frame, Msg, Reply, Request, encode_with_payload};
use crate::table::{Owner, Registration};
use crate::target::Target;
use crate::topology::Slot;

impl Engine {
    // ---- reading ---------------------------------------------------------

    pub(super) fn read_all(&mut self) {
        for slot in 0..self.procs.len() {
            self.read_chan(slot, Channel::Dispatcher);
            self.read_chan(slot, Channel::Threads);
        }
    }

    pub(super) fn read_chan(&mut self, slot: Slot, chan: Channel) {
        for _ in 0..READS_PER_TURN {
            let p = &mut self.procs[slot];
            if p.life.doomed() || !p.has_input(chan) {
                return;
            }
            let Some(conn) = p.conn_mut(chan) else { return };
            let mut buf = std::mem::take(&mut self.buf);
            // Messages held back while the sender was paused go first.
            let n = if conn.decoder.has_message().unwrap_or(true) {
                0
            } else {
                match conn.read(&mut buf) {
                    Ok(Some(0)) => {
                        // The child closed its end: it is exiting; reaping
                        // does the rest.
                        self.buf = buf;
                        self.lost_channel(slot, "it closed its channel");
                        return;
                    }
                    Ok(Some(n)) => n,
                    Ok(None) => {
                        self.buf = buf;
                        return;
                    }
                    Err(e) => {
                        self.buf = buf;
                        // A reset is a child dying with unread input: the
                        // reaper reports it.
                        if e.kind() == std::io::ErrorKind::ConnectionReset {
                            tracing::debug!("{}: channel reset", self.procs[slot].id);
                        } else {
                            tracing::warn!("{}: channel read failed: {e}", self.procs[slot].id);
                        }
                        self.lost_channel(slot, "its channel broke");
                        return;
                    }
                }
            };
            let mut decoder = std::mem::take(&mut conn.decoder);
            let fed = decoder.feed(&buf[..n], &mut |m| {
                if self.on_msg(slot, chan, m) {
                    self.procs[slot].b_paused = true;
                }
                // A paused sender's next raises wait in the decoder.
                !self.procs[slot].b_paused
            });
            self.buf = buf;
            if let Some(c) = self.procs[slot].conn_mut(chan) {
                c.decoder = decoder;
            }
            if let Err(e) = fed {
                if self.procs[slot].attached.is_some() {
                    tracing::error!("{}: {e}; closing its channel", self.procs[slot].id);
                    self.detach(slot, "it broke the channel protocol");
                } else {
                    tracing::error!("{}: {e}; killing it", self.procs[slot].id);
                    self.procs[slot].life.doom();
                }
                return;
            }
            if self.replies_unread(slot) {
                tracing::error!(
                    "{}: leaves its replies unread; closing its channel",
                    self.procs[slot].id
                );
                self.detach(slot, "it did not read its replies");
                return;
            }
        }
    }

    /// Handles one message from a child; true when its sender must now
    /// wait (back-pressure).
    pub(super) fn on_msg(&mut self, slot: Slot, chan: Channel, m: Msg<'_>) -> bool {
        let me = self.procs[slot].id;
        match m {
            Msg::Frame(Frame::Raise { num }) => {
                // Channel A (handlers) is never made to wait.
                let sender = (chan == Channel::Threads).then_some(Sender::Child(slot));
                return self.raise(num, Origin::Process(me), sender).throttle;
            }
            Msg::Frame(Frame::Ack { seq }) if self.frames_only(slot) => {
                self.frames_only_ack(slot, seq);
            }
            Msg::Frame(Frame::Ack { seq }) => self.d.ack(slot, seq),
            Msg::Payload {
                frame: Frame::Request { id, .. },
                body,
            } => {
                let reply = match serde_json::from_slice::<Request>(body) {
                    Ok(req) => self.on_request(slot, req),
                    Err(e) => Reply::Err(RegistrationError::Master(format!(
                        "unreadable request: {e}"
                    ))),
                };
                if let Some(c) = self.procs[slot].conn_mut(chan) {
                    if let Err(e) = encode_with_payload(true, id, &reply, c.out()) {
                        tracing::error!("{me}: cannot encode a reply: {e}");
                    }
                    self.d.mark_dirty(slot);
                }
            }
            other => {
                tracing::error!("{me}: sent a message only the master may send: {other:?}");
                self.procs[slot].life.doom();
            }
        }
        false
    }

    pub(super) fn on_request(&mut self, slot: Slot, req: Request) -> Reply {
        let me = self.procs[slot].id;
        match req {
            Request::Register { num, target } => {
                let done = target
                    .parse::<Target>()
                    .and_then(|t| self.d.table.register(num, &t, Owner::Child(slot)));
                match done {
                    Ok(how) => {
                        self.mirror(num);
                        let how = match how {
                            Registration::New => "runs only there",
                            Registration::Joined => "joined as a runner",
                            Registration::Replaced => "handler replaced",
                        };
                        tracing::info!("signal {num} registered by {me} (target {target}): {how}");
                        // A pool may have a new member able to run it.
                        self.d.member_added();
                        Reply::Ok
                    }
                    Err(e) => {
                        tracing::warn!("{me}: registration refused: {e}");
                        Reply::refused(e)
                    }
                }
            }
            Request::Reserve => match self.d.table.reserve(Owner::Child(slot)) {
                Ok(num) => {
                    self.mirror(num);
                    Reply::Num(num)
                }
                Err(e) => Reply::refused(e),
            },
            Request::Stop => {
                self.begin_shutdown(&format!("stop requested by {me}"));
                Reply::Ok
            }
            Request::AddSource { sig, source } => {
                match self.sources.add(sig, source, Owner::Child(slot)) {
                    Ok(id) => {
                        self.watch_inotify();
                        Reply::Source(id.get())
                    }
                    Err(e) => {
                        tracing::warn!("{me}: source refused: {}", e.report());
                        Reply::refused(e)
                    }
                }
            }
            Request::RemoveSource { id } => {
                match self.sources.remove(crate::SourceId(id), Owner::Child(slot)) {
                    Ok(()) => Reply::Ok,
                    Err(e) => Reply::refused(e),
                }
            }
            // The shared flag is set; the next turn checks deadlines.
            Request::UserHarakiri => Reply::Ok,
            Request::Ready => {
                self.attached_ready(slot);
                Reply::Ok
            }
        }
    }

    /// A channel closed or broke: a forked child is reaped when it exits;
    /// an attached process has left.
    fn lost_channel(&mut self, slot: Slot, why: &str) {
        if self.procs[slot].attached.is_some() {
            self.detach(slot, why);
        } else {
            self.drop_conns(slot);
        }
    }

    pub(super) fn mirror(&self, num: u8) {
        self.shm.table()[num as usize].store(self.d.table.mirror_word(num), Release);
    }

    /// Settles what children have handled without acking it: everything
    /// up to each slot's `done_seq` (children ack only pooled deliveries,
    /// and everything while the master waits for them; see
    /// `SlotStatus::acks_wanted`).
    pub(super) fn settle_done(&mut self) {
        for s in 0..self.procs.len() {
            let p = &self.procs[s];
            // Waiting for this child to get through what it holds (a
            // shutdown, a reload or cheap, paused senders): it acks at once.
            let waiting = u32::from(
                self.phase != Phase::Running || p.life.stopping() || self.d.has_waiters(s),
            );
            let st = self.shm.slot(s);
            if st.acks_wanted.load(Relaxed) != waiting {
                st.acks_wanted.store(waiting, SeqCst);
            }
            let Some(oldest) = self.d.oldest_inflight(s) else {
                continue;
            };
            // SeqCst: pairs with the child's fence before it reads
            // `acks_wanted` (either it acks, or we see its progress here).
            let done = self.shm.slot(s).done_seq.load(SeqCst);
            if oldest <= done {
                self.d.ack(s, done);
            }
        }
    }

    pub(super) fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.to_write);
        self.d.take_dirty(&mut dirty);
        for &s in &dirty {
            let p = &mut self.procs[s];
            // An attached process gets deliveries once it said `Ready`.
            let deliver = p.life.takes_deliveries() && p.life.alive();
            let mut failed = None;
            if let Some(a) = p.a.as_mut() {
                if let Err(e) = a.flush(self.d.queue_mut(s), deliver) {
                    failed = Some(e);
                }
            }
            if let Some(b) = p.b.as_mut() {
                if let Err(e) = b.flush_replies() {
                    failed = Some(e);
                }
            }
            if let Some(e) = failed {
                tracing::debug!("{}: channel write failed: {e}", p.id);
                self.lost_channel(s, "its channel broke");
            }
        }
        self.to_write = dirty;
    }
}
