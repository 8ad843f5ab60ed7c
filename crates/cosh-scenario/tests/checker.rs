//! The checker has teeth: implementations with a deliberate bug fail the corpus, and
//! malformed scenarios are refused with a message that says what is wrong.

use std::path::Path;

use cosh_core::api::{Cosh, Incoming};
use cosh_core::model::Model;
use cosh_core::{Access, AggId, Chunk, DomainId, Error, ErrorKind, Mode, PoolId};
use cosh_core::{RelatedPolicy, Rights, Strength, Ticket, TransferFlags};
use cosh_scenario::{CheckError, Layout, check, corpus, parse};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Bug {
    /// Moves are carried out as copies: the sender keeps read/write.
    MoveKeepsRights,
    /// Shares are carried out as copies: the sender stays writable.
    ShareKeepsWrite,
    /// fail-if-related is ignored.
    IgnoresFailIfRelated,
    /// receive ignores its source filter.
    ReceiveIgnoresSource,
    /// The receiver is always told the transfer was strong.
    AlwaysReportsStrong,
    /// Strong shares are made weak, as if every receiver trusted every sender.
    StrongShareIsWeak,
}

struct Broken {
    model: Model,
    bug: Bug,
}

impl Broken {
    fn flags(
        &mut self,
        from: DomainId,
        to: DomainId,
        mode: Mode,
        flags: TransferFlags,
    ) -> Result<(Mode, TransferFlags), Error> {
        let mut flags = flags;
        let mut mode = mode;
        match self.bug {
            Bug::MoveKeepsRights if mode == Mode::Move => mode = Mode::Copy,
            Bug::ShareKeepsWrite if mode == Mode::Share => mode = Mode::Copy,
            Bug::IgnoresFailIfRelated => flags.related = RelatedPolicy::Copy,
            Bug::StrongShareIsWeak if mode == Mode::Share => {
                self.model.trust(to, from)?;
                flags.strength = Strength::Weak;
            }
            _ => {}
        }
        Ok((mode, flags))
    }

    fn incoming(&self, i: Incoming<AggId, DomainId>) -> Incoming<AggId, DomainId> {
        match self.bug {
            Bug::AlwaysReportsStrong => Incoming {
                strength: Strength::Strong,
                ..i
            },
            _ => i,
        }
    }
}

impl Cosh for Broken {
    type Domain = DomainId;
    type Agg = AggId;
    type Piece = Chunk;
    type Error = Error;

    fn kind_of(error: &Error) -> Option<ErrorKind> {
        Some(error.kind())
    }
    fn connect(&mut self, pool: PoolId) -> Result<DomainId, Error> {
        self.model.connect(pool)
    }
    fn kill(&mut self, d: DomainId) -> Result<(), Error> {
        self.model.kill(d)
    }
    fn trust(&mut self, d: DomainId, p: DomainId) -> Result<(), Error> {
        self.model.trust(d, p)
    }
    fn alloc(&mut self, d: DomainId, len: u64) -> Result<AggId, Error> {
        self.model.alloc(d, len)
    }
    fn incref(&mut self, d: DomainId, a: AggId) -> Result<(), Error> {
        self.model.incref(d, a)
    }
    fn decref(&mut self, d: DomainId, a: AggId) -> Result<(), Error> {
        self.model.decref(d, a)
    }
    fn getlen(&mut self, d: DomainId, a: AggId) -> Result<u64, Error> {
        self.model.getlen(d, a)
    }
    fn getrights(&mut self, d: DomainId, a: AggId) -> Result<Rights, Error> {
        self.model.getrights(d, a)
    }
    fn iter(
        &mut self,
        d: DomainId,
        a: AggId,
        access: Access,
        offset: u64,
    ) -> Result<Vec<Chunk>, Error> {
        self.model.iter(d, a, access, offset)
    }
    fn piece_len(p: &Chunk) -> u64 {
        p.len
    }
    fn read(&mut self, d: DomainId, a: AggId, offset: u64, len: u64) -> Result<Vec<u8>, Error> {
        self.model.read(d, a, offset, len)
    }
    fn write(&mut self, d: DomainId, a: AggId, offset: u64, data: &[u8]) -> Result<(), Error> {
        self.model.write(d, a, offset, data)
    }
    fn concat(&mut self, d: DomainId, x: AggId, y: AggId) -> Result<AggId, Error> {
        self.model.concat(d, x, y)
    }
    fn select(&mut self, d: DomainId, a: AggId, offset: u64, len: u64) -> Result<AggId, Error> {
        self.model.select(d, a, offset, len)
    }
    fn find_related(&mut self, d: DomainId, a: AggId, min: Rights) -> Result<Vec<AggId>, Error> {
        self.model.find_related(d, a, min)
    }
    fn downgrade(&mut self, d: DomainId, a: AggId, r: Rights) -> Result<(), Error> {
        self.model.downgrade(d, a, r)
    }
    fn transfer(
        &mut self,
        d: DomainId,
        a: AggId,
        to: DomainId,
        mode: Mode,
        flags: TransferFlags,
    ) -> Result<(), Error> {
        let (mode, flags) = self.flags(d, to, mode, flags)?;
        self.model.transfer(d, a, to, mode, flags)
    }
    fn attach_transfer(
        &mut self,
        d: DomainId,
        a: AggId,
        to: DomainId,
        mode: Mode,
        flags: TransferFlags,
    ) -> Result<Ticket, Error> {
        let (mode, flags) = self.flags(d, to, mode, flags)?;
        self.model.attach_transfer(d, a, to, mode, flags)
    }
    fn receive(
        &mut self,
        d: DomainId,
        source: Option<DomainId>,
    ) -> Result<Incoming<AggId, DomainId>, Error> {
        let source = if self.bug == Bug::ReceiveIgnoresSource {
            None
        } else {
            source
        };
        let i = self.model.receive(d, source)?;
        Ok(self.incoming(i))
    }
    fn attach_recv(
        &mut self,
        d: DomainId,
        s: DomainId,
        t: Ticket,
    ) -> Result<Incoming<AggId, DomainId>, Error> {
        let i = self.model.attach_recv(d, s, t)?;
        Ok(self.incoming(i))
    }
    fn peek(&mut self, d: DomainId, p: &Chunk) -> Result<Vec<u8>, Error> {
        self.model.peek(d, p)
    }
    fn poke(&mut self, d: DomainId, p: &Chunk, data: &[u8]) -> Result<(), Error> {
        self.model.poke(d, p, data)
    }
}

#[test]
fn every_deliberate_bug_fails_some_scenario() {
    let scenarios = corpus().expect("corpus");
    for bug in [
        Bug::MoveKeepsRights,
        Bug::ShareKeepsWrite,
        Bug::IgnoresFailIfRelated,
        Bug::ReceiveIgnoresSource,
        Bug::AlwaysReportsStrong,
        Bug::StrongShareIsWeak,
    ] {
        let caught: Vec<String> = scenarios
            .iter()
            .filter_map(|(path, s)| {
                let mut broken = Broken {
                    model: Model::default(),
                    bug,
                };
                check(s, &mut broken, Layout::AsWritten)
                    .err()
                    .map(|e| format!("{}: {e}", path.display()))
            })
            .collect();
        assert!(!caught.is_empty(), "{bug:?} passed the whole corpus");
        assert!(
            caught.iter().all(|c| c.contains("expected")
                || c.contains("unexpected")
                || c.contains("must not")),
            "{bug:?} should fail on expectations, not on malformed scenarios: {caught:?}"
        );
    }
}

fn malformed(text: &str) -> String {
    let path = Path::new("inline.toml");
    let result =
        parse(text, path).and_then(|s| check(&s, &mut Model::default(), Layout::AsWritten));
    match result {
        Err(e @ (CheckError::Parse { .. } | CheckError::Malformed { .. })) => e.to_string(),
        other => panic!("expected a parse or malformed error, got {other:?}"),
    }
}

#[test]
fn malformed_scenarios_are_refused_with_a_reason() {
    // (one step, what the refusal must mention)
    let cases = [
        (
            r#"op = "alloc", domain = "a", lenn = 3, bind = "x""#,
            "lenn",
        ),
        (
            r#"op = "alloc", domain = "a", len = 3, bind = "x", mode = "move""#,
            "does not use `mode`",
        ),
        (r#"op = "explode", domain = "a""#, "unknown operation"),
        (
            r#"op = "len", domain = "a", agg = "nope", expect = 1"#,
            r#"unknown aggregate "nope""#,
        ),
        (
            r#"op = "alloc", domain = "zz", len = 1, bind = "x""#,
            r#"unknown domain "zz""#,
        ),
        (
            r#"op = "alloc", domain = "a", len = 1, bind = "x", expect_error = "kaboom""#,
            "unknown error kind",
        ),
        (r#"op = "alloc", domain = "a", bind = "x""#, "missing `len`"),
    ];
    for (step, want) in cases {
        let text = format!(
            "title = \"t\"\ndescription = \"d\"\ndomains = {{ a = 0 }}\nstep = [{{ {step} }}]"
        );
        let msg = malformed(&text);
        assert!(
            msg.contains(want),
            "{step}: {msg:?} does not mention {want:?}"
        );
    }
    assert!(malformed("title = \"t\"").contains("description"));
}

#[test]
fn a_wrong_expectation_is_reported_with_expected_and_got() {
    let text = "title = \"t\"\ndescription = \"d\"\ndomains = { a = 0 }\nstep = [\n  { op = \"alloc\", domain = \"a\", len = 4, bind = \"x\" },\n  { op = \"write\", domain = \"a\", agg = \"x\", data = \"abcd\" },\n  { op = \"read\", domain = \"a\", agg = \"x\", expect = \"abce\", note = \"deliberately wrong\" },\n]";
    let s = parse(text, Path::new("inline.toml")).expect("parses");
    let e = check(&s, &mut Model::default(), Layout::AsWritten).expect_err("mismatch");
    let msg = e.to_string();
    assert!(
        msg.contains("step 3")
            && msg.contains("\"abce\"")
            && msg.contains("\"abcd\"")
            && msg.contains("deliberately wrong"),
        "{msg}"
    );
}
