//! Topologies: several pools, one block manager each, described in a small TOML file and
//! brought up, shown and stopped together.

use std::path::{Path, PathBuf};

use cosh::Domain;
use cosh_cli::topology_file::{DEFAULT, SpecKind, Topology, parse};

use crate::{Kind, Outcome, Serve, connect, print_status, start_detached, status_of, stop};

/// Reads a topology: `default`, or a file; every rule checked, every error naming its pool.
pub(crate) fn load(what: &str) -> Result<Topology, String> {
    let text = if what == "default" {
        DEFAULT.to_string()
    } else {
        std::fs::read_to_string(what).map_err(|e| format!("cannot read topology {what}: {e}"))?
    };
    parse(&text).map_err(|e| format!("topology {what}: {e}"))
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
