//! What each `mio` token names: one typed [`Endpoint`] instead of number
//! ranges laid out by hand in the loop.

use mio::Token;

use crate::topology::Slot;

/// First token of the remote connections (the remote listener's slab
/// hands out `REMOTE_BASE + index`).
pub(in crate::master) const REMOTE_BASE: usize = 1 << 24;
/// First token of the stats and control connections.
pub(in crate::master) const ADMIN_BASE: usize = 2 << 24;
/// First token of the connections to the attach socket whose hello is not
/// in yet.
pub(in crate::master) const ATTACH_BASE: usize = 3 << 24;
/// First token of the child channels: two per slot.
const CHILD_BASE: usize = 16;

/// Which of a child's two channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Channel {
    /// The dispatcher's: deliveries out, acks and raises from handlers in.
    /// Always read: a handler's raise never waits.
    Dispatcher,
    /// Every other thread's raises and requests: not read while the sender
    /// floods a queue past high water (its `send()` waits).
    Threads,
}

/// The thing an event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Endpoint {
    /// The signalfd (SIGCHLD, SIGTERM, SIGINT, SIGHUP).
    Signals,
    /// The remote signal listener.
    RemoteListener,
    /// The inotify descriptor of the file monitors.
    Inotify,
    /// The stats listener.
    StatsListener,
    /// The control listener.
    ControlListener,
    /// The metrics (Prometheus) listener.
    MetricsListener,
    /// The attach socket.
    AttachListener,
    /// A child's channel.
    Child(Slot, Channel),
    /// A remote connection (its token, for the remote listener's slab).
    RemoteConn(Token),
    /// A stats or control connection (its token, for the admin slab).
    AdminConn(Token),
    /// A connection to the attach socket, before its hello is in.
    AttachConn(Token),
}

impl Endpoint {
    /// The token to register it under.
    pub(super) fn token(self) -> Token {
        Token(match self {
            Endpoint::Signals => 0,
            Endpoint::RemoteListener => 1,
            Endpoint::Inotify => 2,
            Endpoint::StatsListener => 3,
            Endpoint::ControlListener => 4,
            Endpoint::MetricsListener => 5,
            Endpoint::AttachListener => 6,
            Endpoint::Child(slot, chan) => {
                CHILD_BASE + slot * 2 + usize::from(chan == Channel::Threads)
            }
            Endpoint::RemoteConn(t) | Endpoint::AdminConn(t) | Endpoint::AttachConn(t) => t.0,
        })
    }

    /// What `token` names; `None` for a token nothing was registered under.
    pub(super) fn of(token: Token) -> Option<Endpoint> {
        Some(match token.0 {
            0 => Endpoint::Signals,
            1 => Endpoint::RemoteListener,
            2 => Endpoint::Inotify,
            3 => Endpoint::StatsListener,
            4 => Endpoint::ControlListener,
            5 => Endpoint::MetricsListener,
            6 => Endpoint::AttachListener,
            t @ CHILD_BASE..REMOTE_BASE => {
                let i = t - CHILD_BASE;
                let chan = if i % 2 == 0 {
                    Channel::Dispatcher
                } else {
                    Channel::Threads
                };
                Endpoint::Child(i / 2, chan)
            }
            REMOTE_BASE..ADMIN_BASE => Endpoint::RemoteConn(token),
            ADMIN_BASE..ATTACH_BASE => Endpoint::AdminConn(token),
            ATTACH_BASE.. => Endpoint::AttachConn(token),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_endpoint_round_trips_through_its_token() {
        let mut all = vec![
            Endpoint::Signals,
            Endpoint::RemoteListener,
            Endpoint::Inotify,
            Endpoint::StatsListener,
            Endpoint::ControlListener,
            Endpoint::MetricsListener,
            Endpoint::RemoteConn(Token(REMOTE_BASE)),
            Endpoint::RemoteConn(Token(REMOTE_BASE + 4095)),
            Endpoint::AdminConn(Token(ADMIN_BASE)),
            Endpoint::AdminConn(Token(ADMIN_BASE + 63)),
            Endpoint::AttachListener,
            Endpoint::AttachConn(Token(ATTACH_BASE)),
            Endpoint::AttachConn(Token(ATTACH_BASE + 63)),
        ];
        for slot in [0, 1, 4095] {
            for chan in [Channel::Dispatcher, Channel::Threads] {
                all.push(Endpoint::Child(slot, chan));
            }
        }
        for e in &all {
            assert_eq!(Endpoint::of(e.token()), Some(*e), "{e:?}");
        }
        let mut tokens: Vec<usize> = all.iter().map(|e| e.token().0).collect();
        tokens.sort_unstable();
        tokens.dedup();
        assert_eq!(tokens.len(), all.len(), "no two endpoints share a token");
        assert_eq!(Endpoint::of(Token(7)), None);
    }
}
