//! Where the verdicts of a backtest come from: a file (JSON lines or an Avro object container,
//! told apart by the container's magic) or the verdicts topic over a time range. Each source
//! admits a record as the pipeline does (the limits on its fields; on the topic also the key
//! checks), steps it through the [`Backtest`] and counts what it could not read.

use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::{Message, Offset, TopicPartitionList};

use super::decode::{json_line, OcfReader};
use super::report::InputSummary;
use super::run::Backtest;
use super::BacktestError;
use crate::codec::{Codec, VerdictRef};
use crate::config::Config;
use crate::kafka::reader::{Read as Polled, ReadError, Start, TopicReader};
use crate::policy::{Limits, MailboxKey, Millis};

/// How many rejected records the report describes (the rest are counted).
const MAX_EXAMPLES: usize = 10;

/// A time range over `sent_at` (files) or record timestamps (topic): `[from, to)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Range {
    /// Inclusive start, ms.
    pub from: Option<Millis>,
    /// Exclusive end, ms.
    pub to: Option<Millis>,
}

impl Range {
    fn contains(&self, t: Millis) -> bool {
        self.from.is_none_or(|f| t >= f) && self.to.is_none_or(|e| t < e)
    }
}

/// A progress line on stderr, only when stderr is a terminal; redrawn at most 4 times a second.
pub struct Progress {
    on: bool,
    started: Instant,
    last: Instant,
    total: Option<u64>,
}

impl Progress {
    /// Progress towards `total` units (bytes of a file, records of a topic), if known.
    pub fn new(total: Option<u64>) -> Self {
        let now = Instant::now();
        Progress {
            on: std::io::stderr().is_terminal(),
            started: now,
            last: now,
            total,
        }
    }

    /// Called now and then with the units done and the verdicts stepped.
    fn tick(&mut self, done: u64, verdicts: u64) {
        if self.on && self.last.elapsed() >= Duration::from_millis(250) {
            self.last = Instant::now();
            self.draw(done, verdicts);
        }
    }

    fn draw(&self, done: u64, verdicts: u64) {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = verdicts as f64 / secs;
        let bar = match self.total {
            Some(t) if t > 0 => {
                let f = (done as f64 / t as f64).clamp(0.0, 1.0);
                let w = (f * 30.0) as usize;
                format!(
                    "[{}{}] {:5.1} % ",
                    "#".repeat(w),
                    ".".repeat(30 - w),
                    f * 100.0
                )
            }
            _ => String::new(),
        };
        let mut e = std::io::stderr().lock();
        let _ = write!(e, "\r{bar}{verdicts} verdicts, {:.2} M/s ", rate / 1e6);
        let _ = e.flush();
    }

    /// The final line (everything done), then a new line.
    fn done(&self, verdicts: u64) {
        if self.on {
            self.draw(self.total.unwrap_or(0), verdicts);
            let _ = writeln!(std::io::stderr().lock());
        }
    }
}

/// Counts rejected records and keeps the first few reasons.
struct Rejects<'a> {
    summary: &'a mut InputSummary,
}

impl Rejects<'_> {
    fn add(&mut self, reason: impl FnOnce() -> String) {
        self.summary.rejected += 1;
        if self.summary.rejected_examples.len() < MAX_EXAMPLES {
            self.summary.rejected_examples.push(reason());
        }
    }
}

/// Steps `v` if it is within the limits and the range (files: by `sent_at`, which is also the
/// clock).
fn step_file(
    b: &mut Backtest,
    limits: &Limits,
    range: &Range,
    v: &VerdictRef<'_>,
    r: &mut Rejects<'_>,
    at: &dyn Fn() -> String,
) {
    if let Err(e) = limits.verdict(v.message_id, v.tenant_id, v.mailbox) {
        r.add(|| format!("{}: {e}", at()));
        return;
    }
    if range.contains(v.sent_at) {
        b.verdict(v, v.sent_at);
    }
}

/// Reads a file of verdicts: an Avro object container file if it starts with `Obj\x01`, JSON
/// lines otherwise.
pub fn file(
    path: &Path,
    range: Range,
    limits: &Limits,
    b: &mut Backtest,
) -> Result<InputSummary, BacktestError> {
    let open =
        |p: &Path| File::open(p).map_err(|e| BacktestError::Input(format!("{}: {e}", p.display())));
    let f = open(path)?;
    let size = f.metadata().ok().map(|m| m.len());
    let mut input = BufReader::with_capacity(1 << 20, f);
    let avro = input
        .fill_buf()
        .map_err(|e| BacktestError::Input(e.to_string()))?
        .starts_with(b"Obj\x01");
    let mut summary = InputSummary {
        source: format!("file {}", path.display()),
        from: range.from,
        to: range.to,
        ..InputSummary::default()
    };
    let mut progress = Progress::new(size);
    let mut r = Rejects {
        summary: &mut summary,
    };
    if avro {
        let mut ocf = OcfReader::new(input)
            .map_err(|e| BacktestError::Input(format!("{}: {e}", path.display())))?;
        let mut n = 0u64;
        while ocf
            .next_block(|v| {
                n += 1;
                step_file(b, limits, &range, &v, &mut r, &|| format!("record {n}"));
            })
            .map_err(|e| BacktestError::Input(format!("{}: {e}", path.display())))?
        {
            progress.tick(ocf.offset(), b.counts().verdicts);
        }
    } else {
        let mut line = String::new();
        let (mut no, mut read) = (0usize, 0u64);
        loop {
            line.clear();
            let n = input.read_line(&mut line).map_err(|e| {
                BacktestError::Input(format!("{}: line {}: {e}", path.display(), no + 1))
            })?;
            if n == 0 {
                break;
            }
            no += 1;
            read += n as u64;
            match json_line(&line) {
                Ok(Some(v)) => step_file(b, limits, &range, &v.as_ref(), &mut r, &|| {
                    format!("line {no}")
                }),
                Ok(None) => {}
                Err(e) => r.add(|| format!("line {no}: {e}")),
            }
            if no.is_multiple_of(65_536) {
                progress.tick(read, b.counts().verdicts);
            }
        }
    }
    progress.done(b.counts().verdicts);
    Ok(summary)
}

/// Reads the verdicts topic over `range` of record timestamps (offsets from
/// `offsets_for_times`; without a start, from the beginning; without an end, to the end as of
/// the start), `read_committed`, assigned partitions only: no group is joined, nothing is
/// committed. The clock is each record's timestamp.
pub fn topic(
    cfg: &Config,
    codec: &Codec,
    topic: &str,
    range: Range,
    b: &mut Backtest,
) -> Result<InputSummary, BacktestError> {
    let kafka = |e: crate::kafka::KafkaError| BacktestError::Kafka(e.to_string());
    let mut reader = TopicReader::new(
        &cfg.kafka,
        "backtest",
        topic,
        "the backtest reads verdicts over a range",
    )
    .map_err(kafka)?;
    let n = reader.partition_count().map_err(kafka)?;
    let starts = offsets_at(&reader, n, range.from)?;
    let ends = offsets_at(&reader, n, range.to)?;
    let mut assign = Vec::new();
    let mut ends_of = vec![0i64; n as usize];
    let mut total = 0u64;
    for p in 0..n {
        let (low, high) = reader.watermarks(p).map_err(kafka)?;
        let start = starts[p as usize].unwrap_or(if range.from.is_some() { high } else { low });
        let end = ends[p as usize].unwrap_or(high).min(high);
        ends_of[p as usize] = end;
        if start < end {
            assign.push((p, Start::At(start)));
            total += (end - start) as u64;
        }
    }
    let mut summary = InputSummary {
        source: format!("topic {topic}"),
        from: range.from,
        to: range.to,
        ..InputSummary::default()
    };
    if assign.is_empty() {
        return Ok(summary);
    }
    reader.assign(&assign).map_err(kafka)?;
    let mut pending: std::collections::BTreeSet<i32> = assign.iter().map(|(p, _)| *p).collect();
    let mut progress = Progress::new(Some(total));
    let mut r = Rejects {
        summary: &mut summary,
    };
    let mut read = 0u64;
    let mut idle = Instant::now();
    while !pending.is_empty() {
        let polled = match reader.poll(Duration::from_millis(200)) {
            Ok(p) => p,
            Err(ReadError::NotAuthorised(e)) => return Err(kafka(e)),
            Err(ReadError::Client(e)) => {
                tracing::warn!(error = %e, "backtest: kafka (retried by the client)");
                None
            }
        };
        let finished = match polled {
            None => {
                if idle.elapsed() > Duration::from_secs(60) {
                    let left: Vec<String> = pending.iter().map(|p| p.to_string()).collect();
                    return Err(BacktestError::Kafka(format!(
                        "no record for 60 s from partitions {}",
                        left.join(", ")
                    )));
                }
                None
            }
            Some(Polled::End(p)) => Some(p),
            Some(Polled::Record(m)) => {
                idle = Instant::now();
                let (p, offset) = (m.partition(), m.offset());
                let end = ends_of[p as usize];
                if offset < end {
                    read += 1;
                    admit(codec, &cfg.limits, &m, b, &mut r);
                    if read.is_multiple_of(65_536) {
                        progress.tick(read, b.counts().verdicts);
                    }
                }
                (offset + 1 >= end).then_some(p)
            }
        };
        // A partition at the end of its range is paused: what follows is not read for nothing.
        if let Some(p) = finished.filter(|p| pending.remove(p)) {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(topic, p);
            if let Err(e) = reader.consumer().pause(&tpl) {
                tracing::debug!(partition = p, error = %e, "backtest: pause");
            }
        }
    }
    progress.done(b.counts().verdicts);
    Ok(summary)
}

/// As the pipeline admits a verdict record: a normalised mailbox key, a value that decodes,
/// whose mailbox is the key's, within the limits. The clock is the record's timestamp (its
/// `sent_at` if it has none).
fn admit(codec: &Codec, limits: &Limits, m: &impl Message, b: &mut Backtest, r: &mut Rejects<'_>) {
    let at = || format!("partition {} offset {}", m.partition(), m.offset());
    let key = match m.key().map(std::str::from_utf8) {
        Some(Ok(k)) => k,
        _ => return r.add(|| format!("{}: missing or non-UTF-8 key", at())),
    };
    let key = match MailboxKey::new(key) {
        Ok(k) => k,
        Err(e) => return r.add(|| format!("{}: {e}", at())),
    };
    let Some(payload) = m.payload() else {
        return r.add(|| format!("{}: missing value", at()));
    };
    let v = match codec.decode_verdict_ref(payload) {
        Ok(v) => v,
        Err(e) => return r.add(|| format!("{}: {e}", at())),
    };
    if !v.is_about(&key) {
        return r.add(|| format!("{}: the key is not the verdict's mailbox", at()));
    }
    if let Err(e) = limits.verdict(v.message_id, v.tenant_id, v.mailbox) {
        return r.add(|| format!("{}: {e}", at()));
    }
    b.verdict(&v, m.timestamp().to_millis().unwrap_or(v.sent_at));
}

/// Per partition, the first offset whose timestamp is at or after `t` (`None`: no such record,
/// or no `t`).
fn offsets_at(
    reader: &TopicReader,
    n: i32,
    t: Option<Millis>,
) -> Result<Vec<Option<i64>>, BacktestError> {
    let Some(t) = t else {
        return Ok(vec![None; n as usize]);
    };
    let mut tpl = TopicPartitionList::new();
    for p in 0..n {
        tpl.add_partition_offset(reader.topic(), p, Offset::Offset(t))
            .map_err(|e| BacktestError::Kafka(e.to_string()))?;
    }
    let found = reader
        .consumer()
        .offsets_for_times(tpl, Duration::from_secs(10))
        .map_err(|e| BacktestError::Kafka(format!("offsets for time {t}: {e}")))?;
    let mut out = vec![None; n as usize];
    for e in found.elements() {
        if let Offset::Offset(o) = e.offset() {
            if let Some(slot) = out.get_mut(e.partition() as usize) {
                *slot = Some(o);
            }
        }
    }
    Ok(out)
}

/// Reads `path` whole into a string (candidate policy files).
pub(crate) fn read_text(path: &Path) -> Result<String, BacktestError> {
    let mut s = String::new();
    File::open(path)
        .and_then(|mut f| f.read_to_string(&mut s))
        .map_err(|e| BacktestError::Input(format!("{}: {e}", path.display())))?;
    Ok(s)
}
