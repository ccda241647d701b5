//! `backplan validate`.

use std::path::Path;

use serde::Serialize;

use super::{Exit, print};
use crate::cli::{Format, ValidateArgs};
use crate::error::Located;
use crate::policy::{load_file, spans::line_col};

/// One problem as `--format json` prints it.
#[derive(Debug, Serialize)]
struct JsonProblem<'a> {
    code: &'a str,
    severity: &'static str,
    message: &'a str,
    help: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    column: Option<usize>,
}

fn json_problem(l: &Located) -> JsonProblem<'_> {
    let position = match (&l.problem.span, &l.source) {
        (Some((span, _)), Some(source)) => Some(line_col(source.inner(), span.offset())),
        _ => None,
    };
    JsonProblem {
        code: l.problem.code.id(),
        severity: if l.problem.is_error() {
            "error"
        } else {
            "warning"
        },
        message: &l.problem.message,
        help: l.problem.help.as_deref().unwrap_or(l.problem.code.help()),
        line: position.map(|p| p.0),
        column: position.map(|p| p.1),
    }
}

pub fn run(path: &Path, args: &ValidateArgs) -> miette::Result<Exit> {
    let result = load_file(path);
    if args.format == Format::Json {
        let problems: Vec<JsonProblem> = match &result {
            Ok(loaded) => loaded.warnings.iter().map(json_problem).collect(),
            Err(report) => report.problems.iter().map(json_problem).collect(),
        };
        print(&crate::render::json(&problems))?;
        return match result {
            Ok(_) => Ok(Exit::Ok),
            Err(report) => Err(miette::miette!(
                code = report
                    .problems
                    .first()
                    .map(|p| p.problem.code.id())
                    .unwrap_or("BP100"),
                "{report}"
            )),
        };
    }
    let loaded = result?;
    for warning in &loaded.warnings {
        eprintln!("{:?}", miette::Report::new(warning.clone()));
    }
    let p = &loaded.policy;
    print(&format!(
        "{} is valid: {} source{}, {} destination{}.\n",
        path.display(),
        p.sources.len(),
        crate::plan::plural(p.sources.len()),
        p.file.destinations.len(),
        crate::plan::plural(p.file.destinations.len()),
    ))?;
    Ok(Exit::Ok)
}
