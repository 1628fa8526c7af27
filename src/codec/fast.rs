//! The hot-path decoder of `OutboundVerdict`: a field program compiled once from the parsed
//! schema, run straight over the byte slice into the domain [`Verdict`], with no intermediate
//! `apache_avro::types::Value`.
//!
//! The program is derived from `schemas/OutboundVerdict.avsc` (via [`RecordType::schema`]): for
//! each writer field, in schema order, either "read into this slot" or "skip a value of this
//! shape". Field order, extra optional fields, `["null", T]` unions and the enum symbol table all
//! come from the schema, so a schema change needs no change here as long as the five fields the
//! core uses keep their names and types. Anything the compiler does not understand is a start-up
//! error, never a silent misread (a unit test compiles it).
//!
//! The cursor over Avro binary and the structural validator of every record type are in
//! [`super::wire`].

use apache_avro::schema::{RecordField, RecordSchema, Schema};

use super::resolve::{self, intern, Checker, Names};
use super::wire::{CompileError, Reader, Shape, R};
use super::{CodecError, RecordType};
use crate::policy::{Verdict, VerdictKind};

/// A count that does not fit the program's 16-bit indices.
fn unsupported(e: std::num::TryFromIntError) -> CompileError {
    CompileError::Unsupported(format!("too many shapes or branches: {e}"))
}

/// Where a read value goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    MessageId,
    TenantId,
    Mailbox,
    SentAt,
    Verdict,
}

/// One instruction: what to do with one value (a field, or one branch of a union field).
/// Small and `Copy`, so the interpreter loop is a single flat `match`.
#[derive(Debug, Clone, Copy)]
enum Op {
    /// A string into a string slot (`message_id`, `tenant_id`, `mailbox`).
    Str(Slot),
    /// A long (or timestamp-millis) into `sent_at`.
    Long,
    /// An int, widened, into `sent_at`.
    Int,
    /// An enum into `verdict`, through the program's symbol table (from the schema).
    Enum,
    /// Skip: `null` (also the null branch of an optional target field: leaves the slot empty).
    SkipNull,
    /// Skip an int.
    SkipInt,
    /// Skip a long.
    SkipLong,
    /// Skip a string (UTF-8 checked).
    SkipStr,
    /// Skip a fixed-size value (`boolean`, `float`, `double`, `fixed`) of this many bytes: the
    /// common shapes of extra fields newer writers add, kept in the flat loop.
    SkipFixed(u16),
    /// Skip anything else: `shapes[i]`.
    SkipShape(u16),
    /// A union: read the branch index, then run `branches[first + index]` (`len` branches).
    Union {
        /// First branch op.
        first: u16,
        /// Number of branches.
        len: u16,
    },
}

/// The compiled field program for `OutboundVerdict`: for one writer schema, resolved against
/// the reader schema (the embedded one in production).
#[derive(Debug, Clone)]
pub struct VerdictProgram {
    /// One op per writer field, in writer order, with the field name for errors.
    ops: Box<[(&'static str, Op)]>,
    /// Branch ops of union fields (never themselves unions: Avro forbids nested unions).
    branches: Box<[Op]>,
    /// Shapes of skipped values that have no dedicated op.
    shapes: Box<[Shape]>,
    /// Writer `verdict` symbol index → domain kind; `None`: a symbol the reader lacks, with no
    /// reader default (an error when met, per the spec).
    kinds: Box<[Option<VerdictKind>]>,
    /// The writer's symbols, for that error.
    symbols: Box<[Box<str>]>,
    /// Slot values before the first field: the reader's defaults of fields the writer lacks.
    initial: Slots<'static>,
}

const SLOT_NAMES: [&str; 5] = ["message_id", "tenant_id", "mailbox", "sent_at", "verdict"];
const SLOTS: [Slot; 5] = [
    Slot::MessageId,
    Slot::TenantId,
    Slot::Mailbox,
    Slot::SentAt,
    Slot::Verdict,
];

fn slot_of(name: &str) -> Option<Slot> {
    SLOT_NAMES.iter().position(|n| *n == name).map(|i| SLOTS[i])
}

/// Maps a verdict symbol to the domain. SPEC §1: "CLEAN and any other value never count", so a
/// symbol the domain does not know reads as `Clean`.
fn verdict_of(symbol: &str) -> VerdictKind {
    match symbol {
        "SPAM" => VerdictKind::Spam,
        "VIRUS" => VerdictKind::Virus,
        _ => VerdictKind::Clean,
    }
}

/// Writer verdict symbol index → domain kind (see [`VerdictProgram`]), and the writer's
/// symbols for errors.
type EnumTable = (Box<[Option<VerdictKind>]>, Box<[Box<str>]>);

/// The program under construction.
#[derive(Default)]
struct Builder {
    branches: Vec<Op>,
    shapes: Vec<Shape>,
    kinds: Option<EnumTable>,
}

impl Builder {
    /// The op for the writer's field `field` of schema `fs`: a skip when the reader `r` does not
    /// read it into a slot, else a read into its slot. A union is split per branch, so that the
    /// common `["null", primitive]` extras skip without leaving the interpreter loop.
    fn field_op<'w, 'r>(
        &mut self,
        c: &Checker<'w, 'r>,
        r: &'r RecordSchema,
        field: &'static str,
        fs: &'w Schema,
    ) -> Result<Op, CompileError> {
        let target = slot_of(field).and_then(|slot| Some((slot, r.lookup.get(field)?)));
        let Some((slot, &ri)) = target else {
            return match Shape::of(fs, c.wn)? {
                Shape::Union(shapes) => {
                    let ops = shapes
                        .into_vec()
                        .into_iter()
                        .map(|s| self.skip(s))
                        .collect::<Result<_, _>>()?;
                    self.union(ops)
                }
                shape => self.skip(shape),
            };
        };
        let rs = &r.fields[ri].schema;
        match c.wn.deref(fs)? {
            Schema::Union(u) => {
                let ops = u
                    .variants()
                    .iter()
                    .map(|s| self.read(c, slot, s, rs, field))
                    .collect::<Result<_, _>>()?;
                self.union(ops)
            }
            other => self.read(c, slot, other, rs, field),
        }
    }

    fn skip(&mut self, shape: Shape) -> Result<Op, CompileError> {
        Ok(match shape {
            Shape::Null => Op::SkipNull,
            Shape::Int => Op::SkipInt,
            Shape::Long => Op::SkipLong,
            Shape::Str => Op::SkipStr,
            Shape::Bool => Op::SkipFixed(1),
            Shape::Float => Op::SkipFixed(4),
            Shape::Double => Op::SkipFixed(8),
            Shape::Fixed(n) if n <= usize::from(u16::MAX) => Op::SkipFixed(n as u16),
            other => {
                self.shapes.push(other);
                Op::SkipShape(u16::try_from(self.shapes.len() - 1).map_err(unsupported)?)
            }
        })
    }

    /// The op that reads one non-union writer value `w` into `slot`, whose reader type is `r`
    /// (a union is narrowed to the branch the writer type selects). Compatibility was checked
    /// before (see [`resolve`]); what is left here is what the program can hold.
    fn read<'w, 'r>(
        &mut self,
        c: &Checker<'w, 'r>,
        slot: Slot,
        w: &'w Schema,
        r: &'r Schema,
        field: &str,
    ) -> Result<Op, CompileError> {
        let w = c.wn.deref(w)?;
        let mut r = c.rn.deref(r)?;
        if let Schema::Union(u) = r {
            r = c.select(w, u)?;
        }
        Ok(match (slot, w, r) {
            (_, Schema::Null, Schema::Null) => Op::SkipNull,
            (
                Slot::MessageId | Slot::TenantId | Slot::Mailbox,
                Schema::String | Schema::Bytes,
                Schema::String | Schema::Bytes,
            ) => Op::Str(slot),
            (
                Slot::SentAt,
                Schema::Long | Schema::TimestampMillis,
                Schema::Long | Schema::TimestampMillis,
            ) => Op::Long,
            (Slot::SentAt, Schema::Int, Schema::Long | Schema::TimestampMillis) => Op::Int,
            (Slot::Verdict, Schema::Enum(we), Schema::Enum(re)) => {
                if self.kinds.is_some() {
                    return Err(CompileError::Unsupported(format!(
                        "field '{field}': several enum branches (not supported)"
                    )));
                }
                let default = re.default.as_deref();
                let kinds = we
                    .symbols
                    .iter()
                    .map(|s| {
                        re.symbols
                            .iter()
                            .find(|r| *r == s)
                            .map(|s| s.as_str())
                            .or(default)
                            .map(verdict_of)
                    })
                    .collect();
                let symbols = we.symbols.iter().map(|s| s.as_str().into()).collect();
                self.kinds = Some((kinds, symbols));
                Op::Enum
            }
            (_, w, r) => {
                return Err(CompileError::Incompatible(format!(
                    "field '{field}': writer {} cannot be read as {}",
                    resolve::describe(w),
                    resolve::describe(r)
                )))
            }
        })
    }

    fn union(&mut self, branches: Vec<Op>) -> Result<Op, CompileError> {
        let first = u16::try_from(self.branches.len()).map_err(unsupported)?;
        let len = u16::try_from(branches.len()).map_err(unsupported)?;
        self.branches.extend(branches);
        Ok(Op::Union { first, len })
    }
}

/// Decoded values, borrowed from the body until validated.
#[derive(Debug, Clone, Copy)]
struct Slots<'a> {
    strs: [Option<&'a str>; 3],
    sent_at: Option<i64>,
    verdict: Option<VerdictKind>,
}

impl Slots<'static> {
    /// The slots before a body is read: the reader's defaults of the slot fields the writer `w`
    /// lacks (the checker made sure the reader has one). A reader without a slot field is an
    /// error.
    fn initial(w: &RecordSchema, r: &RecordSchema) -> Result<Self, CompileError> {
        let mut initial = Slots {
            strs: [None; 3],
            sent_at: None,
            verdict: None,
        };
        for (name, slot) in SLOT_NAMES.iter().zip(SLOTS) {
            let Some(&ri) = r.lookup.get(*name) else {
                let reason = format!("OutboundVerdict schema lacks field {name}");
                return Err(CompileError::Incompatible(reason));
            };
            if !w.lookup.contains_key(*name) {
                if let Some(d) = &r.fields[ri].default {
                    initial.set_default(slot, d, name)?;
                }
            }
        }
        Ok(initial)
    }

    /// The reader default of a slot field the writer lacks. The embedded schema has none for
    /// these five fields; a reader that adds one gets it here.
    fn set_default(
        &mut self,
        slot: Slot,
        d: &serde_json::Value,
        field: &str,
    ) -> Result<(), CompileError> {
        use serde_json::Value as J;
        match (slot, d) {
            (_, J::Null) => {}
            (Slot::MessageId | Slot::TenantId | Slot::Mailbox, J::String(s)) => {
                self.strs[slot as usize] = Some(intern(s))
            }
            (Slot::SentAt, J::Number(n)) if n.is_i64() => self.sent_at = n.as_i64(),
            (Slot::Verdict, J::String(s)) => self.verdict = Some(verdict_of(s)),
            (_, d) => {
                let reason = format!("field '{field}': unsupported reader default {d}");
                return Err(CompileError::Unsupported(reason));
            }
        }
        Ok(())
    }
}

impl VerdictProgram {
    /// Compiles the program for data written *and* read with `schema` (normally
    /// [`RecordType::OutboundVerdict`]'s).
    pub fn compile(schema: &Schema) -> Result<Self, CompileError> {
        Self::resolve(schema, schema)
    }

    /// Compiles the program that reads data written with `writer` as `reader` (Avro schema
    /// resolution): writer-only fields are skipped, reader fields the writer lacks take the
    /// reader's default, `int` is promoted to `long` and `bytes` to `string`, writer unions and
    /// reader unions are resolved per branch, and a writer enum symbol the reader lacks reads as
    /// the reader's enum default. An incompatible pair is an error saying why.
    pub fn resolve(writer: &Schema, reader: &Schema) -> Result<Self, CompileError> {
        let (Schema::Record(w), Schema::Record(r)) = (writer, reader) else {
            let reason = "OutboundVerdict schema is not a record".into();
            return Err(CompileError::Unsupported(reason));
        };
        let wn = Names::of(writer);
        let rn = Names::of(reader);
        let mut checker = Checker::new(&wn, &rn);
        checker.check(writer, reader, "")?;
        let initial = Slots::initial(w, r)?;
        let mut b = Builder::default();
        let mut ops = Vec::with_capacity(w.fields.len());
        for RecordField {
            name, schema: fs, ..
        } in &w.fields
        {
            let field: &'static str = intern(name);
            ops.push((field, b.field_op(&checker, r, field, fs)?));
        }
        let (kinds, symbols) = match b.kinds {
            Some(k) => k,
            // The writer has no verdict: the reader default is used, no table needed.
            None if initial.verdict.is_some() => (Box::default(), Box::default()),
            None => return Err(CompileError::Incompatible("verdict is not an enum".into())),
        };
        Ok(VerdictProgram {
            ops: ops.into(),
            branches: b.branches.into(),
            shapes: b.shapes.into(),
            kinds,
            symbols,
            initial,
        })
    }

    /// The program for the embedded `OutboundVerdict` schema.
    pub fn for_outbound_verdict() -> Self {
        Self::compile(RecordType::OutboundVerdict.schema())
            .unwrap_or_else(|e| panic!("cannot compile the OutboundVerdict decoder: {e}"))
    }

    /// Runs one non-union op.
    #[inline(always)]
    fn leaf<'a>(
        &self,
        op: Op,
        r: &mut Reader<'a>,
        field: &'static str,
        s: &mut Slots<'a>,
    ) -> R<()> {
        match op {
            Op::Str(slot) => s.strs[slot as usize] = Some(r.str(field)?),
            Op::Long => s.sent_at = Some(r.long(field)?),
            Op::Int => s.sent_at = Some(i64::from(r.int(field)?)),
            Op::Enum => {
                let i = r.long(field)?;
                match usize::try_from(i).ok().and_then(|i| self.kinds.get(i)) {
                    Some(Some(k)) => s.verdict = Some(*k),
                    Some(None) => return Err(self.unknown_symbol(field, i)),
                    None => return Err(CodecError::InvalidEnumIndex { field, index: i }),
                }
            }
            Op::SkipNull => {}
            Op::SkipInt => {
                r.int(field)?;
            }
            Op::SkipLong => {
                r.long(field)?;
            }
            Op::SkipStr => {
                r.str(field)?;
            }
            Op::SkipFixed(n) => r.skip_n(usize::from(n), field)?,
            Op::SkipShape(i) => r.skip(&self.shapes[usize::from(i)], field)?,
            // Not produced for branches (Avro forbids a union directly in a union).
            Op::Union { .. } => return Err(CodecError::InvalidUnionIndex { field, index: -1 }),
        }
        Ok(())
    }

    #[cold]
    fn unknown_symbol(&self, field: &'static str, index: i64) -> CodecError {
        let symbol = usize::try_from(index)
            .ok()
            .and_then(|i| self.symbols.get(i))
            .map_or("?", |s| s);
        CodecError::invalid(
            field,
            format!("writer symbol {symbol} is not in the reader's enum, which has no default"),
        )
    }

    /// Decodes one Avro body (no framing) into a validated [`Verdict`].
    pub fn decode(&self, body: &[u8]) -> Result<Verdict, CodecError> {
        self.decode_ref(body).map(|v| v.to_owned())
    }

    /// Decodes one Avro body into a validated view that borrows its strings from `body`: no
    /// allocation, so a CLEAN verdict (the vast majority) costs only the parse.
    pub fn decode_ref<'a>(&self, body: &'a [u8]) -> Result<VerdictRef<'a>, CodecError> {
        let mut r = Reader::new(body);
        let s = self.run(&mut r)?;
        if r.remaining() != 0 {
            return Err(CodecError::TrailingBytes(r.remaining()));
        }
        finish(s)
    }

    /// Decodes the one body at the start of `data` (an Avro object container block holds its
    /// bodies back to back, without lengths): the verdict and how many bytes it took.
    pub fn decode_prefix<'a>(&self, data: &'a [u8]) -> Result<(VerdictRef<'a>, usize), CodecError> {
        let mut r = Reader::new(data);
        let s = self.run(&mut r)?;
        let used = data.len() - r.remaining();
        Ok((finish(s)?, used))
    }

    /// Runs the program over one body from `r`'s position.
    #[inline(always)]
    fn run<'a>(&self, r: &mut Reader<'a>) -> Result<Slots<'a>, CodecError> {
        let mut s: Slots<'a> = self.initial;
        for &(field, op) in self.ops.iter() {
            let op = match op {
                Op::Union { first, len } => {
                    let i = r.long(field)?;
                    match u16::try_from(i).ok().filter(|&i| i < len) {
                        Some(i) => self.branches[usize::from(first + i)],
                        None => return Err(CodecError::InvalidUnionIndex { field, index: i }),
                    }
                }
                op => op,
            };
            self.leaf(op, r, field, &mut s)?;
        }
        Ok(s)
    }
}

/// The verdict of a program's slots, each field checked.
#[inline(always)]
fn finish(s: Slots<'_>) -> Result<VerdictRef<'_>, CodecError> {
    let [message_id, tenant_id, mailbox] = s.strs;
    let message_id = non_empty(message_id, "message_id")?;
    let tenant_id = non_empty(tenant_id, "tenant_id")?;
    let mailbox = non_empty(mailbox, "mailbox")?;
    let sent_at = s
        .sent_at
        .ok_or_else(|| CodecError::invalid("sent_at", "null"))?;
    let verdict = s
        .verdict
        .ok_or_else(|| CodecError::invalid("verdict", "null"))?;
    Ok(VerdictRef {
        message_id,
        tenant_id,
        mailbox,
        sent_at,
        verdict,
    })
}

/// A validated `OutboundVerdict` whose strings borrow from the record. `mailbox` is as sent
/// (not yet lower-cased); [`VerdictRef::to_owned`] gives the core's [`Verdict`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerdictRef<'a> {
    /// Gateway message id.
    pub message_id: &'a str,
    /// Tenant of the mailbox.
    pub tenant_id: &'a str,
    /// Sending mailbox, as on the wire.
    pub mailbox: &'a str,
    /// Event time.
    pub sent_at: i64,
    /// The verdict.
    pub verdict: VerdictKind,
}

impl VerdictRef<'_> {
    /// The owned domain verdict, mailbox lower-cased.
    pub fn to_owned(&self) -> Verdict {
        Verdict {
            message_id: self.message_id.to_owned(),
            tenant_id: self.tenant_id.to_owned(),
            mailbox: crate::policy::Mailbox::new(self.mailbox).into_string(),
            sent_at: self.sent_at,
            verdict: self.verdict,
        }
    }

    /// Whether this verdict is about `mailbox` (its body may spell it in any case).
    pub fn is_about(&self, mailbox: &crate::policy::mailbox::MailboxKey<'_>) -> bool {
        mailbox.matches(self.mailbox)
    }
}

#[inline]
fn non_empty<'a>(s: Option<&'a str>, field: &'static str) -> Result<&'a str, CodecError> {
    match s {
        Some("") => Err(CodecError::EmptyField(field)),
        Some(s) => Ok(s),
        None => Err(CodecError::invalid(field, "null")),
    }
}
