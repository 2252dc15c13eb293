//! The durable event spool: every event is numbered and fsynced here before it is sent, and
//! kept until the server acknowledges it (DESIGN "Event flow").
//!
//! # On-disk format (`state_dir/spool/`)
//!
//! - `NNNNNNNNNNNNNNNNNNNN.seg`: segment files named by the `seq` of their first record
//!   (20 decimal digits), appended to until they reach the segment size, then a new one is
//!   started. Each begins with the 8-byte magic `TYRSPOL1`, then records:
//!
//!   ```text
//!   u32 LE  body length (9 + payload length)
//!   u32 LE  CRC-32 (ISO-HDLC, as zlib) of the body
//!   body:   u8 type (1 = event, 2 = gap) | u64 LE seq | payload
//!   ```
//!
//!   An event payload is opaque bytes (the pipeline stores the event's JSON; at most
//!   [`MAX_PAYLOAD`] bytes). A gap payload is 25 bytes: `u64 LE first_dropped_seq`,
//!   `u64 LE last_dropped_seq`, `u64 LE count`, `u8 reason` (1 = spool_full,
//!   2 = ring_buffer, 3 = corrupt).
//! - `ack`: the highest acknowledged `seq`, `u64 LE` + CRC-32 of it, replaced atomically.
//! - `lock`: held with an exclusive `flock` by the process that has the spool open.
//!
//! Sequence numbers start at 1 and are gap-free: every number is either in a record on disk,
//! acknowledged, or covered by a gap record. The newest segment is never deleted, so
//! numbering survives a restart even if everything was acknowledged. On open, a record that
//! is short or fails its CRC ends its segment: the segment is truncated there (a torn tail
//! after a crash; such a record was never reported durable). Unacknowledged numbers lost
//! between segments are reported in a `corrupt` gap record.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Segment file magic (format version 1).
const MAGIC: &[u8; 8] = b"TYRSPOL1";
const HEADER_LEN: u64 = MAGIC.len() as u64;
/// Length + CRC.
const FRAME_LEN: u64 = 8;
/// Type + seq.
const BODY_PREFIX: usize = 9;
/// Largest event payload, in bytes.
pub const MAX_PAYLOAD: usize = 1 << 20;
const GAP_PAYLOAD: usize = 25;
const GAP_RECORD_LEN: u64 = FRAME_LEN + (BODY_PREFIX + GAP_PAYLOAD) as u64;
/// Largest segment size used.
pub const MAX_SEGMENT_BYTES: u64 = 4 << 20;
const TYPE_EVENT: u8 = 1;
const TYPE_GAP: u8 = 2;
const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// One spooled record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpoolRecord {
    /// An encoded event, opaque to the spool.
    Event(Vec<u8>),
    /// Events that were lost, and why.
    Gap(Gap),
}

/// A gap record: `count` events were lost. For `spool_full` and `corrupt` the lost records
/// had the numbers `first_dropped_seq..=last_dropped_seq`; ring-buffer losses never had
/// numbers and carry 0 for both. When a `spool_full` drop takes older gap records with it,
/// the new gap takes over their counts and their ranges, so the counts of the gap records
/// that reach the server add up to every event lost and their ranges cover every missing
/// seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// First lost sequence number (0 for ring-buffer losses).
    pub first_dropped_seq: u64,
    /// Last lost sequence number (0 for ring-buffer losses).
    pub last_dropped_seq: u64,
    /// Number of events lost.
    pub count: u64,
    /// Why.
    pub reason: GapReason,
}

/// Why events were lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapReason {
    /// The spool reached `buffer_size_mb`; the oldest unacknowledged records were dropped.
    SpoolFull,
    /// The kernel ring buffer was full; the events never reached userspace.
    RingBuffer,
    /// Spool data was damaged on disk (`count` is the number of lost sequence numbers).
    Corrupt,
}

impl GapReason {
    fn code(self) -> u8 {
        match self {
            GapReason::SpoolFull => 1,
            GapReason::RingBuffer => 2,
            GapReason::Corrupt => 3,
        }
    }

    fn from_code(code: u8) -> Option<GapReason> {
        match code {
            1 => Some(GapReason::SpoolFull),
            2 => Some(GapReason::RingBuffer),
            3 => Some(GapReason::Corrupt),
            _ => None,
        }
    }
}

/// Size limits of a spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolOptions {
    /// Bound on the total size of the segment files.
    pub capacity_bytes: u64,
    /// A segment is closed once the next record would take it beyond this size.
    pub segment_bytes: u64,
}

impl SpoolOptions {
    /// Options for a bound of `capacity_bytes`: segments of a quarter of it, at most 4 MiB.
    pub fn with_capacity(capacity_bytes: u64) -> SpoolOptions {
        SpoolOptions {
            capacity_bytes,
            segment_bytes: (capacity_bytes / 4).clamp(4096, MAX_SEGMENT_BYTES),
        }
    }
}

/// A spool operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A file-system operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Another process has the spool open.
    #[error("{}: the spool is in use by another process", dir.display())]
    Locked {
        /// The spool directory.
        dir: PathBuf,
    },
    /// A spool file is not in the expected format.
    #[error("{}: {message}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// An event payload exceeds [`MAX_PAYLOAD`].
    #[error("event of {len} bytes exceeds the {MAX_PAYLOAD}-byte limit")]
    RecordTooLarge {
        /// Its size.
        len: usize,
    },
    /// A batch is larger than the whole spool.
    #[error("a batch of {bytes} bytes does not fit in a spool of {capacity} bytes")]
    BatchTooLarge {
        /// Encoded size of the batch.
        bytes: u64,
        /// The spool bound.
        capacity: u64,
    },
    /// An acknowledgement of a number never assigned.
    #[error("acknowledgement of seq {seq}, beyond the last assigned seq {last}")]
    AckBeyondEnd {
        /// The acknowledged number.
        seq: u64,
        /// The last number assigned.
        last: u64,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What is known of one segment file.
#[derive(Debug, Clone)]
struct Segment {
    /// Seq of its first record (its name).
    first: u64,
    /// One past the seq of its last record (`first` when empty).
    next: u64,
    /// Valid length of the file.
    bytes: u64,
    /// Its gap records, with their seq.
    gaps: Vec<(u64, Gap)>,
}

impl Segment {
    /// What is lost if the records `from..=to` of this segment are dropped: the number of
    /// events (event records plus the counts of gap records) and the first seq of the range
    /// they cover (a dropped gap record's range is taken over by the new one).
    fn loss_if_dropped(&self, from: u64, to: u64) -> (u64, u64) {
        let mut count = to + 1 - from;
        let mut first = from;
        for (_, g) in self
            .gaps
            .iter()
            .filter(|(seq, _)| (from..=to).contains(seq))
        {
            count = (count - 1).saturating_add(g.count);
            if g.first_dropped_seq > 0 {
                first = first.min(g.first_dropped_seq);
            }
        }
        (count, first)
    }
}

/// Spool state as reported by `tyrd status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Last assigned seq (0 when none).
    pub last_seq: u64,
    /// Highest acknowledged seq.
    pub acked_seq: u64,
    /// Records on disk not yet acknowledged.
    pub pending: u64,
    /// Total size of the segment files.
    pub bytes: u64,
    /// Number of segment files.
    pub segments: usize,
}

/// The spool, open for writing (holds the directory lock).
pub struct Spool {
    dir: PathBuf,
    opts: SpoolOptions,
    segments: Vec<Segment>,
    /// The newest segment, open for appending.
    active: Option<File>,
    next_seq: u64,
    acked: u64,
    /// Read position: the record `seq` starts at `offset` in the segment named `first`.
    cursor: Option<Cursor>,
    _lock: File,
}

#[derive(Debug, Clone, Copy)]
struct Cursor {
    seq: u64,
    first: u64,
    offset: u64,
}

impl Spool {
    /// Opens (creating if needed) the spool in `dir`, recovering from a crash: torn records
    /// are truncated and numbering continues after the last good record.
    pub fn open(dir: &Path, opts: SpoolOptions) -> Result<Spool, SpoolError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err(dir))?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(SpoolError::Locked {
                    dir: dir.to_owned(),
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_err(&lock_path)(e)),
        }
        let mut spool = Spool {
            dir: dir.to_owned(),
            opts,
            segments: Vec::new(),
            active: None,
            next_seq: 1,
            acked: 0,
            cursor: None,
            _lock: lock,
        };
        let lost = spool.load()?;
        let gaps: Vec<SpoolRecord> = lost
            .into_iter()
            .map(|(first, last)| {
                tracing::warn!(
                    first,
                    last,
                    "spool: sequence numbers lost to on-disk damage"
                );
                SpoolRecord::Gap(Gap {
                    first_dropped_seq: first,
                    last_dropped_seq: last,
                    count: last - first + 1,
                    reason: GapReason::Corrupt,
                })
            })
            .collect();
        spool.append_batch(&gaps)?;
        Ok(spool)
    }

    /// (Re)reads the directory, repairs torn segments and opens the newest for appending.
    /// Returns the unacknowledged seq ranges missing between segments.
    fn load(&mut self) -> Result<Vec<(u64, u64)>, SpoolError> {
        self.active = None;
        self.cursor = None;
        let scan = scan_dir(&self.dir)?;
        self.acked = scan.acked;
        self.segments.clear();
        for s in scan.segments {
            if s.valid_len < s.file_len || s.valid_len == 0 {
                let path = segment_path(&self.dir, s.seg.first);
                tracing::warn!(
                    path = %path.display(),
                    damage = s.damage.as_deref().unwrap_or("missing header"),
                    "spool: truncating damaged segment"
                );
                repair(&path, s.valid_len).map_err(io_err(&path))?;
            }
            self.segments.push(s.seg);
        }
        let mut lost = Vec::new();
        for pair in self.segments.windows(2) {
            let (from, to) = (
                pair[0].next.max(self.acked.saturating_add(1)),
                pair[1].first - 1,
            );
            if from <= to {
                lost.push((from, to));
            }
        }
        let last_next = self.segments.last().map_or(1, |s| s.next);
        self.next_seq = last_next.max(self.acked.saturating_add(1));
        if let Some(seg) = self.segments.last() {
            let path = segment_path(&self.dir, seg.first);
            let file = OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(io_err(&path))?;
            self.active = Some(file);
        }
        Ok(lost)
    }

    /// Appends `records`, numbering them consecutively, and makes them durable (one
    /// `fdatasync` per touched segment) before returning the seq of the last one. When the
    /// spool is full, the oldest unacknowledged segments are dropped first and a gap record
    /// (numbered before the batch) says how many events were lost.
    pub fn append_batch(&mut self, records: &[SpoolRecord]) -> Result<u64, SpoolError> {
        if records.is_empty() {
            return Ok(self.next_seq - 1);
        }
        let mut bytes = 0u64;
        for r in records {
            if let SpoolRecord::Event(p) = r
                && p.len() > MAX_PAYLOAD
            {
                return Err(SpoolError::RecordTooLarge { len: p.len() });
            }
            bytes += encoded_len(r);
        }
        // Room for the segment headers of every roll the batch may cause.
        let needed = bytes + HEADER_LEN * (records.len() as u64 + 2);
        if needed + GAP_RECORD_LEN > self.opts.capacity_bytes {
            return Err(SpoolError::BatchTooLarge {
                bytes,
                capacity: self.opts.capacity_bytes,
            });
        }
        let result = self
            .make_room(needed)
            .and_then(|gap| self.write(gap.map(SpoolRecord::Gap).iter().chain(records)));
        if result.is_err() {
            // Resynchronise with what actually reached the disk.
            if let Err(e) = self.load() {
                tracing::error!("spool: reload after a failed append: {e}");
            }
        }
        result
    }

    /// Records `count` events lost in the kernel ring buffer as a gap record; returns its seq.
    pub fn record_ring_drops(&mut self, count: u64) -> Result<u64, SpoolError> {
        self.append_batch(&[SpoolRecord::Gap(Gap {
            first_dropped_seq: 0,
            last_dropped_seq: 0,
            count,
            reason: GapReason::RingBuffer,
        })])
    }

    /// Drops the oldest segments until `needed` bytes (plus a gap record) fit; returns the
    /// gap record describing the unacknowledged records dropped, if any.
    fn make_room(&mut self, needed: u64) -> Result<Option<Gap>, SpoolError> {
        let cap = self.opts.capacity_bytes;
        if self.used_bytes() + needed <= cap {
            return Ok(None);
        }
        let mut gap: Option<Gap> = None;
        while self.used_bytes() + needed + GAP_RECORD_LEN > cap {
            if self.segments.len() == 1 {
                if self.segments[0].next == self.segments[0].first {
                    break;
                }
                // Start the next segment first so the highest seq stays on disk.
                self.start_segment()?;
            }
            let Some(seg) = self.segments.first().cloned() else {
                break;
            };
            let path = segment_path(&self.dir, seg.first);
            fs::remove_file(&path).map_err(io_err(&path))?;
            self.segments.remove(0);
            let (from, to) = (seg.first.max(self.acked.saturating_add(1)), seg.next - 1);
            if seg.next > seg.first && from <= to {
                let (count, first) = seg.loss_if_dropped(from, to);
                let g = gap.get_or_insert(Gap {
                    first_dropped_seq: first,
                    last_dropped_seq: to,
                    count: 0,
                    reason: GapReason::SpoolFull,
                });
                g.first_dropped_seq = g.first_dropped_seq.min(first);
                g.last_dropped_seq = to;
                g.count = g.count.saturating_add(count);
            }
        }
        if let Some(g) = &gap {
            tracing::warn!(
                first = g.first_dropped_seq,
                last = g.last_dropped_seq,
                count = g.count,
                "spool full: dropped the oldest unacknowledged events"
            );
        }
        sync_dir(&self.dir)?;
        Ok(gap)
    }

    /// Writes records after the newest one, rolling segments as needed, then syncs.
    fn write<'a>(
        &mut self,
        records: impl Iterator<Item = &'a SpoolRecord>,
    ) -> Result<u64, SpoolError> {
        let mut buf = Vec::new();
        for record in records {
            let len = encoded_len(record);
            let roll = match self.segments.last() {
                None => true,
                Some(s) => s.next > s.first && s.bytes + len > self.opts.segment_bytes,
            };
            if roll {
                self.flush_active(&mut buf)?;
                self.start_segment()?;
            }
            let seq = self.next_seq;
            encode(seq, record, &mut buf);
            if let Some(seg) = self.segments.last_mut() {
                seg.next = seq + 1;
                seg.bytes += len;
                if let SpoolRecord::Gap(g) = record {
                    seg.gaps.push((seq, *g));
                }
            }
            self.next_seq += 1;
        }
        self.flush_active(&mut buf)?;
        Ok(self.next_seq - 1)
    }

    /// Writes `buf` to the active segment and `fdatasync`s it.
    fn flush_active(&mut self, buf: &mut Vec<u8>) -> Result<(), SpoolError> {
        if buf.is_empty() {
            return Ok(());
        }
        let (Some(file), Some(seg)) = (self.active.as_mut(), self.segments.last()) else {
            return Ok(());
        };
        let path = segment_path(&self.dir, seg.first);
        file.write_all(buf).map_err(io_err(&path))?;
        file.sync_data().map_err(io_err(&path))?;
        buf.clear();
        Ok(())
    }

    /// Creates a segment named `next_seq`, durable (header and directory entry).
    fn start_segment(&mut self) -> Result<(), SpoolError> {
        let first = self.next_seq;
        let path = segment_path(&self.dir, first);
        let mut file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err(&path))?;
        file.write_all(MAGIC).map_err(io_err(&path))?;
        file.sync_data().map_err(io_err(&path))?;
        sync_dir(&self.dir)?;
        self.segments.push(Segment {
            first,
            next: first,
            bytes: HEADER_LEN,
            gaps: Vec::new(),
        });
        self.active = Some(file);
        Ok(())
    }

    /// Records that the server has durably stored everything up to `seq`: persists it and
    /// deletes the older segments it covers entirely (never the newest).
    pub fn ack(&mut self, seq: u64) -> Result<(), SpoolError> {
        if seq <= self.acked {
            return Ok(());
        }
        if seq >= self.next_seq {
            return Err(SpoolError::AckBeyondEnd {
                seq,
                last: self.next_seq - 1,
            });
        }
        let keep_from = self
            .segments
            .iter()
            .position(|s| s.next - 1 > seq)
            .unwrap_or(self.segments.len())
            .min(self.segments.len().saturating_sub(1));
        for seg in self.segments.drain(..keep_from) {
            let path = segment_path(&self.dir, seg.first);
            fs::remove_file(&path).map_err(io_err(&path))?;
        }
        let path = self.dir.join("ack");
        let tmp = self.dir.join("ack.tmp");
        let mut bytes = seq.to_le_bytes().to_vec();
        bytes.extend_from_slice(&CRC.checksum(&seq.to_le_bytes()).to_le_bytes());
        (|| {
            let mut f = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_data()?;
            fs::rename(&tmp, &path)
        })()
        .map_err(io_err(&path))?;
        sync_dir(&self.dir)?;
        self.acked = seq;
        Ok(())
    }

    /// Up to `max` records from `from_seq` on (never acknowledged ones), in seq order.
    pub fn pending(
        &mut self,
        from_seq: u64,
        max: usize,
    ) -> Result<Vec<(u64, SpoolRecord)>, SpoolError> {
        let mut out = Vec::new();
        let mut want = from_seq.max(self.acked.saturating_add(1));
        let mut i = self.segments.partition_point(|s| s.next <= want);
        while out.len() < max && i < self.segments.len() {
            let seg = &self.segments[i];
            want = want.max(seg.first);
            let path = segment_path(&self.dir, seg.first);
            let offset = match self.cursor {
                Some(c) if c.seq == want && c.first == seg.first => c.offset,
                _ => HEADER_LEN,
            };
            let mut file = File::open(&path).map_err(io_err(&path))?;
            file.seek(SeekFrom::Start(offset)).map_err(io_err(&path))?;
            let mut reader = BufReader::new(file.take(seg.bytes - offset));
            let mut pos = offset;
            let mut seq = if offset == HEADER_LEN {
                seg.first
            } else {
                want
            };
            while seq < seg.next && out.len() < max {
                let (record, len) = match read_record(&mut reader, seq) {
                    Ok(Outcome::Record(r, len)) => (r, len),
                    Ok(Outcome::End) => break,
                    Ok(Outcome::Damaged(message)) => {
                        return Err(SpoolError::Corrupt { path, message });
                    }
                    Err(e) => return Err(io_err(&path)(e)),
                };
                pos += len;
                if seq >= want {
                    out.push((seq, record));
                }
                seq += 1;
            }
            self.cursor = Some(Cursor {
                seq,
                first: seg.first,
                offset: pos,
            });
            want = seq;
            i += 1;
        }
        Ok(out)
    }

    /// Current state.
    pub fn stats(&self) -> SpoolStats {
        stats(&self.segments, self.acked, self.next_seq - 1)
    }

    fn used_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }
}

/// Reads the state of the spool in `dir` without changing or locking it (for `tyrd
/// status` while the daemon runs). A missing directory is an empty spool.
pub fn inspect(dir: &Path) -> Result<SpoolStats, SpoolError> {
    if !dir.exists() {
        return Ok(SpoolStats::default());
    }
    let scan = scan_dir(dir)?;
    let segments: Vec<Segment> = scan.segments.into_iter().map(|s| s.seg).collect();
    let last = segments.last().map_or(0, |s| s.next - 1).max(scan.acked);
    Ok(stats(&segments, scan.acked, last))
}

fn stats(segments: &[Segment], acked: u64, last_seq: u64) -> SpoolStats {
    SpoolStats {
        last_seq,
        acked_seq: acked,
        pending: segments
            .iter()
            .map(|s| s.next.saturating_sub(s.first.max(acked + 1)))
            .sum(),
        bytes: segments.iter().map(|s| s.bytes).sum(),
        segments: segments.len(),
    }
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.seg"))
}

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Cuts a damaged segment to its valid length (rewriting the header if it is missing).
fn repair(path: &Path, valid_len: u64) -> io::Result<()> {
    let mut f = OpenOptions::new().write(true).open(path)?;
    if valid_len == 0 {
        f.set_len(0)?;
        f.write_all(MAGIC)?;
    } else {
        f.set_len(valid_len)?;
    }
    f.sync_all()
}

fn encoded_len(record: &SpoolRecord) -> u64 {
    let payload = match record {
        SpoolRecord::Event(p) => p.len(),
        SpoolRecord::Gap(_) => GAP_PAYLOAD,
    };
    FRAME_LEN + (BODY_PREFIX + payload) as u64
}

fn encode(seq: u64, record: &SpoolRecord, out: &mut Vec<u8>) {
    let mut body = Vec::with_capacity(BODY_PREFIX + GAP_PAYLOAD);
    match record {
        SpoolRecord::Event(p) => {
            body.push(TYPE_EVENT);
            body.extend_from_slice(&seq.to_le_bytes());
            body.extend_from_slice(p);
        }
        SpoolRecord::Gap(g) => {
            body.push(TYPE_GAP);
            body.extend_from_slice(&seq.to_le_bytes());
            body.extend_from_slice(&g.first_dropped_seq.to_le_bytes());
            body.extend_from_slice(&g.last_dropped_seq.to_le_bytes());
            body.extend_from_slice(&g.count.to_le_bytes());
            body.push(g.reason.code());
        }
    }
    // Payloads are bounded by MAX_PAYLOAD, so the length fits in a u32.
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&CRC.checksum(&body).to_le_bytes());
    out.extend_from_slice(&body);
}

/// Outcome of reading one record.
enum Outcome {
    /// A valid record and its encoded length.
    Record(SpoolRecord, u64),
    /// Clean end of data.
    End,
    /// A torn or damaged record.
    Damaged(String),
}

/// Reads as many bytes as available up to `buf.len()`; returns the number read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn read_record(r: &mut impl Read, expected_seq: u64) -> io::Result<Outcome> {
    let mut frame = [0u8; FRAME_LEN as usize];
    match read_full(r, &mut frame)? {
        0 => return Ok(Outcome::End),
        n if n < frame.len() => return Ok(Outcome::Damaged("short record header".into())),
        _ => {}
    }
    let [l0, l1, l2, l3, c0, c1, c2, c3] = frame;
    let len = u32::from_le_bytes([l0, l1, l2, l3]) as usize;
    let crc = u32::from_le_bytes([c0, c1, c2, c3]);
    if !(BODY_PREFIX..=BODY_PREFIX + MAX_PAYLOAD).contains(&len) {
        return Ok(Outcome::Damaged(format!("bad record length {len}")));
    }
    let mut body = vec![0u8; len];
    if read_full(r, &mut body)? < len {
        return Ok(Outcome::Damaged("short record".into()));
    }
    if CRC.checksum(&body) != crc {
        return Ok(Outcome::Damaged("CRC mismatch".into()));
    }
    let seq = le_u64(&body[1..9]);
    if seq != expected_seq {
        return Ok(Outcome::Damaged(format!(
            "record has seq {seq}, expected {expected_seq}"
        )));
    }
    let payload = &body[BODY_PREFIX..];
    let record = match (body[0], payload.len()) {
        (TYPE_EVENT, _) => SpoolRecord::Event(payload.to_vec()),
        (TYPE_GAP, GAP_PAYLOAD) => match GapReason::from_code(payload[24]) {
            Some(reason) => SpoolRecord::Gap(Gap {
                first_dropped_seq: le_u64(&payload[0..8]),
                last_dropped_seq: le_u64(&payload[8..16]),
                count: le_u64(&payload[16..24]),
                reason,
            }),
            None => return Ok(Outcome::Damaged("unknown gap reason".into())),
        },
        (t, _) => return Ok(Outcome::Damaged(format!("unknown record type {t}"))),
    };
    Ok(Outcome::Record(record, FRAME_LEN + len as u64))
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// One segment as found on disk.
struct Scanned {
    seg: Segment,
    /// Length of the file.
    file_len: u64,
    /// Length up to the end of the last valid record (0 if the header is missing).
    valid_len: u64,
    /// Why the valid part ends before the file does.
    damage: Option<String>,
}

struct DirScan {
    segments: Vec<Scanned>,
    acked: u64,
}

/// Reads the spool directory without changing it.
fn scan_dir(dir: &Path) -> Result<DirScan, SpoolError> {
    let mut firsts = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".seg")) else {
            continue;
        };
        if stem.len() == 20
            && let Ok(first) = stem.parse::<u64>()
            && first > 0
        {
            firsts.push(first);
        }
    }
    firsts.sort_unstable();
    let mut segments: Vec<Scanned> = Vec::with_capacity(firsts.len());
    for first in firsts {
        let path = segment_path(dir, first);
        if let Some(prev) = segments.last()
            && first < prev.seg.next
        {
            return Err(SpoolError::Corrupt {
                path,
                message: format!(
                    "overlaps the previous segment, which ends at seq {}",
                    prev.seg.next - 1
                ),
            });
        }
        match scan_segment(&path, first) {
            Ok(s) => segments.push(s),
            // Deleted by the daemon while `tyrd status` was looking.
            Err(SpoolError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(DirScan {
        segments,
        acked: read_ack(dir),
    })
}

fn scan_segment(path: &Path, first: u64) -> Result<Scanned, SpoolError> {
    let file = File::open(path).map_err(io_err(path))?;
    let file_len = file.metadata().map_err(io_err(path))?.len();
    let mut reader = BufReader::new(file);
    let mut seg = Segment {
        first,
        next: first,
        bytes: HEADER_LEN,
        gaps: Vec::new(),
    };
    let mut magic = [0u8; MAGIC.len()];
    let n = read_full(&mut reader, &mut magic).map_err(io_err(path))?;
    if n < MAGIC.len() {
        // Created but its header never reached the disk: an empty segment.
        return Ok(Scanned {
            seg,
            file_len,
            valid_len: 0,
            damage: Some("missing header".into()),
        });
    }
    if &magic != MAGIC {
        return Err(SpoolError::Corrupt {
            path: path.to_owned(),
            message: "not a tyrd spool segment (bad magic)".into(),
        });
    }
    let damage = loop {
        match read_record(&mut reader, seg.next).map_err(io_err(path))? {
            Outcome::Record(record, len) => {
                if let SpoolRecord::Gap(g) = record {
                    seg.gaps.push((seg.next, g));
                }
                seg.next += 1;
                seg.bytes += len;
            }
            Outcome::End => break None,
            Outcome::Damaged(why) => break Some(why),
        }
    };
    Ok(Scanned {
        valid_len: seg.bytes,
        seg,
        file_len,
        damage,
    })
}

/// The persisted acknowledgement; a missing or damaged file counts as nothing acknowledged
/// (resending is harmless, the server is idempotent on seq).
fn read_ack(dir: &Path) -> u64 {
    let path = dir.join("ack");
    let Ok(bytes) = fs::read(&path) else { return 0 };
    if bytes.len() == 12 && CRC.checksum(&bytes[..8]).to_le_bytes() == bytes[8..12] {
        return le_u64(&bytes[..8]);
    }
    tracing::warn!(path = %path.display(), "spool: damaged ack file ignored");
    0
}

#[cfg(test)]
mod tests;
