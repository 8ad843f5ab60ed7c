//! Topologies: several pools, one block manager each, described in a small TOML file and
//! brought up, shown and stopped together.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use cosh::Domain;

use crate::{Kind, Outcome, Serve, connect, print_status, start_detached, status_of, stop};

/// The topology `cosh up --topology default` brings up.
pub(crate) const DEFAULT: &str = r#"# Pools to run, one block manager each; a pool's socket is NAME.sock in the runtime
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
pub(crate) struct Topology {
    #[serde(default)]
    pool: Vec<PoolSpec>,
    #[serde(default)]
    remote: Vec<RemoteSpec>,
    #[serde(default)]
    links: LinksSpec,
}

/// A pool on another host.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoteSpec {
    id: u32,
    address: String,
}

/// How this host's pools link over TCP.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LinksSpec {
    token_file: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    #[serde(default)]
    insecure_plain_tcp: bool,
}

/// One pool of a topology.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolSpec {
    name: String,
    id: u32,
    kind: SpecKind,
    #[serde(default)]
    eviction: u32,
    #[serde(default)]
    dma_setup_us: Option<u64>,
    #[serde(default)]
    dma_mbps: Option<u64>,
    /// Accept links from other hosts here.
    #[serde(default)]
    listen: Option<std::net::SocketAddr>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum SpecKind {
    Host,
    Nc,
    Device,
}

/// Reads a topology: `default`, or a file; every rule checked, every error naming its pool.
pub(crate) fn load(what: &str) -> Result<Topology, String> {
    let text = if what == "default" {
        DEFAULT.to_string()
    } else {
        std::fs::read_to_string(what).map_err(|e| format!("cannot read topology {what}: {e}"))?
    };
    let topology: Topology = toml::from_str(&text).map_err(|e| format!("topology {what}: {e}"))?;
    check(&topology).map_err(|e| format!("topology {what}: {e}"))?;
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

/// The socket of pool `name` in `dir`.
fn socket(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.sock"))
}

/// Starts every pool of `t` that does not answer yet, each in the background.
pub(crate) fn up(
    dir: &Path,
    t: &Topology,
    free_budget_mib: u64,
    pool_mib: Option<u64>,
    quiet: bool,
) -> Outcome {
    for p in &t.pool {
        let at = socket(dir, &p.name);
        if connect(&at, "cosh-up").is_ok() {
            if !quiet {
                println!(
                    "pool {} ({}) already runs at {}",
                    p.id,
                    p.name,
                    at.display()
                );
            }
            continue;
        }
        let kind = match p.kind {
            SpecKind::Host => Kind::Host,
            SpecKind::Nc => Kind::Nc,
            SpecKind::Device => Kind::Device,
        };
        // Every pool is linked to every other, here and on other hosts.
        let mut links: Vec<(u32, cosh_blockmgr::LinkAddr)> = t
            .pool
            .iter()
            .filter(|q| q.id != p.id)
            .map(|q| (q.id, cosh_blockmgr::LinkAddr::Unix(socket(dir, &q.name))))
            .collect();
        for r in &t.remote {
            links.push((r.id, cosh_blockmgr::LinkAddr::parse(&r.address)?));
        }
        let over_tcp = p.listen.is_some() || !t.remote.is_empty();
        let remote = cosh_blockmgr::RemoteOptions {
            listen: p.listen,
            link_token_file: t.links.token_file.clone().filter(|_| over_tcp),
            tls_cert: t.links.tls_cert.clone().filter(|_| p.listen.is_some()),
            tls_key: t.links.tls_key.clone().filter(|_| p.listen.is_some()),
            tls_ca: t.links.tls_ca.clone().filter(|_| !t.remote.is_empty()),
            insecure_plain_tcp: t.links.insecure_plain_tcp,
        };
        // Checked before anything starts, with the pool's name in the message.
        remote
            .apply(&links, &mut cosh_blockmgr::Config::host())
            .map_err(|e| format!("pool {:?}: {e}", p.name))?;
        let pid = start_detached(
            &at,
            Serve {
                free_budget_mib,
                pool_mib,
                kind,
                pool: p.id,
                nc_eviction: p.eviction,
                links,
                remote,
                dma: p.dma_setup_us.zip(p.dma_mbps),
            },
        )?;
        if !quiet {
            println!(
                "pool {} ({}, {}) started (pid {pid}) at {}",
                p.id,
                p.name,
                kind.describe(),
                at.display()
            );
        }
    }
    if !quiet {
        println!("see them with `cosh status --all`, stop them with `cosh down --all`");
    }
    Ok(())
}

/// The sockets in `dir` a block manager answers at, by name, each with a connection to it.
fn running(dir: &Path) -> Vec<(PathBuf, Domain)> {
    let mut sockets: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "sock"))
                .collect()
        })
        .unwrap_or_default();
    sockets.sort();
    sockets
        .into_iter()
        .filter_map(|p| connect(&p, "cosh-status").ok().map(|d| (p, d)))
        .collect()
}

/// `cosh status --all`: every pool running in `dir`.
pub(crate) fn status_all(dir: &Path, json: bool) -> Outcome {
    let pools = running(dir);
    if pools.is_empty() {
        return Err(format!(
            "no block manager answers in {}; start one with `cosh up` (or a topology with `cosh up --topology default`)",
            dir.display()
        ));
    }
    let mut all = Vec::new();
    for (i, (at, mut d)) in pools.into_iter().enumerate() {
        let s = status_of(&mut d)?;
        if json {
            all.push(serde_json::json!({
                "socket": at,
                "coherent": d.coherent(),
                "kind": d.pool_kind().name(),
                "status": s,
            }));
        } else {
            if i > 0 {
                println!();
            }
            print_status(&at, &s, d.pool_kind());
        }
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&all).map_err(|e| e.to_string())?
        );
    }
    Ok(())
}

/// `cosh down --all`: stops every pool running in `dir`.
pub(crate) fn down_all(dir: &Path) -> Outcome {
    let pools = running(dir);
    if pools.is_empty() {
        return Err(format!("no block manager answers in {}", dir.display()));
    }
    for (at, d) in pools {
        stop(d, &at)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_topology_parses_and_bad_ones_say_what_is_wrong() {
        let t = load("default").expect("the default parses");
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
            let parsed = toml::from_str::<Topology>(text)
                .map_err(|e| e.to_string())
                .and_then(|t| check(&t).map(|()| t));
            let err = parsed.expect_err(text);
            assert!(err.contains(words), "{text:?}: {err}");
        }
    }
}
