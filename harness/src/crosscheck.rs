//! Model against kernel: run a case on the host and on the model, both traced, and compare the
//! traces line by line (calls and their results, step lines, smaps counters, page maps).
//! Also recording host traces as fixtures, and replaying fixtures on the model.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use model::KernelProfile;

use crate::catalogue::{DirKind, Env, FileInfo, KhugepagedMode};
use crate::host::isolate::HostRunOptions;
use crate::model_backend::ModelBackend;
use crate::runner::{run_case_traced, Case, CaseResult, Outcome};
use crate::trace::{self, Difference};

/// The result of comparing one case.
#[derive(Debug)]
pub enum Comparison {
    Agree,
    Disagree(Difference),
    /// The host could not run the case (the model's result alone proves nothing).
    HostSkipped(String),
    /// Every difference lies where an unmodelled event of the host run may change the trace:
    /// the events that cover them and the first difference.
    Unmodelled(Vec<Explanation>, Difference),
    /// Host and model ran alike and both failed: nothing told them apart, but the selftest
    /// fails, which counts as a failure. The two reasons.
    BothFail {
        host: String,
        model: String,
    },
    /// Both skipped the case (a selftest skip or a missing prerequisite on each side): nothing
    /// was compared. The two reasons.
    BothSkip {
        host: String,
        model: String,
    },
}

/// Which trace lines an unmodelled event may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// Only the lines of the step it happened at (its calls, step line and observations).
    Step,
    /// The lines of its step and everything after: it changed the state the rest of the test
    /// runs on (a collapse the test did not ask for, a THP that was not allocated).
    StepAndAfter,
}

/// Something the model does not model that happened during a host run, tied to the step where
/// it happened. It explains a difference only in the lines it may change: a difference that
/// starts in another step is a disagreement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    pub reason: String,
    /// The step it happened at: index into the run's steps, which is also the index of the
    /// step's chunk in the trace body ([`step_chunks`]); the number of steps for the outcome.
    pub step: usize,
    pub reach: Reach,
}

/// khugepaged collapsed the area between two waits of the khugepaged context.
pub const RACE: &str =
    "khugepaged collapsed the area between two waits (the range was advised and \
     collapsible); the model runs khugepaged only while the test waits for it";
/// A THP allocation failed on the host.
pub const ALLOC_FAILURE: &str =
    "a THP allocation failed on the host (fragmentation); the model's allocations always succeed";

impl Explanation {
    /// The `unmodelled:` header form: `step 3 and after: <reason>` or `step 3: <reason>`.
    pub fn header_form(&self) -> String {
        match self.reach {
            Reach::Step => format!("step {}: {}", self.step, self.reason),
            Reach::StepAndAfter => format!("step {} and after: {}", self.step, self.reason),
        }
    }

    /// Parses [`Explanation::header_form`].
    pub fn parse_header(text: &str) -> Result<Explanation, String> {
        let bad = || {
            format!("bad unmodelled line {text:?}: expected 'step N: reason' or 'step N and after: reason'")
        };
        let rest = text.strip_prefix("step ").ok_or_else(bad)?;
        let (head, reason) = rest.split_once(": ").ok_or_else(bad)?;
        let (n, reach) = match head.strip_suffix(" and after") {
            Some(n) => (n, Reach::StepAndAfter),
            None => (head, Reach::Step),
        };
        Ok(Explanation {
            reason: reason.to_string(),
            step: n.parse().map_err(|_| bad())?,
            reach,
        })
    }

    /// Whether a difference in step chunk `chunk` is this event's to explain.
    fn covers_start(&self, chunk: usize) -> bool {
        chunk == self.step
    }
}

impl std::fmt::Display for Explanation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.header_form())
    }
}

/// The unmodelled events of a host run, each at the step whose text or calls show it: a
/// collapse khugepaged made on its own between two waits ([`crate::race::collapse_races`]), a
/// THP allocation that failed. A run that passed has none: whatever it depended on, the model must
/// reproduce it. Only the run's own steps are searched (a retry's note is not a step).
pub fn explanations(host: &CaseResult) -> Vec<Explanation> {
    if host.outcome == Outcome::Pass {
        return Vec::new();
    }
    let khugepaged_ctx = crate::race::in_khugepaged_context(&host.case);
    let alloc_failed = |t: &str| {
        t.contains("Cannot allocate memory") || t.contains("Failed to allocate huge page")
    };
    // MADV_COLLAPSE reports a failed THP allocation as ENOMEM; other calls' ENOMEM (an unmapped
    // range) the model reproduces.
    let collapse_enomem = |c: &str| c.contains("MADV_COLLAPSE) = -1 ENOMEM");
    let mut out: Vec<Explanation> = Vec::new();
    fn add(out: &mut Vec<Explanation>, step: usize, reason: &str) {
        if !out.iter().any(|e| e.step == step && e.reason == reason) {
            out.push(Explanation {
                reason: reason.to_string(),
                step,
                reach: Reach::StepAndAfter,
            });
        }
    }
    // In the deterministic mode khugepaged acts only inside the waits: there is no race, and
    // a collapse the test did not expect is a difference the model has to explain.
    let raceable = !ran_deterministic(host);
    // What the kernel did (race::collapse_races), for selftest and extra cases alike.
    if raceable {
        for race in crate::race::collapse_races(host) {
            add(&mut out, race.step, RACE);
        }
    }
    for (i, s) in host.steps.iter().enumerate() {
        if alloc_failed(&s.to_string()) || s.calls.iter().any(|c| collapse_enomem(c)) {
            add(&mut out, i, ALLOC_FAILURE);
        }
    }
    // An abort message shows in the outcome too; only when no step showed it (a run whose
    // steps were lost) is the event placed at the outcome.
    if out.is_empty() {
        if let Outcome::Fail(w) = &host.outcome {
            if raceable && khugepaged_ctx && w.contains("Unexpected huge page") {
                add(&mut out, host.steps.len(), RACE);
            }
            if alloc_failed(w) {
                add(&mut out, host.steps.len(), ALLOC_FAILURE);
            }
        }
    }
    out
}

/// Whether `host` ran in the deterministic khugepaged mode (its trace's `env:` says so).
fn ran_deterministic(host: &CaseResult) -> bool {
    host.trace
        .as_deref()
        .and_then(|t| trace::parse(t).ok())
        .and_then(|(h, _)| env_from_header(&h.env).ok())
        .is_some_and(|e| e.khugepaged == KhugepagedMode::Deterministic)
}

/// Adds `unmodelled:` header lines to a trace.
pub fn annotate(trace_text: &str, explanations: &[Explanation]) -> String {
    if explanations.is_empty() {
        return trace_text.to_string();
    }
    let mut out = String::new();
    let mut done = false;
    for line in trace_text.lines() {
        if !done && line == "--" {
            for e in explanations {
                out.push_str(&format!("unmodelled: {}\n", e.header_form()));
            }
            done = true;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// A trace body cut at step boundaries: chunk i holds step i's calls, its step line and its
/// observations (`smaps(`, `map(`, `~` lines right after it); the last chunk what follows the
/// last step (the outcome). Returns the start line of every chunk and the end.
pub fn step_chunks(body: &[String]) -> Vec<usize> {
    let is_obs = |l: &str| {
        let t = l.trim_start();
        l.starts_with("  ")
            && (t.starts_with("smaps(") || t.starts_with("map(") || t.starts_with('~'))
    };
    let mut starts = vec![0];
    let mut i = 0;
    while i < body.len() {
        if body[i].starts_with("step ") {
            i += 1;
            while i < body.len() && is_obs(&body[i]) {
                i += 1;
            }
            starts.push(i);
        } else {
            i += 1;
        }
    }
    if *starts.last().expect("non-empty") != body.len() {
        starts.push(body.len());
    }
    starts
}

/// How two normalized bodies compare, given the host run's unmodelled events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BodyComparison {
    Agree,
    /// Every difference is covered; the events that cover them and the first difference.
    Explained(Vec<Explanation>, Difference),
    /// A difference no event covers.
    Disagree(Difference),
}

/// Compares host and model bodies step by step. A differing step is explained only by an
/// event at that step; one that reaches [`Reach::StepAndAfter`] covers the rest, one that
/// reaches only its [`Reach::Step`] lets the comparison go on at the next step.
pub fn compare_bodies(host: &[String], model: &[String], events: &[Explanation]) -> BodyComparison {
    let hc = step_chunks(host);
    let mc = step_chunks(model);
    let chunk = |starts: &[usize], body_len: usize, i: usize| -> (usize, usize) {
        match (starts.get(i), starts.get(i + 1)) {
            (Some(&a), Some(&b)) => (a, b),
            (Some(&a), None) => (a, body_len),
            _ => (body_len, body_len),
        }
    };
    let n = (hc.len().max(mc.len())).saturating_sub(1).max(1);
    let mut used: Vec<Explanation> = Vec::new();
    let mut first: Option<Difference> = None;
    for i in 0..n {
        let (ha, hb) = chunk(&hc, host.len(), i);
        let (ma, mb) = chunk(&mc, model.len(), i);
        if host[ha..hb] == model[ma..mb] {
            continue;
        }
        let d = difference_at(host, model, ha, ma);
        match events.iter().find(|e| e.covers_start(i)) {
            None => return BodyComparison::Disagree(d),
            Some(e) => {
                used.push(e.clone());
                first.get_or_insert(d);
                if e.reach == Reach::StepAndAfter {
                    break;
                }
            }
        }
    }
    match first {
        None => BodyComparison::Agree,
        Some(d) => BodyComparison::Explained(used, d),
    }
}

/// The first difference at or after host line `h` and model line `m`, with line numbers and
/// context from the host side's whole body.
fn difference_at(host: &[String], model: &[String], h: usize, m: usize) -> Difference {
    let mut d = trace::first_difference(&host[h..], &model[m..]).unwrap_or(Difference {
        line: 0,
        left: "(end of trace)".into(),
        right: "(end of trace)".into(),
        step: String::new(),
        left_map: None,
        right_map: None,
    });
    d.line += h;
    if d.step.starts_with('(') {
        if let Some(s) = host[..h].iter().rev().find(|l| l.starts_with("step ")) {
            d.step = s.clone();
        }
    }
    d
}

/// A model run for comparison: traced, with the invariant checker after every call.
pub struct ModelRun {
    pub result: CaseResult,
    /// Where the invariants first broke and how, if they did.
    pub invariants: Result<(), String>,
}

/// Runs `case` traced on the model with `profile`, in `env`.
pub fn model_trace(
    profile: &KernelProfile,
    read_only_thp_for_fs: bool,
    env: &Env,
    case: &Case,
) -> CaseResult {
    model_trace_checked(profile, read_only_thp_for_fs, env, case).result
}

/// [`model_trace`], checking the model's invariants at every step and after every collapse.
pub fn model_trace_checked(
    profile: &KernelProfile,
    read_only_thp_for_fs: bool,
    env: &Env,
    case: &Case,
) -> ModelRun {
    let mut b = ModelBackend::new(profile.clone());
    b.k.read_only_thp_for_fs = read_only_thp_for_fs;
    b.dir = env.finfo.as_ref().map(|f| f.kind.clone());
    b.check_invariants = true;
    let result = run_case_traced(&mut b, env, case, profile.name);
    // A last look after the run (cleanup after the final traced call).
    if b.invariant_violation.is_none() {
        if let Err(v) = b.k.check_invariants() {
            b.invariant_violation = Some(v.to_string().replace('\n', "; "));
        }
    }
    let invariants = match b.invariant_violation {
        None => Ok(()),
        Some(v) => Err(format!(
            "model invariants broken {}: {v}",
            result
                .trace
                .as_deref()
                .map(where_invariants_broke)
                .unwrap_or_else(|| "after the run".into())
        )),
    };
    ModelRun { result, invariants }
}

/// "after `<call>` (in step N: <step line>)" for the first invariant note of a model trace.
fn where_invariants_broke(trace_text: &str) -> String {
    let Ok((_, lines)) = trace::parse(trace_text) else {
        return "after the run".into();
    };
    let note = format!("# {}", crate::model_backend::INVARIANTS_BROKEN);
    let Some(at) = lines.iter().position(|l| l.trim_start().starts_with(&note)) else {
        return "after the run".into();
    };
    let call = lines[..at]
        .iter()
        .rev()
        .find(|l| !l.trim_start().starts_with('#'))
        .map(|l| l.trim().to_string())
        .unwrap_or_else(|| "(the start)".into());
    let steps_before = lines[..at]
        .iter()
        .filter(|l| l.starts_with("step "))
        .count();
    format!("after `{call}` (in step {steps_before})")
}

/// The normalized body of a trace, with `dir` shown as `$DIR`; without its decision lines
/// unless `decisions`.
pub fn body(trace_text: &str, dir: Option<&str>, decisions: bool) -> Result<Vec<String>, String> {
    let (_, lines) = trace::parse(trace_text)?;
    Ok(without_decisions_unless(
        decisions,
        trace::normalize(&lines, dir),
    ))
}

fn without_decisions_unless(decisions: bool, body: Vec<String>) -> Vec<String> {
    if decisions {
        body
    } else {
        body.into_iter()
            .filter(|l| !crate::decision::is_decision_line(l))
            .collect()
    }
}

/// Why two traces are not compared decision by decision, or None when they are: both must
/// have recorded them (`decisions: yes`); a trace from before decisions were recorded, or one
/// that says why it could not, is compared without them, and the reason is shown.
pub fn decisions_not_compared(left: &trace::Header, right: &trace::Header) -> Option<String> {
    let why = |h: &trace::Header| match &h.decisions {
        Some(Ok(())) => None,
        Some(Err(why)) => Some(why.clone()),
        None => Some("recorded before traces had decisions".to_string()),
    };
    match (why(left), why(right)) {
        (None, None) => None,
        (Some(l), _) => Some(l),
        (_, Some(r)) => Some(r),
    }
}

/// [`decisions_not_compared`] for a host and a model run's traces.
pub fn decisions_note(host: &CaseResult, model: &CaseResult) -> Option<String> {
    let header = |r: &CaseResult| trace::parse(r.trace.as_deref()?).ok().map(|(h, _)| h);
    decisions_not_compared(&header(host)?, &header(model)?)
}

fn unreadable(what: String) -> Comparison {
    Comparison::Disagree(Difference {
        line: 0,
        left: what,
        right: String::new(),
        step: String::new(),
        left_map: None,
        right_map: None,
    })
}

/// Compares a host result with a model result. Two runs that agree line by line but both
/// failed, or that both skipped, are reported as such, not as agreement.
pub fn compare(host: &CaseResult, model: &CaseResult, model_dir: Option<&str>) -> Comparison {
    if let (Outcome::Skip(h), Outcome::Skip(m)) = (&host.outcome, &model.outcome) {
        return Comparison::BothSkip {
            host: h.clone(),
            model: m.clone(),
        };
    }
    if let (Outcome::Skip(why), None) = (&host.outcome, &host.trace) {
        return Comparison::HostSkipped(why.clone());
    }
    let cmp = compare_traces(host, model, model_dir);
    match (cmp, &host.outcome, &model.outcome) {
        (Comparison::Agree, Outcome::Fail(h), Outcome::Fail(m)) => Comparison::BothFail {
            host: h.clone(),
            model: m.clone(),
        },
        (cmp, _, _) => cmp,
    }
}

fn compare_traces(host: &CaseResult, model: &CaseResult, model_dir: Option<&str>) -> Comparison {
    // Decision by decision when both sides recorded them (see `decisions_note`).
    let decisions = host.trace.is_some() && decisions_note(host, model).is_none();
    let h = host
        .trace
        .as_deref()
        .map(|t| body(t, None, decisions))
        .unwrap_or(Ok(Vec::new()));
    let m = model
        .trace
        .as_deref()
        .map(|t| body(t, model_dir, decisions))
        .unwrap_or(Ok(Vec::new()));
    match (h, m) {
        (Ok(h), Ok(m)) => match compare_bodies(
            &h,
            &crate::decision::within_spans(&h, m),
            &explanations(host),
        ) {
            BodyComparison::Agree => Comparison::Agree,
            BodyComparison::Explained(e, d) => Comparison::Unmodelled(e, d),
            BodyComparison::Disagree(d) => Comparison::Disagree(d),
        },
        (Err(e), _) | (_, Err(e)) => unreadable(format!("unreadable trace: {e}")),
    }
}

/// The model's environment for a host run: the same directory kind; the private tmpfs of
/// `--tmpfs` becomes the model's tmpfs stand-in.
pub fn model_env(env: &Env, private_tmpfs: bool) -> Env {
    if private_tmpfs && env.finfo.is_none() {
        Env {
            finfo: Some(FileInfo::model_tmpfs("advise")),
            ..env.clone()
        }
    } else {
        env.clone()
    }
}

/// Runs `case` on both and compares. `host_env` is what the host gets (no finfo with
/// `--tmpfs`), `model_env` the model's. Broken model invariants are a disagreement.
pub fn cross_check(
    case: &Case,
    host_env: &Env,
    model_env: &Env,
    hopts: &HostRunOptions,
    profile: &KernelProfile,
) -> (CaseResult, CaseResult, Comparison) {
    let mut hopts = hopts.clone();
    hopts.trace = true;
    let host = crate::host::isolate::run_case_retrying_races(case, host_env, &hopts);
    let run = model_trace_checked(
        profile,
        crate::host::probe::read_only_thp_for_fs(),
        model_env,
        case,
    );
    let dir = model_env.finfo.as_ref().map(|f| f.dir.clone());
    let cmp = match &run.invariants {
        Err(e) => unreadable(e.clone()),
        Ok(()) => compare(&host, &run.result, dir.as_deref()),
    };
    (host, run.result, cmp)
}

/// The fixture file name of a case: `khugepaged_anon_collapse_full.trace`, with `-s2` etc.
/// for an mTHP order.
pub fn fixture_name(case: &Case, env: &Env) -> String {
    let mut order = if env.anon_order > 0 {
        format!("-s{}", env.anon_order)
    } else {
        String::new()
    };
    if env.collapse_order > 0 {
        order.push_str(&format!("-c{}", env.collapse_order));
    }
    // File cases on a block-device filesystem are recorded beside the tmpfs ones.
    let disk = if matches!(
        env.finfo.as_ref().map(|f| &f.kind),
        Some(DirKind::Disk { .. })
    ) {
        "-disk"
    } else {
        ""
    };
    format!("{}{order}{disk}.trace", case.id().replace([':', '/'], "_"))
}

/// Writes `text` to `path` atomically: a temporary file in the same directory, then a rename,
/// so a fixture is never half-written.
pub fn write_atomically(path: &Path, text: &str) -> Result<(), String> {
    let dir = path
        .parent()
        .ok_or_else(|| format!("{}: no parent directory", path.display()))?;
    fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("fixture"),
        std::process::id()
    ));
    let mut f = crate::host::create_private_file(&tmp)
        .map_err(|e| format!("creating {}: {e}", tmp.display()))?;
    let r = f.write_all(text.as_bytes()).and_then(|_| f.sync_all());
    drop(f);
    if let Err(e) = r {
        let _ = fs::remove_file(&tmp);
        return Err(format!("writing {}: {e}", tmp.display()));
    }
    // Fixtures are data for everyone: readable, not executable.
    let _ = fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o644));
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        format!("renaming {} to {}: {e}", tmp.display(), path.display())
    })
}

/// The directory for this kernel's fixtures under `root`.
pub fn fixture_dir(root: &Path, kernel_release: &str) -> PathBuf {
    root.join(kernel_release)
}

/// Every fixture under `root` (`<root>/<release>/*.trace`), sorted.
pub fn list_fixtures(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(releases) = fs::read_dir(root) {
        for r in releases.flatten() {
            if let Ok(files) = fs::read_dir(r.path()) {
                for f in files.flatten() {
                    let p = f.path();
                    if p.extension().is_some_and(|e| e == "trace") {
                        out.push(p);
                    }
                }
            }
        }
    }
    out.sort();
    out
}

/// Parses the `env:` header line back into an environment for the model.
pub fn env_from_header(text: &str) -> Result<Env, String> {
    let mut env = Env::default();
    for part in text.split_whitespace() {
        match part.split_once('=') {
            Some(("anon_order", v)) => {
                env.anon_order = v.parse().map_err(|_| format!("bad anon_order {v:?}"))?
            }
            Some(("khugepaged", v)) => {
                env.khugepaged = crate::catalogue::KhugepagedMode::from_name(v)
                    .ok_or_else(|| format!("bad khugepaged mode {v:?}"))?
            }
            Some(("catalogue", v)) => {
                env.catalogue = crate::catalogue::Catalogue::from_name(v)
                    .ok_or_else(|| format!("bad catalogue {v:?}"))?
            }
            Some(("collapse_order", v)) => {
                env.collapse_order = v.parse().map_err(|_| format!("bad collapse_order {v:?}"))?
            }
            Some(("file", "-")) => env.finfo = None,
            Some(("file", "disk")) => {
                env.finfo = Some(FileInfo::new(
                    "/model-disk",
                    DirKind::Disk {
                        read_ahead_kb_path: None,
                    },
                ))
            }
            Some(("file", v)) => {
                let huge = v
                    .strip_prefix("tmpfs(huge=")
                    .and_then(|h| h.strip_suffix(')'))
                    .ok_or_else(|| format!("bad file kind {v:?}"))?;
                env.finfo = Some(FileInfo::model_tmpfs(huge));
            }
            _ => return Err(format!("bad env item {part:?}")),
        }
    }
    Ok(env)
}

/// Replays one fixture on the model: the invariants after every call, the settings header,
/// then the bodies, step by step. Ok(None) when they agree; Ok(Some(events)) when every
/// difference lies where one of the fixture's `unmodelled:` events may change the trace; Err
/// with a readable diff otherwise. The comparison runs whether the fixture has such events or
/// not (a test runner lists those as ignored; `--include-ignored` still compares).
pub fn replay(path: &Path) -> Result<Option<Vec<Explanation>>, String> {
    let at = |e: String| format!("{}: {e}", path.display());
    let text = fs::read_to_string(path).map_err(|e| at(e.to_string()))?;
    let (header, lines) = trace::parse(&text).map_err(at)?;
    let events = header
        .unmodelled
        .iter()
        .map(|u| Explanation::parse_header(u))
        .collect::<Result<Vec<_>, _>>()
        .map_err(at)?;
    if !events.is_empty() && lines.last().is_some_and(|l| l == "outcome: pass") {
        return Err(at(
            "the recorded run passed, yet the fixture says it depends on something unmodelled; \
             a passing run is reproduced by the model or it is a disagreement: remove the \
             `unmodelled:` lines"
                .into(),
        ));
    }
    if events.iter().any(|e| e.reason == RACE)
        && env_from_header(&header.env).is_ok_and(|e| e.khugepaged == KhugepagedMode::Deterministic)
    {
        return Err(at(
            "recorded in the deterministic khugepaged mode, where khugepaged acts only inside \
             the test's waits, yet marked as raced (`unmodelled:` race line from an older \
             recorder): re-record it"
                .into(),
        ));
    }
    let profile = KernelProfile::by_name(&header.profile)
        .map_or_else(|| KernelProfile::for_release(&header.kernel), Ok)
        .map_err(|e| {
            at(format!(
                "no model profile for kernel {} (profile {:?}): {e}",
                header.kernel, header.profile
            ))
        })?;
    let case = crate::runner::all_cases()
        .into_iter()
        .find(|c| c.id() == header.case)
        .ok_or_else(|| at(format!("unknown case {:?}", header.case)))?;
    let env = env_from_header(&header.env).map_err(at)?;
    // The recorded `read_only_thp_for_fs:`; a fixture recorded before that line existed
    // stands, when it is a file case on a disk filesystem, for a kernel that collapses regular
    // files (the host records such a case only there), else for one that does not.
    let read_only_thp_for_fs = header.read_only_thp_for_fs.unwrap_or(matches!(
        env.finfo.as_ref().map(|f| &f.kind),
        Some(DirKind::Disk { .. })
    ));
    let model = model_trace_checked(&profile, read_only_thp_for_fs, &env, &case);
    model.invariants.clone().map_err(|e| {
        at(format!(
            "replaying on the model (profile {}): {e}",
            profile.name
        ))
    })?;
    let model_text = model.result.trace.as_deref().unwrap_or("");
    let (model_header, model_lines) = trace::parse(model_text).map_err(at)?;
    if model_header.settings != header.settings {
        return Err(at(format!(
            "the model ran the case under other THP settings than the kernel did:\n  kernel: {}\n   model: {}",
            header.settings, model_header.settings
        )));
    }
    let dir = env.finfo.as_ref().map(|f| f.dir.clone());
    // A fixture that recorded decisions is compared decision by decision; an older one, or
    // one whose kernel could not show them, without (its header says which).
    let decisions = decisions_not_compared(&header, &model_header).is_none();
    let m = body(model_text, dir.as_deref(), decisions)?;
    let recorded = without_decisions_unless(
        decisions,
        trace::normalize(&unobserved_where_volatile(&lines, &model_lines), None),
    );
    let m = crate::decision::within_spans(&recorded, m);
    let diff = |d: &Difference| {
        at(format!(
            "the model (profile {}) disagrees with the kernel recorded on {}\n{}",
            profile.name,
            header.kernel,
            trace::describe(d, "kernel", "model")
        ))
    };
    match compare_bodies(&recorded, &m, &events) {
        BodyComparison::Agree => Ok(None),
        BodyComparison::Explained(used, _) => Ok(Some(used)),
        BodyComparison::Disagree(d) => Err(diff(&d)),
    }
}

/// The sidecar of a release's fixtures that disagree with the model and stay as the kernel
/// recorded them: `fixtures/<release>/AWAITING`, one `<fixture file>: #<issue> <why>` per
/// line, `#` comments.
pub const AWAITING: &str = "AWAITING";

/// The AWAITING entries of the fixture directory `dir`: file name -> reason.
pub fn awaiting(dir: &Path) -> Result<std::collections::BTreeMap<String, String>, String> {
    let path = dir.join(AWAITING);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Default::default()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut out = std::collections::BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (file, reason) = line
            .split_once(": ")
            .filter(|(_, r)| r.starts_with('#') && r[1..].starts_with(|c: char| c.is_ascii_digit()))
            .ok_or_else(|| {
                format!(
                    "{}:{}: expected `<fixture>.trace: #<model issue> <why>`, got {line:?}",
                    path.display(),
                    n + 1
                )
            })?;
        out.insert(file.to_string(), reason.to_string());
    }
    Ok(out)
}

/// The recorded body without the observations taken at steps where the model's trace says
/// khugepaged may act on the area (`~`): what /proc showed there depended on timing, so the
/// model predicts nothing for it (a fixture recorded with the selftest's khugepaged settings
/// may have read /proc where the model now knows the area was advised, e.g. in a forked
/// child, which inherits MADV_HUGEPAGE).
pub fn unobserved_where_volatile(recorded: &[String], model: &[String]) -> Vec<String> {
    let mut volatile = std::collections::BTreeSet::new();
    let mut step = 0usize;
    for l in model {
        if l.starts_with("step ") {
            step += 1;
        } else if l.trim_start().starts_with('~') {
            volatile.insert(step);
        }
    }
    let mut step = 0usize;
    recorded
        .iter()
        .filter(|l| {
            if l.starts_with("step ") {
                step += 1;
                return true;
            }
            let t = l.trim_start();
            let observation = t.starts_with("smaps(") || t.starts_with("map(");
            !(observation && volatile.contains(&step))
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::{Step, Verdict};
    use crate::trace::Header;

    fn case(id: &str) -> Case {
        crate::runner::all_cases()
            .into_iter()
            .find(|c| c.id() == id)
            .expect("a catalogue case")
    }

    fn step(text: &str, verdict: Verdict, word: &str, calls: &[&str]) -> Step {
        Step {
            text: text.into(),
            verdict,
            word: word.into(),
            calls: calls.iter().map(|c| c.to_string()).collect(),
            obs: vec!["map(0x40000000+512): 0-511 pte".into()],
            ..Step::default()
        }
    }

    fn header(case: &Case) -> Header {
        Header {
            kernel: "6.18.44".into(),
            profile: "6.18".into(),
            case: case.id(),
            env: "anon_order=0 file=-".into(),
            settings: "enabled=madvise".into(),
            read_only_thp_for_fs: Some(false),
            retried: None,
            unmodelled: Vec::new(),
            decisions: Some(Ok(())),
        }
    }

    fn result(case: Case, steps: Vec<Step>, outcome: Outcome) -> CaseResult {
        let trace = Some(trace::render(&header(&case), &steps, &outcome));
        CaseResult {
            case,
            steps,
            outcome,
            elapsed: std::time::Duration::ZERO,
            trace,
            restore_error: None,
        }
    }

    fn model_run(r: CaseResult) -> CaseResult {
        r
    }

    const SWAP: &str = "khugepaged:anon/collapse_max_ptes_swap";

    /// The model's side of the crafted pairs: four clean steps.
    fn model_steps() -> Vec<Step> {
        vec![
            step(
                "Fault in",
                Verdict::Ok,
                "OK",
                &["fill(0x40000000, 512 pages) = 0"],
            ),
            step(
                "Swapout",
                Verdict::Ok,
                "OK",
                &["madvise(0x40000000, 0x200000, MADV_PAGEOUT) = 0"],
            ),
            step(
                "Collapse with max_ptes_swap fully swapped",
                Verdict::Ok,
                "OK",
                &[],
            ),
            step("Collapse with max_ptes_swap pages", Verdict::Ok, "OK", &[]),
        ]
    }

    /// The host raced at step 3 ("Unexpected huge page").
    fn raced_host_steps() -> Vec<Step> {
        let mut s = model_steps();
        s[3] = step("Unexpected huge page", Verdict::Fail, "", &[]);
        s
    }

    #[test]
    fn a_race_explains_its_own_step_and_after_only() {
        let c = case(SWAP);
        let model = model_run(result(c, model_steps(), Outcome::Pass));
        // Only the raced step differs: explained.
        let host = result(
            c,
            raced_host_steps(),
            Outcome::Fail("Unexpected huge page".into()),
        );
        match compare(&host, &model, None) {
            Comparison::Unmodelled(e, _) => {
                assert_eq!(e.len(), 1);
                assert_eq!(e[0].step, 3);
                assert_eq!(e[0].reason, RACE);
            }
            other => panic!("expected an explained difference, got {other:?}"),
        }
        // The same race plus an unrelated difference at step 1: a disagreement there.
        let mut steps = raced_host_steps();
        steps[1].calls = vec!["madvise(0x40000000, 0x200000, MADV_PAGEOUT) = -1 EINVAL".into()];
        let host = result(c, steps, Outcome::Fail("Unexpected huge page".into()));
        match compare(&host, &model, None) {
            Comparison::Disagree(d) => assert!(d.left.contains("EINVAL"), "{d:?}"),
            other => panic!("expected a disagreement, got {other:?}"),
        }
    }

    #[test]
    fn a_deterministic_run_has_no_races() {
        let c = case(SWAP);
        let mut host = result(
            c,
            raced_host_steps(),
            Outcome::Fail("Unexpected huge page".into()),
        );
        let mut h = header(&c);
        h.env = "anon_order=0 file=- khugepaged=deterministic".into();
        host.trace = Some(trace::render(&h, &host.steps, &host.outcome));
        assert!(explanations(&host).is_empty());
        let model = model_run(result(c, model_steps(), Outcome::Pass));
        assert!(matches!(
            compare(&host, &model, None),
            Comparison::Disagree(_)
        ));
    }

    #[test]
    fn a_retried_run_that_passed_explains_nothing() {
        let c = case(SWAP);
        let mut steps = model_steps();
        // What the retry adds: a diagnostic under the first step, a header line.
        steps[0].detail.push(
            "(first attempt failed: Unexpected huge page: khugepaged raced ahead of the test; retried once)"
                .into(),
        );
        steps[2].word = "Fail".into();
        let mut host = result(c, steps, Outcome::Pass);
        assert!(explanations(&host).is_empty());
        // Even a step text naming the race explains nothing in a run that passed.
        host.steps[1].text = "Unexpected huge page".into();
        assert!(explanations(&host).is_empty());
        let model = model_run(result(c, model_steps(), Outcome::Pass));
        assert!(matches!(
            compare(&host, &model, None),
            Comparison::Disagree(_)
        ));
    }

    #[test]
    fn an_enomem_the_model_reproduces_explains_nothing_later() {
        let c = case("madvise:anon/collapse_full");
        let enomem = "madvise(0x50000000, 0x200000, MADV_COLLAPSE) = -1 ENOMEM";
        let mut model_s = model_steps();
        model_s[0].calls.push(enomem.into());
        let mut host_s = model_s.clone();
        host_s[2] = step("Collapse", Verdict::Fail, "Fail", &[]);
        let host = result(c, host_s, Outcome::Fail("Collapse Fail".into()));
        // The host's ENOMEM is at step 0, where the model agrees.
        assert_eq!(explanations(&host)[0].step, 0);
        let model = model_run(result(c, model_s, Outcome::Pass));
        match compare(&host, &model, None) {
            Comparison::Disagree(d) => assert!(d.step.contains("Swapout"), "{d:?}"),
            other => panic!("expected a disagreement, got {other:?}"),
        }
    }

    #[test]
    fn a_step_reach_event_lets_the_comparison_go_on() {
        let l = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let model = l(&[
            "  mmap(0x40000000, 0x200000, anon) = 0x40000000",
            "step ok: a OK",
            "  map(0x40000000+1): 0 pte",
            "step ok: b OK",
            "  map(0x40000000+1): 0 pmd",
            "step ok: c OK",
            "outcome: pass",
        ]);
        let mut host = model.clone();
        host[4] = "  map(0x40000000+1): 0 pte".into();
        let at_b = Explanation {
            reason: "a glitch of one observation".into(),
            step: 1,
            reach: Reach::Step,
        };
        assert!(matches!(
            compare_bodies(&host, &model, std::slice::from_ref(&at_b)),
            BodyComparison::Explained(..)
        ));
        // A second difference in a later step is not covered.
        host[5] = "step fail: c Fail".into();
        match compare_bodies(&host, &model, std::slice::from_ref(&at_b)) {
            BodyComparison::Disagree(d) => assert_eq!(d.line, 5),
            other => panic!("expected a disagreement, got {other:?}"),
        }
        // An event at another step covers neither.
        let elsewhere = Explanation { step: 0, ..at_b };
        assert!(matches!(
            compare_bodies(&host, &model, &[elsewhere]),
            BodyComparison::Disagree(_)
        ));
        assert_eq!(step_chunks(&model), vec![0, 3, 5, 6, 7]);
    }

    /// The crafted pair: one khugepaged wait whose decision says `none_or_zero=N`.
    fn decided_steps(none: u32) -> Vec<Step> {
        let decision = format!(
            "decision pmd 0: SCAN_EXCEED_NONE_PTE scan_pmd none_or_zero={none} referenced=255 unmapped=0"
        );
        vec![step(
            "Maybe collapse with max_ptes_none exceeded",
            Verdict::Ok,
            "OK",
            &["wait for khugepaged = done", &decision],
        )]
    }

    #[test]
    fn a_difference_in_one_decision_is_a_disagreement() {
        let c = case("khugepaged:anon/collapse_max_ptes_none");
        let model = result(c, decided_steps(257), Outcome::Pass);
        assert!(matches!(
            compare(&result(c, decided_steps(257), Outcome::Pass), &model, None),
            Comparison::Agree
        ));
        let host = result(c, decided_steps(256), Outcome::Pass);
        match compare(&host, &model, None) {
            Comparison::Disagree(d) => {
                assert!(d.left.contains("none_or_zero=256"), "{d:?}");
                assert!(d.right.contains("none_or_zero=257"), "{d:?}");
            }
            other => panic!("expected a disagreement, got {other:?}"),
        }
        assert_eq!(decisions_note(&host, &model), None);
        // A host that could not record decisions is compared without them, and says why.
        let mut blind = host.clone();
        blind.trace = blind.trace.map(|t| {
            t.replace(
                "decisions: yes",
                "decisions: no: no tracefs instance: EPERM",
            )
            .lines()
            .filter(|l| !crate::decision::is_decision_line(l))
            .map(|l| format!("{l}\n"))
            .collect()
        });
        assert!(matches!(compare(&blind, &model, None), Comparison::Agree));
        assert_eq!(
            decisions_note(&blind, &model).as_deref(),
            Some("no tracefs instance: EPERM")
        );
    }

    #[test]
    fn replay_compares_decisions_where_the_fixture_recorded_them() {
        let f = "khugepaged_anon_collapse_max_ptes_none.trace";
        // A fixture of a kernel whose decisions were recorded (this host's).
        let replay_edited = |f: &str, edit: &dyn Fn(String) -> String| {
            replay_edited_where(f, |t| t.contains("decisions: yes\n"), edit)
        };
        assert_eq!(replay_edited(f, &|t| t), Ok(None));
        // One decision's counts changed: the replay disagrees, at that line.
        let r = replay_edited(f, &|t| {
            t.replacen("none_or_zero=257", "none_or_zero=258", 1)
        });
        let e = r.unwrap_err();
        assert!(
            e.contains("disagrees") && e.contains("none_or_zero=258"),
            "{e}"
        );
        // Another result code for the same counts: the same.
        let r = replay_edited(f, &|t| {
            t.replacen(
                "decision pmd 0: SCAN_SUCCEED",
                "decision pmd 0: SCAN_FAIL",
                1,
            )
        });
        assert!(r.unwrap_err().contains("SCAN_FAIL"));
        // A fixture from before decisions (no header line, no decision lines) still replays,
        // and so does one that says why it has none.
        let without = |t: String| -> String {
            t.lines()
                .filter(|l| !crate::decision::is_decision_line(l) && *l != "decisions: yes")
                .map(|l| format!("{l}\n"))
                .collect()
        };
        assert_eq!(replay_edited(f, &without), Ok(None));
        let r = replay_edited(f, &|t| {
            without(t).replace("--\n", "decisions: no: no tracefs instance\n--\n")
        });
        assert_eq!(r, Ok(None));
        // A header that says none were recorded is not compared with the model's.
        let r = replay_edited(f, &|t| {
            t.replace("decisions: yes", "decisions: no: no tracefs instance")
                .replacen("none_or_zero=257", "none_or_zero=258", 1)
        });
        assert_eq!(r, Ok(None));
    }

    #[test]
    fn explanation_header_form_round_trips() {
        for reach in [Reach::Step, Reach::StepAndAfter] {
            let e = Explanation {
                reason: RACE.into(),
                step: 7,
                reach,
            };
            assert_eq!(Explanation::parse_header(&e.header_form()), Ok(e));
        }
        assert!(Explanation::parse_header("khugepaged raced").is_err());
    }

    /// A fixture of this repository with its text changed by `edit`, replayed.
    fn replay_edited(
        name: &str,
        edit: impl Fn(String) -> String,
    ) -> Result<Option<Vec<Explanation>>, String> {
        replay_edited_where(name, |_| true, edit)
    }

    /// [`replay_edited`] of the first fixture named `name` whose text satisfies `pick`.
    fn replay_edited_where(
        name: &str,
        pick: impl Fn(&str) -> bool,
        edit: impl Fn(String) -> String,
    ) -> Result<Option<Vec<Explanation>>, String> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
        let original = list_fixtures(&root)
            .into_iter()
            .filter(|p| p.file_name().is_some_and(|n| n == name))
            .map(|p| fs::read_to_string(p).unwrap())
            .find(|t| pick(t))
            .expect("fixture");
        let text = edit(original);
        let dir = std::env::temp_dir().join(format!("gate-replay-{}-{name}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        fs::write(&path, text).unwrap();
        let r = replay(&path);
        let _ = fs::remove_dir_all(&dir);
        r
    }

    #[test]
    fn replay_compares_fixtures_with_unmodelled_events() {
        let f = "khugepaged_anon_collapse_max_ptes_swap.trace";
        assert_eq!(replay_edited(f, |t| t), Ok(None));
        // A recorded run that passed cannot be unmodelled.
        let r = replay_edited(f, |t| {
            t.replace(
                "--\n",
                &format!("unmodelled: step 3 and after: {RACE}\n--\n"),
            )
        });
        assert!(r.unwrap_err().contains("the recorded run passed"));
        // A race at the last step of a run under the selftest's own settings does not excuse
        // a changed first call.
        let raced_at_end = |t: &str| {
            let n = t.lines().filter(|l| l.starts_with("step ")).count() - 1;
            t.replace(
                "--\n",
                &format!("unmodelled: step {n} and after: {RACE}\n--\n"),
            )
            .replacen("= 0x40000000", "= 0x50000000", 1)
            .replace("outcome: pass", "outcome: fail: Unexpected huge page")
        };
        let r = replay_edited(f, |t| {
            raced_at_end(
                &t.replace("khugepaged=deterministic", "khugepaged=selftest")
                    .replace("scan_sleep_millisecs=86400000", "scan_sleep_millisecs=10"),
            )
        });
        let e = r.unwrap_err();
        assert!(e.contains("disagrees"), "{e}");
        // In the deterministic mode there is no race to claim.
        let r = replay_edited(f, |t| raced_at_end(&t));
        assert!(r.unwrap_err().contains("re-record it"));
    }

    #[test]
    fn replay_compares_the_settings_header() {
        let f = "madvise_anon_collapse_full.trace";
        let r = replay_edited(f, |t| t.replace("max_ptes_none=511", "max_ptes_none=0"));
        assert!(r.unwrap_err().contains("other THP settings"));
        // A fixture from before the header line replays with the fallback.
        let r = replay_edited(f, |t| t.replace("read_only_thp_for_fs: no\n", ""));
        assert_eq!(r, Ok(None));
    }

    #[test]
    fn the_model_backend_reports_broken_invariants_at_a_step_boundary() {
        use crate::backend::{Backend, MapTarget};
        let mut b = ModelBackend::new(KernelProfile::v6_18());
        b.check_invariants = true;
        {
            let mut t = crate::trace::TracingBackend::new(&mut b);
            t.mmap(0x4000_0000, 0x20_0000, MapTarget::PrivateAnon)
                .unwrap();
            t.fill_pages(0x4000_0000, 4, 0).unwrap();
            assert!(!t
                .take_trace_calls()
                .iter()
                .any(|c| c.contains(crate::model_backend::INVARIANTS_BROKEN)));
        }
        let pid = b.pid;
        let folio = b.k.pagemap(pid, 0x4000_0000).unwrap().page.unwrap().0;
        b.k.folios.folio_mut(folio).refcount += 1;
        let mut t = crate::trace::TracingBackend::new(&mut b);
        let calls = t.take_trace_calls();
        assert!(
            calls
                .iter()
                .any(|c| c.contains(crate::model_backend::INVARIANTS_BROKEN)),
            "{calls:?}"
        );
        drop(t);
        assert!(b.invariant_violation.is_some());
    }
}
