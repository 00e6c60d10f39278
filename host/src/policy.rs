//! What the operator granted one plugin, resolved and ready for every call.
//!
//! Deny by default: a plugin sees no file, no environment variable and no network
//! host unless its section of the config grants it. Nothing a plugin or a model
//! says at run time can widen a [`Policy`]; it is built from the config alone.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use crate::config::{DirMode, PluginGrants};
use crate::contract::{Access, ToolSpec};

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
    /// Resolve `grants` for `plugin`, reading granted environment variables now.
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
            })).collect::<Vec<_>>(),
            "outbound_hosts": self.hosts.entries,
            "private_addresses": self.hosts.allow_private,
            "env": self.env.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            "config_keys": self.config.keys().collect::<Vec<_>>(),
        })
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

impl GrantedDir {
    /// The quota and current usage of a writable directory that is full; `None`
    /// when it has room (or no quota). The check runs before each call, so one
    /// call that starts with room may overshoot by what it writes.
    pub fn full(&self) -> Option<(u64, u64)> {
        let quota = self.quota_bytes?;
        let used = disk_usage(&self.host);
        (used >= quota).then_some((quota, used))
    }
}

/// Bytes in regular files under `dir`, without following symbolic links.
fn disk_usage(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            match entry.metadata() {
                Ok(meta) if meta.is_dir() => pending.push(entry.path()),
                Ok(meta) if meta.is_file() => total += meta.len(),
                _ => {}
            }
        }
    }
    total
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
    pub fn allows_address(&self, ip: IpAddr) -> bool {
        self.allow_private || is_public(ip)
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

/// Whether `ip` is a public unicast address: not loopback, private, link-local
/// (cloud metadata lives at 169.254.169.254), unspecified, or shared/reserved space.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80) // link-local
        }
    }
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
    fn private_and_metadata_addresses_are_not_public() {
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
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        assert!(is_public("93.184.216.34".parse().unwrap()));
        assert!(is_public("2606:4700::1111".parse().unwrap()));
    }
}
