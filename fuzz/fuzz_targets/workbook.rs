//! `xxdc_intake::parse::fuzzing` target `workbook` (what it covers is said there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    xxdc_intake::parse::fuzzing::run("workbook", data);
});
