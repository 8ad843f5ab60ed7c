//! Topologies: several pools, one block manager each, described in a small TOML file.

use std::path::PathBuf;

use serde::Deserialize;

/// The topology `cosh up --topology default` brings up.
pub const DEFAULT: &str = r#"# Pools to run, one block manager each; a pool's socket is NAME.sock in the runtime
# directory. Domain ids name their pool (p1.d3: domain 3 of pool 1).

[[pool]]
name = "host"       # coherent shared memory: the pool programs use by default
id = 0
kind = "host"

[[pool]]
name = "nc"         # shared memory emulated without coherence
id = 1
kind = "nc"
eviction = 0        # one random cache eviction per this many requests (0: none)

[[pool]]
name = "device"     # memory only its own clients map, as an accelerator's
id = 2
kind = "device"
# dma_setup_us = 172  # pace copies into it like the paper's co-processor DMA engine
# dma_mbps = 3000     # (an emulation: status says so when on)

# Pools on other hosts (each host brings up its own pools; every pool here is linked to
# them). A pool that takes links from other hosts says `listen = "0.0.0.0:7070"`.
# [links]
# token_file = "/etc/cosh/link-token"   # the shared secret, on every host
# tls_ca = "/etc/cosh/ca.pem"           # the certificates that vouch for other hosts
# tls_cert = "/etc/cosh/this-host.pem"  # this host's, for pools that listen
# tls_key = "/etc/cosh/this-host.key"
# [[remote]]
# id = 5
# address = "tls://other-host:7070"
"#;

/// A topology file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// The pools to run here.
    #[serde(default)]
    pub pool: Vec<PoolSpec>,
    /// Pools on other hosts.
    #[serde(default)]
    pub remote: Vec<RemoteSpec>,
    /// How pools link over TCP.
    #[serde(default)]
    pub links: LinksSpec,
}

/// A pool on another host.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteSpec {
    /// Its pool id.
    pub id: u32,
    /// `tls://HOST:PORT` or `tcp://HOST:PORT`.
    pub address: String,
}

/// How this host's pools link over TCP.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinksSpec {
    /// The shared secret, on every host.
    pub token_file: Option<PathBuf>,
    /// The certificates that vouch for other hosts.
    pub tls_ca: Option<PathBuf>,
    /// This host's certificate, for pools that listen.
    pub tls_cert: Option<PathBuf>,
    /// Its key.
    pub tls_key: Option<PathBuf>,
    /// Links over plain TCP (trusted networks only).
    #[serde(default)]
    pub insecure_plain_tcp: bool,
}

/// One pool of a topology.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    /// Its name (it names the socket).
    pub name: String,
    /// Its pool id.
    pub id: u32,
    /// What memory it is.
    pub kind: SpecKind,
    /// One random cache eviction per this many requests (`nc` pools; 0: none).
    #[serde(default)]
    pub eviction: u32,
    /// The emulated DMA engine's set-up time per copy.
    #[serde(default)]
    pub dma_setup_us: Option<u64>,
    /// Its throughput.
    #[serde(default)]
    pub dma_mbps: Option<u64>,
    /// Accept links from other hosts here.
    #[serde(default)]
    pub listen: Option<std::net::SocketAddr>,
}

/// What memory a pool is.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SpecKind {
    /// Coherent shared memory.
    Host,
    /// Shared memory emulated without coherence.
    Nc,
    /// Memory only its own clients map.
    Device,
}

/// Parses and checks a topology file's text; every error names its pool.
pub fn parse(text: &str) -> Result<Topology, String> {
    let topology: Topology = toml::from_str(text).map_err(|e| e.to_string())?;
    check(&topology)?;
    Ok(topology)
}

fn check(t: &Topology) -> Result<(), String> {
    if t.pool.is_empty() {
        return Err("no [[pool]]: name at least one".into());
    }
    let mut names = std::collections::BTreeSet::new();
    let mut ids = std::collections::BTreeSet::new();
    for p in &t.pool {
        let ok = !p.name.is_empty()
            && p.name.len() <= 32
            && p.name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return Err(format!(
                "pool name {:?}: use 1 to 32 lowercase letters, digits and dashes (it names the socket)",
                p.name
            ));
        }
        if !names.insert(p.name.as_str()) {
            return Err(format!("two pools are named {:?}", p.name));
        }
        if !ids.insert(p.id) {
            return Err(format!(
                "two pools have id {} (domain ids name their pool: ids must differ)",
                p.id
            ));
        }
        if p.eviction > 0 && p.kind != SpecKind::Nc {
            return Err(format!(
                "pool {:?}: eviction applies to kind \"nc\" only",
                p.name
            ));
        }
        if p.dma_setup_us.is_some() != p.dma_mbps.is_some() || p.dma_mbps == Some(0) {
            return Err(format!(
                "pool {:?}: give dma_setup_us and dma_mbps together (dma_mbps above 0)",
                p.name
            ));
        }
    }
    let mut remote_ids = std::collections::BTreeSet::new();
    for r in &t.remote {
        if ids.contains(&r.id) {
            return Err(format!(
                "[[remote]] {} has the id of a local [[pool]]",
                r.id
            ));
        }
        cosh_blockmgr::LinkAddr::parse(&r.address)
            .map_err(|e| format!("[[remote]] {}: {e}", r.id))
            .and_then(|a| match a {
                cosh_blockmgr::LinkAddr::Tcp { .. } => Ok(()),
                cosh_blockmgr::LinkAddr::Unix(_) => Err(format!(
                    "[[remote]] {}: the address of another host is tls://HOST:PORT or tcp://HOST:PORT",
                    r.id
                )),
            })?;
        if !remote_ids.insert(r.id) {
            return Err(format!("two [[remote]] pools have id {}", r.id));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_topology_parses_and_bad_ones_say_what_is_wrong() {
        let t = parse(DEFAULT).expect("the default parses");
        assert_eq!(t.pool.len(), 3);
        for (text, words) in [
            ("", "no [[pool]]"),
            (
                "[[pool]]\nname = \"a\"\nid = 0\nkind = \"gpu\"\n",
                "unknown variant",
            ),
            (
                "[[pool]]\nname = \"a\"\nid = 0\nkind = \"host\"\n[[pool]]\nname = \"b\"\nid = 0\nkind = \"nc\"\n",
                "two pools have id 0",
            ),
            (
                "[[pool]]\nname = \"A b\"\nid = 0\nkind = \"host\"\n",
                "lowercase",
            ),
            (
                "[[pool]]\nname = \"a\"\nid = 0\nkind = \"host\"\neviction = 3\n",
                "nc\" only",
            ),
            (
                "[[pool]]\nname = \"a\"\nid = 0\nkind = \"host\"\nsize = 3\n",
                "unknown field",
            ),
            (
                "[[pool]]\nname = \"a\"\nid = 0\nkind = \"device\"\ndma_mbps = 3\n",
                "together",
            ),
            (
                "[[pool]]\nname = \"a\"\nid = 0\nkind = \"host\"\n[[remote]]\nid = 0\naddress = \"tls://b:1\"\n",
                "id of a local",
            ),
            (
                "[[pool]]\nname = \"a\"\nid = 0\nkind = \"host\"\n[[remote]]\nid = 1\naddress = \"/tmp/x.sock\"\n",
                "another host",
            ),
        ] {
            let err = parse(text).expect_err(text);
            assert!(err.contains(words), "{text:?}: {err}");
        }
    }
}
