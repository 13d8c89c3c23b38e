//! Every input the fuzzer once crashed on (`scripts/fuzz`), replayed in
//! process exactly as its target ran it: `tests/fixtures/hostile/fuzz/
//! TARGET/NAME` goes through `xxdc_intake::parse::fuzzing::run(TARGET, …)`.
//! A panic fails the test (in the service a worker would catch it, but the
//! finding was fixed at its cause, and this keeps it fixed).

use std::fs;
use std::path::Path;

use xxdc_intake::parse::fuzzing;

#[test]
fn every_kept_crash_input_runs_without_panicking() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hostile/fuzz");
    let mut replayed = 0;
    for target in fuzzing::TARGETS {
        let Ok(entries) = fs::read_dir(root.join(target)) else {
            continue;
        };
        let mut paths: Vec<_> = entries.map(|e| e.expect("entry").path()).collect();
        paths.sort();
        for path in paths {
            let data = fs::read(&path).expect("readable crash input");
            eprintln!("{target}: {}", path.display());
            assert!(fuzzing::run(target, &data));
            replayed += 1;
        }
    }
    // Folders of unknown targets would be silently skipped: refuse them.
    if let Ok(entries) = fs::read_dir(&root) {
        for entry in entries {
            let name = entry.expect("entry").file_name();
            let name = name.to_string_lossy();
            assert!(
                fuzzing::TARGETS.contains(&name.as_ref()),
                "tests/fixtures/hostile/fuzz/{name}: no such fuzz target"
            );
        }
    }
    eprintln!("{replayed} crash input(s) replayed");
}
