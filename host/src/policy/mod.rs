//! What the operator granted one plugin, resolved and ready for every call.
//!
//! Deny by default: a plugin sees no file, no environment variable and no network
//! host unless its section of the config grants it. Nothing a plugin or a model
//! says at run time can widen a [`Policy`]; it is built from the config alone.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{DirMode, PluginGrants};
use crate::contract::{Access, Capabilities, DirectoryNeed, ToolSpec};
use quota::DiskUsage;

pub mod quota;

/// One plugin's grants.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// The plugin the grants belong to.
    pub plugin: String,
    /// Directories preopened for the guest.
    pub dirs: Vec<GrantedDir>,
    /// Outbound HTTP allowlist.
    pub hosts: HostAllowlist,
    /// Environment variables passed to the guest, with their values at load time.
    pub env: Vec<(String, String)>,
    /// Values readable through `get-config`.
    pub config: BTreeMap<String, String>,
}

/// A directory granted to a plugin.
#[derive(Debug, Clone)]
pub struct GrantedDir {
    /// Host path.
    pub host: PathBuf,
    /// Path inside the guest.
    pub guest: String,
    /// Granted access.
    pub mode: DirMode,
    /// For writable directories, the most they may hold, in bytes.
    pub quota_bytes: Option<u64>,
    /// For writable directories, what they hold now, charged as guests write.
    pub usage: Option<Arc<DiskUsage>>,
}

/// Writable directories get this quota unless the config sets one: enough for
/// notes and caches, small enough that a runaway plugin cannot fill a disk.
pub const DEFAULT_QUOTA_MIB: u64 = 100;

/// Hosts a plugin may reach over HTTP.
#[derive(Debug, Clone, Default)]
pub struct HostAllowlist {
    entries: Vec<String>,
    allow_private: bool,
}

impl Policy {
    /// Resolve `grants` for `plugin`, reading granted environment variables now and
    /// measuring what writable directories hold (a walk: call it off the async workers).
    pub fn new(plugin: &str, grants: &PluginGrants) -> Self {
        let env = (grants.env.iter())
            .filter_map(|key| std::env::var(key).ok().map(|value| (key.clone(), value)))
            .collect();
        Policy {
            plugin: plugin.to_string(),
            dirs: (grants.dirs.iter())
                .map(|d| GrantedDir {
                    host: d.host.clone(),
                    guest: d.guest.clone(),
                    mode: d.mode,
                    quota_bytes: (d.mode == DirMode::ReadWrite)
                        .then(|| d.quota_mib.unwrap_or(DEFAULT_QUOTA_MIB) << 20),
                    usage: (d.mode == DirMode::ReadWrite).then(|| DiskUsage::measure(&d.host)),
                })
                .collect(),
            hosts: HostAllowlist {
                entries: grants.allow_hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
                allow_private: grants.allow_private_addresses,
            },
            env,
            config: grants.config.clone(),
        }
    }

    /// The grants as JSON, for listings (environment values are not shown).
    pub fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "directories": self.dirs.iter().map(|d| serde_json::json!({
                "path": d.guest,
                "access": if d.mode == DirMode::ReadWrite { "rw" } else { "ro" },
                "quota_bytes": d.quota_bytes,
                "used_bytes": d.usage.as_ref().map(|u| u.bytes()),
            })).collect::<Vec<_>>(),
            "outbound_hosts": self.hosts.entries,
            "private_addresses": self.hosts.allow_private,
            "env": self.env.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            "config_keys": self.config.keys().collect::<Vec<_>>(),
        })
    }

    /// Everything granted, as the needs of a tool that cannot declare its own (a function
    /// of a component without our contract): its tools get the plugin's grants.
    pub fn as_needs(&self) -> Capabilities {
        Capabilities {
            directories: (self.dirs.iter())
                .map(|d| DirectoryNeed {
                    guest_path: d.guest.clone(),
                    access: match d.mode {
                        DirMode::ReadWrite => Access::ReadWrite,
                        DirMode::ReadOnly => Access::ReadOnly,
                    },
                })
                .collect(),
            outbound_hosts: match self.hosts.entries.is_empty() {
                true => Vec::new(),
                false => vec!["*".to_string()],
            },
            env: self.env.iter().map(|(key, _)| key.clone()).collect(),
        }
    }

    /// Why `tool` may not run under this policy, if it may not: a declared need
    /// that the operator has not granted. Checked before the guest starts.
    pub fn missing_grant(&self, tool: &ToolSpec) -> Option<String> {
        let plugin = &self.plugin;
        for need in &tool.capabilities.directories {
            let granted = self.dirs.iter().find(|d| d.guest == need.guest_path);
            match (granted, need.access) {
                (None, _) => {
                    return Some(format!(
                        "tool `{}` needs directory {} but none is granted; add \
                         [[plugins.{plugin}.dirs]] with guest = \"{}\" to the config",
                        tool.name, need.guest_path, need.guest_path
                    ));
                }
                (Some(dir), Access::ReadWrite) if dir.mode == DirMode::ReadOnly => {
                    return Some(format!(
                        "tool `{}` writes to {} but it is granted read-only; set \
                         mode = \"rw\" in [[plugins.{plugin}.dirs]] to allow writes",
                        tool.name, need.guest_path
                    ));
                }
                _ => {}
            }
        }
        for host in &tool.capabilities.outbound_hosts {
            if host == "*" && self.hosts.entries.is_empty() {
                return Some(format!(
                    "tool `{}` makes HTTP requests but no host is allowed; list hosts in \
                     plugins.{plugin}.allow_hosts",
                    tool.name
                ));
            }
            if host != "*" && !self.hosts.allows_authority(host) {
                return Some(format!(
                    "tool `{}` contacts {host}, which is not allowed; add it to \
                     plugins.{plugin}.allow_hosts",
                    tool.name
                ));
            }
        }
        if let Some(key) =
            (tool.capabilities.env.iter()).find(|k| !self.env.iter().any(|(e, _)| e == *k))
        {
            return Some(format!(
                "tool `{}` reads environment variable {key}, which is not granted (or not set \
                 on the host); add it to plugins.{plugin}.env",
                tool.name
            ));
        }
        None
    }
}

impl HostAllowlist {
    /// Whether `authority` (`host` or `host:port`) is on the list. An entry without a
    /// port allows every port of that host.
    pub fn allows_authority(&self, authority: &str) -> bool {
        let authority = authority.to_ascii_lowercase();
        let host = split_host(&authority);
        self.entries.iter().any(|entry| *entry == authority || *entry == host)
    }

    /// Whether a request may go to `ip`, an address the allowed host resolved to.
    ///
    /// Without `allow_private_addresses`, an address is refused when it lies in a block of
    /// `V4_REFUSED` or `V6_REFUSED` below, or when it is an IPv6 form that carries an IPv4
    /// address (`V6_EMBEDDING`) lying in `V4_REFUSED`. With it, every address passes,
    /// as it always has: the operator trusts the allowed hosts wherever they resolve. That
    /// includes the unspecified addresses, which reach the local host just like the loopback
    /// the setting is there to permit, and multicast, which a TCP connect cannot reach.
    pub fn allows_address(&self, ip: IpAddr) -> bool {
        self.allow_private || special_purpose(ip).is_none()
    }

    /// The part of this list a tool that declares `declared` hosts may use: all of it for a
    /// tool that declares `*`, else the declared hosts the list allows, nothing for a tool
    /// that declares none.
    pub fn narrowed_to(&self, declared: &[String]) -> HostAllowlist {
        if declared.iter().any(|host| host == "*") {
            return self.clone();
        }
        let entries = (declared.iter())
            .map(|host| host.to_ascii_lowercase())
            .filter(|host| self.allows_authority(host))
            .collect();
        HostAllowlist { entries, allow_private: self.allow_private }
    }
}

/// The host part of `host[:port]`, `[v6]:port` included.
fn split_host(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// A refused block of addresses: network, prefix length, and what the registry calls it.
type Block<A> = (A, u8, &'static str);

/// IPv4 blocks no plugin request may reach: the rows of the IANA IPv4 Special-Purpose
/// Address Registry whose "Globally Reachable" is False, plus the deprecated 6to4 relay
/// anycast block and multicast, which that registry does not mark so but which no HTTP
/// request means. 192.0.0.0/24 is refused whole, its two globally reachable /32s
/// (192.0.0.9 and .10) included: nothing a plugin fetches lives there. The first row that
/// holds an address names its refusal, so a /32 precedes the block around it.
const V4_REFUSED: &[Block<Ipv4Addr>] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 8, "\"this network\" (RFC 791)"),
    (Ipv4Addr::new(10, 0, 0, 0), 8, "private use (RFC 1918)"),
    (Ipv4Addr::new(100, 64, 0, 0), 10, "shared address space, carrier-grade NAT (RFC 6598)"),
    (Ipv4Addr::new(127, 0, 0, 0), 8, "loopback (RFC 1122)"),
    (Ipv4Addr::new(169, 254, 0, 0), 16, "link-local, cloud metadata (RFC 3927)"),
    (Ipv4Addr::new(172, 16, 0, 0), 12, "private use (RFC 1918)"),
    (Ipv4Addr::new(192, 0, 0, 0), 24, "IETF protocol assignments (RFC 6890)"),
    (Ipv4Addr::new(192, 0, 2, 0), 24, "documentation, TEST-NET-1 (RFC 5737)"),
    (Ipv4Addr::new(192, 88, 99, 0), 24, "deprecated 6to4 relay anycast (RFC 7526)"),
    (Ipv4Addr::new(192, 168, 0, 0), 16, "private use (RFC 1918)"),
    (Ipv4Addr::new(198, 18, 0, 0), 15, "benchmarking (RFC 2544)"),
    (Ipv4Addr::new(198, 51, 100, 0), 24, "documentation, TEST-NET-2 (RFC 5737)"),
    (Ipv4Addr::new(203, 0, 113, 0), 24, "documentation, TEST-NET-3 (RFC 5737)"),
    (Ipv4Addr::new(224, 0, 0, 0), 4, "multicast (RFC 5771)"),
    (Ipv4Addr::new(255, 255, 255, 255), 32, "limited broadcast (RFC 919)"),
    (Ipv4Addr::new(240, 0, 0, 0), 4, "reserved (RFC 1112)"),
];

/// IPv6 blocks no plugin request may reach: the rows of the IANA IPv6 Special-Purpose
/// Address Registry whose "Globally Reachable" is False, plus deprecated site-local and
/// multicast, which that registry leaves out. 2001::/23 is refused whole, its few globally
/// reachable anycast, AMT and AS112 blocks included, as nothing a plugin fetches lives
/// there. Two registry rows are missing on purpose, because the IPv4 address they carry
/// decides (see [`V6_EMBEDDING`]): ::ffff:0:0/96, to which a dual-stack socket connects as
/// that very IPv4 address, and 2002::/16, whose reachability the registry leaves to it.
const V6_REFUSED: &[Block<Ipv6Addr>] = &[
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0), 128, "unspecified (RFC 4291)"),
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 1), 128, "loopback (RFC 4291)"),
    (
        Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0),
        48,
        "local-use IPv4/IPv6 translation (RFC 8215)",
    ),
    (Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64, "discard-only (RFC 6666)"),
    (Ipv6Addr::new(0x100, 0, 0, 1, 0, 0, 0, 0), 64, "dummy IPv6 prefix"),
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 23, "IETF protocol assignments (RFC 2928)"),
    (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32, "documentation (RFC 3849)"),
    (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20, "documentation (RFC 9637)"),
    (Ipv6Addr::new(0x5f00, 0, 0, 0, 0, 0, 0, 0), 16, "segment routing SIDs (RFC 9602)"),
    (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7, "unique local (RFC 4193)"),
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10, "link-local (RFC 4291)"),
    (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10, "site-local, deprecated (RFC 3879)"),
    (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8, "multicast (RFC 4291)"),
];

/// Where an IPv6 form keeps the IPv4 address it carries.
#[derive(Debug, Clone, Copy)]
enum Embedded {
    /// The last 32 bits.
    Last32,
    /// Bits 16..48, right after the 2002::/16 prefix.
    SixToFour,
    /// The server in bits 32..64 and the client, inverted, in the last 32 bits.
    Teredo,
}

/// IPv6 forms that carry an IPv4 address: network, prefix length, and where the IPv4 is.
/// Traffic to one of them ends up at that IPv4 host (through the dual-stack socket, the
/// NAT64 gateway, the 6to4 relay or the Teredo relay), so it is refused when the IPv4 is:
/// otherwise `[::127.0.0.1]` or `[64:ff9b::7f00:1]` would reach loopback. The local-use
/// NAT64 and Teredo prefixes are refused whole by [`V6_REFUSED`] today; they are here too
/// because the registry leaves Teredo's reachability to its IPv4s (as with 6to4), so that
/// narrowing 2001::/23 to the registry's rows later cannot open it up.
const V6_EMBEDDING: &[(Ipv6Addr, u8, Embedded)] = &[
    // IPv4-mapped (RFC 4291).
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96, Embedded::Last32),
    // IPv4-compatible, deprecated (RFC 4291); it holds :: and ::1, whose 0.0.0.0/8 IPv4s
    // are refused too.
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0), 96, Embedded::Last32),
    // IPv4/IPv6 translation, NAT64's well-known prefix (RFC 6052).
    (Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96, Embedded::Last32),
    // Local-use IPv4/IPv6 translation (RFC 8215), read as a /96 like the well-known prefix.
    (Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48, Embedded::Last32),
    // 6to4 (RFC 3056).
    (Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16, Embedded::SixToFour),
    // Teredo (RFC 4380).
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 32, Embedded::Teredo),
];

/// Why `ip` is refused without `allow_private_addresses`: the name of its block, or of the
/// block of an IPv4 address it carries. `None` for an address a plugin may reach.
fn special_purpose(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_block(v4),
        IpAddr::V6(v6) => v6_block(v6).or_else(|| embedded_ipv4(v6).find_map(v4_block)),
    }
}

/// The name of the [`V4_REFUSED`] block that holds `ip`.
fn v4_block(ip: Ipv4Addr) -> Option<&'static str> {
    let bits = u128::from(ip.to_bits());
    (V4_REFUSED.iter())
        .find(|(net, len, _)| within(bits, net.to_bits().into(), *len, 32))
        .map(|(_, _, name)| *name)
}

/// The name of the [`V6_REFUSED`] block that holds `ip`.
fn v6_block(ip: Ipv6Addr) -> Option<&'static str> {
    (V6_REFUSED.iter())
        .find(|(net, len, _)| within(ip.to_bits(), net.to_bits(), *len, 128))
        .map(|(_, _, name)| *name)
}

/// The IPv4 addresses `ip` carries, by [`V6_EMBEDDING`]; none for a plain IPv6 address.
fn embedded_ipv4(ip: Ipv6Addr) -> impl Iterator<Item = Ipv4Addr> {
    let bits = ip.to_bits();
    (V6_EMBEDDING.iter())
        .filter(move |(net, len, _)| within(bits, net.to_bits(), *len, 128))
        .flat_map(move |(_, _, form)| {
            let (first, second) = match form {
                Embedded::Last32 => (bits as u32, None),
                Embedded::SixToFour => ((bits >> 80) as u32, None),
                Embedded::Teredo => ((bits >> 64) as u32, Some(!(bits as u32))),
            };
            std::iter::once(first).chain(second).map(Ipv4Addr::from_bits)
        })
}

/// Whether the network `net`/`len` holds `ip`, both `width`-bit addresses in a `u128`.
fn within(ip: u128, net: u128, len: u8, width: u32) -> bool {
    // `checked_shr` turns a /0, whose shift is the whole `u128`, into "holds everything".
    (ip ^ net).checked_shr(width - u32::from(len)).unwrap_or(0) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowlist(entries: &[&str]) -> HostAllowlist {
        HostAllowlist {
            entries: entries.iter().map(|s| s.to_string()).collect(),
            allow_private: false,
        }
    }

    fn reason(ip: &str) -> Option<&'static str> {
        special_purpose(ip.parse().unwrap())
    }

    #[test]
    fn a_host_entry_allows_every_port_and_a_port_entry_only_its_own() {
        let list = allowlist(&["example.com", "127.0.0.1:8080"]);
        assert!(list.allows_authority("example.com"));
        assert!(list.allows_authority("EXAMPLE.com:443"));
        assert!(list.allows_authority("127.0.0.1:8080"));
        assert!(!list.allows_authority("127.0.0.1:8081"));
        assert!(!list.allows_authority("example.com.evil.net"));
    }

    #[test]
    fn a_tool_may_use_only_the_granted_hosts_it_declares() {
        let granted = allowlist(&["example.com", "api.github.com"]);
        let github = granted.narrowed_to(&["api.github.com".into()]);
        assert!(github.allows_authority("api.github.com:443"));
        assert!(!github.allows_authority("example.com"), "granted, not declared");
        assert!(granted.narrowed_to(&["*".into()]).allows_authority("example.com"));
        assert!(!granted.narrowed_to(&[]).allows_authority("example.com"), "declares none");
        assert!(!granted.narrowed_to(&["evil.net".into()]).allows_authority("evil.net"));
    }

    #[test]
    fn private_and_metadata_addresses_are_refused() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "169.254.169.254",
            "192.168.1.1",
            "::1",
            "fd00::1",
            "::ffff:10.0.0.1",
            "100.64.0.1",
        ] {
            assert!(reason(ip).is_some(), "{ip}");
        }
        assert_eq!(reason("93.184.216.34"), None);
        assert_eq!(reason("2606:4700::1111"), None);
    }

    #[test]
    fn every_table_row_is_a_network_address_with_a_prefix_that_fits() {
        for (net, len, name) in V4_REFUSED {
            assert!((1..=32).contains(len), "{net}/{len} {name}");
            assert_eq!(
                net.to_bits() & u32::MAX.checked_shr((*len).into()).unwrap_or(0),
                0,
                "{net}/{len}"
            );
        }
        let v6 = V6_REFUSED.iter().map(|(net, len, _)| (*net, *len));
        for (net, len) in v6.chain(V6_EMBEDDING.iter().map(|(net, len, _)| (*net, *len))) {
            assert!((1..=128).contains(&len), "{net}/{len}");
            assert_eq!(
                net.to_bits() & u128::MAX.checked_shr(len.into()).unwrap_or(0),
                0,
                "{net}/{len}"
            );
        }
    }

    #[test]
    fn block_edges_are_where_the_prefix_says() {
        assert_eq!(reason("100.63.255.255"), None);
        assert_eq!(
            reason("100.64.0.0"),
            Some("shared address space, carrier-grade NAT (RFC 6598)")
        );
        assert_eq!(
            reason("100.127.255.255"),
            Some("shared address space, carrier-grade NAT (RFC 6598)")
        );
        assert_eq!(reason("100.128.0.0"), None);
        assert_eq!(reason("172.15.255.255"), None);
        assert_eq!(reason("172.31.255.255"), Some("private use (RFC 1918)"));
        assert_eq!(reason("172.32.0.0"), None);
        assert_eq!(reason("223.255.255.255"), None);
        assert_eq!(reason("255.255.255.255"), Some("limited broadcast (RFC 919)"));
        assert_eq!(reason("255.255.255.254"), Some("reserved (RFC 1112)"));
        assert_eq!(
            reason("2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff"),
            Some("IETF protocol assignments (RFC 2928)")
        );
        assert_eq!(reason("2001:200::1"), None);
        assert_eq!(reason("febf:ffff::1"), Some("link-local (RFC 4291)"));
        assert_eq!(reason("fec0::"), Some("site-local, deprecated (RFC 3879)"));
        assert_eq!(reason("ff00::"), Some("multicast (RFC 4291)"));
        assert_eq!(
            reason("feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            Some("site-local, deprecated (RFC 3879)")
        );
    }

    #[test]
    fn each_embedding_yields_the_ipv4_where_its_rfc_puts_it() {
        let carried = |ip: &str| {
            embedded_ipv4(ip.parse().unwrap()).map(|v4| v4.to_string()).collect::<Vec<_>>()
        };
        assert_eq!(carried("::ffff:10.0.0.1"), ["10.0.0.1"]);
        assert_eq!(carried("::127.0.0.1"), ["127.0.0.1"]);
        assert_eq!(carried("64:ff9b::7f00:1"), ["127.0.0.1"]);
        assert_eq!(carried("64:ff9b:1::a00:1"), ["10.0.0.1"]);
        assert_eq!(carried("2002:7f00:1::"), ["127.0.0.1"]);
        // RFC 4380's example: server 65.54.227.120, client 192.0.2.45 behind NAT port 40000.
        assert_eq!(
            carried("2001:0:4136:e378:8000:63bf:3fff:fdd2"),
            ["65.54.227.120", "192.0.2.45"]
        );
        assert!(carried("2606:4700::1111").is_empty());
        assert!(carried("::1:0:0:1").is_empty(), "bits 80..96 set: not ::/96");
    }

    #[test]
    fn a_carried_ipv4_is_judged_by_the_ipv4_rules() {
        assert_eq!(reason("::ffff:169.254.169.254"), Some("link-local, cloud metadata (RFC 3927)"));
        assert_eq!(reason("64:ff9b::a9fe:a9fe"), Some("link-local, cloud metadata (RFC 3927)"));
        assert_eq!(reason("2002:a00:1::1"), Some("private use (RFC 1918)"));
        assert_eq!(reason("::ffff:8.8.8.8"), None);
        assert_eq!(reason("64:ff9b::808:808"), None);
        assert_eq!(reason("2002:808:808::1"), None);
        // The block of the IPv6 address itself names the refusal before what it carries.
        assert_eq!(reason("::1"), Some("loopback (RFC 4291)"));
        assert_eq!(
            reason("2001:0:4136:e378:8000:63bf:80ff:fffe"),
            Some("IETF protocol assignments (RFC 2928)")
        );
    }
}
