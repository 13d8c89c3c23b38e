//! The OCR child's own limits (`[limits.ocr]`): a scan whose reading
//! overruns them is an `error` for that attachment only, naming the limit;
//! the message's other attachments are read as usual.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_xxdc-intake");
const CASES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/golden/cases");
const MODELS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target/ocr-models");

#[test]
fn a_scan_that_overruns_the_ocr_time_limit_is_an_error_of_its_own() {
    assert!(
        std::path::Path::new(MODELS)
            .join("ch_PP-OCRv4_rec_infer.onnx")
            .is_file(),
        "the OCR models are missing from target/ocr-models: run scripts/ocr-models (scripts/check does)"
    );
    let dir = tempfile::tempdir().expect("temporary folder");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[parse]\nocr_models = \"{MODELS}\"\n\n[limits.ocr]\ncpu_seconds = 1\ntimeout_seconds = 1\n"
        ),
    )
    .expect("config");
    // An .xls form and a JPEG photo of the stamped copy in one message.
    let out = Command::new(BIN)
        .args(["parse", "--json", "--config"])
        .arg(&config)
        .arg(format!("{CASES}/f12_xls_and_jpeg.eml"))
        .output()
        .expect("parse");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let attachments = report["attachments"].as_array().expect("attachments");
    assert_eq!(
        attachments[0]["outcome"], "parsed",
        "the xls is read as usual"
    );
    let photo = &attachments[1];
    assert_eq!(photo["outcome"], "error", "{photo}");
    let detail = photo["detail"].as_str().expect("detail");
    assert!(
        detail.contains("1 秒"),
        "the detail names the limit: {detail}"
    );
    assert_eq!(report["registrations"].as_array().map(Vec::len), Some(1));
}
