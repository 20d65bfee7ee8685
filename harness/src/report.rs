//! Reports: the selftest's own output (kernel style) and KTAP.

use std::fmt::Write as _;

use crate::runner::{CaseResult, Outcome};
use crate::steps::{Step, Verdict};

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The lines khugepaged.c prints ("Run test: ...", "msg... OK").
    Kernel,
    /// KTAP version 1: a plan, one result line per case, steps as diagnostics.
    Ktap,
}

/// khugepaged.c's success/fail/skip colours, used only on a terminal.
fn coloured(step: &Step, colour: bool) -> String {
    if step.word.is_empty() {
        return step.text.clone();
    }
    let code = match step.verdict {
        Verdict::Ok => "32",
        Verdict::Fail => "31",
        Verdict::Skip => "33",
        Verdict::Info => "0",
    };
    if colour {
        format!("{} \x1b[{code}m{}\x1b[0m", step.text, step.word)
    } else {
        format!("{} {}", step.text, step.word)
    }
}

/// The record a traced run adds after the last step: trace data, not a printed line.
fn is_trace_marker(s: &Step) -> bool {
    s.verdict == Verdict::Info && s.word.is_empty() && s.text == "(end of test)"
}

/// The header line main() prints before a test ("Run test: ...").
pub fn header(r: &CaseResult) -> String {
    format!("Run test: {}", r.case.title())
}

/// One case in the kernel format: [`kernel_case_head`], every step's [`kernel_step`], then
/// [`kernel_case_tail`].
pub fn kernel_case(r: &CaseResult, colour: bool) -> String {
    let mut out = kernel_case_head(&r.case);
    for s in &r.steps {
        out.push_str(&kernel_step(s, colour));
    }
    out.push_str(&kernel_case_tail(r));
    out
}

/// What main() prints before a test: a blank line and "Run test: ..." (nothing before
/// alloc_at_fault, which main() runs without a header).
pub fn kernel_case_head(case: &crate::runner::Case) -> String {
    match case {
        crate::runner::Case::AllocAtFault => String::new(),
        _ => format!("\nRun test: {}\n", case.title()),
    }
}

/// One step's line and its diagnostics (nothing for trace markers).
pub fn kernel_step(s: &Step, colour: bool) -> String {
    let mut out = String::new();
    if !is_trace_marker(s) {
        let _ = writeln!(out, "{}", coloured(s, colour));
        for d in &s.detail {
            let _ = writeln!(out, "    {d}");
        }
    }
    out
}

/// What follows a case's steps: why it skipped or failed when no step says so.
pub fn kernel_case_tail(r: &CaseResult) -> String {
    let mut out = String::new();
    if r.steps.is_empty() {
        if let Outcome::Skip(reason) = &r.outcome {
            let _ = writeln!(out, "Skip: {reason}");
        }
    }
    if let Some(why) = unexplained_failure(r) {
        let _ = writeln!(out, "Fail: {why}");
    }
    out
}

/// The reason of a failure that no printed step line shows: the case process killed by a
/// signal, alloc_at_fault failing before a test, a setup error. Without it the kernel-style
/// output would end the case with no word of what went wrong.
pub fn unexplained_failure(r: &CaseResult) -> Option<&str> {
    let Outcome::Fail(why) = &r.outcome else {
        return None;
    };
    // Tabs and newlines are flattened when a host case process reports its verdict.
    let flat = |s: &str| s.replace(['\t', '\n'], " ");
    let shown = r
        .steps
        .iter()
        .any(|s| s.verdict == Verdict::Fail && flat(&s.to_string()) == flat(why));
    (!shown).then_some(why.as_str())
}

/// The line main() prints after the last test, or why it cannot say OK.
pub fn restore_line(error: Option<&str>, colour: bool) -> String {
    let (word, code) = match error {
        None => ("OK".to_string(), "32"),
        Some(why) => (format!("FAIL: {why}"), "31"),
    };
    if colour {
        format!("Restore THP and khugepaged settings... \x1b[{code}m{word}\x1b[0m\n")
    } else {
        format!("Restore THP and khugepaged settings... {word}\n")
    }
}

/// One case as KTAP result line plus diagnostics.
pub fn ktap_case(n: usize, r: &CaseResult) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# {}", header(r));
    for s in r.steps.iter().filter(|s| !is_trace_marker(s)) {
        // A step may span lines (7.3's "Construct ...\n OK"): each is a diagnostic.
        for line in coloured(s, false).lines() {
            let _ = writeln!(out, "# {line}");
        }
        for d in &s.detail {
            let _ = writeln!(out, "#     {d}");
        }
    }
    let name = r.case.title();
    match &r.outcome {
        Outcome::Pass => {
            let _ = writeln!(out, "ok {n} {name}");
        }
        Outcome::Fail(why) => {
            let _ = writeln!(out, "# FAIL: {why}");
            let _ = writeln!(out, "not ok {n} {name}");
        }
        Outcome::Skip(why) => {
            let _ = writeln!(out, "ok {n} {name} # SKIP {}", why.replace('\n', " "));
        }
    }
    out
}

// ---- 7.3's output: kselftest's TAP 13 (ksft_print_msg lines are "# " diagnostics) ----

/// What 7.3's main() prints before the first test: the TAP header, the settings save, and
/// the plan (every selected test plus alloc_at_fault).
pub fn tap13_header(planned: usize) -> String {
    format!("TAP version 13\n# Save THP and khugepaged settings... OK\n1..{planned}\n")
}

/// One step as 7.3 prints it: through ksft_print_msg ("# " before its first line), except
/// the tmpfs skip notice, which khugepaged.c prints with a bare printf.
fn tap13_step(s: &Step) -> String {
    let mut out = String::new();
    if is_trace_marker(s) {
        return out;
    }
    let line = coloured(s, false);
    // kselftest's `Bail out!` starts its own line unless a message is pending before it.
    if s.text.starts_with("tmpfs...") || s.text.starts_with("Bail out!") {
        let _ = writeln!(out, "{line}");
    } else {
        let _ = writeln!(out, "# {line}");
    }
    for d in &s.detail {
        let _ = writeln!(out, "#     {d}");
    }
    out
}

/// One case (test number `n`, counting alloc_at_fault as 1) as 7.3 prints it: "Run test:"
/// after an empty diagnostic, the steps, then ksft_test_result_report's line named after
/// the test function (alloc_at_fault: "allocate on fault and split").
pub fn tap13_case(n: usize, r: &CaseResult) -> String {
    let mut out = String::new();
    let name = match &r.case {
        crate::runner::Case::AllocAtFault => "allocate on fault and split".to_string(),
        crate::runner::Case::Test(e) | crate::runner::Case::Extra(e) => e.name.to_string(),
    };
    if !matches!(r.case, crate::runner::Case::AllocAtFault) {
        let _ = writeln!(out, "# \n# {}", header(r));
    }
    for s in &r.steps {
        out.push_str(&tap13_step(s));
    }
    if r.steps.is_empty() {
        if let Outcome::Skip(reason) = &r.outcome {
            let _ = writeln!(out, "# Skip: {reason}");
        }
    }
    if let Some(why) = unexplained_failure(r) {
        let _ = writeln!(out, "# Fail: {why}");
    }
    if tap13_aborted(r) {
        // exit(EXIT_FAILURE) in the middle of the test: no result line (see tap13_bail).
        return out;
    }
    let _ = match &r.outcome {
        Outcome::Pass => writeln!(out, "ok {n} {name}"),
        Outcome::Fail(_) => writeln!(out, "not ok {n} {name}"),
        Outcome::Skip(_) => writeln!(out, "ok {n} # SKIP {name}"),
    };
    out
}

/// Whether the case ended in one of khugepaged.c's exits (ksft_exit_fail_msg and the like,
/// the harness's aborts): in C the whole program ends there, after that test's lines.
pub fn tap13_aborted(r: &CaseResult) -> bool {
    matches!(r.outcome, Outcome::Fail(_))
        && r.steps
            .iter()
            .rev()
            .find(|s| !is_trace_marker(s))
            .is_some_and(|s| s.verdict == Verdict::Fail && s.word.is_empty())
}

/// What the selftest prints when it exits in the middle of test `run + 1` of `planned`
/// (the tests before it reported in `t`).
pub fn tap13_bail(planned: usize, run: usize, t: &Totals) -> String {
    let mut out = String::new();
    if planned != run {
        let _ = writeln!(out, "# Planned tests != run tests ({planned} != {run})");
    }
    let _ = writeln!(out, "{}", t.ktap_line());
    out
}

/// What ksft_finished() prints after the last test (ksft_print_cnts).
pub fn tap13_trailer(t: &Totals) -> String {
    let mut out = String::new();
    if t.skip > 0 {
        let _ = writeln!(
            out,
            "# {} skipped test(s) detected. Consider enabling relevant config options to improve coverage.",
            t.skip
        );
    }
    let _ = writeln!(out, "{}", t.ktap_line());
    out
}

/// Counts of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub pass: usize,
    pub fail: usize,
    pub skip: usize,
}

impl Totals {
    pub fn add(&mut self, o: &Outcome) {
        match o {
            Outcome::Pass => self.pass += 1,
            Outcome::Fail(_) => self.fail += 1,
            Outcome::Skip(_) => self.skip += 1,
        }
    }

    /// kselftest exit codes: 1 on any failure, 4 when everything skipped, else 0.
    pub fn exit_code(&self) -> i32 {
        if self.fail > 0 {
            1
        } else if self.pass == 0 && self.skip > 0 {
            4
        } else {
            0
        }
    }

    /// ksft_finished(): 1 on any failure, else 0 (skips count as passes).
    pub fn tap13_exit_code(&self) -> i32 {
        i32::from(self.fail > 0)
    }

    pub fn ktap_line(&self) -> String {
        format!(
            "# Totals: pass:{} fail:{} xfail:0 xpass:0 skip:{} error:0",
            self.pass, self.fail, self.skip
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::Case;

    fn failed(why: &str, steps: Vec<Step>) -> CaseResult {
        CaseResult {
            case: Case::AllocAtFault,
            steps,
            outcome: Outcome::Fail(why.into()),
            elapsed: Default::default(),
            trace: None,
            restore_error: None,
        }
    }

    #[test]
    fn a_failure_outside_the_steps_gets_its_own_line() {
        let killed = failed("the case process was killed by signal 9", Vec::new());
        assert_eq!(
            kernel_case(&killed, false),
            "Fail: the case process was killed by signal 9\n"
        );
        // A failing step already says it: no second line.
        let step = Step {
            text: "Allocate huge page on fault...".into(),
            verdict: Verdict::Fail,
            word: "Fail".into(),
            ..Step::default()
        };
        let at_step = failed("Allocate huge page on fault... Fail", vec![step.clone()]);
        assert_eq!(
            kernel_case(&at_step, false),
            "Allocate huge page on fault... Fail\n"
        );
        // alloc_at_fault failing before a test: the step, then why the test did not run.
        let before = failed("alloc_at_fault, run first by main(), failed", vec![step]);
        assert!(kernel_case(&before, false)
            .ends_with("Fail\nFail: alloc_at_fault, run first by main(), failed\n"));
    }

    #[test]
    fn restore_line_says_ok_only_when_restored() {
        assert_eq!(
            restore_line(None, false),
            "Restore THP and khugepaged settings... OK\n"
        );
        assert_eq!(
            restore_line(Some("enabled: EBUSY"), false),
            "Restore THP and khugepaged settings... FAIL: enabled: EBUSY\n"
        );
    }
}
