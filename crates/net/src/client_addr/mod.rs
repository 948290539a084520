//! Keeping the client's address through the routing mesh (moby#25526): a
//! connection or UDP flow to a published port on any node reaches the task
//! from the client's own address, whether the task runs on that node or on
//! another, through the kernel path and through the proxy alike.
//!
//! [`ClientAddr`] sets up what both paths share (planned in [`plan`],
//! pure): the tunnel between the nodes, the policy routing that steers the
//! mesh's connections into it and their replies back, and the marks that
//! say which is which. The kernel path then DNATs without SNAT; the proxy
//! connects from the client's address (IP_TRANSPARENT). Where the tunnel
//! cannot be made (no VXLAN, no policy routing, no CAP_NET_ADMIN),
//! [`ClientAddr::start`] fails, the caller says so once, and the meshes
//! connect from the node's address as before.

pub mod plan;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use tracing::{debug, warn};

use crate::error::KernelError;
use crate::host::CommandError;
use crate::table::ClientPath;

/// The tunnel, its routes and marks on this node, following the swarm's
/// node list. `shutdown` removes all of it.
pub struct ClientAddr {
    own: Ipv4Addr,
    state: tokio::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    peers: BTreeMap<Ipv4Addr, u8>,
    written: Option<String>,
    bridges: Vec<(Ipv4Addr, u8)>,
}

impl ClientAddr {
    /// Sets the tunnel up for a node at `own` (removing what a killed
    /// daemon left first). Fails, saying why, where it cannot be.
    pub async fn start(own: Ipv4Addr) -> Result<ClientAddr, KernelError> {
        remove_all().await;
        let addrs = run("ip", &["-4", "-o", "addr", "show"], None).await?;
        let (underlay, bridges) = plan::interfaces(&addrs, own);
        let Some(underlay) = underlay else {
            return Err(KernelError::Command {
                command: "ip -4 addr show".into(),
                message: format!("no interface has this node's address {own}"),
            });
        };
        let mtu = std::fs::read_to_string(format!("/sys/class/net/{underlay}/mtu"))
            .ok()
            .and_then(|m| m.trim().parse::<u32>().ok())
            .unwrap_or(1500);
        let setup = plan::device_setup(own, mtu.saturating_sub(plan::OVERHEAD));
        // Without -force: a line that fails stops the batch, and says why.
        if let Err(e) = run("ip", &["-batch", "-"], Some(&setup)).await {
            remove_all().await;
            return Err(e);
        }
        // Loose reverse-path filtering: what comes through the tunnel has
        // the client's source, which this node routes elsewhere.
        let rp = format!("/proc/sys/net/ipv4/conf/{}/rp_filter", plan::DEVICE);
        if let Err(e) = std::fs::write(&rp, "2") {
            remove_all().await;
            return Err(KernelError::Command {
                command: format!("write 2 to {rp}"),
                message: e.to_string(),
            });
        }
        let ca = ClientAddr {
            own,
            state: tokio::sync::Mutex::new(State {
                bridges,
                ..State::default()
            }),
        };
        if let Err(e) = ca.write(&mut *ca.state.lock().await).await {
            remove_all().await;
            return Err(e);
        }
        for (table, chain, rule) in plan::hooks() {
            if let Err(e) = crate::host::hook_first(table, chain, &rule).await {
                remove_all().await;
                return Err(kernel_error(e));
            }
        }
        Ok(ca)
    }

    /// The node's address the tunnel was made for.
    pub fn own(&self) -> Ipv4Addr {
        self.own
    }

    /// Makes the tunnel reach `peers` (the swarm's other nodes).
    pub async fn apply(&self, peers: &BTreeSet<Ipv4Addr>) -> Result<(), KernelError> {
        let mut st = self.state.lock().await;
        let mut peers = peers.clone();
        peers.remove(&self.own);
        let new = plan::assign(&st.peers, &peers);
        if new.len() < peers.len() {
            warn!(
                peers = peers.len(),
                "routing mesh: more nodes than the tunnel can name ({}); connections to the others' tasks come from this node's address",
                plan::MAX_PEERS
            );
        }
        if new != st.peers {
            let (ip, bridge) = plan::peer_changes(&st.peers, &new);
            // -force: a neighbour or route already gone is no reason to
            // stop the rest.
            run("bridge", &["-force", "-batch", "-"], Some(&bridge)).await?;
            run("ip", &["-force", "-batch", "-"], Some(&ip)).await?;
            st.peers = new;
        }
        if let Ok(addrs) = run("ip", &["-4", "-o", "addr", "show"], None).await {
            st.bridges = plan::interfaces(&addrs, self.own).1;
        }
        self.write(&mut st).await
    }

    /// What the meshes need to know to keep clients' addresses.
    pub async fn path(&self) -> ClientPath {
        let st = self.state.lock().await;
        ClientPath {
            bridges: st.bridges.clone(),
        }
    }

    async fn write(&self, st: &mut State) -> Result<(), KernelError> {
        let text = plan::rules(&st.peers);
        if st.written.as_ref() != Some(&text) {
            run("iptables-restore", &["-w", "--noflush"], Some(&text)).await?;
            debug!(peers = ?st.peers, "client address rules written");
            st.written = Some(text);
        }
        Ok(())
    }

    /// Removes the tunnel, its routes, rules and chains.
    pub async fn shutdown(&self) {
        remove_all().await;
    }
}

/// Removes everything [`ClientAddr`] makes, what a killed daemon left
/// included (fine when there is nothing).
async fn remove_all() {
    for (table, chain, rule) in plan::hooks() {
        let mut delete = vec!["-w", "-t", table, "-D", chain];
        delete.extend(rule.split_whitespace());
        while crate::host::run("iptables", &delete, None).await.is_ok() {}
    }
    let _ = crate::host::run(
        "iptables-restore",
        &["-w", "--noflush"],
        Some(&plan::removal()),
    )
    .await;
    let prefs = match crate::host::run("ip", &["rule", "show"], None).await {
        Ok(shown) => plan::rule_prefs_in(&shown),
        Err(_) => BTreeSet::new(),
    };
    let _ = crate::host::run(
        "ip",
        &["-force", "-batch", "-"],
        Some(&plan::teardown(&prefs)),
    )
    .await;
}

async fn run(program: &str, args: &[&str], input: Option<&str>) -> Result<String, KernelError> {
    crate::host::run(program, args, input)
        .await
        .map_err(kernel_error)
}

fn kernel_error(e: CommandError) -> KernelError {
    crate::kernel::kernel_error(e)
}
