//! Service addresses on a local interface: the /32 IPv4 addresses (service
//! VIPs, the DNS server's address) the mesh listens on, kept equal to the
//! set the daemon wants.
//!
//! The work is done by iproute2's `ip`, one `ip -batch` run per change:
//! netlink by hand would be a lot of code for a few calls per store change.
//! Every address inside the service network on the device is ours: those
//! not wanted are removed (leftovers of a daemon that was killed included),
//! and nothing outside the network is ever touched.
//!
//! `ip` is run with `-force`, so one failing line (an address that appeared
//! or went away since we looked) does not stop the others; what counts is
//! what is present afterwards, which is read back and compared.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tracing::{debug, info};

use crate::error::AddrError;

/// `ip` answers in milliseconds; this only bounds a wedged one.
const IP_TIMEOUT: Duration = Duration::from_secs(10);

/// The service addresses of one device. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct LocalAddrs {
    dev: String,
    network: Network,
    /// Runs `ip -netns <name>`: addresses of another network namespace.
    netns: Option<String>,
    /// The command run; only tests change it.
    program: String,
    /// Serialises `apply` and `clear`: each reads what is present, then
    /// changes it, and two interleaved would undo each other.
    busy: tokio::sync::Mutex<()>,
}

/// An IPv4 network: a base address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Network {
    base: u32,
    prefix: u8,
}

impl Network {
    fn new((ip, prefix): (Ipv4Addr, u8)) -> Network {
        assert!(prefix <= 32, "prefix length {prefix} is not an IPv4 one");
        Network {
            base: u32::from(ip) & mask(prefix),
            prefix,
        }
    }

    fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == self.base
    }
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

/// One address of the device as `ip` lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Present {
    ip: Ipv4Addr,
    prefix: u8,
}

/// One line of an `ip -batch` script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Add(Ipv4Addr),
    Remove(Present),
}

impl LocalAddrs {
    /// The addresses of `network` on `dev` (the daemon uses "lo"). Changes
    /// nothing until `apply` or `clear`.
    ///
    /// Panics if `dev` is not a plausible device name or the prefix length
    /// is above 32: both are fixed by the daemon, not by users.
    pub fn new(dev: &str, network: (Ipv4Addr, u8)) -> LocalAddrs {
        assert!(
            !dev.is_empty() && !dev.contains(char::is_whitespace),
            "bad device name {dev:?}"
        );
        LocalAddrs {
            dev: dev.to_string(),
            network: Network::new(network),
            netns: None,
            program: "ip".into(),
            busy: tokio::sync::Mutex::new(()),
        }
    }

    /// The same, for a device of the named network namespace (as made by
    /// `ip netns add`): tests, and nodes simulated in namespaces.
    pub fn in_netns(mut self, name: &str) -> LocalAddrs {
        self.netns = Some(name.to_string());
        self
    }

    /// Adds the wanted addresses (as /32) that are missing and removes every
    /// other address of the network from the device. Refuses (changing
    /// nothing) a wanted address outside the network.
    pub async fn apply(&self, wanted: &BTreeSet<Ipv4Addr>) -> Result<(), AddrError> {
        if let Some(&ip) = wanted.iter().find(|ip| !self.network.contains(**ip)) {
            return Err(AddrError::OutsideNetwork {
                ip,
                network: self.network.to_string(),
            });
        }
        let _busy = self.busy.lock().await;
        let present = self.present().await?;
        let changes = plan(&present, wanted);
        if changes.is_empty() {
            return Ok(());
        }
        let trouble = self.run_batch(&changes).await?;
        let after = self.present().await?;
        if plan(&after, wanted).is_empty() {
            info!(dev = %self.dev, changes = changes.len(), now = wanted.len(), "service addresses changed");
            if !trouble.is_empty() {
                debug!(dev = %self.dev, "ip complained, but the addresses are as wanted: {trouble}");
            }
            Ok(())
        } else {
            Err(self.failure(&trouble))
        }
    }

    /// Removes every address of the network from the device: at start, for
    /// the leftovers of a daemon that was killed, and at shutdown.
    pub async fn clear(&self) -> Result<(), AddrError> {
        self.apply(&BTreeSet::new()).await
    }

    /// The device's addresses inside the network.
    async fn present(&self) -> Result<Vec<Present>, AddrError> {
        let args = ["-4", "-o", "address", "show", "dev", &self.dev];
        let output = self.run(&args, None).await?;
        if !output.status.success() {
            return Err(self.failure(&String::from_utf8_lossy(&output.stderr)));
        }
        let listed = parse_addresses(&String::from_utf8_lossy(&output.stdout));
        Ok(listed
            .into_iter()
            .filter(|p| self.network.contains(p.ip))
            .collect())
    }

    /// Runs the changes in one `ip -force -batch -`; returns what `ip` said
    /// on stderr (empty if all went well).
    async fn run_batch(&self, changes: &[Change]) -> Result<String, AddrError> {
        let mut script = String::new();
        for change in changes {
            // Never touch an address outside the network, whatever happened
            // above: the daemon shares the device with the host.
            let (verb, ip, prefix) = match *change {
                Change::Add(ip) => ("add", ip, 32),
                Change::Remove(p) => ("del", p.ip, p.prefix),
            };
            assert!(
                self.network.contains(ip),
                "{ip} is outside {}",
                self.network
            );
            script.push_str(&format!("address {verb} {ip}/{prefix} dev {}\n", self.dev));
        }
        let output = self
            .run(&["-force", "-batch", "-"], Some(script.as_bytes()))
            .await?;
        Ok(String::from_utf8_lossy(&output.stderr).trim().to_string())
    }

    /// Runs `ip` with `args` (after `-netns` if any), feeding it `stdin`.
    async fn run(
        &self,
        args: &[&str],
        stdin: Option<&[u8]>,
    ) -> Result<std::process::Output, AddrError> {
        let mut command = Command::new(&self.program);
        if let Some(netns) = &self.netns {
            command.args(["-netns", netns]);
        }
        command
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let what = || format!("{} {}", self.program, args.join(" "));
        let mut child = command.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => AddrError::NoIpCommand,
            _ => AddrError::Command {
                command: what(),
                message: e.to_string(),
            },
        })?;
        let io = async {
            if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
                pipe.write_all(bytes).await?;
                // Dropping the pipe ends `ip`'s input.
            }
            child.wait_with_output().await
        };
        match tokio::time::timeout(IP_TIMEOUT, io).await {
            Ok(Ok(output)) => Ok(output),
            Ok(Err(e)) => Err(AddrError::Command {
                command: what(),
                message: e.to_string(),
            }),
            Err(_) => Err(AddrError::Command {
                command: what(),
                message: format!("no answer within {} s", IP_TIMEOUT.as_secs()),
            }),
        }
    }

    /// The error for what `ip` said when the addresses did not come out as
    /// asked.
    fn failure(&self, stderr: &str) -> AddrError {
        classify(&self.dev, stderr)
    }
}

/// The changes that make `present` (the network's addresses on the device)
/// equal to `wanted`: removals first, so an address listed with another
/// prefix length is removed before it is added back as /32.
fn plan(present: &[Present], wanted: &BTreeSet<Ipv4Addr>) -> Vec<Change> {
    let is_wanted = |p: &Present| p.prefix == 32 && wanted.contains(&p.ip);
    let mut changes: Vec<Change> = present
        .iter()
        .filter(|p| !is_wanted(p))
        .map(|&p| Change::Remove(p))
        .collect();
    let kept: BTreeSet<Ipv4Addr> = present
        .iter()
        .filter(|p| is_wanted(p))
        .map(|p| p.ip)
        .collect();
    changes.extend(wanted.difference(&kept).map(|&ip| Change::Add(ip)));
    changes
}

/// The addresses of `ip -4 -o address show`, one per line:
/// `1: lo    inet 127.0.0.1/8 scope host lo\       valid_lft forever ...`.
/// A point-to-point address (`inet 10.0.0.1 peer 10.0.0.2/32`) has no
/// prefix of its own: it counts as /32.
fn parse_addresses(text: &str) -> Vec<Present> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.find(|w| *w == "inet")?;
            let address = words.next()?;
            let (ip, prefix) = address.split_once('/').unwrap_or((address, "32"));
            Some(Present {
                ip: ip.parse().ok()?,
                prefix: prefix.parse().ok()?,
            })
        })
        .collect()
}

/// Names the likely cause from `ip`'s complaint.
fn classify(dev: &str, stderr: &str) -> AddrError {
    let said = stderr.trim();
    if said.contains("Operation not permitted") || said.contains("Permission denied") {
        AddrError::PermissionDenied {
            dev: dev.to_string(),
        }
    } else if said.contains("does not exist") || said.contains("Cannot find device") {
        AddrError::NoDevice {
            dev: dev.to_string(),
        }
    } else {
        let first = said.lines().next().unwrap_or("no message").to_string();
        AddrError::Command {
            command: format!("ip address (dev {dev})"),
            message: format!("the addresses did not change as asked: {first}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> Ipv4Addr {
        text.parse().unwrap()
    }

    fn present(text: &str) -> Present {
        let (ip, prefix) = text.split_once('/').unwrap();
        Present {
            ip: ip.parse().unwrap(),
            prefix: prefix.parse().unwrap(),
        }
    }

    #[test]
    fn network_membership() {
        let net = Network::new((ip("198.18.7.9"), 15));
        assert_eq!(net.to_string(), "198.18.0.0/15");
        assert!(net.contains(ip("198.18.0.1")));
        assert!(net.contains(ip("198.19.255.255")));
        assert!(!net.contains(ip("198.20.0.0")));
        assert!(!net.contains(ip("127.0.0.1")));
        assert!(Network::new((ip("1.2.3.4"), 0)).contains(ip("9.9.9.9")));
        assert!(!Network::new((ip("1.2.3.4"), 32)).contains(ip("1.2.3.5")));
    }

    #[test]
    fn parses_ip_output() {
        let text = "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever\n\
                    1: lo    inet 198.18.0.5/32 scope global lo\\       valid_lft forever preferred_lft forever\n\
                    7: tun0    inet 10.8.0.1 peer 10.8.0.2/32 scope global tun0\\       valid_lft forever\n";
        assert_eq!(
            parse_addresses(text),
            vec![
                present("127.0.0.1/8"),
                present("198.18.0.5/32"),
                present("10.8.0.1/32")
            ]
        );
    }

    #[test]
    fn plan_removes_the_unwanted_then_adds_the_missing() {
        let now = [
            present("198.18.0.1/32"),
            present("198.18.0.2/32"),
            present("198.18.0.3/24"),
        ];
        let wanted = BTreeSet::from([ip("198.18.0.2"), ip("198.18.0.3"), ip("198.18.0.4")]);
        assert_eq!(
            plan(&now, &wanted),
            vec![
                Change::Remove(present("198.18.0.1/32")),
                Change::Remove(present("198.18.0.3/24")),
                Change::Add(ip("198.18.0.3")),
                Change::Add(ip("198.18.0.4")),
            ]
        );
        let done = [present("198.18.0.2/32"), present("198.18.0.4/32")];
        let wanted = BTreeSet::from([ip("198.18.0.2"), ip("198.18.0.4")]);
        assert!(plan(&done, &wanted).is_empty());
    }

    #[test]
    fn errors_name_the_cause() {
        let denied = classify("lo", "RTNETLINK answers: Operation not permitted\n");
        assert_eq!(
            denied.to_string(),
            "cannot change the addresses of lo: CAP_NET_ADMIN (or root) is needed"
        );
        let missing = classify("eth9", "Device \"eth9\" does not exist.\n");
        assert!(matches!(missing, AddrError::NoDevice { .. }), "{missing}");
        let other = classify(
            "lo",
            "RTNETLINK answers: No buffer space available\nCommand failed -:1\n",
        );
        assert!(
            other.to_string().contains("No buffer space available"),
            "{other}"
        );
    }

    #[tokio::test]
    async fn a_missing_ip_command_says_what_to_install() {
        let mut addrs = LocalAddrs::new("lo", (ip("198.18.0.0"), 15));
        addrs.program = "/nonexistent/flotilla-test/ip".into();
        let err = addrs.clear().await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "the routing mesh needs the `ip` command (iproute2) to add service addresses"
        );
    }

    #[tokio::test]
    async fn a_wanted_address_outside_the_network_is_refused() {
        let addrs = LocalAddrs::new("lo", (ip("198.18.0.0"), 15));
        let err = addrs
            .apply(&BTreeSet::from([ip("198.18.0.1"), ip("10.0.0.1")]))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "service address 10.0.0.1 is outside the service network 198.18.0.0/15"
        );
    }
}
