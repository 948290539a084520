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
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    /// When each address last answered a Raft call, for reachability.
    answered: Arc<Mutex<HashMap<String, Instant>>>,
}

impl Peers {
    pub fn new(tls: watch::Receiver<Arc<ClientConfig>>) -> Peers {
        Peers {
            tls,
            channels: Default::default(),
            answered: Default::default(),
        }
    }

    pub fn channel(&self, addr: &str) -> Result<Channel, Status> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let c = transport::channel(addr, self.tls.clone())
            .map_err(|e| Status::invalid_argument(format!("bad manager address {addr}: {e}")))?;
        map.insert(addr.to_string(), c.clone());
        Ok(c)
    }

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
