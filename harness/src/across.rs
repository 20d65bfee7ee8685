//! `--across-releases`: a case run on the model under every release profile, 6.1 … 7.3.
//!
//! For each release the outcome is summarised as the verdict, the collapse results (the model's
//! scan and collapse decisions, and what MADV_COLLAPSE returned) and the page map of the test
//! area at the last step. Where the outcome changes from one release to the next, every switch
//! that changed between the two is flipped alone on the older profile; the switches whose flip
//! alone reproduces the change are named, with the kernel commit that made it. The question it
//! answers is the one a maintainer asks first: since when does the kernel do this, and why.

use std::fmt::Write as _;

use model::profile::RELEASES;
use model::{KernelProfile, Release, Switch};

use crate::catalogue::Env;
use crate::model_backend::ModelBackend;
use crate::runner::{run_case_traced, Case, Outcome};

/// What one run of a case looked like, in the terms the table compares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// pass, fail: <first failing line>, skip: <why>.
    pub verdict: String,
    /// The collapse decisions in order, repeats folded ("khugepaged scan_pmd SCAN_SUCCEED").
    pub collapse: String,
    /// The page map of the last observed step.
    pub page_map: String,
    /// The page maps of every observed step, in order (an earlier state may differ while the
    /// end state is the same, e.g. the fault size before a collapse).
    pub page_maps: Vec<String>,
}

/// Runs `case` on a fresh model of profile `p` and summarises it.
pub fn summarise(
    case: &Case,
    env: &Env,
    p: &KernelProfile,
    model: &mut dyn FnMut(&KernelProfile) -> ModelBackend,
) -> Summary {
    let mut b = model(p);
    let release = crate::backend::Backend::kernel_release(&b);
    let r = run_case_traced(&mut b, env, case, p.name);
    // A skip reason may name the release; it must not make every release look different.
    let verdict = match &r.outcome {
        Outcome::Pass => "pass".to_string(),
        Outcome::Fail(w) => format!("fail: {}", w.trim()),
        Outcome::Skip(w) => format!("skip: {}", w.trim()),
    }
    .replace(&release, "this kernel");
    let trace = r.trace.unwrap_or_default();
    let page_maps: Vec<String> = trace
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with("map("))
        .map(str::to_string)
        .collect();
    Summary {
        verdict,
        collapse: collapse_summary(&trace),
        page_map: page_maps.last().cloned().unwrap_or_else(|| "-".into()),
        page_maps,
    }
}

/// The collapse decisions of a trace: the `#` notes' context, stage and result, and the
/// results of MADV_COLLAPSE calls, consecutive repeats folded as `×n`.
fn collapse_summary(trace: &str) -> String {
    let mut items: Vec<(String, usize)> = Vec::new();
    for line in trace.lines().map(str::trim_start) {
        let item = if let Some(note) = line.strip_prefix("# ") {
            let mut words = note.split_whitespace();
            let (ctx, stage) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
            match note.split_whitespace().find(|w| w.starts_with("SCAN_")) {
                Some(result) => format!("{ctx} {stage} {result}"),
                None => continue,
            }
        } else if line.contains("MADV_COLLAPSE)") {
            match line.rsplit_once(" = ") {
                Some((_, result)) => format!("MADV_COLLAPSE = {result}"),
                None => continue,
            }
        } else {
            continue;
        };
        match items.last_mut() {
            Some((last, n)) if *last == item => *n += 1,
            _ => items.push((item, 1)),
        }
    }
    if items.is_empty() {
        return "-".into();
    }
    items
        .iter()
        .map(|(i, n)| {
            if *n > 1 {
                format!("{i} ×{n}")
            } else {
                i.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The switches that explain a change of outcome between `prev` and `next`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cause {
    /// Each of these, flipped alone on the older profile, gives an outcome different from the
    /// older release's.
    Alone(Vec<Switch>),
    /// No single switch does; only these together (every switch that changed).
    Together(Vec<Switch>),
}

/// One release where the outcome differs from the release before.
#[derive(Clone, Debug)]
pub struct Change {
    pub release: Release,
    pub cause: Cause,
}

/// A case across every release.
#[derive(Clone, Debug)]
pub struct Across {
    pub rows: Vec<(Release, Summary)>,
    pub changes: Vec<Change>,
}

/// Runs `case` under every release profile and finds the switches behind each change.
pub fn across(
    case: &Case,
    env: &Env,
    model: &mut dyn FnMut(&KernelProfile) -> ModelBackend,
) -> Across {
    let (rows, changes) = releases_and_changes(
        &mut |_, p| summarise(case, env, &p, model),
        &|a: &Summary, b: &Summary| a != b,
    );
    Across { rows, changes }
}

/// Summarises a run under every release (`run(release whose lines apply, profile)`); where
/// the summary differs from the release before, flips each switch that changed there alone
/// on the older profile and keeps those whose flip alone changes the older summary.
fn releases_and_changes<S>(
    run: &mut dyn FnMut(Release, KernelProfile) -> S,
    differs: &dyn Fn(&S, &S) -> bool,
) -> (Vec<(Release, S)>, Vec<Change>) {
    let mut rows: Vec<(Release, S)> = Vec::new();
    let mut changes = Vec::new();
    for &r in RELEASES {
        let s = run(r, KernelProfile::of(r));
        if let Some((prev, before)) = rows.last() {
            if differs(before, &s) {
                let older = KernelProfile::of(*prev);
                let changed = KernelProfile::switches_changed(*prev, r);
                let alone: Vec<Switch> = changed
                    .iter()
                    .copied()
                    .filter(|&sw| differs(before, &run(*prev, older.with_switch_of(sw, r))))
                    .collect();
                let cause = if alone.is_empty() {
                    Cause::Together(changed)
                } else {
                    Cause::Alone(alone)
                };
                changes.push(Change { release: r, cause });
            }
        }
        rows.push((r, s));
    }
    (rows, changes)
}

/// The table and the explanations, as `--across-releases` prints them.
pub fn render(case: &Case, a: &Across) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{} across releases (model)", case.title());
    let mut prev: Option<&Summary> = None;
    for (r, s) in &a.rows {
        let _ = writeln!(out, "  {:<5} {}", r.to_string(), s.verdict);
        match prev {
            Some(p) if p.collapse == s.collapse && p.page_map == s.page_map => {
                if let Some((n, m)) = first_different(&p.page_maps, &s.page_maps) {
                    let _ = writeln!(
                        out,
                        "        page map {} of {} differs: {m}",
                        n + 1,
                        s.page_maps.len()
                    );
                }
            }
            _ => {
                let _ = writeln!(out, "        collapse: {}", s.collapse);
                let _ = writeln!(out, "        {}", s.page_map);
            }
        }
        prev = Some(s);
    }
    if a.changes.is_empty() {
        let _ = writeln!(out, "  same outcome on every release");
    }
    render_changes(&mut out, &a.changes);
    out
}

/// Each change: the release and the switches (with their commits) that made it.
fn render_changes(out: &mut String, changes: &[Change]) {
    for c in changes {
        let (how, switches) = match &c.cause {
            Cause::Alone(s) => ("changed by", s),
            Cause::Together(s) => ("changed only by these together", s),
        };
        let _ = writeln!(out, "  at {}: {how}", c.release);
        for &sw in switches {
            let ch = sw.change_at(c.release);
            let commit = ch.commit.split_whitespace().collect::<Vec<_>>().join(" ");
            let _ = writeln!(out, "    {} = {} ({})", sw.name(), ch.value, commit);
        }
    }
}

/// The first page map of `b` that differs from `a`'s at the same step.
fn first_different<'a>(a: &[String], b: &'a [String]) -> Option<(usize, &'a str)> {
    b.iter()
        .enumerate()
        .find(|(i, m)| a.get(*i) != Some(*m))
        .map(|(i, m)| (i, m.as_str()))
}

/// Runs every case of `cases` (alloc_at_fault only when nothing else is selected) across
/// releases. Returns the text and the exit code (0: it ran; the outcomes are the answer).
pub fn run(
    cases: &[Case],
    env: &Env,
    model: &mut dyn FnMut(&KernelProfile) -> ModelBackend,
) -> (String, i32) {
    let tests: Vec<&Case> = cases
        .iter()
        .filter(|c| !matches!(c, Case::AllocAtFault))
        .collect();
    let chosen: Vec<&Case> = if tests.is_empty() {
        cases.iter().collect()
    } else {
        tests
    };
    let mut out = String::new();
    for case in chosen {
        out.push_str(&render(case, &across(case, env, model)));
    }
    (out, 0)
}

/// What one run of a scenario looked like, in the terms the table compares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScenarioSummary {
    /// ok, or FAIL with the line and why.
    pub verdict: String,
    /// The decisions on the scenario's ranges, in order, once each (`[child] A pmd 0:
    /// SCAN_EXCEED_SHARED_PTE scan_pmd none_or_zero=0 ...`).
    pub decisions: Vec<String>,
    /// What each expectation line saw (`expect smaps A Rss` -> `Rss 1028 kB`), in order.
    pub observations: Vec<(String, String)>,
}

/// Runs scenario `sc` with the `on` lines of `release` on a fresh model of profile `p`.
pub fn summarise_scenario(
    sc: &crate::scenario::Scenario,
    release: Release,
    p: KernelProfile,
) -> ScenarioSummary {
    let mut b = ModelBackend::new(p);
    let o = crate::scenario::run_on(sc, &release.to_string(), &mut b);
    let mut decisions: Vec<String> = Vec::new();
    let mut observations = Vec::new();
    let mut last_line = String::new();
    for l in &o.trace {
        if let Some(d) = l.trim_start().strip_prefix("decision ") {
            if !decisions.iter().any(|x| x == d) {
                decisions.push(d.to_string());
            }
        } else if let Some(seen) = l.strip_prefix("  = ") {
            observations.push((subject(&last_line), seen.to_string()));
        } else if !l.starts_with(' ') {
            // `file:line [who] text`: the statement, without where it is written.
            last_line = l.split_once(' ').map_or(l.clone(), |(_, t)| t.to_string());
        }
    }
    ScenarioSummary {
        verdict: crate::scenario::record::outcome_word(&o),
        decisions,
        observations,
    }
}

/// What an expectation statement looks at, without what it expects (`[main] expect vmstat
/// thp_deferred_split_page +1` -> `[main] expect vmstat thp_deferred_split_page`), so that
/// `on` blocks stating different values for one thing compare.
fn subject(statement: &str) -> String {
    let w: Vec<&str> = statement.split_whitespace().collect();
    let keep = match w.get(2).copied() {
        Some("vmstat") | Some("scan-result") => 4,
        Some("smaps") | Some("kpagecount") => 5,
        Some("pagemap")
            if w.get(4)
                .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit())) =>
        {
            5
        }
        Some("pagemap") => 4,
        Some("same-page") | Some("other-page") => {
            let mut v: Vec<String> = w.iter().map(|s| s.to_string()).collect();
            v[2] = "page".into();
            return v.join(" ");
        }
        _ => w.len(),
    };
    w[..keep.min(w.len())].join(" ")
}

impl ScenarioSummary {
    /// Whether `other` shows another outcome: another verdict, other decisions (the tracepoint's `writable`
    /// field, gone in 6.18, aside), or another observation by a statement both ran (a release
    /// outside every `on` block of a statement does not run it).
    fn differs(&self, other: &ScenarioSummary) -> bool {
        fn plain(d: &[String]) -> Vec<String> {
            d.iter()
                .map(|x| {
                    x.split(' ')
                        .filter(|w| !w.starts_with("writable="))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .collect()
        }
        // The distinct values a statement saw (a statement may run once more inside an `on`
        // block that only one of the two releases enters).
        let seen = |s: &ScenarioSummary, k: &str| -> std::collections::BTreeSet<String> {
            s.observations
                .iter()
                .filter(|(l, _)| l == k)
                .map(|(_, v)| v.clone())
                .collect()
        };
        self.verdict != other.verdict
            || plain(&self.decisions) != plain(&other.decisions)
            || self.observations.iter().any(|(k, _)| {
                let (a, b) = (seen(self, k), seen(other, k));
                !b.is_empty() && a != b
            })
    }
}

/// Runs scenario `sc` under every release profile and names the switches behind each change
/// of its summary (each changed switch flipped alone on the older profile, run with the older
/// release's `on` lines).
pub fn scenario_across(sc: &crate::scenario::Scenario) -> String {
    let (rows, changes) = releases_and_changes(
        &mut |r, p| summarise_scenario(sc, r, p),
        &|a: &ScenarioSummary, b: &ScenarioSummary| a.differs(b),
    );
    let mut out = String::new();
    let _ = writeln!(out, "{} across releases (model)", sc.path.display());
    let mut prev: Option<&ScenarioSummary> = None;
    for (r, s) in &rows {
        let _ = writeln!(out, "  {:<5} {}", r.to_string(), s.verdict);
        match prev {
            Some(p) if !p.differs(s) => {}
            _ => {
                for d in &s.decisions {
                    let _ = writeln!(out, "        decision {d}");
                }
                for (line, seen) in &s.observations {
                    let shown = prev
                        .is_none_or(|p| !p.observations.contains(&(line.clone(), seen.clone())));
                    if shown {
                        let _ = writeln!(out, "        {line}: {seen}");
                    }
                }
            }
        }
        prev = Some(s);
    }
    if changes.is_empty() {
        let _ = writeln!(out, "  same outcome on every release");
    }
    render_changes(&mut out, &changes);
    out
}
