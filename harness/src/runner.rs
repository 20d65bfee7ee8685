//! Running one case (a TEST() line) the way khugepaged.c's main() reaches it: in a process
//! that saved the settings, pushed the selftest defaults and ran alloc_at_fault first.

use std::time::{Duration, Instant};

use crate::backend::Backend;
use crate::catalogue::{alloc_at_fault, Ctx, DirKind, Env, MemType, TestEntry};
use crate::steps::{Step, Verdict};
use crate::thp_settings::ThpSettings;

/// A case: one TEST() line, or alloc_at_fault (which main() always runs first).
#[derive(Clone, Copy, Debug)]
pub enum Case {
    AllocAtFault,
    Test(TestEntry),
}

impl Case {
    /// "collapse_full (khugepaged:anon)", as the "Run test:" header names it.
    pub fn title(&self) -> String {
        match self {
            Case::AllocAtFault => "alloc_at_fault".into(),
            Case::Test(e) => format!("{} ({}:{})", e.name, e.context.name(), e.mem.name()),
        }
    }

    /// "khugepaged:anon/collapse_full": the trial name after the backend.
    pub fn id(&self) -> String {
        match self {
            Case::AllocAtFault => "alloc_at_fault".into(),
            Case::Test(e) => format!("{}:{}/{}", e.context.name(), e.mem.name(), e.name),
        }
    }

    pub fn mem(&self) -> Option<MemType> {
        match self {
            Case::AllocAtFault => None,
            Case::Test(e) => Some(e.mem),
        }
    }
}

/// How a case ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    /// The first failing step (or the abort message), for the summary.
    Fail(String),
    /// Why the case could not run, or the Skip step it printed.
    Skip(String),
}

/// A finished case.
#[derive(Clone, Debug)]
pub struct CaseResult {
    pub case: Case,
    pub steps: Vec<Step>,
    pub outcome: Outcome,
    pub elapsed: Duration,
}

/// Why a case cannot run on this backend with this environment, if it cannot.
pub fn unsupported_reason(b: &mut dyn Backend, env: &Env, case: &Case) -> Option<String> {
    if case.mem() != Some(MemType::File) {
        return None;
    }
    match env.finfo.as_ref().map(|f| &f.kind) {
        None => Some("file tests need a [dir] argument".into()),
        Some(DirKind::Disk { .. }) if !b.read_only_thp_for_fs() => Some(format!(
            "{}: file collapse outside tmpfs needs CONFIG_READ_ONLY_THP_FOR_FS=y, which {} does not have",
            env.finfo.as_ref().map_or("", |f| f.dir.as_str()),
            b.kernel_release()
        )),
        Some(DirKind::Tmpfs { huge }) if huge != "advise" && huge != "always" && huge != "within_size" => Some(format!(
            "{}: tmpfs must be mounted with huge=advise for the file tests (it has huge={huge})",
            env.finfo.as_ref().map_or("", |f| f.dir.as_str())
        )),
        _ => None,
    }
}

/// Runs `case` in the process `b` stands for.
pub fn run_case(b: &mut dyn Backend, env: &Env, case: &Case) -> CaseResult {
    let start = Instant::now();
    if let Some(reason) = unsupported_reason(b, env, case) {
        return CaseResult {
            case: *case,
            steps: Vec::new(),
            outcome: Outcome::Skip(reason),
            elapsed: start.elapsed(),
        };
    }
    let saved = match ThpSettings::read(b) {
        Ok(s) => s,
        Err(e) => {
            let outcome = Outcome::Fail(format!("reading THP settings failed: {e}"));
            return CaseResult {
                case: *case,
                steps: Vec::new(),
                outcome,
                elapsed: start.elapsed(),
            };
        }
    };
    let mut t = Ctx::new(b, env.clone());
    let mut result = t
        .settings
        .push(t.b, ThpSettings::selftest_defaults(&saved, env.anon_order))
        .map_err(crate::catalogue::Abort);
    if result.is_ok() {
        // main() runs alloc_at_fault before the TEST() list: every test starts in a process
        // with that history (it registered the process with khugepaged).
        result = alloc_at_fault(&mut t);
        if let Case::Test(entry) = case {
            if result.is_ok() && t.exit_status == 0 {
                t.steps.clear();
                result = (entry.func)(&mut t, entry.context, entry.mem);
            } else {
                result = Err(crate::catalogue::Abort(
                    "alloc_at_fault, run first by main(), failed".into(),
                ));
            }
        }
    }
    let exit_status = t.exit_status;
    let steps = std::mem::take(&mut t.steps);
    drop(t);
    let _ = saved.write(b);
    let outcome = match result {
        Err(abort) => Outcome::Fail(abort.0),
        Ok(()) if exit_status > 0 => {
            let first = steps
                .iter()
                .find(|s| s.verdict == Verdict::Fail)
                .map(|s| s.to_string());
            Outcome::Fail(first.unwrap_or_else(|| format!("{exit_status} failure(s)")))
        }
        Ok(()) => match steps.iter().find(|s| s.verdict == Verdict::Skip) {
            Some(s) => Outcome::Skip(s.to_string()),
            None => Outcome::Pass,
        },
    };
    CaseResult {
        case: *case,
        steps,
        outcome,
        elapsed: start.elapsed(),
    }
}
