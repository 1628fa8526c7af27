//! Replays the fuzz corpus and every crash the fuzzer found, through the same target bodies
//! the fuzz targets run (`mailguard::fuzzing`), so `make test` keeps them fixed without
//! nightly or libFuzzer. Layout (see fuzz/README.md):
//!
//! - `fuzz/corpus/<target>/*`: the committed, minimised seed corpus of each target;
//! - `fuzz/regressions/<target>/*`: every crash found, minimised, kept after its fix.
//!
//! libFuzzer runs the targets with `-malloc_limit_mb=64`; here a counting allocator checks the
//! same bound, so an allocation bomb kept as a regression fails `cargo test` too (where it would
//! otherwise just succeed, memory being plentiful).
//!
//! `MAILGUARD_WRITE_FUZZ_SEEDS=1 cargo test --test fuzz_replay` (re)writes the generated seeds
//! (`fuzz/corpus/<target>/seed-*`) from `mailguard::fuzzing::seeds`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use mailguard::fuzzing::{seeds, TARGETS};

/// `make fuzz`'s `-malloc_limit_mb`.
const MALLOC_LIMIT: usize = 64 << 20;

/// The system allocator, remembering the largest single allocation since the last reset.
struct Largest;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: delegates every call to `System` unchanged; only records sizes.
unsafe impl GlobalAlloc for Largest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Largest = Largest;

/// One input at a time, so the largest allocation is this input's.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs `input` through `body`; panics, naming `what`, if it allocated more than the limit at
/// once.
fn run(body: fn(&[u8]), input: &[u8], what: &dyn std::fmt::Display) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    LARGEST.store(0, Ordering::Relaxed);
    body(input);
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(
        largest <= MALLOC_LIMIT,
        "{what}: allocated {largest} bytes at once (limit {MALLOC_LIMIT})"
    );
}

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
            run(body, &input, &f.display());
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
            let path = dir.join(format!("seed-{i:02}"));
            run(body, input, &path.display());
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
