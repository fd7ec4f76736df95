//! A fuzzing harness for the parsers that read what uploaders send: .deb (ar, control
//! and data tars), control paragraphs and .dsc files, rpm headers, and capability
//! tokens. It runs on stable Rust with no extra tooling: each round takes a real input
//! from `fixtures/` (good and malformed), mutates it, and hands it to the parser; a
//! panic, or one input that takes more than a second of CPU (five in a debug build), is
//! a finding. Findings are written to `target/fuzz-findings/` and fail the test, so that
//! each becomes a fixture in `fixtures/malformed/` and a regression test.
//!
//! Mutations are raw (flip, overwrite with boundary values, insert, delete, duplicate a
//! span, truncate) and, for debs, structural: the control and data tars are unpacked
//! from the ar, mutated as tars, and packed again with gzip, so that the mutations reach
//! the tar and control parsers rather than dying in a decompressor's checksum.
//!
//! `cargo test --release --test fuzz` runs for `CAPREPO_FUZZ_SECONDS` (default 10) over
//! all targets; `CAPREPO_FUZZ_SEED` makes a run repeatable. Each run prints its
//! executions and findings per target.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use caprepo::formats::package_bytes::PackageBytes;

/// xorshift64*: small, fast, and seedable, which is all a mutator needs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const BOUNDARIES: &[u32] = &[
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0x0fff_ffff,
    0xffff_ffff,
];

const TOKENS: &[&[u8]] = &[
    b"\n",
    b"\n\n",
    b"\0",
    b"\r",
    b":",
    b" ",
    b"../",
    b"/",
    b"\x1b",
    b"Package: ",
    b"Version: ",
    b"99999999999999999999:",
    b"Architecture: ",
    b"\n ",
    b"\xff\xfe",
    b"Source: ",
    b"(",
];

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut data = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = data.len();
        match rng.below(8) {
            0 if len > 0 => {
                let at = rng.below(len);
                data[at] ^= 1 << rng.below(8);
            }
            1 if len >= 4 => {
                let at = rng.below(len - 3);
                let value = BOUNDARIES[rng.below(BOUNDARIES.len())];
                let bytes = if rng.below(2) == 0 {
                    value.to_be_bytes()
                } else {
                    value.to_le_bytes()
                };
                data[at..at + 4].copy_from_slice(&bytes);
            }
            2 => {
                let at = rng.below(len + 1);
                let token = TOKENS[rng.below(TOKENS.len())];
                data.splice(at..at, token.iter().copied());
            }
            3 if len > 0 => {
                let at = rng.below(len);
                let end = (at + 1 + rng.below(64)).min(len);
                data.drain(at..end);
            }
            4 if len > 0 => {
                let at = rng.below(len);
                let end = (at + 1 + rng.below(256)).min(len);
                let span = data[at..end].to_vec();
                let to = rng.below(len + 1);
                data.splice(to..to, span);
            }
            5 if len > 0 => data.truncate(rng.below(len)),
            6 if len > 0 => {
                let at = rng.below(len);
                data[at] = rng.next() as u8;
            }
            _ => {
                let at = rng.below(len + 1);
                let digits = "9".repeat(1 + rng.below(30));
                data.splice(at..at, digits.into_bytes());
            }
        }
    }
    data
}

/// An ar archive's members, as (name, bytes); None if it is not one.
fn ar_members(deb: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    let mut rest = deb.strip_prefix(b"!<arch>\n")?;
    let mut out = Vec::new();
    while rest.len() >= 60 {
        let header = &rest[..60];
        let name = String::from_utf8_lossy(&header[..16]).trim().to_string();
        let size: usize = String::from_utf8_lossy(&header[48..58])
            .trim()
            .parse()
            .ok()?;
        let body = rest.get(60..60 + size)?;
        out.push((name, body.to_vec()));
        rest = &rest[(60 + size + size % 2).min(rest.len())..];
    }
    Some(out)
}

fn ar_build(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = b"!<arch>\n".to_vec();
    for (name, body) in members {
        out.extend_from_slice(
            format!(
                "{name:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                0,
                0,
                0,
                100644,
                body.len()
            )
            .as_bytes(),
        );
        out.extend_from_slice(body);
        if body.len() % 2 == 1 {
            out.push(b'\n');
        }
    }
    out
}

fn decompress(name: &str, body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let ok = if name.ends_with(".gz") {
        flate2::read::GzDecoder::new(body)
            .read_to_end(&mut out)
            .is_ok()
    } else if name.ends_with(".xz") {
        liblzma::read::XzDecoder::new(body)
            .read_to_end(&mut out)
            .is_ok()
    } else if name.ends_with(".zst") {
        zstd::stream::read::Decoder::new(body)
            .and_then(|mut d| d.read_to_end(&mut out))
            .is_ok()
    } else {
        out = body.to_vec();
        true
    };
    ok.then_some(out)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = encoder.write_all(data);
    encoder.finish().unwrap_or_default()
}

/// Mutates one tar member of a deb and packs it again with gzip.
fn mutate_deb_inside(rng: &mut Rng, deb: &[u8]) -> Option<Vec<u8>> {
    let mut members = ar_members(deb)?;
    let tars: Vec<usize> = members
        .iter()
        .enumerate()
        .filter(|(_, (n, _))| n.starts_with("control.tar") || n.starts_with("data.tar"))
        .map(|(i, _)| i)
        .collect();
    let index = *tars.get(rng.below(tars.len()))?;
    let (name, body) = &members[index];
    let tar = decompress(name, body)?;
    let mutated = mutate(rng, &tar);
    let stem = name.split(".tar").next().unwrap_or("data").to_string();
    members[index] = (format!("{stem}.tar.gz"), gzip(&mutated));
    if rng.below(8) == 0 {
        // Structure-level: duplicate, drop or reorder members.
        let i = rng.below(members.len());
        match rng.below(3) {
            0 => {
                let copy = members[i].clone();
                members.insert(rng.below(members.len() + 1), copy);
            }
            1 => {
                members.remove(i);
            }
            _ => {
                let j = rng.below(members.len());
                members.swap(i, j);
            }
        }
    }
    Some(ar_build(&members))
}

fn files_in(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_in(&path, extension));
        } else if path.extension().is_some_and(|e| e == extension) {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn corpus(extension: &str) -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    files_in(&root, extension)
        .into_iter()
        .filter_map(|p| std::fs::read(p).ok())
        .filter(|b| b.len() <= 8 * 1024 * 1024)
        .collect()
}

/// The control paragraphs inside the fixture debs, plus the .dsc files.
fn control_corpus(debs: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut out = corpus("dsc");
    for deb in debs {
        let Some(members) = ar_members(deb) else {
            continue;
        };
        for (name, body) in members.iter().filter(|(n, _)| n.starts_with("control.tar")) {
            let Some(tar) = decompress(name, body) else {
                continue;
            };
            let mut archive = tar::Archive::new(tar.as_slice());
            let Ok(entries) = archive.entries() else {
                continue;
            };
            for mut entry in entries.flatten() {
                if entry.path().is_ok_and(|p| p.ends_with("control")) {
                    let mut text = Vec::new();
                    if entry.read_to_end(&mut text).is_ok() {
                        out.push(text);
                    }
                }
            }
        }
    }
    out
}

/// A parser entry point, called with one input; its errors are ignored, only panics count.
type Parse = Box<dyn Fn(&[u8]) + std::panic::RefUnwindSafe>;

struct Target {
    name: &'static str,
    corpus: Vec<Vec<u8>>,
    run: Parse,
    structural: bool,
}

#[derive(Default)]
struct Tally {
    executions: u64,
    findings: Vec<PathBuf>,
}

fn save(target: &str, kind: &str, input: &[u8]) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-findings");
    let _ = std::fs::create_dir_all(&dir);
    let digest = caprepo::util::digest::Digest::of(input).hex();
    let path = dir.join(format!("{target}-{kind}-{}.bin", &digest[..16]));
    let _ = std::fs::write(&path, input);
    path
}

/// CPU time this thread has used: what "slow" is judged on, so a run that shares the
/// machine with builds does not report inputs that merely waited for a core. From
/// `/proc/thread-self/stat` (user and system ticks, at 100 a second).
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    Duration::from_millis(ticks * 10)
}

/// `CAPREPO_FUZZ_REPLAY=DIR`: runs each finding in DIR (named `<target>-...`) through its
/// target once more and prints how long it took and whether it panicked, to tell a real
/// finding from a run starved of CPU.
fn replay(dir: &Path, targets: &[Target]) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    for file in files {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Some(target) = targets
            .iter()
            .find(|t| name.starts_with(&format!("{}-", t.name)))
        else {
            continue;
        };
        let Ok(input) = std::fs::read(&file) else {
            continue;
        };
        let started = Instant::now();
        let outcome = std::panic::catch_unwind(|| (target.run)(&input));
        println!(
            "replay {name}: {:.1?}{}",
            started.elapsed(),
            if outcome.is_err() { " PANIC" } else { "" }
        );
    }
}

#[test]
fn parsers_survive_mutated_real_inputs() {
    let seconds: u64 = std::env::var("CAPREPO_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let seed: u64 = std::env::var("CAPREPO_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
        | 1;
    let debs = corpus("deb");
    let token_root = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
    let token = caprepo::caps::token::issue(
        &token_root,
        vec![caprepo::caps::Right::Upload],
        &"apt/demo/dists/stable/main/binary-amd64".parse().unwrap(),
        0,
        i64::MAX,
    );
    let verifying = token_root.verifying_key();
    let targets = vec![
        Target {
            name: "deb",
            corpus: debs.clone(),
            structural: true,
            run: Box::new(|input: &[u8]| {
                let bytes = Bytes::copy_from_slice(input);
                let _ = caprepo::formats::deb::inspect_deb(
                    PackageBytes::Memory(&bytes),
                    &caprepo::formats::deb::Limits::default(),
                );
            }),
        },
        Target {
            name: "control",
            corpus: control_corpus(&debs),
            structural: false,
            run: Box::new(|input: &[u8]| {
                let _ = caprepo::formats::deb::Control::parse(input);
                let _ = caprepo::formats::deb::Control::parse_dsc(input);
                let _ = caprepo::formats::deb::Control::parse_paragraph(input);
            }),
        },
        Target {
            name: "rpm",
            corpus: corpus("rpm"),
            structural: false,
            run: Box::new(|input: &[u8]| {
                let bytes = Bytes::copy_from_slice(input);
                let _ = caprepo::formats::rpm::inspect_rpm(PackageBytes::Memory(&bytes));
            }),
        },
        Target {
            name: "cap",
            corpus: vec![token.into_bytes()],
            structural: false,
            run: Box::new(move |input: &[u8]| {
                if let Ok(text) = std::str::from_utf8(input)
                    && let Ok(parsed) = caprepo::caps::Token::parse(text)
                {
                    let _ = parsed.verify(&verifying, 1);
                    let _ = parsed.summary();
                    let _ = caprepo::caps::token::redact(text);
                }
            }),
        },
    ];
    if let Ok(dir) = std::env::var("CAPREPO_FUZZ_REPLAY") {
        replay(Path::new(&dir), &targets);
        return;
    }
    let previous_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let budget = Duration::from_secs(seconds) / targets.len() as u32;
    // One input taking this long is a finding (quadratic work, a bomb let through); an
    // unoptimized build of the crate is several times slower, so it gets more.
    let slow = if cfg!(debug_assertions) {
        Duration::from_secs(5)
    } else {
        Duration::from_secs(1)
    };
    let mut rng = Rng(seed);
    let mut report = Vec::new();
    let mut failed = false;
    for target in &targets {
        assert!(
            !target.corpus.is_empty(),
            "{}: no fixtures to start from",
            target.name
        );
        let mut tally = Tally::default();
        let started = Instant::now();
        while started.elapsed() < budget {
            let base = &target.corpus[rng.below(target.corpus.len())];
            let input = if target.structural && rng.below(2) == 0 {
                mutate_deb_inside(&mut rng, base).unwrap_or_else(|| mutate(&mut rng, base))
            } else {
                mutate(&mut rng, base)
            };
            let one = thread_cpu();
            let outcome = std::panic::catch_unwind(|| (target.run)(&input));
            tally.executions += 1;
            if outcome.is_err() {
                tally.findings.push(save(target.name, "panic", &input));
            } else if thread_cpu().saturating_sub(one) > slow {
                tally.findings.push(save(target.name, "slow", &input));
            }
        }
        failed |= !tally.findings.is_empty();
        report.push(format!(
            "fuzz {}: {} executions in {:.1?}, {} finding(s){}",
            target.name,
            tally.executions,
            started.elapsed(),
            tally.findings.len(),
            tally
                .findings
                .iter()
                .map(|p| format!("\n  {}", p.display()))
                .collect::<String>()
        ));
    }
    std::panic::set_hook(previous_hook);
    println!("fuzz seed {seed}");
    for line in &report {
        println!("{line}");
    }
    assert!(
        !failed,
        "fuzz findings (seed {seed}):\n{}",
        report.join("\n")
    );
}
