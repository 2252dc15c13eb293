use super::*;
use std::collections::BTreeSet;
use std::io::BufRead;
use std::process::{Command, Stdio};

fn ev(text: &str) -> SpoolRecord {
    SpoolRecord::Event(text.as_bytes().to_vec())
}

fn events(prefix: &str, n: usize) -> Vec<SpoolRecord> {
    (0..n).map(|i| ev(&format!("{prefix}-{i}"))).collect()
}

fn big() -> SpoolOptions {
    SpoolOptions::with_capacity(64 << 20)
}

fn small_segments(segment_bytes: u64, capacity_bytes: u64) -> SpoolOptions {
    SpoolOptions {
        capacity_bytes,
        segment_bytes,
    }
}

fn all(spool: &mut Spool) -> Vec<(u64, SpoolRecord)> {
    spool.pending(0, usize::MAX).expect("pending")
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .expect("ls")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

#[test]
fn numbering_starts_at_one_and_continues_across_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut s = Spool::open(dir.path(), big()).expect("open");
        assert_eq!(s.append_batch(&[]).expect("empty"), 0);
        assert_eq!(s.append_batch(&events("a", 3)).expect("append"), 3);
        assert_eq!(s.append_batch(&events("b", 2)).expect("append"), 5);
    }
    let mut s = Spool::open(dir.path(), big()).expect("reopen");
    assert_eq!(s.stats().last_seq, 5);
    assert_eq!(s.append_batch(&[ev("c")]).expect("append"), 6);
    let got = all(&mut s);
    let seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
    assert_eq!(got[3].1, ev("b-0"));
    assert_eq!(got[5].1, ev("c"));
}

#[test]
fn torn_tail_is_truncated_and_numbering_continues_after_the_last_good_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut s = Spool::open(dir.path(), big()).expect("open");
        s.append_batch(&events("a", 4)).expect("append");
    }
    let seg = segment_files(dir.path()).pop().expect("a segment");
    let len = fs::metadata(&seg).expect("stat").len();
    let f = OpenOptions::new().write(true).open(&seg).expect("open seg");
    f.set_len(len - 3).expect("truncate mid-record");
    drop(f);

    let mut s = Spool::open(dir.path(), big()).expect("reopen after torn tail");
    assert_eq!(s.stats().last_seq, 3);
    assert_eq!(s.append_batch(&[ev("new")]).expect("append"), 4);
    let got = all(&mut s);
    assert_eq!(got.len(), 4);
    assert_eq!(got[3], (4, ev("new")));
}

#[test]
fn garbage_and_bit_flips_at_the_tail_are_cut_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut s = Spool::open(dir.path(), big()).expect("open");
        s.append_batch(&events("a", 3)).expect("append");
    }
    let seg = segment_files(dir.path()).pop().expect("a segment");
    // Flip a payload byte of the last record, then append garbage.
    let mut bytes = fs::read(&seg).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    bytes.extend_from_slice(&[0xff; 37]);
    fs::write(&seg, &bytes).expect("write");

    let mut s = Spool::open(dir.path(), big()).expect("reopen");
    assert_eq!(s.stats().last_seq, 2);
    assert_eq!(all(&mut s).len(), 2);
    // A length prefix claiming a huge record is damage, not an allocation.
    drop(s);
    let mut bytes = fs::read(&seg).expect("read");
    bytes.extend_from_slice(&u32::MAX.to_le_bytes());
    bytes.extend_from_slice(&[0; 20]);
    fs::write(&seg, &bytes).expect("write");
    let s = Spool::open(dir.path(), big()).expect("reopen");
    assert_eq!(s.stats().last_seq, 2);
}

#[test]
fn a_segment_without_header_is_repaired_and_a_foreign_file_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut s = Spool::open(dir.path(), big()).expect("open");
        s.append_batch(&events("a", 2)).expect("append");
    }
    // A crash right after creating the next segment.
    fs::write(segment_path(dir.path(), 3), b"TYR").expect("write");
    fs::write(dir.path().join("notes.txt"), b"ignored").expect("write");
    {
        let mut s = Spool::open(dir.path(), big()).expect("reopen");
        assert_eq!(s.append_batch(&[ev("x")]).expect("append"), 3);
    }
    fs::write(segment_path(dir.path(), 100), b"definitely not a segment").expect("write");
    let err = Spool::open(dir.path(), big()).err().expect("bad magic");
    assert!(matches!(err, SpoolError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("bad magic"), "{err}");
}

#[test]
fn damage_in_an_older_segment_is_reported_as_a_corrupt_gap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = small_segments(128, 1 << 20);
    {
        let mut s = Spool::open(dir.path(), opts).expect("open");
        for i in 0..10 {
            s.append_batch(&[ev(&format!("event-number-{i:04}-padding-padding"))])
                .expect("append");
        }
    }
    let files = segment_files(dir.path());
    assert!(files.len() >= 3, "{files:?}");
    // Damage the first record of the first segment: all of it is lost.
    let mut bytes = fs::read(&files[0]).expect("read");
    bytes[HEADER_LEN as usize + 12] ^= 1;
    fs::write(&files[0], &bytes).expect("write");
    let second_first: u64 = files[1]
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .expect("name");

    let mut s = Spool::open(dir.path(), opts).expect("reopen");
    let got = all(&mut s);
    let (gap_seq, gap) = got.last().cloned().expect("records");
    assert_eq!(gap_seq, 11);
    assert_eq!(
        gap,
        SpoolRecord::Gap(Gap {
            first_dropped_seq: 1,
            last_dropped_seq: second_first - 1,
            count: second_first - 1,
            reason: GapReason::Corrupt,
        })
    );
    assert_eq!(got[0].0, second_first);
}

#[test]
fn overlapping_segments_are_an_error_not_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut s = Spool::open(dir.path(), big()).expect("open");
        s.append_batch(&events("a", 5)).expect("append");
    }
    let seg = segment_files(dir.path()).pop().expect("segment");
    fs::copy(&seg, segment_path(dir.path(), 3)).expect("copy");
    let err = Spool::open(dir.path(), big()).err().expect("overlap");
    assert!(err.to_string().contains("overlaps"), "{err}");
}

#[test]
fn ack_deletes_covered_segments_and_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = small_segments(200, 1 << 20);
    let mut s = Spool::open(dir.path(), opts).expect("open");
    for b in 0..20 {
        s.append_batch(&events(&format!("batch-{b:02}"), 3))
            .expect("append");
    }
    let before = segment_files(dir.path()).len();
    assert!(before > 5, "{before}");
    s.ack(30).expect("ack");
    let after = segment_files(dir.path());
    assert!(after.len() < before, "{} !< {before}", after.len());
    // The oldest remaining segment still holds an unacknowledged record.
    let oldest: u64 = after[0]
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .expect("name");
    assert!(oldest <= 31);
    assert_eq!(s.pending(1, 1).expect("pending")[0].0, 31);
    assert_eq!(s.stats().pending, 30);
    assert!(matches!(
        s.ack(61),
        Err(SpoolError::AckBeyondEnd { seq: 61, last: 60 })
    ));
    s.ack(10).expect("an older ack is a no-op");
    drop(s);

    let mut s = Spool::open(dir.path(), opts).expect("reopen");
    assert_eq!(s.stats().acked_seq, 30);
    assert_eq!(s.pending(0, 1).expect("pending")[0].0, 31);
    s.ack(60).expect("ack all");
    assert_eq!(
        segment_files(dir.path()).len(),
        1,
        "the newest segment is kept"
    );
    assert_eq!(s.stats().pending, 0);
    drop(s);
    let mut s = Spool::open(dir.path(), opts).expect("reopen");
    assert!(all(&mut s).is_empty());
    assert_eq!(s.append_batch(&[ev("next")]).expect("append"), 61);
}

#[test]
fn a_damaged_ack_file_means_resending_not_renumbering() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut s = Spool::open(dir.path(), big()).expect("open");
        s.append_batch(&events("a", 4)).expect("append");
        s.ack(4).expect("ack");
    }
    fs::write(dir.path().join("ack"), b"junk").expect("write");
    let mut s = Spool::open(dir.path(), big()).expect("reopen");
    assert_eq!(s.stats().acked_seq, 0);
    assert_eq!(all(&mut s).len(), 4);
    assert_eq!(s.append_batch(&[ev("b")]).expect("append"), 5);
}

#[test]
fn reading_in_small_steps_interleaved_with_appends_sees_every_record_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = Spool::open(dir.path(), small_segments(300, 1 << 20)).expect("open");
    let mut expected = Vec::new();
    let mut seen = Vec::new();
    let mut next = 1;
    for b in 0..30 {
        let batch = events(&format!("b{b}"), b % 4 + 1);
        expected.extend(batch.iter().cloned());
        s.append_batch(&batch).expect("append");
        let got = s.pending(next, 3).expect("pending");
        if let Some((last, _)) = got.last() {
            next = last + 1;
        }
        seen.extend(got);
    }
    loop {
        let got = s.pending(next, 2).expect("pending");
        let Some((last, _)) = got.last() else { break };
        next = last + 1;
        seen.extend(got);
    }
    let seqs: Vec<u64> = seen.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (1..=expected.len() as u64).collect::<Vec<_>>());
    let records: Vec<SpoolRecord> = seen.into_iter().map(|(_, r)| r).collect();
    assert_eq!(records, expected);
    // Random access still works after sequential reads.
    assert_eq!(
        s.pending(5, 1).expect("pending")[0],
        (5, expected[4].clone())
    );
}

/// Checks that every seq up to the last is present or covered by a spool_full gap, and
/// that the events present plus the gap counts account for every event put in.
fn check_accounting(s: &mut Spool, events_in: u64) {
    let got = all(s);
    let present: BTreeSet<u64> = got.iter().map(|(q, _)| *q).collect();
    let mut covered = present.clone();
    let mut event_records = 0;
    let mut gap_total = 0;
    for (_, r) in &got {
        match r {
            SpoolRecord::Event(_) => event_records += 1,
            SpoolRecord::Gap(g) => {
                gap_total += g.count;
                if g.reason == GapReason::SpoolFull {
                    covered.extend(g.first_dropped_seq..=g.last_dropped_seq);
                }
            }
        }
    }
    let last = s.stats().last_seq;
    let acked = s.stats().acked_seq;
    covered.extend(1..=acked);
    assert_eq!(covered, (1..=last).collect::<BTreeSet<_>>(), "gap-free");
    assert_eq!(
        event_records + gap_total,
        events_in,
        "every event accounted for"
    );
}

#[test]
fn a_full_spool_drops_the_oldest_and_says_exactly_how_many() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = small_segments(1024, 4096);
    let mut s = Spool::open(dir.path(), opts).expect("open");
    let payload = "x".repeat(100);
    let mut total = 0u64;
    let mut first_gap = None;
    for b in 0..40 {
        let batch: Vec<SpoolRecord> = (0..3).map(|i| ev(&format!("{b}-{i}-{payload}"))).collect();
        let last = s.append_batch(&batch).expect("append");
        total += 3;
        assert!(s.stats().bytes <= opts.capacity_bytes, "bound respected");
        if first_gap.is_none() && s.stats().pending < total {
            // The gap record is numbered just before the batch that caused it.
            first_gap = Some(s.pending(last - 3, 1).expect("pending")[0].clone());
        }
    }
    let Some((gap_seq, SpoolRecord::Gap(gap))) = first_gap else {
        panic!("expected a gap record, got {first_gap:?}");
    };
    assert_eq!(gap.reason, GapReason::SpoolFull);
    assert_eq!(gap.first_dropped_seq, 1);
    // Only plain events were dropped, so the count is the size of the range.
    assert_eq!(gap.count, gap.last_dropped_seq);
    let first_left = s.pending(0, 1).expect("pending");
    assert!(first_left[0].0 > gap.last_dropped_seq);
    assert!(gap_seq > gap.last_dropped_seq);
    // The newest events survive.
    let got = all(&mut s);
    assert_eq!(
        got.last().map(|(_, r)| r.clone()),
        Some(ev(&format!("39-2-{payload}")))
    );
    check_accounting(&mut s, total);
}

#[test]
fn dropping_respects_acks_and_carries_dropped_gap_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = small_segments(1024, 4096);
    let mut s = Spool::open(dir.path(), opts).expect("open");
    let payload = "y".repeat(150);
    let mut total = 0u64;
    s.append_batch(&[ev(&payload), ev(&payload)])
        .expect("append");
    total += 2;
    s.ack(1).expect("ack");
    assert_eq!(s.record_ring_drops(7).expect("ring"), 3);
    total += 7;
    let mut first_gap = None;
    for _ in 0..30 {
        let last = s.append_batch(&[ev(&payload)]).expect("append");
        total += 1;
        if first_gap.is_none()
            && let Some((_, SpoolRecord::Gap(g))) = s.pending(last - 1, 1).expect("pending").pop()
            && g.reason == GapReason::SpoolFull
        {
            first_gap = Some(g);
        }
    }
    let first_gap = first_gap.expect("a spool_full gap");
    assert_eq!(first_gap.reason, GapReason::SpoolFull);
    assert_eq!(
        first_gap.first_dropped_seq, 2,
        "acknowledged records are not lost"
    );
    // Seq 2 (an event) and the ring-buffer gap at seq 3 (7 events) were dropped with it.
    let plain = first_gap.last_dropped_seq - first_gap.first_dropped_seq + 1 - 1;
    assert_eq!(first_gap.count, plain + 7);
    // Later drops take over the ranges of the gap records they drop.
    let later: Vec<Gap> = all(&mut s)
        .into_iter()
        .filter_map(|(_, r)| match r {
            SpoolRecord::Gap(g) => Some(g),
            SpoolRecord::Event(_) => None,
        })
        .collect();
    assert!(later.iter().any(|g| g.first_dropped_seq == 2));
    check_accounting(&mut s, total - 1);
}

#[test]
fn ring_buffer_drops_become_gap_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = Spool::open(dir.path(), big()).expect("open");
    s.append_batch(&[ev("a")]).expect("append");
    assert_eq!(s.record_ring_drops(42).expect("ring"), 2);
    drop(s);
    let mut s = Spool::open(dir.path(), big()).expect("reopen");
    assert_eq!(
        all(&mut s)[1],
        (
            2,
            SpoolRecord::Gap(Gap {
                first_dropped_seq: 0,
                last_dropped_seq: 0,
                count: 42,
                reason: GapReason::RingBuffer,
            })
        )
    );
}

#[test]
fn oversized_records_and_batches_are_refused_without_side_effects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = Spool::open(dir.path(), small_segments(1024, 4096)).expect("open");
    let err = s
        .append_batch(&[SpoolRecord::Event(vec![0; MAX_PAYLOAD + 1])])
        .unwrap_err();
    assert!(matches!(err, SpoolError::RecordTooLarge { .. }), "{err}");
    let err = s
        .append_batch(&[SpoolRecord::Event(vec![0; 5000])])
        .unwrap_err();
    assert!(matches!(err, SpoolError::BatchTooLarge { .. }), "{err}");
    assert_eq!(s.stats().last_seq, 0);
    assert_eq!(s.append_batch(&[ev("ok")]).expect("append"), 1);
}

#[test]
fn a_second_writer_is_refused_and_inspect_reads_without_changing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = Spool::open(dir.path(), big()).expect("open");
    s.append_batch(&events("a", 5)).expect("append");
    s.ack(2).expect("ack");
    let err = Spool::open(dir.path(), big()).err().expect("locked");
    assert!(matches!(err, SpoolError::Locked { .. }), "{err}");

    let stats = inspect(dir.path()).expect("inspect");
    assert_eq!(stats, s.stats());
    assert_eq!((stats.last_seq, stats.acked_seq, stats.pending), (5, 2, 3));
    assert_eq!(stats.segments, 1);
    assert_eq!(
        inspect(&dir.path().join("missing")).expect("missing dir"),
        SpoolStats::default()
    );
}

// --- crash safety: a child process appends until it is SIGKILLed -------------------------

const CRASH_ENV: &str = "TYRD_SPOOL_CRASH_DIR";

fn crash_opts() -> SpoolOptions {
    small_segments(2048, 64 << 20)
}

/// Batch `b` of the crash test: deterministic size and contents.
fn crash_batch(b: u64) -> Vec<SpoolRecord> {
    (0..b % 7 + 1)
        .map(|j| ev(&format!("batch {b} record {j}")))
        .collect()
}

/// Child half of `appended_batches_survive_sigkill`; does nothing unless re-executed by it.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CRASH_ENV) else {
        return;
    };
    let mut s = Spool::open(Path::new(&dir), crash_opts()).expect("child open");
    let mut out = io::stdout().lock();
    for b in 0..1_000_000u64 {
        let last = s.append_batch(&crash_batch(b)).expect("child append");
        writeln!(out, "APPENDED {b} {last}").expect("stdout");
        out.flush().expect("stdout");
    }
}

#[test]
fn appended_batches_survive_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(exe)
        .args([
            "pipeline::spool::tests::crash_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = io::BufReader::new(stdout).lines();
    let mut reported: Vec<(u64, u64)> = Vec::new();
    let parse = |line: String| {
        // libtest may print "test NAME ... " on the same line first.
        let start = line.find("APPENDED ")? + "APPENDED ".len();
        let mut parts = line[start..].split(' ');
        let b = parts.next()?.parse().ok()?;
        let last = parts.next()?.parse().ok()?;
        Some((b, last))
    };
    for line in lines.by_ref() {
        if let Some(r) = parse(line.expect("read child")) {
            reported.push(r);
            if reported.len() == 150 {
                child.kill().expect("SIGKILL");
                break;
            }
        }
    }
    // Whatever the child reported before it died also counts as durable.
    for line in lines {
        let Ok(line) = line else { break };
        if let Some(r) = parse(line) {
            reported.push(r);
        }
    }
    let status = child.wait().expect("wait");
    assert!(!status.success(), "the child was killed");
    assert!(reported.len() >= 150, "{}", reported.len());

    let mut s = Spool::open(dir.path(), crash_opts()).expect("reopen after SIGKILL");
    let got = all(&mut s);
    let (last_batch, last_acked_seq) = *reported.last().expect("reports");
    assert!(
        got.len() as u64 >= last_acked_seq,
        "every appended batch is present"
    );
    // Records are numbered 1.. without gaps and hold the batches in order; a batch that was
    // being written when the child died may be present in part.
    // The child may have finished one more batch (and begun another) before reporting it.
    let expected: Vec<SpoolRecord> = (0..=last_batch + 2).flat_map(crash_batch).collect();
    assert!(got.len() <= expected.len(), "{} records", got.len());
    for (i, ((seq, record), want)) in got.iter().zip(expected).enumerate() {
        assert_eq!(*seq, i as u64 + 1);
        assert_eq!(*record, want, "seq {seq}");
    }
    let mut end = 0;
    for (b, last) in &reported {
        end += crash_batch(*b).len() as u64;
        assert_eq!(*last, end, "batch {b} numbering");
    }
    let next = s.append_batch(&[ev("after")]).expect("append after crash");
    assert_eq!(next, got.len() as u64 + 1);
}
