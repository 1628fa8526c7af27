#![no_main]
// The body is mailguard::fuzzing::owner, shared with tests/fuzz_replay.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| mailguard::fuzzing::owner(data));
