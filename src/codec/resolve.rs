//! Schema resolution at the schema level (Avro specification, "Schema Resolution"): is data
//! written with a writer schema readable with a reader schema, and if not, why (for the DLQ
//! reason). Run once per writer schema, when it is first met; the decoders then only run what was
//! decided here.
//!
//! The rules are the spec's, with two deliberate restrictions that keep every accepted writer
//! free of read-time surprises (an incompatible writer is an explicit, cached error; a value is
//! never misread):
//!
//! - a writer union must have *every* branch readable by the reader (as Java's
//!   `SchemaCompatibility` requires), rather than failing at read time on a bad branch;
//! - logical types: a writer logical type must equal the reader's (e.g. `timestamp-micros` is
//!   not read as `timestamp-millis`); a plain writer type may be read as a logical reader type
//!   (a `long` or promoted `int` as `timestamp-millis`).

use std::collections::{HashMap, HashSet};
use std::sync::{LazyLock, Mutex};

use apache_avro::schema::{RecordSchema, Schema, UnionSchema};

/// Interns a field name for the lifetime of the process, so that compiled programs (built at
/// run time from writer schemas) can name fields in errors with `&'static str` like the embedded
/// ones. The set only grows with *distinct* names, which writer schemas repeat.
pub(crate) fn intern(s: &str) -> &'static str {
    static NAMES: LazyLock<Mutex<HashSet<&'static str>>> =
        LazyLock::new(|| Mutex::new(HashSet::new()));
    let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&n) = names.get(s) {
        return n;
    }
    let n: &'static str = Box::leak(s.to_owned().into_boxed_str());
    names.insert(n);
    n
}

/// The named types of a parsed schema, by full name, so that `Schema::Ref`s (later uses of a
/// named type) can be followed.
pub(crate) struct Names<'s> {
    map: HashMap<String, &'s Schema>,
}

impl<'s> Names<'s> {
    pub(crate) fn of(schema: &'s Schema) -> Self {
        let mut n = Names {
            map: HashMap::new(),
        };
        n.collect(schema);
        n
    }

    fn collect(&mut self, s: &'s Schema) {
        match s {
            Schema::Record(r) => {
                self.map.insert(r.name.fullname(None), s);
                for f in &r.fields {
                    self.collect(&f.schema);
                }
            }
            Schema::Enum(e) => {
                self.map.insert(e.name.fullname(None), s);
            }
            Schema::Fixed(f) => {
                self.map.insert(f.name.fullname(None), s);
            }
            Schema::Union(u) => u.variants().iter().for_each(|v| self.collect(v)),
            Schema::Array(a) => self.collect(&a.items),
            Schema::Map(m) => self.collect(&m.types),
            Schema::Decimal(d) => self.collect(&d.inner),
            _ => {}
        }
    }

    /// `s`, or the definition a `Ref` names.
    pub(crate) fn deref(&self, s: &'s Schema) -> Result<&'s Schema, String> {
        match s {
            Schema::Ref { name } => {
                let full = name.fullname(None);
                self.map
                    .get(&full)
                    .copied()
                    .ok_or_else(|| format!("undefined type {full}"))
            }
            s => Ok(s),
        }
    }
}

/// Primitive wire types (what a value looks like on the wire, logical types aside).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prim {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
}

/// A schema reduced to what resolution compares.
pub(crate) enum Kind<'s> {
    Prim(Prim, Option<&'static str>),
    Fixed(String, usize, Option<&'static str>),
    Enum(&'s apache_avro::schema::EnumSchema),
    Record(&'s RecordSchema),
    Array(&'s Schema),
    Map(&'s Schema),
    Union(&'s UnionSchema),
    /// A `Ref` (never returned by [`kind`] on a dereferenced schema).
    Ref,
}

pub(crate) fn kind(s: &Schema) -> Kind<'_> {
    use Prim::*;
    match s {
        Schema::Null => Kind::Prim(Null, None),
        Schema::Boolean => Kind::Prim(Boolean, None),
        Schema::Int => Kind::Prim(Int, None),
        Schema::Long => Kind::Prim(Long, None),
        Schema::Float => Kind::Prim(Float, None),
        Schema::Double => Kind::Prim(Double, None),
        Schema::Bytes => Kind::Prim(Bytes, None),
        Schema::String => Kind::Prim(String, None),
        Schema::Date => Kind::Prim(Int, Some("date")),
        Schema::TimeMillis => Kind::Prim(Int, Some("time-millis")),
        Schema::TimeMicros => Kind::Prim(Long, Some("time-micros")),
        Schema::TimestampMillis => Kind::Prim(Long, Some("timestamp-millis")),
        Schema::TimestampMicros => Kind::Prim(Long, Some("timestamp-micros")),
        Schema::TimestampNanos => Kind::Prim(Long, Some("timestamp-nanos")),
        Schema::LocalTimestampMillis => Kind::Prim(Long, Some("local-timestamp-millis")),
        Schema::LocalTimestampMicros => Kind::Prim(Long, Some("local-timestamp-micros")),
        Schema::LocalTimestampNanos => Kind::Prim(Long, Some("local-timestamp-nanos")),
        Schema::Uuid => Kind::Prim(String, Some("uuid")),
        Schema::BigDecimal => Kind::Prim(Bytes, Some("big-decimal")),
        Schema::Decimal(d) => match d.inner.as_ref() {
            Schema::Fixed(f) => Kind::Fixed(f.name.fullname(None), f.size, Some("decimal")),
            _ => Kind::Prim(Bytes, Some("decimal")),
        },
        Schema::Duration => Kind::Fixed("duration".into(), 12, Some("duration")),
        Schema::Fixed(f) => Kind::Fixed(f.name.fullname(None), f.size, None),
        Schema::Enum(e) => Kind::Enum(e),
        Schema::Record(r) => Kind::Record(r),
        Schema::Array(a) => Kind::Array(&a.items),
        Schema::Map(m) => Kind::Map(&m.types),
        Schema::Union(u) => Kind::Union(u),
        Schema::Ref { .. } => Kind::Ref,
    }
}

/// A short description of a schema for error messages, e.g. `long (timestamp-millis)`.
pub(crate) fn describe(s: &Schema) -> String {
    let logical = |t: &str, l: Option<&str>| match l {
        Some(l) => format!("{t} ({l})"),
        None => t.to_string(),
    };
    match kind(s) {
        Kind::Prim(p, l) => logical(&format!("{p:?}").to_lowercase(), l),
        Kind::Fixed(n, size, l) => logical(&format!("fixed {n}[{size}]"), l),
        Kind::Enum(e) => format!("enum {}", e.name.fullname(None)),
        Kind::Record(r) => format!("record {}", r.name.fullname(None)),
        Kind::Array(_) => "array".into(),
        Kind::Map(_) => "map".into(),
        Kind::Union(u) => format!(
            "union [{}]",
            u.variants()
                .iter()
                .map(describe)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Kind::Ref => match s {
            Schema::Ref { name } => name.fullname(None),
            _ => unreachable!(),
        },
    }
}

/// The spec's primitive promotions (plus identity).
fn promotes(w: Prim, r: Prim) -> bool {
    use Prim::*;
    w == r
        || matches!(
            (w, r),
            (Int, Long | Float | Double)
                | (Long, Float | Double)
                | (Float, Double)
                | (String, Bytes)
                | (Bytes, String)
        )
}

fn unqualified(full: &str) -> &str {
    full.rsplit('.').next().unwrap_or(full)
}

/// Checks that everything written with `writer` can be read with `reader`.
pub(crate) struct Checker<'w, 'r> {
    pub(crate) wn: &'w Names<'w>,
    pub(crate) rn: &'r Names<'r>,
    /// Named (writer, reader) pairs under check: a recursive type is compatible with itself
    /// if the rest is.
    in_progress: HashSet<(String, String)>,
}

impl<'w, 'r> Checker<'w, 'r> {
    pub(crate) fn new(wn: &'w Names<'w>, rn: &'r Names<'r>) -> Self {
        Checker {
            wn,
            rn,
            in_progress: HashSet::new(),
        }
    }

    /// The branch of reader union `u` that a (non-union) writer value of schema `w` resolves to:
    /// the first branch of the same type (same name for named types), else the first branch
    /// the writer type promotes to (as Java Avro chooses).
    pub(crate) fn select(&self, w: &'w Schema, u: &'r UnionSchema) -> Result<&'r Schema, String> {
        let w = self.wn.deref(w)?;
        let branches = u
            .variants()
            .iter()
            .map(|b| self.rn.deref(b))
            .collect::<Result<Vec<_>, _>>()?;
        let same = |b: &&Schema| match (kind(w), kind(b)) {
            (Kind::Prim(a, _), Kind::Prim(b, _)) => a == b,
            (Kind::Fixed(a, ..), Kind::Fixed(b, ..)) => unqualified(&a) == unqualified(&b),
            (Kind::Enum(a), Kind::Enum(b)) => a.name.name == b.name.name,
            (Kind::Record(a), Kind::Record(b)) => a.name.name == b.name.name,
            (Kind::Array(_), Kind::Array(_)) | (Kind::Map(_), Kind::Map(_)) => true,
            _ => false,
        };
        if let Some(&b) = branches.iter().find(|b| same(b)) {
            return Ok(b);
        }
        if let Kind::Prim(wp, _) = kind(w) {
            if let Some(&b) = branches
                .iter()
                .find(|b| matches!(kind(b), Kind::Prim(rp, _) if promotes(wp, rp)))
            {
                return Ok(b);
            }
        }
        Err(format!(
            "writer {} matches no branch of reader {}",
            describe(w),
            describe(&Schema::Union(u.clone()))
        ))
    }

    /// `path` names the field being checked, for the message.
    pub(crate) fn check(&mut self, w: &'w Schema, r: &'r Schema, path: &str) -> Result<(), String> {
        let w = self.wn.deref(w)?;
        let r = self.rn.deref(r)?;
        let mismatch = || {
            at(
                path,
                format!("writer {} cannot be read as {}", describe(w), describe(r)),
            )
        };
        match (kind(w), kind(r)) {
            (Kind::Union(wu), _) => {
                for b in wu.variants() {
                    self.check(b, r, path)?;
                }
                Ok(())
            }
            (_, Kind::Union(ru)) => {
                self.refuse_ambiguous_branches(r, ru, path)?;
                let b = self.select(w, ru).map_err(|m| at(path, m))?;
                self.check(w, b, path)
            }
            (Kind::Array(wi), Kind::Array(ri)) => self.check(wi, ri, &format!("{path}[]")),
            (Kind::Map(wv), Kind::Map(rv)) => self.check(wv, rv, &format!("{path}{{}}")),
            (Kind::Record(wr), Kind::Record(rr)) => {
                if wr.name.name != rr.name.name {
                    return Err(mismatch());
                }
                self.check_fields(wr, rr, path)
            }
            (wk, rk) => {
                if leaf_reads_as(w, wk, r, rk) {
                    Ok(())
                } else {
                    Err(mismatch())
                }
            }
        }
    }

    /// apache-avro picks a reader branch by value kind, so two named branches of one kind could
    /// be confused: refuse the reader union `ru` (schema `r`) rather than risk it.
    fn refuse_ambiguous_branches(
        &self,
        r: &'r Schema,
        ru: &'r UnionSchema,
        path: &str,
    ) -> Result<(), String> {
        let mut named = HashSet::new();
        for b in ru.variants() {
            let k = match kind(self.rn.deref(b)?) {
                Kind::Record(_) => "record",
                Kind::Enum(_) => "enum",
                Kind::Fixed(..) => "fixed",
                _ => continue,
            };
            if !named.insert(k) {
                return Err(at(
                    path,
                    format!(
                        "reader {} has several {k} branches (not supported)",
                        describe(r)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Every reader field of two records of one name: read from the writer's field of that name,
    /// or defaulted; a field neither written nor defaulted is an error. A pair already under
    /// check (a recursive type) is taken as compatible if the rest is.
    fn check_fields(
        &mut self,
        wr: &'w RecordSchema,
        rr: &'r RecordSchema,
        path: &str,
    ) -> Result<(), String> {
        let pair = (wr.name.fullname(None), rr.name.fullname(None));
        if !self.in_progress.insert(pair.clone()) {
            return Ok(());
        }
        for rf in &rr.fields {
            let sub = if path.is_empty() {
                rf.name.clone()
            } else {
                format!("{path}.{}", rf.name)
            };
            match wr.lookup.get(&rf.name) {
                Some(&i) => self.check(&wr.fields[i].schema, &rf.schema, &sub)?,
                None if rf.default.is_some() => {}
                None => {
                    return Err(format!(
                        "field '{sub}' is missing in the writer and has no default in the reader"
                    ))
                }
            }
        }
        self.in_progress.remove(&pair);
        Ok(())
    }
}

/// `msg`, naming the field at `path` when there is one.
fn at(path: &str, msg: String) -> String {
    if path.is_empty() {
        msg
    } else {
        format!("field '{path}': {msg}")
    }
}

/// Whether a writer primitive, fixed or enum (`w`, of kind `wk`) reads as reader `r` (of kind
/// `rk`); false for any other pair of kinds.
fn leaf_reads_as(w: &Schema, wk: Kind<'_>, r: &Schema, rk: Kind<'_>) -> bool {
    match (wk, rk) {
        (Kind::Prim(wp, wl), Kind::Prim(rp, rl)) => {
            if !promotes(wp, rp) || (wl.is_some() && wl != rl) {
                return false;
            }
            match (w, r) {
                (Schema::Decimal(a), Schema::Decimal(b)) => {
                    (a.precision, a.scale) == (b.precision, b.scale)
                }
                _ => true,
            }
        }
        (Kind::Fixed(wn, ws, wl), Kind::Fixed(rn, rs, rl)) => {
            unqualified(&wn) == unqualified(&rn) && ws == rs && (wl.is_none() || wl == rl)
        }
        // Writer symbols the reader lacks map to the reader's default at read time, or are an
        // error there (the spec's rule): only the name is compared here.
        (Kind::Enum(we), Kind::Enum(re)) => we.name.name == re.name.name,
        _ => false,
    }
}

/// Whether everything written with `writer` can be read as `reader`; the error says why not.
pub(crate) fn check(writer: &Schema, reader: &Schema) -> Result<(), String> {
    let wn = Names::of(writer);
    let rn = Names::of(reader);
    Checker::new(&wn, &rn).check(writer, reader, "")
}
