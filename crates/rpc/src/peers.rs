//! Channels to other managers, one per address, all over mutual TLS with
//! this node's current client configuration.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::ClientConfig;
use tokio::sync::watch;
use tonic::transport::Channel;
use tonic::Status;

use crate::transport;

#[derive(Clone)]
pub struct Peers {
    tls: watch::Receiver<Arc<ClientConfig>>,
    // A std Mutex: held only to look up or insert a channel.
    channels: Arc<Mutex<HashMap<String, Peer>>>,
    /// When each address last answered a call (Raft's, for reachability,
    /// or a forwarded write).
    answered: Arc<Mutex<HashMap<String, Instant>>>,
    /// One connection attempt at a time per address for [`Peers::connected`],
    /// with when and why the last one failed.
    attempts: Arc<Mutex<HashMap<String, Attempt>>>,
}

/// The last failed connection to an address, if the last one failed,
/// behind the lock a connection attempt holds.
type Attempt = Arc<tokio::sync::Mutex<Option<Failure>>>;

/// How recently a connected channel must have answered to be used again
/// by [`Peers::connected`] without connecting anew.
const REUSE_WITHIN: Duration = Duration::from_secs(1);

#[derive(Clone)]
struct Peer {
    channel: Channel,
    /// Made by a connection that succeeded (not lazily).
    connected: bool,
}

struct Failure {
    at: Instant,
    why: String,
}

impl Peers {
    pub fn new(tls: watch::Receiver<Arc<ClientConfig>>) -> Peers {
        Peers {
            tls,
            channels: Default::default(),
            answered: Default::default(),
            attempts: Default::default(),
        }
    }

    /// A channel to `addr` that connects when first used.
    pub fn channel(&self, addr: &str) -> Result<Channel, Status> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = map.get(addr) {
            return Ok(p.channel.clone());
        }
        let c = transport::channel(addr, self.tls.clone()).map_err(|e| bad_address(addr, e))?;
        map.insert(
            addr.to_string(),
            Peer {
                channel: c.clone(),
                connected: false,
            },
        );
        Ok(c)
    }

    /// A channel to `addr` that has connected, for a request that must
    /// know whether it was sent: an error means it was not. Callers
    /// arriving while a connection is being made wait for that attempt and
    /// share its failure, rather than each waiting out a connect timeout
    /// in turn behind a lazy channel (a dead leader held a follower's
    /// queued writes for a timeout each).
    pub async fn connected(&self, addr: &str) -> Result<Channel, Status> {
        let arrived = Instant::now();
        let attempt = {
            let mut map = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(addr.to_string()).or_default().clone()
        };
        let mut last = attempt.lock().await;
        if let Some(f) = last.as_ref().filter(|f| f.at >= arrived) {
            return Err(Status::unavailable(f.why.clone()));
        }
        // A connection that answered a moment ago is taken to be up. One
        // silent for longer may have died with its manager, and a request
        // on it would reconnect unseen: then a refused connection could
        // not be told from a request lost after it was sent.
        if let Some(p) = self.lookup(addr).filter(|p| p.connected) {
            if self.reachable(addr, REUSE_WITHIN) {
                return Ok(p.channel);
            }
        }
        match transport::connect(addr, self.tls.clone()).await {
            Ok(c) => {
                *last = None;
                self.answered(addr);
                let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
                map.insert(
                    addr.to_string(),
                    Peer {
                        channel: c.clone(),
                        connected: true,
                    },
                );
                Ok(c)
            }
            Err(e) => {
                // The transport error and its causes ("connecting to … timed out").
                let why = format!("{:#}", anyhow::Error::new(e));
                *last = Some(Failure {
                    at: Instant::now(),
                    why: why.clone(),
                });
                Err(Status::unavailable(why))
            }
        }
    }

    fn lookup(&self, addr: &str) -> Option<Peer> {
        let map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        map.get(addr).cloned()
    }

    /// Records that `addr` answered a call just now.
    pub fn answered(&self, addr: &str) {
        self.answered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(addr.to_string(), Instant::now());
    }

    /// Whether `addr` answered within `within`.
    pub fn reachable(&self, addr: &str, within: Duration) -> bool {
        let map = self.answered.lock().unwrap_or_else(|p| p.into_inner());
        map.get(addr).is_some_and(|t| t.elapsed() <= within)
    }

    /// Drops a channel so the next call connects afresh (after a failure,
    /// or once a renewed certificate should be presented).
    pub fn forget(&self, addr: &str) {
        self.channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(addr);
    }
}

fn bad_address(addr: &str, e: tonic::transport::Error) -> Status {
    Status::invalid_argument(format!("bad manager address {addr}: {e}"))
}
