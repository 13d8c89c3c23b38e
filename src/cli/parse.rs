//! `parse`: the dry run of the pipeline over files on disk; writes nothing.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{CliError, config_or_defaults};
use crate::parse::pipeline::Pipeline;
use crate::parse::roster::Roster;
use crate::parse::sandbox::Isolation;

/// Prints what each file would record. A file that cannot be opened is
/// reported on stderr and the others are still read; the command then
/// fails (exit 1) at the end.
pub(super) fn parse(
    config: Option<&Path>,
    roster: Option<&Path>,
    json: bool,
    files: &[PathBuf],
) -> Result<(), CliError> {
    let config = config_or_defaults(config)?;
    let roster = roster
        .map(Path::to_path_buf)
        .or_else(|| config.roster.clone())
        .as_deref()
        .map(Roster::load)
        .transpose()?;
    let pipeline = Pipeline::new(
        roster,
        config.required.clone(),
        Isolation::current_exe(config.limits.child, config.workers),
        config.limits,
    )
    .with_trusted_authserv(config.trusted_authserv.clone())
    .with_office_contacts(crate::parse::office::OfficeContacts::new(
        &config.office_contacts,
    ))
    .with_ocr(config.ocr_models.clone());
    let mut unopened = 0;
    let mut reports = Vec::new();
    let stdout = std::io::stdout();
    for file in files {
        let shown = file.display().to_string();
        let bytes = match std::fs::read(file) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("无法打开文件 {shown}：{e}");
                unopened += 1;
                continue;
            }
        };
        let report = pipeline.parse(&shown, &bytes);
        let mut out = stdout.lock();
        let written = if json {
            writeln!(out, "{}", report.to_json())
        } else {
            writeln!(out, "{}", report.to_text())
        };
        if written.is_err() {
            // stdout closed (e.g. piped into `head`): nothing more to say.
            break;
        }
        if !json {
            reports.push(report);
        }
    }
    if reports.len() > 1 {
        println!(
            "== 汇总（{} 个文件）==\n{}",
            reports.len(),
            crate::parse::report::summary_table(&reports)
        );
    }
    if unopened > 0 {
        return Err(CliError::Failed(format!(
            "{unopened} 个文件无法打开（原因见上），其余文件已读取"
        )));
    }
    Ok(())
}
