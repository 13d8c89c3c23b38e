//! `xxdc_intake::parse::fuzzing` target `pdf` (what it covers is said there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    xxdc_intake::parse::fuzzing::run("pdf", data);
});
