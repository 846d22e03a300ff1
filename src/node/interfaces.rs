//! `capabilities.network_interfaces`: the node's network interfaces with their MAC, addresses,
//! link speed and state. Read at registration and at each re-detection, never per heartbeat.
//!
//! The interfaces and their attributes come from `HOST_SYS/class/net` (a sysfs mounted in the
//! node's network namespace shows the node's interfaces, whichever namespace the agent runs in).
//! Their addresses come from the node's init's network files, `HOST_PROC/1/net/` (else
//! `HOST_PROC/net/`, the agent's own namespace): IPv6 from `if_inet6`, IPv4 from the local
//! addresses of `fib_trie` matched to an interface by `route` (the kernel has no other file
//! naming an interface's IPv4 addresses).
//!
//! Left out: loopback, veth pairs (containers' ends and their host ends), and bridges whose
//! ports are all veths or that have none (docker0, podman0, cni0, br-…: a container engine's
//! private networks, not the node's). Kept: physical interfaces, bonds, VLANs, Wi-Fi, tunnels
//! and overlays such as WireGuard, flannel or VXLAN, and bridges with a physical port (a
//! host's `br0`).

use std::fs;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use super::read_text;
use crate::text::printable;

/// sysfs holds one directory per interface; a bound on the walk, not a limit in practice.
const INTERFACE_LIMIT: usize = 256;
/// At most this many interfaces are reported.
pub const MAX_INTERFACES: usize = 64;
/// At most this many addresses per interface.
const MAX_ADDRESSES: usize = 16;
/// sysfs attributes are short.
const ATTRIBUTE_LIMIT: usize = 256;
/// /proc/net/fib_trie grows with the routes; a router's is big, a node's is not.
const NET_FILE_LIMIT: usize = 1 << 20;
/// `ARPHRD_LOOPBACK` in `type`.
const LOOPBACK_TYPE: &str = "772";

/// One network interface: `{"name", "mac", "addresses", "speed_mbps", "up"}`.
#[derive(miniserde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct NetworkInterface {
    pub name: String,
    /// The hardware address; null for interfaces without one (WireGuard, tun).
    pub mac: Option<String>,
    /// `address/prefix` in the interface's order, IPv4 first.
    pub addresses: Vec<String>,
    /// Link speed in Mb/s where the driver knows it (null for Wi-Fi, virtual links, a link that
    /// is down).
    pub speed_mbps: Option<u32>,
    /// Administratively up with a carrier (`operstate` up; `unknown`, as tunnels report, counts
    /// as up when the carrier is).
    pub up: bool,
}

/// The node's interfaces, sorted by name.
pub fn detect(sys: &Path, proc: &Path) -> Vec<NetworkInterface> {
    let class_net = sys.join("class/net");
    let Ok(entries) = fs::read_dir(&class_net) else {
        crate::debug!("No network interfaces: cannot list {}", class_net.display());
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .take(INTERFACE_LIMIT)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    crate::lists::sort_by(&mut names, String::cmp);
    let addresses = Addresses::read(proc);
    let mut interfaces = Vec::new();
    for name in names {
        let dir = class_net.join(&name);
        let attribute = |file: &str| read_attribute(&dir.join(file));
        match kind(&dir) {
            Kind::Loopback | Kind::Veth => continue,
            Kind::Bridge if !has_non_veth_port(&dir) => continue,
            Kind::Bridge | Kind::Other => {}
        }
        let operstate = attribute("operstate").unwrap_or_default();
        let carrier = attribute("carrier").as_deref() == Some("1");
        let mac = attribute("address").filter(|mac| {
            !mac.is_empty() && mac.bytes().all(|b| b.is_ascii_hexdigit() || b == b':')
        });
        interfaces.push(NetworkInterface {
            addresses: addresses.of(&name),
            name: printable(&name, 64),
            mac,
            // A link that is down, or a driver that does not know, answers -1 or an error.
            speed_mbps: attribute("speed")
                .and_then(|speed| speed.parse::<u32>().ok())
                .filter(|&speed| speed > 0 && speed != u32::MAX),
            up: operstate == "up" || (operstate == "unknown" && carrier),
        });
        if interfaces.len() == MAX_INTERFACES {
            break;
        }
    }
    interfaces
}

/// What an interface is, as far as choosing what to report goes.
#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Loopback,
    /// A veth end: a virtual device (no `device` link) with a peer (`iflink` ≠ `ifindex`) and
    /// no `DEVTYPE` (VLANs, macvlans, VXLANs and the like, which also have a link, name theirs).
    Veth,
    Bridge,
    Other,
}

/// Reads as few files as it can: a node with a hundred pods has two hundred veths.
fn kind(dir: &Path) -> Kind {
    let uevent = read_attribute(&dir.join("uevent")).unwrap_or_default();
    let devtype = uevent
        .lines()
        .find_map(|line| line.strip_prefix("DEVTYPE="));
    match devtype {
        Some("bridge") => return Kind::Bridge,
        Some(_) => return Kind::Other,
        None => {}
    }
    if read_attribute(&dir.join("type")).as_deref() == Some(LOOPBACK_TYPE) {
        return Kind::Loopback;
    }
    if dir.join("device").exists() {
        return Kind::Other;
    }
    match (
        read_attribute(&dir.join("ifindex")),
        read_attribute(&dir.join("iflink")),
    ) {
        (Some(ifindex), Some(iflink)) if ifindex != iflink => Kind::Veth,
        _ => Kind::Other,
    }
}

/// Whether a bridge has a port that is not a veth (`brif/<port>`, each a link to the port's
/// own directory).
fn has_non_veth_port(bridge: &Path) -> bool {
    let Ok(ports) = fs::read_dir(bridge.join("brif")) else {
        return false;
    };
    ports
        .flatten()
        .take(INTERFACE_LIMIT)
        // brif/<port> links to the port's own brport directory.
        .any(|port| kind(&port.path().join("..")) != Kind::Veth)
}

fn read_attribute(path: &Path) -> Option<String> {
    let mut buffer = Vec::new();
    read_text(path, &mut buffer, ATTRIBUTE_LIMIT)
        .ok()
        .map(|text| text.trim().to_string())
}

/// The node's addresses by interface.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Addresses {
    /// `(interface, "address/prefix")`, IPv4 ones first.
    pub entries: Vec<(String, String)>,
}

impl Addresses {
    fn read(proc: &Path) -> Addresses {
        // PID 1's namespace is the node's; /proc/net is the reader's own.
        let net = [proc.join("1/net"), proc.join("net")]
            .into_iter()
            .find(|dir| dir.join("route").exists() || dir.join("if_inet6").exists());
        let Some(net) = net else {
            return Addresses::default();
        };
        let text = |file: &str| {
            let mut buffer = Vec::new();
            read_text(&net.join(file), &mut buffer, NET_FILE_LIMIT)
                .map(str::to_string)
                .unwrap_or_default()
        };
        let (fib_trie, route, if_inet6) = (text("fib_trie"), text("route"), text("if_inet6"));
        Addresses::parse(&fib_trie, &route, &if_inet6)
    }

    /// From the text of `fib_trie`, `route` and `if_inet6`. An IPv4 address goes to the
    /// interface with the most specific non-default route that contains it; one no route
    /// contains is left out.
    pub fn parse(fib_trie: &str, route: &str, if_inet6: &str) -> Addresses {
        let mut entries = Vec::new();
        let routes = routes(route);
        for address in local_ipv4(fib_trie) {
            let best = routes
                .iter()
                .filter(|route| {
                    route.mask != 0
                        && u32::from(address) & route.mask == route.destination & route.mask
                })
                .max_by_key(|route| route.mask.count_ones());
            if let Some(route) = best {
                let entry = (
                    route.interface.to_string(),
                    format!("{address}/{}", route.mask.count_ones()),
                );
                if !entries.contains(&entry) {
                    entries.push(entry);
                }
            }
        }
        // `fe800000000000000000000000000001 02 40 20 80 eth0`: address, index, prefix length
        // (hex), scope, flags, name.
        for line in if_inet6.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [hex, _, prefix, _, _, name] = fields[..] else {
                continue;
            };
            let (Ok(bits), Ok(prefix)) = (
                u128::from_str_radix(hex, 16),
                u8::from_str_radix(prefix, 16),
            ) else {
                continue;
            };
            if hex.len() != 32 || prefix > 128 {
                continue;
            }
            entries.push((
                name.to_string(),
                format!("{}/{prefix}", Ipv6Addr::from(bits)),
            ));
        }
        Addresses { entries }
    }

    fn of(&self, interface: &str) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(name, _)| name == interface)
            .map(|(_, address)| address.clone())
            .take(MAX_ADDRESSES)
            .collect()
    }
}

/// A line of /proc/net/route: the interface, and the destination and mask as numbers in the
/// address's order (`10.0.2.0` is `0x0a000200`).
struct Route<'a> {
    interface: &'a str,
    destination: u32,
    mask: u32,
}

/// /proc/net/route: a header, then `Iface Destination Gateway Flags RefCnt Use Metric Mask …`,
/// the addresses in hex as the kernel holds them (network order read as a host-order number).
/// Unreadable lines are skipped.
///
/// Not procfs's `RouteEntries`, which measured 8 KiB of the plain binary, and fails on the
/// whole file for one line it cannot read: this reads the three fields the addresses need.
fn routes(text: &str) -> Vec<Route<'_>> {
    let address = |hex: &str| {
        let number = u32::from_str_radix(hex, 16).ok()?;
        // The kernel prints the in-memory address as a host-order number.
        Some(u32::from_be_bytes(number.to_ne_bytes()))
    };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_ascii_whitespace().take(8).collect();
            let [interface, destination, _, _, _, _, _, mask] = fields[..] else {
                return None;
            };
            Some(Route {
                interface,
                destination: address(destination)?,
                mask: address(mask)?,
            })
        })
        .collect()
}

/// The node's own IPv4 addresses: the leaves of `fib_trie` marked `/32 host LOCAL`, in order,
/// each once (the file lists the Local and Main tables; 127.0.0.0/8 is loopback's).
pub fn local_ipv4(fib_trie: &str) -> Vec<Ipv4Addr> {
    let mut addresses = Vec::new();
    let mut leaf: Option<Ipv4Addr> = None;
    for line in fib_trie.lines() {
        let line = line.trim_start_matches([' ', '|', '+', '-']);
        if let Ok(address) = line.trim().parse::<Ipv4Addr>() {
            leaf = Some(address);
        } else if line.trim() == "/32 host LOCAL"
            && let Some(address) = leaf
            && !address.is_loopback()
            && !addresses.contains(&address)
        {
            addresses.push(address);
        }
    }
    addresses
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIB_TRIE: &str = "Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 10.0.0.0/8 2 0 2
        +-- 10.0.2.0/24 2 0 2
           |-- 10.0.2.0
              /24 link UNICAST
           |-- 10.0.2.15
              /32 host LOCAL
     +-- 127.0.0.0/8 2 0 2
        |-- 127.0.0.1
           /32 host LOCAL
Local:
  +-- 0.0.0.0/0 3 0 5
     |-- 10.0.2.15
        /32 host LOCAL
     |-- 172.17.0.1
        /32 host LOCAL
     |-- 192.0.2.7
        /32 host LOCAL
";
    const ROUTE: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0202000A\t0003\t0\t0\t100\t00000000\t0\t0\t0
eth0\t0002000A\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0
docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
";
    const IF_INET6: &str = "fe80000000000000505400fffe123456 02 40 20 80     eth0
00000000000000000000000000000001 01 80 10 80       lo
bad line
";

    #[test]
    fn ipv4_goes_to_the_most_specific_route_and_ipv6_to_its_interface() {
        let addresses = Addresses::parse(FIB_TRIE, ROUTE, IF_INET6);
        assert_eq!(
            addresses.of("eth0"),
            ["10.0.2.15/24", "fe80::5054:ff:fe12:3456/64"]
        );
        assert_eq!(addresses.of("docker0"), ["172.17.0.1/16"]);
        assert_eq!(addresses.of("lo"), ["::1/128"]);
        // 192.0.2.7 is on no route: left out, not guessed.
        assert!(
            !addresses
                .entries
                .iter()
                .any(|(_, a)| a.starts_with("192.0.2.7"))
        );
    }

    #[test]
    fn local_addresses_are_the_host_leaves() {
        assert_eq!(
            local_ipv4(FIB_TRIE),
            [
                Ipv4Addr::new(10, 0, 2, 15),
                Ipv4Addr::new(172, 17, 0, 1),
                Ipv4Addr::new(192, 0, 2, 7)
            ]
        );
    }
}
