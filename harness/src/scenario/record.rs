//! Recorded host runs of scenarios, and their comparison with the model.
//!
//! A recording is `fixtures/<kernel release>/scenarios/<file stem>.trace`:
//!
//! ```text
//! scenario: linux-mm-case.scn
//! kernel: 6.18.44-fc-v857
//! khugepaged: deterministic
//! outcome: ok                      (or: FAIL <file:line:col>: <why>)
//! --
//! <the run's trace: every line run, what each expectation saw, every decision on the
//!  scenario's own mappings in the kernel's tracepoint form, the collapse counters' deltas>
//! ```
//!
//! `cargo test` replays each on the model with that release's profile (tests/scenarios.rs).

use std::path::{Path, PathBuf};

use super::run::Outcome;

/// The parts of a recording.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recording {
    pub scenario: String,
    pub kernel: String,
    pub outcome: String,
    pub trace: Vec<String>,
}

/// `ok`, or `FAIL <where>: <why>`.
pub fn outcome_word(o: &Outcome) -> String {
    match &o.failure {
        None => "ok".into(),
        Some(f) => format!(
            "FAIL {}:{}: {}",
            f.loc.file.file_name().unwrap_or_default().to_string_lossy(),
            f.loc.line,
            f.why
        ),
    }
}

/// Where the recording of scenario `file` on `kernel` goes under `root`.
pub fn recording_path(root: &Path, kernel: &str, file: &Path) -> PathBuf {
    let stem = file
        .file_stem()
        .map_or("scenario".into(), |s| s.to_string_lossy().into_owned());
    root.join(kernel)
        .join("scenarios")
        .join(format!("{stem}.trace"))
}

pub fn render(file: &Path, kernel: &str, o: &Outcome) -> String {
    let name = file
        .file_name()
        .map_or("scenario".into(), |s| s.to_string_lossy().into_owned());
    let mut s = format!(
        "scenario: {name}\nkernel: {kernel}\nkhugepaged: deterministic\noutcome: {}\n--\n",
        outcome_word(o).replace('\n', " ")
    );
    for l in &o.trace {
        s.push_str(l);
        s.push('\n');
    }
    s
}

pub fn parse(text: &str) -> Result<Recording, String> {
    let (head, body) = text
        .split_once("\n--\n")
        .ok_or("no `--` line between the header and the trace")?;
    let field = |k: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}: ")))
            .map(str::to_string)
            .ok_or_else(|| format!("no `{k}:` line in the header"))
    };
    Ok(Recording {
        scenario: field("scenario")?,
        kernel: field("kernel")?,
        outcome: field("outcome")?,
        trace: body.lines().map(str::to_string).collect(),
    })
}

/// The first difference between two traces, with the scenario line it happened under, or
/// None when they agree.
pub fn first_difference(
    left: &[String],
    right: &[String],
    left_name: &str,
    right_name: &str,
) -> Option<String> {
    let n = left.len().max(right.len());
    let i = (0..n).find(|&i| left.get(i) != right.get(i))?;
    let under = left[..i.min(left.len())]
        .iter()
        .rev()
        .find(|l| !l.starts_with(' '))
        .map_or("(the start)".to_string(), |l| l.clone());
    let w = left_name.len().max(right_name.len());
    let end = "(end of trace)".to_string();
    Some(format!(
        "first difference at trace line {} (under `{under}`):\n  {left_name:>w$}: {}\n  {right_name:>w$}: {}",
        i + 1,
        left.get(i).unwrap_or(&end).trim(),
        right.get(i).unwrap_or(&end).trim()
    ))
}

/// Replays a recording on the model: Err with the difference when the model's run differs
/// from the kernel's (the scenario file is looked up in `scenarios_dir`).
pub fn replay(path: &Path, scenarios_dir: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    replay_text(&text, scenarios_dir).map_err(|e| format!("{}: {e}", path.display()))
}

/// [`replay`] of a recording's text.
pub fn replay_text(text: &str, scenarios_dir: &Path) -> Result<(), String> {
    let rec = parse(text)?;
    let file = scenarios_dir.join(&rec.scenario);
    let sc = super::parse_file(&file).map_err(|errs| {
        format!(
            "the scenario {} does not parse: {}",
            file.display(),
            errs.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        )
    })?;
    let o = super::run_model(&sc, &rec.kernel)?;
    match disagreement(&rec.outcome, &rec.trace, &o, "kernel") {
        None => Ok(()),
        Some(d) => Err(format!(
            "the recording on {} differs from the model ({}; re-record with `khugepaged scenario --record fixtures {}` if the scenario changed):\n{d}",
            rec.kernel,
            sc.path.display(),
            file.display()
        )),
    }
}

/// One recorded kernel's run of a scenario, as the cross-kernel table shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelRow {
    pub kernel: String,
    /// The model profile the replay used (`KernelProfile::for_release`), or why none.
    pub profile: String,
    pub outcome: String,
    /// The collapse decisions on the scenario's own ranges, in order, as `[process] place:
    /// RESULT`, once each.
    pub decisions: Vec<String>,
    /// None when the model agrees with the kernel on every observation and decision; else
    /// the first difference.
    pub disagreement: Option<String>,
}

/// Every recording of scenario `file` under `fixtures` (`<release>/scenarios/<stem>.trace`),
/// replayed on the model with its kernel's profile, oldest kernel first.
pub fn kernel_rows(fixtures: &Path, file: &Path) -> Result<Vec<KernelRow>, String> {
    let dir =
        std::fs::read_dir(fixtures).map_err(|e| format!("reading {}: {e}", fixtures.display()))?;
    let scenarios_dir = file.parent().unwrap_or(Path::new("."));
    let mut rows = Vec::new();
    for entry in dir.flatten() {
        let path = recording_path(fixtures, &entry.file_name().to_string_lossy(), file);
        if !path.is_file() {
            continue;
        }
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let rec = parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let profile = super::parse::lookup_profile(&rec.kernel);
        let mut decisions: Vec<String> = Vec::new();
        for l in &rec.trace {
            let Some(d) = l.trim_start().strip_prefix("decision ") else {
                continue;
            };
            // `[child] A pmd 0: SCAN_EXCEED_SHARED_PTE scan_pmd none_or_zero=...`
            let short = match d.split_once(": ") {
                Some((place, rest)) => {
                    format!("{place}: {}", rest.split_whitespace().next().unwrap_or(""))
                }
                None => d.to_string(),
            };
            if !decisions.contains(&short) {
                decisions.push(short);
            }
        }
        let disagreement = match &profile {
            Ok(_) => replay_text(&text, scenarios_dir).err(),
            Err(why) => Some(format!("no model profile: {why}")),
        };
        rows.push(KernelRow {
            kernel: rec.kernel.clone(),
            profile: profile.map_or_else(|e| format!("none ({e})"), |p| p.name.to_string()),
            outcome: rec.outcome,
            decisions,
            disagreement,
        });
    }
    rows.sort_by_key(|r| {
        let v = super::parse::release_version(&r.kernel).unwrap_or((0, 0));
        (v, r.kernel.clone())
    });
    Ok(rows)
}

/// The rows as a Markdown table.
pub fn kernel_table(rows: &[KernelRow]) -> String {
    let mut s = String::from(
        "| kernel | profile | kernel's outcome | decisions on the scenario's ranges | model |\n\
         |---|---|---|---|---|\n",
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            r.kernel,
            r.profile,
            r.outcome.replace('|', "\\|"),
            if r.decisions.is_empty() {
                "-".to_string()
            } else {
                r.decisions.join("; ")
            },
            if r.disagreement.is_none() {
                "agrees"
            } else {
                "DISAGREES"
            }
        ));
    }
    s
}

/// How a run of the model differs from a kernel's run (its outcome word and trace), or None
/// when they agree on every observation and decision.
pub fn disagreement(
    kernel_outcome: &str,
    kernel_trace: &[String],
    model: &Outcome,
    kernel_name: &str,
) -> Option<String> {
    let m = outcome_word(model);
    let diff = first_difference(kernel_trace, &model.trace, kernel_name, "model");
    if diff.is_none() && m == kernel_outcome {
        return None;
    }
    let mut s = String::new();
    if m != kernel_outcome {
        s.push_str(&format!(
            "outcome: {kernel_name} {kernel_outcome}, model {m}\n"
        ));
    }
    s.push_str(&diff.unwrap_or_default());
    Some(s.trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_difference() {
        let o = Outcome {
            log: Vec::new(),
            trace: vec!["a.scn:1 [main] write A 0".into(), "  = Rss 4 kB".into()],
            failure: None,
            ..Outcome::default()
        };
        let text = render(Path::new("x/a.scn"), "6.18.1", &o);
        let r = parse(&text).unwrap();
        assert_eq!(r.scenario, "a.scn");
        assert_eq!(r.kernel, "6.18.1");
        assert_eq!(r.outcome, "ok");
        assert_eq!(r.trace, o.trace);
        let other = vec![
            "a.scn:1 [main] write A 0".to_string(),
            "  = Rss 8 kB".into(),
        ];
        let d = first_difference(&r.trace, &other, "kernel", "model").unwrap();
        assert!(
            d.contains("line 2") && d.contains("write A 0") && d.contains("Rss 8"),
            "{d}"
        );
        assert!(first_difference(&r.trace, &o.trace, "k", "m").is_none());
        assert!(parse("scenario: a\n").is_err());
    }
}
