#![no_main]
// The body is mailguard::fuzzing::ocf, shared with tests/fuzz_replay.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| mailguard::fuzzing::ocf(data));
