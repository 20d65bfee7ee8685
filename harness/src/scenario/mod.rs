//! Scenario files: a kernel developer's own cases as plain text (one user-level operation a
//! line), parsed and validated completely, then run on a backend. The language is documented
//! in fixtures/scenarios/README.md.

pub mod parse;
pub mod run;

use std::io::Write;
use std::path::PathBuf;

pub use parse::{parse_file, parse_str, ParseError, Scenario};
pub use run::{run_model, run_on, Outcome, ScenarioExt};

/// Usage of `khugepaged scenario`.
pub const USAGE: &str = "\
usage: khugepaged scenario [-v] [--explain] [--explain-svg DIR] [--profile RELEASE] FILE...
  Runs scenario files on the model, once per release each file names on its `profile` line
  (or only RELEASE). -v prints every line run and every collapse decision.
  --explain prints, for every collapse attempt (khugepaged and MADV_COLLAPSE), its decision
  record (result, counts, the sharing predicate's answer per folio) and a picture of the PMD
  range before and after (16 rows of 32 pages, with a legend).
  --explain-svg DIR writes the same as DIR/<file>-<release>-<n>.svg, one per attempt.
  Exit status: 0 all passed, 1 a scenario failed, 2 a usage or parse error (nothing runs then).
";

/// `khugepaged scenario ARGS...`: parses every file first (any error: exit 2 before anything
/// runs), then runs each on the model. Returns the exit status.
pub fn main(args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let mut verbose = false;
    let mut explain = false;
    let mut svg_dir: Option<PathBuf> = None;
    let mut only: Option<String> = None;
    let mut files = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-h" | "--help" => {
                let _ = out.write_all(USAGE.as_bytes());
                return 0;
            }
            "-v" | "--verbose" => verbose = true,
            "--explain" => explain = true,
            "--explain-svg" => match it.next() {
                Some(d) => svg_dir = Some(PathBuf::from(d)),
                None => {
                    let _ = writeln!(err, "khugepaged scenario: --explain-svg needs a directory");
                    return 2;
                }
            },
            "--profile" => match it.next() {
                Some(r) => match parse::lookup_profile(r) {
                    Ok(_) => only = Some(r.clone()),
                    Err(why) => {
                        let _ = writeln!(err, "khugepaged scenario: --profile {r}: {why}");
                        return 2;
                    }
                },
                None => {
                    let _ = writeln!(err, "khugepaged scenario: --profile needs a release");
                    return 2;
                }
            },
            s if s.starts_with('-') => {
                let _ = writeln!(err, "khugepaged scenario: unknown option {s}\n{USAGE}");
                return 2;
            }
            f => files.push(PathBuf::from(f)),
        }
    }
    if files.is_empty() {
        let _ = writeln!(err, "khugepaged scenario: no scenario file given\n{USAGE}");
        return 2;
    }
    let mut parsed = Vec::new();
    let mut bad = false;
    for f in &files {
        match parse_file(f) {
            Ok(s) => parsed.push(s),
            Err(errors) => {
                bad = true;
                for e in errors {
                    let _ = writeln!(err, "{e}");
                }
            }
        }
    }
    if bad {
        return 2;
    }
    if let Some(d) = &svg_dir {
        if let Err(e) = std::fs::create_dir_all(d) {
            let _ = writeln!(
                err,
                "khugepaged scenario: --explain-svg {}: cannot create the directory: {e}",
                d.display()
            );
            return 2;
        }
    }
    let mut status = 0;
    for sc in &parsed {
        let releases: Vec<String> = match &only {
            Some(r) => vec![r.clone()],
            None => sc.releases.clone(),
        };
        for rel in releases {
            let o = match run_model(sc, &rel) {
                Ok(o) => o,
                Err(e) => {
                    let _ = writeln!(err, "khugepaged scenario: {e}");
                    return 2;
                }
            };
            if verbose {
                for l in &o.log {
                    let _ = writeln!(out, "{l}");
                }
            }
            if explain {
                for (n, a) in o.attempts.iter().enumerate() {
                    let _ = writeln!(out, "collapse attempt {} ({rel}): {}", n + 1, a.title);
                    for l in a.text().iter().skip(1) {
                        let _ = writeln!(out, "{l}");
                    }
                }
            }
            if let Some(d) = &svg_dir {
                let stem = sc
                    .path
                    .file_stem()
                    .map_or("scenario".into(), |s| s.to_string_lossy().into_owned());
                for (n, a) in o.attempts.iter().enumerate() {
                    let path = d.join(format!("{stem}-{rel}-{:03}.svg", n + 1));
                    if let Err(e) = std::fs::write(&path, a.svg()) {
                        let _ =
                            writeln!(err, "khugepaged scenario: writing {}: {e}", path.display());
                        return 1;
                    }
                }
            }
            match &o.failure {
                None => {
                    let _ = writeln!(out, "ok    {} on model {rel}", sc.path.display());
                }
                Some(f) => {
                    status = 1;
                    let _ = writeln!(
                        out,
                        "FAIL  {} on model {rel}\n    {}: `{}`\n    {}",
                        sc.path.display(),
                        f.loc,
                        f.line,
                        f.why
                    );
                }
            }
        }
    }
    status
}
