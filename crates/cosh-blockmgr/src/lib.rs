//! The Cosh block manager: it owns one pool's memory, keeps the rights ledger (the single
//! authority on who may touch what) and carries out every transfer, serving clients over a
//! SOCK_SEQPACKET socket with the protocol of `cosh-proto`.
//!
//! - [`BlockManager::bind`] takes the socket (only one block manager serves a path; a second
//!   one refuses with [`StartError::Bind`]) and [`BlockManager::run`] serves until SIGINT,
//!   SIGTERM or a shutdown request, then removes the socket.
//! - Memory lives in memfd *slots* (`store`), sealed against shrinking and growing at birth,
//!   mode 0600, prefaulted, in size classes, recycled only to the one domain that could already
//!   see them.
//! - Strong shares seal the buffer (after the sender revoked its mappings) on a worker thread
//!   (`sealer`), and copy into a fresh sealed buffer when the kernel refuses; strong moves and
//!   copies copy into a prefaulted buffer of the receiver's; weak transfers between domains that
//!   trust each other pass descriptors only.
//! - A client that disconnects (or is killed) loses everything it held; transfers addressed to
//!   it fail at the sender with `unknown_domain`.

#![forbid(unsafe_code)]

mod copier;
mod remote;
mod sealer;
mod server;
mod small;
mod store;

use std::path::{Path, PathBuf};

use cosh_core::PoolId;
use cosh_core::ledger::Policy;

pub use cosh_proto::ops::MAX_INLINE;
pub use server::BlockManager;
pub use small::SHARE_COPY_LIMIT;

/// The name of the host pool's socket in the runtime directory.
pub const SOCKET_NAME: &str = "host.sock";

/// The host pool's id.
pub const HOST_POOL: PoolId = PoolId(0);

/// How a block manager is set up.
#[derive(Clone, Debug)]
pub struct Config {
    /// The socket to serve.
    pub socket: PathBuf,
    /// The pool served.
    pub pool: PoolId,
    /// Its kind of memory: coherent (`Host`), or emulated without coherence (`Nc`: the block
    /// manager is the same; clients keep caches and flush and refresh them around transfers).
    pub kind: cosh_pool::PoolKind,
    /// For an `Nc` pool: clients' caches evict a random line (written back, reloaded) with
    /// one chance in this many per request, as hardware does (0: never).
    pub nc_eviction: u32,
    /// Mechanism choices (strong moves must copy: a host pool cannot revoke mappings).
    pub policy: Policy,
    /// The most bytes of recycled buffers kept per domain.
    pub free_budget: u64,
    /// The most bytes of memory the pool holds (buffers in use and recycled ones); past it,
    /// allocations and copies fail with `unavailable`.
    pub pool_limit: u64,
    /// The largest buffer the block manager makes: larger allocations, and transfers that
    /// would copy more, fail with `too_large`.
    pub max_buffer: u64,
    /// The most aggregates one domain may hold (received or not).
    pub max_aggregates: usize,
    /// The most transfers that may wait for one receiver; a sender that finds the queue full
    /// gets `unavailable` (the receiver is not keeping up).
    pub max_pending: usize,
    /// The most names one domain may register.
    pub max_names: usize,
    /// The most bytes one domain may hold in buffers it made (allocations, and copies made
    /// for its transfers) that are still alive, wherever they are now; past it, allocations
    /// and copying transfers fail with `over_quota` (0: no limit).
    pub max_domain_bytes: u64,
    /// The most such buffers one domain may hold (0: no limit).
    pub max_domain_buffers: u64,
    /// The same for all the domains of one uid together, but the block manager's own uid
    /// (its services); 0: no limit.
    pub max_uid_bytes: u64,
    /// The most such buffers of one uid (0: no limit).
    pub max_uid_buffers: u64,
    /// The most transfers one domain may have waiting for their receivers, all receivers
    /// together: a sender that floods a receiver that never receives gets `over_quota`.
    pub max_sender_pending: usize,
    /// The most connections (domains) of one uid at a time; more are turned away with
    /// `over_quota`.
    pub max_uid_connections: usize,
    /// After handling requests, how long to keep looking at the clients' rings before
    /// sleeping (zero: sleep at once). Spinning saves clients the doorbell wake-up of their
    /// next request, at the price of a busy core.
    pub spin: std::time::Duration,
    /// Where other pools' block managers listen, for transfers to their domains (a link to
    /// each is opened on first use).
    pub links: std::collections::BTreeMap<PoolId, LinkAddr>,
    /// Accept links from block managers on other hosts here (TCP).
    pub listen: Option<std::net::SocketAddr>,
    /// TLS for links over TCP: this block manager's certificate (to accept) and the roots it
    /// trusts (to open). Without it, links over TCP are plain, and only `LinkAddr::Tcp`
    /// with `tls: false` and an explicit choice in the command line get there.
    pub tls: Option<Tls>,
    /// The token a block manager presents when it opens a link over TCP, and the one an
    /// incoming link must present.
    pub link_token: Option<String>,
    /// Paces the copies of transfers arriving from other pools like a DMA engine (set-up
    /// latency and bandwidth), to reproduce co-processor experiments; off by default, and
    /// reported by status whenever on.
    pub dma: Option<cosh_pool::engine::DmaModel>,
    /// Allocations of at most this many bytes are packed into slabs (0: never).
    pub slab_object_max: u64,
    /// The size of a slab buffer.
    pub slab_len: u64,
    /// The largest transfer that travels inline on a direct ring (its bytes copied there by
    /// the libraries), whatever the strength: `None` (the default) chooses the sizes from
    /// what the block manager measures when it starts; `Some(0)` never inlines. Only a
    /// coherent (`Host`) pool inlines.
    pub inline_max: Option<u64>,
    /// A strong share of a buffer never shared, referencing at most this many bytes of it,
    /// copies them into memory of the receiver's instead of sealing the buffer (which costs
    /// the sender's mapping and the receiver a new one): `None` (the default) chooses the
    /// size from what the block manager measures when it starts (see `small.rs`), `Some(0)`
    /// always seals. Replaces [`Policy::share_copy_max`] of `policy`. Only a coherent
    /// (`Host`) pool copies so.
    pub share_copy_max: Option<u64>,
}

impl Config {
    /// The embedded defaults: the host pool at `$COSH_RUNTIME_DIR/host.sock` (see
    /// [`cosh_sys::runtime::runtime_dir`]), the Linux host policy, at most half the
    /// machine's memory in the pool, 256 MiB of recycled buffers per domain, buffers of at most 1 GiB, allocations up to 2 KiB packed into 64 KiB
    /// slabs.
    pub fn host() -> Config {
        Config::host_at(&cosh_sys::runtime::runtime_dir())
    }

    /// The defaults with the socket in `dir`.
    pub fn host_at(dir: &Path) -> Config {
        Config {
            socket: dir.join(SOCKET_NAME),
            pool: HOST_POOL,
            kind: cosh_pool::PoolKind::Host,
            nc_eviction: 0,
            policy: Policy::linux_host(),
            free_budget: 256 * 1024 * 1024,
            pool_limit: default_pool_limit(),
            max_buffer: 1 << 30,
            max_aggregates: 1 << 20,
            max_pending: 1 << 16,
            max_names: 64,
            max_domain_bytes: default_pool_limit() / 4 * 3,
            max_domain_buffers: 8192,
            max_uid_bytes: default_pool_limit() / 4 * 3,
            max_uid_buffers: 8192,
            max_sender_pending: 4096,
            max_uid_connections: 1024,
            spin: std::time::Duration::ZERO,
            links: std::collections::BTreeMap::new(),
            listen: None,
            tls: None,
            link_token: None,
            dma: None,
            slab_object_max: 2048,
            slab_len: 64 * 1024,
            inline_max: None,
            share_copy_max: None,
        }
    }
}

/// Where another pool's block manager takes links.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkAddr {
    /// Its socket on this machine: slots pass by descriptor and are copied by the
    /// destination's copy engine.
    Unix(PathBuf),
    /// Its `--listen` address on another host (`host:port`): bytes travel on the stream, with
    /// TLS unless `tls` is false.
    Tcp {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
        /// Whether to use TLS (the host name is checked against its certificate).
        tls: bool,
    },
}

impl LinkAddr {
    /// Parses `tls://HOST:PORT`, `tcp://HOST:PORT` (plain, unencrypted) or a socket path.
    pub fn parse(text: &str) -> Result<LinkAddr, String> {
        let remote = |rest: &str, tls: bool| {
            let (host, port) = rest
                .rsplit_once(':')
                .ok_or_else(|| format!("{text:?}: expected HOST:PORT after the scheme"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.is_empty() {
                return Err(format!("{text:?}: no host"));
            }
            let port = port
                .parse::<u16>()
                .map_err(|e| format!("{text:?}: port {port:?}: {e}"))?;
            Ok(LinkAddr::Tcp {
                host: host.to_string(),
                port,
                tls,
            })
        };
        if let Some(rest) = text.strip_prefix("tls://") {
            remote(rest, true)
        } else if let Some(rest) = text.strip_prefix("tcp://") {
            remote(rest, false)
        } else if text.contains("://") {
            Err(format!(
                "{text:?}: use tls://HOST:PORT, tcp://HOST:PORT or a socket path"
            ))
        } else if text.is_empty() {
            Err("the socket path is empty".into())
        } else {
            Ok(LinkAddr::Unix(PathBuf::from(text)))
        }
    }
}

impl std::fmt::Display for LinkAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkAddr::Unix(p) => write!(f, "{}", p.display()),
            LinkAddr::Tcp { host, port, tls } => {
                write!(f, "{}://{host}:{port}", if *tls { "tls" } else { "tcp" })
            }
        }
    }
}

/// How a block manager takes part in links over TCP (the command-line options `coshd` and
/// `cosh up` share).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct RemoteOptions {
    /// Accept links from block managers on other hosts at this address (HOST:PORT): with
    /// TLS (--tls-cert, --tls-key), or plain with --insecure-plain-tcp; the opener must
    /// present the token of --link-token-file.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
    /// A file holding the secret token that links over TCP present (both ends use the same
    /// file's content; surrounding white space is ignored; 16 to 256 characters).
    #[arg(long, value_name = "PATH")]
    pub link_token_file: Option<PathBuf>,
    /// This block manager's certificate chain (PEM), for --listen.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The certificates (PEM) that vouch for the block managers tls:// links reach.
    #[arg(long, value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// Allow links over plain TCP (tcp:// links, or --listen without a certificate): the
    /// bytes and the token cross the network unencrypted. For a trusted network only.
    #[arg(long)]
    pub insecure_plain_tcp: bool,
}

impl RemoteOptions {
    /// Checks these options against the links to open (`links`) and fills in their part of
    /// `config`: the listening address, the token and TLS.
    pub fn apply(&self, links: &[(u32, LinkAddr)], config: &mut Config) -> Result<(), String> {
        let tcp_links: Vec<&LinkAddr> = links
            .iter()
            .map(|(_, a)| a)
            .filter(|a| matches!(a, LinkAddr::Tcp { .. }))
            .collect();
        let plain = tcp_links
            .iter()
            .any(|a| matches!(a, LinkAddr::Tcp { tls: false, .. }))
            || (self.listen.is_some() && self.tls_cert.is_none());
        if plain && !self.insecure_plain_tcp {
            return Err(
                "a tcp:// link, or --listen without --tls-cert, sends data unencrypted: add \
                 --insecure-plain-tcp to mean it, or use tls:// with --tls-ca and \
                 --tls-cert/--tls-key"
                    .into(),
            );
        }
        if tcp_links
            .iter()
            .any(|a| matches!(a, LinkAddr::Tcp { tls: true, .. }))
            && self.tls_ca.is_none()
        {
            return Err("tls:// links need --tls-ca (the certificates to trust)".into());
        }
        if (self.listen.is_some() || !tcp_links.is_empty()) && self.link_token_file.is_none() {
            return Err("links over TCP need --link-token-file (a shared secret)".into());
        }
        if let Some(path) = &self.link_token_file {
            let token = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read the link token {}: {e}", path.display()))?
                .trim()
                .to_string();
            if token.len() < 16 || token.len() > cosh_proto::link::MAX_TOKEN {
                return Err(format!(
                    "the link token in {} must be 16 to {} characters",
                    path.display(),
                    cosh_proto::link::MAX_TOKEN
                ));
            }
            config.link_token = Some(token);
        }
        if self.tls_cert.is_some() || self.tls_ca.is_some() {
            config.tls = Some(Tls::from_pem_files(
                self.tls_cert.as_deref(),
                self.tls_key.as_deref(),
                self.tls_ca.as_deref(),
            )?);
        }
        config.listen = self.listen;
        Ok(())
    }

    /// The same options as command-line arguments (to start a block manager with them).
    pub fn to_args(&self) -> Vec<std::ffi::OsString> {
        let mut out: Vec<std::ffi::OsString> = Vec::new();
        if let Some(a) = self.listen {
            out.push(format!("--listen={a}").into());
        }
        for (flag, path) in [
            ("--link-token-file", &self.link_token_file),
            ("--tls-cert", &self.tls_cert),
            ("--tls-key", &self.tls_key),
            ("--tls-ca", &self.tls_ca),
        ] {
            if let Some(p) = path {
                out.push(flag.into());
                out.push(p.clone().into_os_string());
            }
        }
        if self.insecure_plain_tcp {
            out.push("--insecure-plain-tcp".into());
        }
        out
    }
}

/// TLS for links over TCP.
#[derive(Clone, Debug)]
pub struct Tls {
    /// To accept links (`--listen`): this block manager's certificate chain and key.
    pub server: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// To open links: the roots that certify other block managers.
    pub client: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl Tls {
    /// Reads PEM files: `cert` and `key` (this block manager's, to accept links) and `ca`
    /// (the roots to trust when opening links). Any may be absent.
    pub fn from_pem_files(
        cert: Option<&Path>,
        key: Option<&Path>,
        ca: Option<&Path>,
    ) -> Result<Tls, String> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        // ring rather than aws-lc-rs: it builds without cmake; its deprecation is about
        // post-quantum key exchange, which links between one's own hosts can do without.
        #[allow(deprecated)]
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let server = match (cert, key) {
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| format!("certificate {}: {e}", cert.display()))?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| format!("key {}: {e}", key.display()))?;
                let config = rustls::ServerConfig::builder_with_provider(provider.clone())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| e.to_string())?
                    .with_no_client_auth()
                    .with_single_cert(chain, key)
                    .map_err(|e| format!("certificate and key: {e}"))?;
                Some(std::sync::Arc::new(config))
            }
            (None, None) => None,
            _ => return Err("a certificate needs its key, and a key its certificate".into()),
        };
        let client = match ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_file_iter(ca)
                    .map_err(|e| format!("CA {}: {e}", ca.display()))?
                {
                    let c = c.map_err(|e| format!("CA {}: {e}", ca.display()))?;
                    roots
                        .add(c)
                        .map_err(|e| format!("CA {}: {e}", ca.display()))?;
                }
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| e.to_string())?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                Some(std::sync::Arc::new(config))
            }
            None => None,
        };
        Ok(Tls { server, client })
    }
}

/// Half of the machine's memory (`MemTotal` in `/proc/meminfo`), or 4 GiB if unknown.
pub fn default_pool_limit() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(4 << 30, |kib| kib * 1024 / 2)
}

/// The block manager's open-descriptor limit (`RLIMIT_NOFILE`, soft), after raising the soft
/// limit to the hard one.
pub fn descriptor_limit() -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    if let Some(hard) = limit.maximum
        && limit.current != Some(hard)
    {
        let _ = rustix::process::setrlimit(
            rustix::process::Resource::Nofile,
            rustix::process::Rlimit {
                current: Some(hard),
                maximum: Some(hard),
            },
        );
    }
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX))
}

/// How a block manager shares its descriptors out: at most `connections` clients, at most
/// `slots` buffers (one memfd each), with room left for the rest (links, rings, eventfds,
/// the copy and seal threads' own).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DescriptorBudget {
    /// The descriptor limit it shares out.
    pub limit: usize,
    /// Clients connected at once.
    pub connections: usize,
    /// Buffers held at once.
    pub slots: usize,
}

impl DescriptorBudget {
    /// The budget for a limit of `limit` descriptors: a client costs up to four (its socket,
    /// its ring memory, two doorbells) and a sixteenth of the limit goes to clients; 64 are
    /// kept for everything else.
    pub fn for_limit(limit: usize) -> DescriptorBudget {
        let connections = (limit / 16).max(1);
        DescriptorBudget {
            limit,
            connections,
            slots: limit.saturating_sub(64 + 4 * connections).max(1),
        }
    }
}

/// Why a block manager could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is unusable.
    #[error("bad configuration: {0}")]
    Config(String),
    /// The runtime directory is unusable.
    #[error("runtime directory: {0}")]
    Runtime(cosh_sys::Error),
    /// The socket could not be bound (another block manager serves it, or no permission).
    #[error("{0}")]
    Bind(cosh_sys::Error),
    /// An I/O error in the main loop.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}
