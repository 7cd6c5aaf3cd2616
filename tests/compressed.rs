//! Compressed and damaged captures: gzip and zstd replay exactly like the plain file, found
//! by their magic bytes; a capture cut mid-record is a counted warning with exit status 0;
//! corrupt compressed data is an error naming the file; and no progress display when
//! standard error is not a terminal.

mod common;

use outflow::config::Config;
use outflow::replay::ReplayReport;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn outflow() -> Command {
    Command::new(env!("CARGO_BIN_EXE_outflow"))
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn zstd(bytes: &[u8]) -> Vec<u8> {
    zstd::encode_all(bytes, 3).unwrap()
}

/// A generated mix of DNS, web-like and bulk TCP (IPv4 and IPv6, some VLAN-tagged): about
/// 2 MB, some 2 000 records.
fn mixed(dir: &Path) -> (PathBuf, Vec<u8>) {
    let path = dir.join("mixed.pcap");
    outflow::gen::write_mixed(&path, 2_000_000, 3).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    (path, bytes)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Byte offset of record `n` (0-based) of a classic pcap.
fn record_offset(bytes: &[u8], n: usize) -> usize {
    let (head, recs) = common::pcap_records(bytes);
    head.len() + recs[..n].iter().map(Vec::len).sum::<usize>()
}

fn replay(path: &Path) -> ReplayReport {
    common::replay(&Config::default(), 2, &[path.to_path_buf()])
}

/// Everything a replay produced that must not depend on how its input was stored.
fn assert_same(got: &ReplayReport, want: &ReplayReport, what: &str) {
    let (g, w) = (&got.summary, &want.summary);
    assert!(
        g.reader.read_errors.is_empty(),
        "{what}: {:?}",
        g.reader.read_errors
    );
    assert!(
        g.reader.truncated.is_empty(),
        "{what}: {:?}",
        g.reader.truncated
    );
    assert_eq!(g.reader.frames, w.reader.frames, "{what}: frames");
    assert_eq!(
        g.reader.wire_bytes, w.reader.wire_bytes,
        "{what}: wire bytes"
    );
    assert_eq!(g.reader.decoded, w.reader.decoded, "{what}: decoded");
    assert_eq!(
        g.reader.decode_errors, w.reader.decode_errors,
        "{what}: decode errors"
    );
    // The peak of open flows (sampled at each insert) depends on when the workers sweep
    // expired flows, which follows how batches are cut and timed, not the data: all else
    // must match.
    let (mut gf, mut wf) = (g.flows, w.flows);
    (gf.peak_flows, wf.peak_flows) = (0, 0);
    assert_eq!(gf, wf, "{what}: worker counters");
    assert_eq!(g.records, w.records, "{what}: flow records");
    assert_eq!(g.dns_records, w.dns_records, "{what}: DNS transactions");
    assert_eq!(g.alerts, w.alerts, "{what}: alerts");
    assert_eq!(got.flows, want.flows, "{what}: flow records");
    assert_eq!(got.dns_records, want.dns_records, "{what}: DNS records");
    assert_eq!(got.alerts, want.alerts, "{what}: alerts");
}

#[test]
fn gzip_and_zstd_replay_exactly_like_the_plain_file() {
    let dir = tempfile::tempdir().unwrap();
    let (plain, bytes) = mixed(dir.path());
    let want = replay(&plain);
    assert!(want.summary.records > 100 && want.summary.dns_records > 10);
    assert!(want.summary.reader.truncated.is_empty() && want.summary.reader.read_errors.is_empty());

    // Two gzip members, as `cat a.gz b.gz` or a parallel gzip writes them.
    let half = bytes.len() / 2;
    let mut members = gzip(&bytes[..half]);
    members.extend(gzip(&bytes[half..]));
    let inputs = [
        ("mixed.pcap.gz", gzip(&bytes)),
        ("mixed.pcap.zst", zstd(&bytes)),
        ("members.pcap.gz", members),
        // Found by its magic bytes, not its name.
        ("capture.bin", zstd(&bytes)),
    ];
    for (name, data) in inputs {
        let path = write(dir.path(), name, &data);
        assert_same(&replay(&path), &want, name);
    }
}

#[test]
fn a_gzipped_pcapng_replays_like_the_plain_one() {
    let Some(shared) = common::shared_pcaps() else {
        return;
    };
    let pcapng = shared.join("zeek/scripts__base__protocols__tcp__krb-tcp-tso/kerberos_tso.pcapng");
    if !pcapng.is_file() {
        eprintln!("skipping: {} is absent", pcapng.display());
        return;
    }
    let bytes = std::fs::read(&pcapng).unwrap();
    let want = replay(&pcapng);
    assert!(want.summary.reader.frames > 0 && want.summary.records > 0);
    let dir = tempfile::tempdir().unwrap();
    for (name, data) in [
        ("kerberos_tso.pcapng.gz", gzip(&bytes)),
        ("kerberos_tso.pcapng.zst", zstd(&bytes)),
    ] {
        let path = write(dir.path(), name, &data);
        assert_same(&replay(&path), &want, name);
    }
}

/// Replays `input` with flow records to a file; returns (exit code, flow records, stderr).
fn replay_cli(dir: &Path, extra: &[&str], input: &Path) -> (Option<i32>, String, String) {
    let flows = dir.join("flows.json");
    let _ = std::fs::remove_file(&flows);
    let out = outflow()
        .args(["replay", "--workers", "2", "--flows-out"])
        .arg(&flows)
        .args(extra)
        .arg(input)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let flows = std::fs::read_to_string(&flows).unwrap_or_default();
    (
        out.status.code(),
        flows,
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn a_capture_cut_mid_record_is_a_counted_warning_with_status_0() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes) = mixed(dir.path());
    let n = 1500;
    let at = record_offset(&bytes, n);
    // What the records before the cut give on their own.
    let prefix = write(dir.path(), "prefix.pcap", &bytes[..at]);
    let (code, want_flows, err) = replay_cli(dir.path(), &["-q"], &prefix);
    assert_eq!(code, Some(0), "{err}");
    assert!(want_flows.lines().count() > 50, "{want_flows}");

    // Cut inside the record's data, and inside its 16-byte header: as tcpdump leaves a file
    // copied while it was still writing.
    for (name, cut) in [("cut-data.pcap", at + 16 + 10), ("cut-header.pcap", at + 7)] {
        let path = write(dir.path(), name, &bytes[..cut]);
        for quiet in [false, true] {
            let extra: &[&str] = if quiet { &["-q"] } else { &[] };
            let (code, flows, err) = replay_cli(dir.path(), extra, &path);
            assert_eq!(code, Some(0), "{name} quiet {quiet}: {err}");
            assert_eq!(flows, want_flows, "{name}: the records before the cut");
            let want = format!(
                "outflow: warning: {}: the capture ends in the middle of a record at byte \
                 offset {at}; the {n} records before it were replayed",
                path.display()
            );
            assert!(err.contains(&want), "{name} quiet {quiet}: {err}");
            assert!(!err.contains("outflow: error"), "{err}");
            assert_eq!(
                err.contains("truncated files 1 (last record cut short"),
                !quiet,
                "{name} quiet {quiet}: {err}"
            );
        }
        // Counted in the summary; not an error.
        let r = replay(&path);
        assert_eq!(r.summary.reader.truncated.len(), 1, "{name}");
        assert!(r.summary.reader.read_errors.is_empty(), "{name}");
        assert_eq!(r.summary.reader.frames, n as u64, "{name}");
    }

    // The same cut inside a compressed file: the offset is in the decompressed stream.
    let gz = write(dir.path(), "cut.pcap.gz", &gzip(&bytes[..at + 30]));
    let (code, flows, err) = replay_cli(dir.path(), &["-q"], &gz);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(flows, want_flows);
    assert!(
        err.contains(&format!(
            "outflow: warning: {}: the capture ends in the middle of a record at byte offset \
             {at} of the decompressed stream; the {n} records before it were replayed",
            gz.display()
        )),
        "{err}"
    );
}

#[test]
fn corrupt_compressed_data_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes) = mixed(dir.path());
    let records = common::pcap_records(&bytes).1.len();

    // A wrong CRC-32 in the gzip trailer: every record decompresses, then the check fails.
    let mut bad_crc = gzip(&bytes);
    let crc_at = bad_crc.len() - 8;
    bad_crc[crc_at] ^= 0xff;
    let path = write(dir.path(), "bad-crc.pcap.gz", &bad_crc);
    let (code, _, err) = replay_cli(dir.path(), &[], &path);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "outflow: error: {}: the gzip data is corrupt or cut short after byte {} of the \
             decompressed stream (after {records} records)",
            path.display(),
            bytes.len()
        )),
        "{err}"
    );
    assert!(err.contains("read errors    1"), "{err}");

    // A zstd file cut in the middle (copied while zstd was still writing it).
    let z = zstd(&bytes);
    let path = write(dir.path(), "cut.pcap.zst", &z[..z.len() / 2]);
    let (code, flows, err) = replay_cli(dir.path(), &["-q"], &path);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "outflow: error: {}: the zstd data is corrupt or cut short after byte",
            path.display()
        )),
        "{err}"
    );
    assert!(
        !flows.is_empty(),
        "the records before the damage are replayed"
    );
    // Reported once, as the error (not also as a cut record).
    assert_eq!(err.matches("outflow: ").count(), 1, "{err}");

    // Corrupt from the first bytes: refused before anything runs, like any unreadable file.
    let path = write(dir.path(), "junk.pcap.gz", b"\x1f\x8b not really gzip");
    let (code, _, err) = replay_cli(dir.path(), &[], &path);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "cannot open capture file {}: gzip data:",
            path.display()
        )),
        "{err}"
    );
}

/// The demo capture was cut by a 96-byte snaplen: through a pipe, whose position cannot be
/// asked, the count of record offsets must survive records at the snaplen.
#[test]
fn a_corrupt_record_in_a_compressed_file_has_its_offset_in_the_decompressed_stream() {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("pcaps/demo.pcap");
    let mut bytes = std::fs::read(demo).unwrap();
    let at = record_offset(&bytes, 10_000);
    bytes[at + 8..at + 12].copy_from_slice(&u32::MAX.to_le_bytes()); // caplen
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "corrupt.pcap.gz", &gzip(&bytes));
    let (code, _, err) = replay_cli(dir.path(), &["-q"], &path);
    assert_eq!(code, Some(1), "{err}");
    let want = format!(
        "outflow: error: {}: cannot read the record at byte offset {at} of the decompressed \
         stream (after 10000 records)",
        path.display()
    );
    assert!(err.contains(&want), "{err}");
}

/// A replay running longer than the 2 s after which progress appears on a terminal, with
/// standard error a pipe: nothing but the summary. The gzip capture arrives on standard
/// input in two parts, 2.5 s apart, and still replays like the file.
#[test]
fn no_progress_when_standard_error_is_not_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let (plain, bytes) = mixed(dir.path());
    let (code, want_flows, err) = replay_cli(dir.path(), &["-q"], &plain);
    assert_eq!(code, Some(0), "{err}");
    let gz = gzip(&bytes);
    let flows = dir.path().join("stdin-flows.json");
    let started = std::time::Instant::now();
    let mut child = outflow()
        .args(["replay", "--workers", "2", "--flows-out"])
        .arg(&flows)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&gz[..gz.len() / 4]).unwrap();
        stdin.flush().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2500));
        // Well over 1024 packets after the 2 s: progress would have been drawn by now.
        stdin.write_all(&gz[gz.len() / 4..]).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(started.elapsed() >= std::time::Duration::from_secs(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.starts_with("outflow replay summary\n"), "{err}");
    for progress in ["\r", "\x1b[", " read, ", " left"] {
        assert!(!err.contains(progress), "{progress:?} in {err}");
    }
    assert_eq!(std::fs::read_to_string(&flows).unwrap(), want_flows);
}
