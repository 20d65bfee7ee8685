//! Running one case (a TEST() line) the way khugepaged.c's main() reaches it: in a process
//! that saved the settings, pushed the selftest defaults and ran alloc_at_fault first.

use std::time::{Duration, Instant};

use crate::backend::Backend;
use crate::catalogue::{
    alloc_at_fault, Catalogue, Ctx, DirKind, Env, KhugepagedMode, TestEntry, PARKED_SLEEP_MILLISECS,
};
pub use crate::steps::Outcome;
use crate::steps::{Step, Verdict};
use crate::thp_settings::ThpSettings;
use crate::trace::TracingBackend;

/// A case: one TEST() line, or alloc_at_fault (which main() always runs first).
#[derive(Clone, Copy, Debug)]
pub enum Case {
    AllocAtFault,
    Test(TestEntry),
    /// A test of this project's own, in the selftest's style (`extras`), not in khugepaged.c.
    Extra(TestEntry),
}

impl Case {
    /// "collapse_full (khugepaged:anon)", as the "Run test:" header names it.
    pub fn title(&self) -> String {
        match self {
            Case::AllocAtFault => "alloc_at_fault".into(),
            Case::Test(e) => format!("{} ({}:{})", e.name, e.context.name(), e.mem.name()),
            Case::Extra(e) => format!("{} ({}:{}) [extra]", e.name, e.context.name(), e.mem.name()),
        }
    }

    /// "khugepaged:anon/collapse_full": the trial name after the backend.
    pub fn id(&self) -> String {
        match self {
            Case::AllocAtFault => "alloc_at_fault".into(),
            Case::Test(e) => format!("{}:{}/{}", e.context.name(), e.mem.key(), e.name),
            Case::Extra(e) => format!("extra/{}:{}/{}", e.context.name(), e.mem.key(), e.name),
        }
    }

    pub fn mem(&self) -> Option<crate::catalogue::MemType> {
        match self {
            Case::AllocAtFault => None,
            Case::Test(e) | Case::Extra(e) => Some(e.mem),
        }
    }
}

/// A finished case.
#[derive(Clone, Debug)]
pub struct CaseResult {
    pub case: Case,
    pub steps: Vec<Step>,
    pub outcome: Outcome,
    pub elapsed: Duration,
    /// The trace, when the case ran traced.
    pub trace: Option<String>,
    /// Why the THP and khugepaged settings (and whatever else the case changed on the machine)
    /// could not be restored after the case; None when they were restored. Reported apart from
    /// the outcome: the case may have passed and still left the machine changed.
    pub restore_error: Option<String>,
}

impl CaseResult {
    /// A case that did not run.
    pub fn skipped(case: Case, reason: String) -> CaseResult {
        CaseResult {
            case,
            steps: Vec::new(),
            outcome: Outcome::Skip(reason),
            elapsed: Duration::ZERO,
            trace: None,
            restore_error: None,
        }
    }
}

/// Every case of every catalogue (all contexts and memory types; a test both catalogues
/// have, once), after alloc_at_fault.
pub fn all_cases() -> Vec<Case> {
    let mut cases = vec![Case::AllocAtFault];
    cases.extend(crate::catalogue::test_table().into_iter().map(Case::Test));
    for e in crate::catalogue::test_table_of(Catalogue::NEWEST) {
        let case = Case::Test(e);
        if !cases.iter().any(|c| c.id() == case.id()) {
            cases.push(case);
        }
    }
    cases.extend(crate::extras::extra_table().into_iter().map(Case::Extra));
    cases
}

/// The trace header's description of the environment.
pub fn env_description(env: &Env) -> String {
    let file = match env.finfo.as_ref().map(|f| &f.kind) {
        None => "-".to_string(),
        Some(DirKind::Tmpfs { huge }) => format!("tmpfs(huge={huge})"),
        Some(DirKind::Disk { .. }) => "disk".to_string(),
    };
    let mut text = format!("anon_order={} file={file}", env.anon_order);
    if env.khugepaged != KhugepagedMode::Selftest {
        text.push_str(&format!(" khugepaged={}", env.khugepaged.name()));
    }
    // Only what differs from the 6.18 selftest, so older traces keep their header.
    if env.catalogue != Catalogue::V6_18 {
        text.push_str(&format!(" catalogue={}", env.catalogue.name()));
    }
    if env.collapse_order > 0 {
        text.push_str(&format!(" collapse_order={}", env.collapse_order));
    }
    text
}

/// The settings a case runs under, for the trace header.
pub fn settings_description(s: &ThpSettings) -> String {
    let mut parts = vec![
        format!("enabled={}", s.thp_enabled),
        format!("defrag={}", s.thp_defrag),
        format!("shmem_enabled={}", s.shmem_enabled),
        format!("use_zero_page={}", s.use_zero_page),
        format!("khugepaged/defrag={}", s.khugepaged_defrag),
        format!("max_ptes_none={}", s.max_ptes_none),
        format!("max_ptes_swap={}", s.max_ptes_swap),
        format!("max_ptes_shared={}", s.max_ptes_shared),
        format!("pages_to_scan={}", s.pages_to_scan),
        format!("scan_sleep_millisecs={}", s.scan_sleep_millisecs),
    ];
    for (o, v) in s.hugepages.iter().enumerate() {
        if let Some(v) = v {
            parts.push(format!("{}kB={v}", (model::PAGE_SIZE << o) / 1024));
        }
    }
    for (o, v) in s.shmem_hugepages.iter().enumerate() {
        if let Some(v) = v {
            parts.push(format!("shmem-{}kB={v}", (model::PAGE_SIZE << o) / 1024));
        }
    }
    parts.join(" ")
}

/// Why a case cannot run on this backend with this environment, if it cannot.
pub fn unsupported_reason(b: &mut dyn Backend, env: &Env, case: &Case) -> Option<String> {
    if !case.mem().is_some_and(|m| m.is_file()) {
        return None;
    }
    match env.finfo.as_ref().map(|f| &f.kind) {
        None => Some("file tests need a [dir] argument".into()),
        // The 7.x selftest names no config: it runs, and fails where the kernel cannot.
        Some(DirKind::Disk { .. })
            if !b.read_only_thp_for_fs() && env.catalogue == Catalogue::V6_18 =>
        {
            Some(format!(
            "{}: file collapse outside tmpfs needs CONFIG_READ_ONLY_THP_FOR_FS=y (before 7.2), which {} does not have",
            env.finfo.as_ref().map_or("", |f| f.dir.as_str()),
            b.kernel_release()
            ))
        }
        Some(DirKind::Tmpfs { huge }) if huge != "advise" && huge != "always" && huge != "within_size" => Some(format!(
            "{}: tmpfs must be mounted with huge=advise for the file tests (it has huge={huge})",
            env.finfo.as_ref().map_or("", |f| f.dir.as_str())
        )),
        _ => None,
    }
}

/// Runs `case` in the process `b` stands for.
pub fn run_case(b: &mut dyn Backend, env: &Env, case: &Case) -> CaseResult {
    run_case_inner(b, env, case, None, None)
}

/// Runs `case` and records its trace; `profile` names the model profile the run stands for
/// (the model's own, or the host kernel's era).
pub fn run_case_traced(b: &mut dyn Backend, env: &Env, case: &Case, profile: &str) -> CaseResult {
    run_case_streaming(b, env, case, Some(profile), &mut |_| {})
}

/// Runs `case` (traced when `profile` is given, see [`run_case_traced`]) and hands each of the
/// case's steps to `sink` as it ends, before the case is over.
pub fn run_case_streaming(
    b: &mut dyn Backend,
    env: &Env,
    case: &Case,
    profile: Option<&str>,
    sink: &mut dyn FnMut(&Step),
) -> CaseResult {
    match profile {
        Some(profile) => {
            let kernel = b.kernel_release();
            // Under the selftest's own settings khugepaged also runs between the waits, so
            // which of its decisions fall inside a wait is timing: not recorded then.
            let wanted = match env.khugepaged {
                KhugepagedMode::Deterministic => Ok(()),
                KhugepagedMode::Selftest => Err(
                    "khugepaged runs on its own under the selftest's settings (--khugepaged selftest): which of its decisions fall inside a wait is timing"
                        .to_string(),
                ),
            };
            let mut tb = TracingBackend::with_decisions(b, wanted);
            run_case_inner(
                &mut tb,
                env,
                case,
                Some((kernel, profile.to_string())),
                Some(sink),
            )
        }
        None => run_case_inner(b, env, case, None, Some(sink)),
    }
}

fn run_case_inner(
    b: &mut dyn Backend,
    env: &Env,
    case: &Case,
    trace: Option<(String, String)>,
    mut sink: Option<&mut dyn FnMut(&Step)>,
) -> CaseResult {
    let start = Instant::now();
    if let Some(reason) = unsupported_reason(b, env, case) {
        return CaseResult::skipped(*case, reason);
    }
    // get_finfo() points thp_settings.c at the test file's block queue read_ahead_kb.
    let read_ahead_path = match env.finfo.as_ref().map(|f| &f.kind) {
        Some(crate::catalogue::DirKind::Disk {
            read_ahead_kb_path: Some(p),
        }) => Some(p.as_str()),
        _ => None,
    };
    let saved = match ThpSettings::read_with_read_ahead(b, read_ahead_path) {
        Ok(s) => s,
        Err(e) => {
            let outcome = Outcome::Fail(format!("reading THP settings failed: {e}"));
            return CaseResult {
                case: *case,
                steps: Vec::new(),
                outcome,
                elapsed: start.elapsed(),
                trace: None,
                restore_error: None,
            };
        }
    };
    let mut defaults = ThpSettings::selftest_defaults(&saved, env.anon_order);
    if env.khugepaged == KhugepagedMode::Deterministic {
        // khugepaged sleeps until a wait wakes it (see KhugepagedMode::Deterministic).
        defaults.scan_sleep_millisecs = PARKED_SLEEP_MILLISECS;
        defaults.alloc_sleep_millisecs = PARKED_SLEEP_MILLISECS;
    }
    let settings_text = settings_description(&defaults);
    let era = model::KernelProfile::for_release(&b.kernel_release()).ok();
    let read_only_thp_for_fs = b.read_only_thp_for_fs();
    let mut t = Ctx::new(b, env.clone());
    t.tracing = trace.is_some();
    t.era = era;
    if matches!(case, Case::AllocAtFault) {
        if let Some(s) = sink.take() {
            t.step_sink = Some(s);
        }
    }
    let mut result = t
        .settings
        .push(t.b, defaults)
        .map_err(crate::catalogue::Abort);
    if result.is_ok() {
        result = t.settle_khugepaged();
    }
    if result.is_ok() {
        // main() runs alloc_at_fault before the TEST() list: every test starts in a process
        // with that history (it registered the process with khugepaged).
        result = alloc_at_fault(&mut t);
        if let Case::Test(entry) | Case::Extra(entry) = case {
            if result.is_ok() && t.exit_status == 0 {
                t.steps.clear();
                // The prologue's calls belong to alloc_at_fault, not to this case's trace.
                let _ = t.b.take_trace_calls();
                if let Some(s) = sink.take() {
                    t.step_sink = Some(s);
                }
                result = (entry.func)(&mut t, entry.context, entry.mem);
            } else {
                result = Err(crate::catalogue::Abort(
                    "alloc_at_fault, run first by main(), failed".into(),
                ));
            }
        }
    }
    t.trace_end();
    let decisions = t.b.decisions_recorded();
    let exit_status = t.exit_status;
    let steps = std::mem::take(&mut t.steps);
    drop(t);
    // The error names the sysfs file and the value that could not be written back.
    let restore_error = saved
        .write(b)
        .err()
        .map(|e| format!("writing the saved THP settings back: {e}"));
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
    let trace = trace.map(|(kernel, profile)| {
        let header = crate::trace::Header {
            kernel,
            profile,
            case: case.id(),
            env: env_description(env),
            settings: settings_text,
            read_only_thp_for_fs: Some(read_only_thp_for_fs),
            retried: None,
            unmodelled: Vec::new(),
            decisions,
        };
        crate::trace::render(&header, &steps, &outcome)
    });
    CaseResult {
        case: *case,
        steps,
        outcome,
        elapsed: start.elapsed(),
        trace,
        restore_error,
    }
}
