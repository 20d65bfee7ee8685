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
    let rec = parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let file = scenarios_dir.join(&rec.scenario);
    let sc = super::parse_file(&file).map_err(|errs| {
        format!(
            "{}: the scenario {} does not parse: {}",
            path.display(),
            file.display(),
            errs.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        )
    })?;
    let o = super::run_model(&sc, &rec.kernel)?;
    let model_outcome = outcome_word(&o);
    let diff = first_difference(&rec.trace, &o.trace, "kernel", "model");
    if diff.is_none() && model_outcome == rec.outcome {
        return Ok(());
    }
    Err(format!(
        "{} (recorded on {}) differs from the model:\n  outcome: kernel {}, model {}\n{}",
        path.display(),
        rec.kernel,
        rec.outcome,
        model_outcome,
        diff.unwrap_or_default()
    ))
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
