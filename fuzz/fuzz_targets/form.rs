//! `xxdc_intake::parse::fuzzing` target `form` (what it covers is said there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    xxdc_intake::parse::fuzzing::run("form", data);
});
