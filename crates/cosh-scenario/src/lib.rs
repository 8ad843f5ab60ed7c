//! The Cosh scenario corpus and its checker.
//!
//! A scenario is data: a TOML file naming some domains (each in a pool) and a list of steps,
//! each one call of the aggregate API with its expected outcome. [`check`] runs a scenario
//! against any implementation of [`Cosh`]; the reference model passes the whole corpus, and
//! every later implementation must too. Expectations are written so that every correct
//! implementation meets them, whatever it copies or maps: [`Layout`] reruns a scenario with
//! the domains spread over other pools, which a correct program cannot tell apart
//! (invariant 5).
//!
//! The format, step by step, is documented in `corpus/README.md`.
//!
//! ```
//! use std::path::Path;
//! use cosh_core::model::Model;
//! use cosh_scenario::{Layout, check, parse};
//!
//! let text = r#"
//! title = "Share leaves the sender read-only"
//! description = "Table 1, share."
//! domains = { a = 0, b = 1 }
//! step = [
//!   { op = "alloc", domain = "a", len = 5, bind = "x" },
//!   { op = "write", domain = "a", agg = "x", data = "hello" },
//!   { op = "transfer", domain = "a", agg = "x", to = "b", mode = "share" },
//!   { op = "write", domain = "a", agg = "x", data = "j", expect_error = "insufficient_rights" },
//!   { op = "receive", domain = "b", bind = "y", expect_mode = "share" },
//!   { op = "read", domain = "b", agg = "y", expect = "hello" },
//! ]
//! "#;
//! let scenario = parse(text, Path::new("example.toml")).expect("valid scenario");
//! let report = check(&scenario, &mut Model::default(), Layout::AsWritten).expect("passes");
//! assert_eq!((report.steps, report.expected_errors), (6, 1));
//! ```

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use cosh_core::TransferFlags;
use cosh_core::api::{Cosh, Incoming};
use cosh_core::{Access, ErrorKind, Mode, PoolId, RelatedPolicy, Rights, Strength, Ticket};
use serde::Deserialize;

/// A scenario, as read from its file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// A one-line title.
    pub title: String,
    /// What the scenario shows and why the expectations hold.
    pub description: String,
    /// Domain names and the pool each one is in.
    pub domains: BTreeMap<String, u32>,
    /// The steps, in order.
    #[serde(rename = "step", default)]
    pub steps: Vec<Step>,
}

/// Bytes written or expected: text, or a table `{ fill = BYTE, len = N }`,
/// `{ pattern = SEED, len = N }` (a deterministic pseudo-random sequence) or `{ hex = "..." }`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum BytesSpec {
    /// UTF-8 text.
    Text(String),
    /// One byte repeated.
    Fill {
        /// The byte.
        fill: u8,
        /// How many.
        len: u64,
    },
    /// A pseudo-random sequence from a seed.
    Pattern {
        /// The seed.
        pattern: u64,
        /// How many bytes.
        len: u64,
    },
    /// Hexadecimal digits.
    Hex {
        /// Two digits a byte.
        hex: String,
    },
}

impl BytesSpec {
    /// The bytes this spec stands for.
    pub fn bytes(&self) -> Result<Vec<u8>, String> {
        match self {
            BytesSpec::Text(t) => Ok(t.as_bytes().to_vec()),
            BytesSpec::Fill { fill, len } => Ok(vec![*fill; to_usize(*len)?]),
            BytesSpec::Pattern { pattern, len } => {
                let mut state = pattern.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                Ok((0..to_usize(*len)?)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        (state >> 24) as u8
                    })
                    .collect())
            }
            BytesSpec::Hex { hex } => {
                if hex.len() % 2 != 0 {
                    return Err(format!("hex string {hex:?} has an odd number of digits"));
                }
                (0..hex.len())
                    .step_by(2)
                    .map(|i| {
                        u8::from_str_radix(&hex[i..i + 2], 16)
                            .map_err(|_| format!("{hex:?} is not hexadecimal"))
                    })
                    .collect()
            }
        }
    }
}

fn to_usize(n: u64) -> Result<usize, String> {
    usize::try_from(n)
        .ok()
        .filter(|n| *n <= 1 << 30)
        .ok_or_else(|| format!("{n} bytes is too long for a scenario"))
}

/// One step: an operation and its expected outcome. Which fields an operation uses is listed
/// in `corpus/README.md`; a field an operation does not use is an error.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// The operation.
    pub op: String,
    /// A comment shown when the step fails.
    pub note: Option<String>,
    /// The domain making the call.
    pub domain: Option<String>,
    /// The aggregate operated on.
    pub agg: Option<String>,
    /// The first input of concat.
    pub first: Option<String>,
    /// The second input of concat.
    pub second: Option<String>,
    /// A length in bytes.
    pub len: Option<u64>,
    /// An offset in bytes.
    pub offset: Option<u64>,
    /// The name to bind the result to.
    pub bind: Option<String>,
    /// Bytes to write.
    pub data: Option<BytesSpec>,
    /// The expected result (bytes, a number, a rights name or a list of aggregate names,
    /// depending on the operation).
    pub expect: Option<toml::Value>,
    /// Bytes that must not be read (peek: the read may fault instead).
    pub expect_not: Option<BytesSpec>,
    /// The expected mode of a received transfer.
    pub expect_mode: Option<String>,
    /// The expected strength of a received transfer.
    pub expect_strength: Option<String>,
    /// The error kind the step must fail with.
    pub expect_error: Option<String>,
    /// An error kind the step may fail with (then its other expectations are skipped).
    pub allow_error: Option<String>,
    /// The destination domain of a transfer.
    pub to: Option<String>,
    /// The source domain of a receive.
    pub from: Option<String>,
    /// The trusted peer.
    pub peer: Option<String>,
    /// Transfer mode.
    pub mode: Option<String>,
    /// Transfer strength (default strong).
    pub strength: Option<String>,
    /// Related-aggregate policy: "copy" (default) or "fail".
    pub related: Option<String>,
    /// Rights, for downgrade and find_related.
    pub rights: Option<String>,
    /// Access for iter: "read" (default) or "write".
    pub access: Option<String>,
    /// A ticket name: bound by a ticketed transfer, used by attach_recv.
    pub ticket: Option<String>,
    /// A literal ticket number for attach_recv (to test forged tickets).
    pub ticket_value: Option<u64>,
    /// Bound pieces (from iter) for peek and poke.
    pub pieces: Option<String>,
}

/// How a scenario's domains are placed in pools when it is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// As the scenario says.
    AsWritten,
    /// Every domain in one pool.
    OnePool,
    /// Every domain in a pool of its own (no shared memory at all).
    PoolPerDomain,
}

impl Layout {
    /// Every layout.
    pub const ALL: [Layout; 3] = [Layout::AsWritten, Layout::OnePool, Layout::PoolPerDomain];
}

/// Why a scenario could not be loaded or did not pass.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The file could not be read.
    #[error("cannot read scenario {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a valid scenario.
    #[error("scenario {path} is not valid TOML for a scenario: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A step is malformed (a missing or unknown name, a bad field).
    #[error("scenario {title:?}, step {step} ({op}): malformed: {message}")]
    Malformed {
        /// The scenario's title.
        title: String,
        /// 1-based step number.
        step: usize,
        /// The operation.
        op: String,
        /// What is wrong.
        message: String,
    },
    /// The implementation did not behave as the step expects.
    #[error("scenario {title:?}, step {step} ({op}{note}): {message}")]
    Mismatch {
        /// The scenario's title.
        title: String,
        /// 1-based step number.
        step: usize,
        /// The operation.
        op: String,
        /// The step's note, if any, as " — note".
        note: String,
        /// Expected versus got.
        message: String,
    },
}

/// Parses a scenario from TOML text; `path` only names it in errors.
pub fn parse(text: &str, path: &Path) -> Result<Scenario, CheckError> {
    toml::from_str(text).map_err(|e| CheckError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Reads and parses a scenario file.
pub fn load(path: &Path) -> Result<Scenario, CheckError> {
    let text = std::fs::read_to_string(path).map_err(|source| CheckError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// The folder holding the corpus shipped with this crate.
pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

/// Every scenario of the corpus, with its path, in order of file name.
pub fn corpus() -> Result<Vec<(PathBuf, Scenario)>, CheckError> {
    let dir = corpus_dir();
    let entries = std::fs::read_dir(&dir).map_err(|source| CheckError::Io {
        path: dir.clone(),
        source,
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| load(&p).map(|s| (p, s)))
        .collect()
}

/// What a passing check did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Steps run.
    pub steps: usize,
    /// Steps that failed as expected.
    pub expected_errors: usize,
}

/// The outcome of one operation, before it is compared with the step's expectations.
enum Outcome<C: Cosh> {
    Unit,
    Len(u64),
    Rights(Rights),
    Bytes(Vec<u8>),
    Aggs(Vec<C::Agg>),
    Pieces(Vec<C::Piece>),
    Incoming(Incoming<C::Agg, C::Domain>),
    Agg(C::Agg),
    Ticket(Ticket),
}

struct Checker<'s, C: Cosh> {
    scenario: &'s Scenario,
    step: usize,
    domains: BTreeMap<String, C::Domain>,
    aggs: BTreeMap<String, C::Agg>,
    pieces: BTreeMap<String, Vec<C::Piece>>,
    tickets: BTreeMap<String, Ticket>,
}

/// Runs `scenario` against `cosh` with its domains placed by `layout`.
pub fn check<C: Cosh>(
    scenario: &Scenario,
    cosh: &mut C,
    layout: Layout,
) -> Result<Report, CheckError> {
    let mut checker = Checker::<C> {
        scenario,
        step: 0,
        domains: BTreeMap::new(),
        aggs: BTreeMap::new(),
        pieces: BTreeMap::new(),
        tickets: BTreeMap::new(),
    };
    for (i, (name, pool)) in scenario.domains.iter().enumerate() {
        let pool = match layout {
            Layout::AsWritten => *pool,
            Layout::OnePool => 0,
            Layout::PoolPerDomain => u32::try_from(i).unwrap_or(u32::MAX),
        };
        let d = cosh
            .connect(PoolId(pool))
            .map_err(|e| checker.mismatch(&Step::default(), format!("connect {name}: {e}")))?;
        checker.domains.insert(name.clone(), d);
    }
    let mut report = Report::default();
    for (i, step) in scenario.steps.iter().enumerate() {
        checker.step = i + 1;
        if checker.run_step(cosh, step)? {
            report.expected_errors += 1;
        }
        report.steps += 1;
    }
    Ok(report)
}

impl<C: Cosh> Checker<'_, C> {
    fn malformed(&self, step: &Step, message: impl Into<String>) -> CheckError {
        CheckError::Malformed {
            title: self.scenario.title.clone(),
            step: self.step,
            op: step.op.clone(),
            message: message.into(),
        }
    }

    fn mismatch(&self, step: &Step, message: impl Into<String>) -> CheckError {
        CheckError::Mismatch {
            title: self.scenario.title.clone(),
            step: self.step,
            op: step.op.clone(),
            note: step
                .note
                .as_ref()
                .map(|n| format!(" — {n}"))
                .unwrap_or_default(),
            message: message.into(),
        }
    }

    fn field<'a, T>(
        &self,
        step: &Step,
        value: &'a Option<T>,
        name: &str,
    ) -> Result<&'a T, CheckError> {
        value
            .as_ref()
            .ok_or_else(|| self.malformed(step, format!("missing `{name}`")))
    }

    fn domain(
        &self,
        step: &Step,
        name: &Option<String>,
        field: &str,
    ) -> Result<C::Domain, CheckError> {
        let name = self.field(step, name, field)?;
        self.domains
            .get(name)
            .copied()
            .ok_or_else(|| self.malformed(step, format!("unknown domain {name:?} in `{field}`")))
    }

    fn agg(&self, step: &Step, name: &Option<String>, field: &str) -> Result<C::Agg, CheckError> {
        let name = self.field(step, name, field)?;
        self.aggs
            .get(name)
            .copied()
            .ok_or_else(|| self.malformed(step, format!("unknown aggregate {name:?} in `{field}`")))
    }

    fn parse_named<T>(
        &self,
        step: &Step,
        value: &Option<String>,
        field: &str,
        parse: fn(&str) -> Option<T>,
        default: Option<T>,
    ) -> Result<T, CheckError> {
        match (value, default) {
            (None, Some(d)) => Ok(d),
            (None, None) => Err(self.malformed(step, format!("missing `{field}`"))),
            (Some(v), _) => {
                parse(v).ok_or_else(|| self.malformed(step, format!("bad `{field}` {v:?}")))
            }
        }
    }

    fn bytes(&self, step: &Step, spec: &BytesSpec) -> Result<Vec<u8>, CheckError> {
        spec.bytes().map_err(|m| self.malformed(step, m))
    }

    /// The fields each operation may use besides `op`, `note`, `expect_error` and
    /// `allow_error`.
    fn allowed_fields(op: &str) -> Option<&'static [&'static str]> {
        Some(match op {
            "alloc" => &["domain", "len", "bind"],
            "write" => &["domain", "agg", "offset", "data"],
            "read" => &["domain", "agg", "offset", "len", "expect", "expect_not"],
            "len" | "rights" => &["domain", "agg", "expect"],
            "incref" | "decref" => &["domain", "agg"],
            "select" => &["domain", "agg", "offset", "len", "bind"],
            "concat" => &["domain", "first", "second", "bind"],
            "downgrade" => &["domain", "agg", "rights"],
            "find_related" => &["domain", "agg", "rights", "expect"],
            "iter" => &["domain", "agg", "access", "offset", "bind", "expect"],
            "transfer" => &[
                "domain", "agg", "to", "mode", "strength", "related", "ticket",
            ],
            "receive" => &["domain", "from", "bind", "expect_mode", "expect_strength"],
            "attach_recv" => &[
                "domain",
                "from",
                "ticket",
                "ticket_value",
                "bind",
                "expect_mode",
                "expect_strength",
            ],
            "trust" => &["domain", "peer"],
            "kill" => &["domain"],
            "peek" => &["domain", "pieces", "expect", "expect_not"],
            "poke" => &["domain", "pieces", "data"],
            _ => return None,
        })
    }

    fn check_fields(&self, step: &Step) -> Result<(), CheckError> {
        let allowed = Self::allowed_fields(&step.op)
            .ok_or_else(|| self.malformed(step, format!("unknown operation {:?}", step.op)))?;
        let present = [
            ("domain", step.domain.is_some()),
            ("agg", step.agg.is_some()),
            ("first", step.first.is_some()),
            ("second", step.second.is_some()),
            ("len", step.len.is_some()),
            ("offset", step.offset.is_some()),
            ("bind", step.bind.is_some()),
            ("data", step.data.is_some()),
            ("expect", step.expect.is_some()),
            ("expect_not", step.expect_not.is_some()),
            ("expect_mode", step.expect_mode.is_some()),
            ("expect_strength", step.expect_strength.is_some()),
            ("to", step.to.is_some()),
            ("from", step.from.is_some()),
            ("peer", step.peer.is_some()),
            ("mode", step.mode.is_some()),
            ("strength", step.strength.is_some()),
            ("related", step.related.is_some()),
            ("rights", step.rights.is_some()),
            ("access", step.access.is_some()),
            ("ticket", step.ticket.is_some()),
            ("ticket_value", step.ticket_value.is_some()),
            ("pieces", step.pieces.is_some()),
        ];
        for (name, is_set) in present {
            if is_set && !allowed.contains(&name) {
                return Err(self.malformed(step, format!("`{}` does not use `{name}`", step.op)));
            }
        }
        if step.expect_error.is_some() && step.allow_error.is_some() {
            return Err(self.malformed(step, "give `expect_error` or `allow_error`, not both"));
        }
        Ok(())
    }

    /// Runs one step; returns whether it failed as expected.
    fn run_step(&mut self, cosh: &mut C, step: &Step) -> Result<bool, CheckError> {
        self.check_fields(step)?;
        let expected_error = match &step.expect_error {
            Some(k) => Some(
                ErrorKind::from_name(k)
                    .ok_or_else(|| self.malformed(step, format!("unknown error kind {k:?}")))?,
            ),
            None => None,
        };
        let allowed_error = match &step.allow_error {
            Some(k) => Some(
                ErrorKind::from_name(k)
                    .ok_or_else(|| self.malformed(step, format!("unknown error kind {k:?}")))?,
            ),
            None => None,
        };
        let outcome = self.perform(cosh, step)?;
        match (outcome, expected_error) {
            (Ok(_), Some(kind)) => Err(self.mismatch(
                step,
                format!("expected the error `{kind}`, but the operation succeeded"),
            )),
            (Err(e), Some(kind)) => {
                if C::kind_of(&e) == Some(kind) {
                    Ok(true)
                } else {
                    Err(self.mismatch(step, format!("expected the error `{kind}`, got: {e}")))
                }
            }
            (Err(e), None) => {
                if allowed_error.is_some() && C::kind_of(&e) == allowed_error {
                    Ok(true)
                } else {
                    Err(self.mismatch(step, format!("unexpected error: {e}")))
                }
            }
            (Ok(outcome), None) => {
                self.verify(step, outcome)?;
                Ok(false)
            }
        }
    }

    fn perform(
        &mut self,
        cosh: &mut C,
        step: &Step,
    ) -> Result<Result<Outcome<C>, C::Error>, CheckError> {
        let d = self.domain(step, &step.domain, "domain")?;
        let offset = step.offset.unwrap_or(0);
        Ok(match step.op.as_str() {
            "alloc" => {
                let len = *self.field(step, &step.len, "len")?;
                cosh.alloc(d, len).map(Outcome::Agg)
            }
            "write" => {
                let a = self.agg(step, &step.agg, "agg")?;
                let data = self.bytes(step, self.field(step, &step.data, "data")?)?;
                cosh.write(d, a, offset, &data).map(|_| Outcome::Unit)
            }
            "read" => {
                let a = self.agg(step, &step.agg, "agg")?;
                let len = match step.len {
                    Some(len) => len,
                    None => match cosh.getlen(d, a) {
                        Ok(total) => total.saturating_sub(offset),
                        Err(e) => return Ok(Err(e)),
                    },
                };
                cosh.read(d, a, offset, len).map(Outcome::Bytes)
            }
            "len" => {
                let a = self.agg(step, &step.agg, "agg")?;
                cosh.getlen(d, a).map(Outcome::Len)
            }
            "rights" => {
                let a = self.agg(step, &step.agg, "agg")?;
                cosh.getrights(d, a).map(Outcome::Rights)
            }
            "incref" => {
                let a = self.agg(step, &step.agg, "agg")?;
                cosh.incref(d, a).map(|_| Outcome::Unit)
            }
            "decref" => {
                let a = self.agg(step, &step.agg, "agg")?;
                cosh.decref(d, a).map(|_| Outcome::Unit)
            }
            "select" => {
                let a = self.agg(step, &step.agg, "agg")?;
                let len = *self.field(step, &step.len, "len")?;
                cosh.select(d, a, offset, len).map(Outcome::Agg)
            }
            "concat" => {
                let a = self.agg(step, &step.first, "first")?;
                let b = self.agg(step, &step.second, "second")?;
                cosh.concat(d, a, b).map(Outcome::Agg)
            }
            "downgrade" => {
                let a = self.agg(step, &step.agg, "agg")?;
                let r = self.parse_named(step, &step.rights, "rights", Rights::from_name, None)?;
                cosh.downgrade(d, a, r).map(|_| Outcome::Unit)
            }
            "find_related" => {
                let a = self.agg(step, &step.agg, "agg")?;
                let r = self.parse_named(
                    step,
                    &step.rights,
                    "rights",
                    Rights::from_name,
                    Some(Rights::None),
                )?;
                cosh.find_related(d, a, r).map(Outcome::Aggs)
            }
            "iter" => {
                let a = self.agg(step, &step.agg, "agg")?;
                let access = self.parse_named(
                    step,
                    &step.access,
                    "access",
                    |s| match s {
                        "read" => Some(Access::Read),
                        "write" => Some(Access::Write),
                        _ => None,
                    },
                    Some(Access::Read),
                )?;
                cosh.iter(d, a, access, offset).map(Outcome::Pieces)
            }
            "transfer" => {
                let a = self.agg(step, &step.agg, "agg")?;
                let to = self.domain(step, &step.to, "to")?;
                let mode = self.parse_named(step, &step.mode, "mode", Mode::from_name, None)?;
                let strength = self.parse_named(
                    step,
                    &step.strength,
                    "strength",
                    Strength::from_name,
                    Some(Strength::Strong),
                )?;
                let related = self.parse_named(
                    step,
                    &step.related,
                    "related",
                    |s| match s {
                        "copy" => Some(RelatedPolicy::Copy),
                        "fail" => Some(RelatedPolicy::Fail),
                        _ => None,
                    },
                    Some(RelatedPolicy::Copy),
                )?;
                let flags = TransferFlags { strength, related };
                match &step.ticket {
                    Some(_) => cosh
                        .attach_transfer(d, a, to, mode, flags)
                        .map(Outcome::Ticket),
                    None => cosh.transfer(d, a, to, mode, flags).map(|_| Outcome::Unit),
                }
            }
            "receive" => {
                let from = match &step.from {
                    Some(_) => Some(self.domain(step, &step.from, "from")?),
                    None => None,
                };
                cosh.receive(d, from).map(Outcome::Incoming)
            }
            "attach_recv" => {
                let from = self.domain(step, &step.from, "from")?;
                let ticket = match (&step.ticket, step.ticket_value) {
                    (Some(name), None) => *self
                        .tickets
                        .get(name)
                        .ok_or_else(|| self.malformed(step, format!("unknown ticket {name:?}")))?,
                    (None, Some(v)) => Ticket(v),
                    _ => {
                        return Err(
                            self.malformed(step, "give exactly one of `ticket` and `ticket_value`")
                        );
                    }
                };
                cosh.attach_recv(d, from, ticket).map(Outcome::Incoming)
            }
            "trust" => {
                let peer = self.domain(step, &step.peer, "peer")?;
                cosh.trust(d, peer).map(|_| Outcome::Unit)
            }
            "kill" => cosh.kill(d).map(|_| Outcome::Unit),
            "peek" | "poke" => {
                let name = self.field(step, &step.pieces, "pieces")?;
                let pieces = self
                    .pieces
                    .get(name)
                    .cloned()
                    .ok_or_else(|| self.malformed(step, format!("unknown pieces {name:?}")))?;
                if step.op == "peek" {
                    let mut out = Vec::new();
                    for p in &pieces {
                        match cosh.peek(d, p) {
                            Ok(bytes) => out.extend(bytes),
                            Err(e) => return Ok(Err(e)),
                        }
                    }
                    Ok(Outcome::Bytes(out))
                } else {
                    let data = self.bytes(step, self.field(step, &step.data, "data")?)?;
                    let mut rest = data.as_slice();
                    for p in &pieces {
                        if rest.is_empty() {
                            break;
                        }
                        let n = usize::try_from(C::piece_len(p)).unwrap_or(usize::MAX);
                        if n > rest.len() {
                            return Err(self.malformed(step, "poke data must cover whole pieces"));
                        }
                        let (now, later) = rest.split_at(n);
                        if let Err(e) = cosh.poke(d, p, now) {
                            return Ok(Err(e));
                        }
                        rest = later;
                    }
                    Ok(Outcome::Unit)
                }
            }
            other => return Err(self.malformed(step, format!("unknown operation {other:?}"))),
        })
    }

    fn bind(&mut self, step: &Step, agg: C::Agg) -> Result<(), CheckError> {
        let name = self.field(step, &step.bind, "bind")?.clone();
        self.aggs.insert(name, agg);
        Ok(())
    }

    fn verify(&mut self, step: &Step, outcome: Outcome<C>) -> Result<(), CheckError> {
        match outcome {
            Outcome::Unit => Ok(()),
            Outcome::Agg(a) => self.bind(step, a),
            Outcome::Ticket(t) => {
                let name = self.field(step, &step.ticket, "ticket")?.clone();
                self.tickets.insert(name, t);
                Ok(())
            }
            Outcome::Len(n) => {
                let want = self.expect_int(step)?;
                if n == want {
                    Ok(())
                } else {
                    Err(self.mismatch(step, format!("expected length {want}, got {n}")))
                }
            }
            Outcome::Rights(r) => {
                let want = self.expect_str(step)?;
                let want = Rights::from_name(want)
                    .ok_or_else(|| self.malformed(step, format!("bad rights {want:?}")))?;
                if r == want {
                    Ok(())
                } else {
                    Err(self.mismatch(step, format!("expected {want} rights, got {r}")))
                }
            }
            Outcome::Bytes(bytes) => {
                if let Some(v) = &step.expect {
                    let spec = BytesSpec::deserialize(v.clone())
                        .map_err(|e| self.malformed(step, format!("bad `expect`: {e}")))?;
                    let want = self.bytes(step, &spec)?;
                    if bytes != want {
                        return Err(self.mismatch(
                            step,
                            format!("expected bytes {}, got {}", show(&want), show(&bytes)),
                        ));
                    }
                }
                if let Some(spec) = &step.expect_not {
                    let not = self.bytes(step, spec)?;
                    if bytes == not {
                        return Err(self.mismatch(
                            step,
                            format!("read {} which must not be readable here", show(&bytes)),
                        ));
                    }
                }
                Ok(())
            }
            Outcome::Aggs(found) => {
                let names: Vec<String> = match &step.expect {
                    Some(v) => Vec::<String>::deserialize(v.clone())
                        .map_err(|e| self.malformed(step, format!("bad `expect`: {e}")))?,
                    None => return Err(self.malformed(step, "missing `expect`")),
                };
                let mut want = Vec::new();
                for n in &names {
                    want.push(self.agg(step, &Some(n.clone()), "expect")?);
                }
                let unordered_eq =
                    found.len() == want.len() && want.iter().all(|w| found.contains(w));
                if unordered_eq {
                    Ok(())
                } else {
                    let got: Vec<String> = found
                        .iter()
                        .map(|f| {
                            self.aggs
                                .iter()
                                .find(|(_, a)| *a == f)
                                .map_or_else(|| format!("{f:?}"), |(n, _)| n.clone())
                        })
                        .collect();
                    Err(self.mismatch(step, format!("expected related {names:?}, got {got:?}")))
                }
            }
            Outcome::Pieces(pieces) => {
                if step.expect.is_some() {
                    let want = self.expect_int(step)?;
                    if pieces.len() as u64 != want {
                        return Err(self.mismatch(
                            step,
                            format!("expected {want} piece(s), got {}", pieces.len()),
                        ));
                    }
                }
                if let Some(name) = &step.bind {
                    self.pieces.insert(name.clone(), pieces);
                }
                Ok(())
            }
            Outcome::Incoming(incoming) => {
                if let Some(m) = &step.expect_mode {
                    let want = Mode::from_name(m)
                        .ok_or_else(|| self.malformed(step, format!("bad mode {m:?}")))?;
                    if incoming.mode != want {
                        return Err(self.mismatch(
                            step,
                            format!("expected a {want} transfer, got {}", incoming.mode),
                        ));
                    }
                }
                if let Some(s) = &step.expect_strength {
                    let want = Strength::from_name(s)
                        .ok_or_else(|| self.malformed(step, format!("bad strength {s:?}")))?;
                    if incoming.strength != want {
                        return Err(self.mismatch(
                            step,
                            format!("expected a {want} transfer, got {}", incoming.strength),
                        ));
                    }
                }
                if let Some(from) = &step.from
                    && self.domains.get(from) != Some(&incoming.source)
                {
                    return Err(self.mismatch(step, format!("expected a transfer from {from}")));
                }
                self.bind(step, incoming.agg)
            }
        }
    }

    fn expect_int(&self, step: &Step) -> Result<u64, CheckError> {
        match &step.expect {
            Some(toml::Value::Integer(n)) => {
                u64::try_from(*n).map_err(|_| self.malformed(step, "`expect` must not be negative"))
            }
            Some(_) => Err(self.malformed(step, "`expect` must be an integer")),
            None => Err(self.malformed(step, "missing `expect`")),
        }
    }

    fn expect_str<'a>(&self, step: &'a Step) -> Result<&'a str, CheckError> {
        match &step.expect {
            Some(toml::Value::String(s)) => Ok(s),
            Some(_) => Err(self.malformed(step, "`expect` must be a string")),
            None => Err(self.malformed(step, "missing `expect`")),
        }
    }
}

/// Shows bytes briefly: text when printable, else hex, cut after 64 bytes.
fn show(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(64)];
    let more = if bytes.len() > 64 {
        format!("… ({} bytes)", bytes.len())
    } else {
        String::new()
    };
    if cut.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        format!("{:?}{more}", String::from_utf8_lossy(cut))
    } else {
        let hex: String = cut.iter().map(|b| format!("{b:02x}")).collect();
        format!("0x{hex}{more}")
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layout::AsWritten => "pools as written",
            Layout::OnePool => "one pool",
            Layout::PoolPerDomain => "a pool per domain",
        })
    }
}
