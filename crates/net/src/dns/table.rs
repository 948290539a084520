//! The names the DNS server answers for, and the answer to each query: a
//! pure function from (table, name, type) to a resolution, no I/O.
//!
//! Our zone is every single-label name (`web`) and every `tasks.<label>`:
//! a name there that no service has gets NXDOMAIN at once. Names with more
//! labels belong to the world and are forwarded (a container's search
//! domains make its resolver try `web.example.com` before `web`; those must
//! reach the upstream resolver, not die here).

use std::collections::HashMap;
use std::net::IpAddr;

use hickory_proto::rr::RecordType;

/// How a service's own name resolves (Docker's `--endpoint-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointMode {
    /// `<service>` answers the service's virtual IP, where the mesh listens.
    Vip(IpAddr),
    /// `<service>` answers the task addresses, rotated per answer.
    Dnsrr,
}

/// One service's names: `<name>` and `tasks.<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsService {
    pub name: String,
    pub endpoint_mode: EndpointMode,
    /// Addresses of the service's running tasks.
    pub tasks: Vec<IpAddr>,
}

/// Every service name the node's DNS server answers for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsTable {
    /// Keyed by the lower-cased name: DNS names compare case-insensitively.
    /// What clients without a view of their own get (the routing mesh's
    /// names).
    services: HashMap<String, DnsService>,
    /// The names a client on overlay networks sees: those of the services
    /// on its networks, and no others.
    views: Vec<HashMap<String, DnsService>>,
    /// Which view each client address has.
    clients: HashMap<IpAddr, usize>,
}

/// What a query gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Resolution {
    /// A known name with addresses of the asked type.
    Addresses(Vec<IpAddr>),
    /// A known name without records of the asked type (NOERROR, no answer:
    /// a resolver asking A and AAAA must not take a missing AAAA for
    /// "no such name").
    NoData,
    /// In our zone, and no service has that name.
    NxDomain,
    /// Not ours: forward to the host's resolvers.
    Elsewhere,
}

impl DnsTable {
    pub fn new() -> DnsTable {
        DnsTable::default()
    }

    /// Adds a service; a second service of the same name replaces the first.
    pub fn insert(&mut self, service: DnsService) {
        self.services.insert(normalize(&service.name), service);
    }

    /// A view: the clients at `clients` resolve `services` (by each one's
    /// name) and nothing else of the zone.
    pub fn insert_view(
        &mut self,
        clients: impl IntoIterator<Item = IpAddr>,
        services: Vec<DnsService>,
    ) {
        let view: HashMap<String, DnsService> = services
            .into_iter()
            .map(|s| (normalize(&s.name), s))
            .collect();
        let index = self.views.len();
        self.views.push(view);
        for ip in clients {
            self.clients.insert(ip, index);
        }
    }

    pub fn len(&self) -> usize {
        self.services.len()
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    #[cfg(test)]
    pub(crate) fn resolve(&self, name: &str, record_type: RecordType) -> Resolution {
        self.resolve_for(name, record_type, None)
    }

    /// The answer for a query from `client`: its view's names when it has
    /// one, else the mesh's.
    pub(crate) fn resolve_for(
        &self,
        name: &str,
        record_type: RecordType,
        client: Option<IpAddr>,
    ) -> Resolution {
        let name = normalize(name);
        let services = client
            .and_then(|c| self.clients.get(&c))
            .and_then(|i| self.views.get(*i))
            .unwrap_or(&self.services);
        let addresses = match lookup(services, &name) {
            Some(addresses) => addresses,
            None if in_zone(&name) => return Resolution::NxDomain,
            None => return Resolution::Elsewhere,
        };
        let wanted: Vec<IpAddr> = addresses
            .into_iter()
            .filter(|ip| match record_type {
                RecordType::A => ip.is_ipv4(),
                RecordType::AAAA => ip.is_ipv6(),
                RecordType::ANY => true,
                _ => false,
            })
            .collect();
        if wanted.is_empty() {
            Resolution::NoData
        } else {
            Resolution::Addresses(wanted)
        }
    }
}

fn lookup(services: &HashMap<String, DnsService>, name: &str) -> Option<Vec<IpAddr>> {
    if let Some(service) = name
        .strip_prefix("tasks.")
        .and_then(|rest| services.get(rest))
    {
        return Some(service.tasks.clone());
    }
    let service = services.get(name)?;
    Some(match service.endpoint_mode {
        EndpointMode::Vip(vip) => vec![vip],
        EndpointMode::Dnsrr => service.tasks.clone(),
    })
}

/// Lower case, without the root's trailing dot.
fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn in_zone(name: &str) -> bool {
    let label = name.strip_prefix("tasks.").unwrap_or(name);
    !label.is_empty() && !label.contains('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> DnsTable {
        let mut table = DnsTable::new();
        table.insert(DnsService {
            name: "Web".into(),
            endpoint_mode: EndpointMode::Vip("10.0.0.2".parse().unwrap()),
            tasks: vec!["10.0.1.1".parse().unwrap(), "10.0.1.2".parse().unwrap()],
        });
        table.insert(DnsService {
            name: "db".into(),
            endpoint_mode: EndpointMode::Dnsrr,
            tasks: vec!["10.0.2.1".parse().unwrap(), "fd00::1".parse().unwrap()],
        });
        table
    }

    fn ips(list: &[&str]) -> Resolution {
        Resolution::Addresses(list.iter().map(|s| s.parse().unwrap()).collect())
    }

    #[test]
    fn vip_service_answers_its_vip_and_tasks_answer_task_addresses() {
        let table = table();
        assert_eq!(table.resolve("web.", RecordType::A), ips(&["10.0.0.2"]));
        assert_eq!(table.resolve("WEB", RecordType::A), ips(&["10.0.0.2"]));
        assert_eq!(
            table.resolve("tasks.web.", RecordType::A),
            ips(&["10.0.1.1", "10.0.1.2"])
        );
    }

    #[test]
    fn dnsrr_service_answers_task_addresses_by_family() {
        let table = table();
        assert_eq!(table.resolve("db.", RecordType::A), ips(&["10.0.2.1"]));
        assert_eq!(table.resolve("db.", RecordType::AAAA), ips(&["fd00::1"]));
    }

    #[test]
    fn known_name_without_that_type_is_nodata() {
        let table = table();
        assert_eq!(table.resolve("web.", RecordType::AAAA), Resolution::NoData);
        assert_eq!(table.resolve("web.", RecordType::MX), Resolution::NoData);
    }

    #[test]
    fn a_client_with_a_view_sees_its_networks_names_only() {
        let mut table = table();
        let client: IpAddr = "10.9.0.7".parse().unwrap();
        table.insert_view(
            [client],
            vec![DnsService {
                name: "api".into(),
                endpoint_mode: EndpointMode::Vip("10.9.0.2".parse().unwrap()),
                tasks: vec!["10.9.0.3".parse().unwrap()],
            }],
        );
        let r = |name, c| table.resolve_for(name, RecordType::A, c);
        assert_eq!(r("api.", Some(client)), ips(&["10.9.0.2"]));
        assert_eq!(r("tasks.api.", Some(client)), ips(&["10.9.0.3"]));
        assert_eq!(
            r("web.", Some(client)),
            Resolution::NxDomain,
            "not on its networks"
        );
        assert_eq!(r("example.com.", Some(client)), Resolution::Elsewhere);
        assert_eq!(
            r("api.", None),
            Resolution::NxDomain,
            "no view: the mesh's names"
        );
        assert_eq!(
            r("web.", Some("10.9.0.8".parse().unwrap())),
            ips(&["10.0.0.2"])
        );
    }

    #[test]
    fn unknown_names_in_zone_are_nxdomain_others_go_elsewhere() {
        let table = table();
        assert_eq!(table.resolve("nope.", RecordType::A), Resolution::NxDomain);
        assert_eq!(
            table.resolve("tasks.nope.", RecordType::A),
            Resolution::NxDomain
        );
        assert_eq!(
            table.resolve("example.com.", RecordType::A),
            Resolution::Elsewhere
        );
        assert_eq!(
            table.resolve("web.example.com.", RecordType::A),
            Resolution::Elsewhere
        );
        assert_eq!(table.resolve(".", RecordType::NS), Resolution::Elsewhere);
    }
}
