//! Replays the fuzz corpus and every crash the fuzzer found, through the same target bodies
//! the fuzz targets run (`mailguard::fuzzing`), so `make test` keeps them fixed without
//! nightly or libFuzzer. Layout (see fuzz/README.md):
//!
//! - `fuzz/corpus/<target>/*`: the committed, minimised seed corpus of each target;
//! - `fuzz/regressions/<target>/*`: every crash found, minimised, kept after its fix.
//!
//! `MAILGUARD_WRITE_FUZZ_SEEDS=1 cargo test --test fuzz_replay` (re)writes the generated seeds
//! (`fuzz/corpus/<target>/seed-*`) from `mailguard::fuzzing::seeds`.

use std::fs;
use std::path::{Path, PathBuf};

use mailguard::fuzzing::{seeds, TARGETS};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn target(name: &str) -> fn(&[u8]) {
    TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no fuzz target {name}"))
        .1
}

/// Runs every file of `dir/<target>/` through its target; returns how many ran.
fn replay(dir: &Path) -> usize {
    let mut ran = 0;
    let Ok(targets) = fs::read_dir(dir) else {
        return 0;
    };
    for t in targets {
        let t = t.expect("read fuzz dir");
        let name = t.file_name().into_string().expect("UTF-8 target name");
        let body = target(&name);
        let mut files: Vec<_> = fs::read_dir(t.path())
            .expect("read target dir")
            .map(|f| f.expect("read entry").path())
            .collect();
        files.sort();
        for f in files {
            let input = fs::read(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            // A panic names the file, so a failure is one `cargo fuzz run <t> <file>` away.
            eprintln!("replaying {}", f.display());
            body(&input);
            ran += 1;
        }
    }
    ran
}

#[test]
fn the_committed_corpus_replays() {
    let ran = replay(&fuzz_dir().join("corpus"));
    assert!(ran > 0, "no corpus under fuzz/corpus");
}

#[test]
fn every_crash_found_stays_fixed() {
    replay(&fuzz_dir().join("regressions"));
}

#[test]
fn the_generated_seeds_pass_and_are_committed() {
    let write = std::env::var_os("MAILGUARD_WRITE_FUZZ_SEEDS").is_some();
    for (name, inputs) in seeds() {
        let body = target(name);
        let dir = fuzz_dir().join("corpus").join(name);
        for (i, input) in inputs.iter().enumerate() {
            body(input);
            let path = dir.join(format!("seed-{i:02}"));
            if write {
                fs::create_dir_all(&dir).expect("create corpus dir");
                fs::write(&path, input).expect("write seed");
            } else {
                let committed = fs::read(&path).unwrap_or_default();
                assert!(
                    committed == *input,
                    "{} is missing or stale: MAILGUARD_WRITE_FUZZ_SEEDS=1 cargo test --test fuzz_replay",
                    path.display()
                );
            }
        }
    }
}
