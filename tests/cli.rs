//! The khugepaged command line: usage errors, output formats, exit codes.

use std::process::Command;

fn khugepaged(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_khugepaged"))
        .args(args)
        .output()
        .expect("run khugepaged");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn usage_errors_are_one_line_and_exit_2() {
    for (args, needle) in [
        (vec!["bogus"], "expected <context>:<mem_type>"),
        (vec!["sometimes:anon"], "context \"sometimes\""),
        (vec!["all:bytes"], "mem_type \"bytes\""),
        (vec!["all:file"], "need a [dir] argument"),
        (vec!["-s", "12"], "-s 12"),
        (vec!["--backend", "vm"], "--backend vm"),
        (vec!["--profile", "5.4"], "--profile 5.4"),
        (vec!["--format", "json"], "--format json"),
        (vec!["--khugepaged", "sometimes"], "--khugepaged sometimes"),
        (vec!["--frobnicate"], "unknown option --frobnicate"),
        (
            vec!["all:file", "/nonexistent-dir-for-test"],
            "/nonexistent-dir-for-test",
        ),
    ] {
        let (code, stdout, stderr) = khugepaged(&args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{args:?} printed {stdout}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[test]
fn help_prints_the_selftest_usage() {
    let (code, stdout, _) = khugepaged(&["-h"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("Usage: khugepaged [OPTIONS] <test type> [dir]"));
    assert!(stdout.contains("<mem_type>\t: [all|anon|file|shmem]"));
}

#[test]
fn default_run_prints_the_selftest_lines() {
    let (code, stdout, _) = khugepaged(&[]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.starts_with(
        "Save THP and khugepaged settings... OK\nAllocate huge page on fault... OK\n"
    ));
    assert!(stdout.contains("\nRun test: collapse_max_ptes_shared (khugepaged:anon)\n"));
    assert!(stdout.contains("Trigger CoW on page 255 of 512... OK\n"));
    assert!(stdout.contains("Maybe collapse with max_ptes_shared exceeded.... OK\n"));
    assert!(stdout.ends_with("Restore THP and khugepaged settings... OK\n"));
    assert!(
        !stdout.contains("\x1b["),
        "no colour when stdout is not a terminal"
    );
    // No arguments: anon only, both contexts (25 tests plus alloc_at_fault).
    assert_eq!(stdout.matches("Run test:").count(), 25);
}

#[test]
fn ktap_output_has_a_plan_results_and_totals() {
    let (code, stdout, _) = khugepaged(&["--format", "ktap", "madvise:anon"]);
    assert_eq!(code, 0, "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "KTAP version 1");
    let plan: usize = lines[1]
        .strip_prefix("1..")
        .expect("plan line")
        .parse()
        .unwrap();
    let results: Vec<&&str> = lines
        .iter()
        .filter(|l| l.starts_with("ok ") || l.starts_with("not ok "))
        .collect();
    assert_eq!(results.len(), plan);
    assert_eq!(*results[0], "ok 1 alloc_at_fault");
    assert!(results
        .iter()
        .any(|l| l.ends_with("collapse_fork (madvise:anon)")));
    assert!(
        lines.contains(&"# Collapse PTE table with single page shared with parent process... OK")
    );
    assert_eq!(
        *lines.last().unwrap(),
        format!("# Totals: pass:{plan} fail:0 xfail:0 xpass:0 skip:0 error:0")
    );
}

#[test]
fn file_cases_skip_with_the_reason_outside_tmpfs() {
    let dir = std::env::temp_dir();
    let (code, stdout, _) =
        khugepaged(&["--format", "ktap", "khugepaged:file", dir.to_str().unwrap()]);
    if stdout.contains("# SKIP") {
        assert_eq!(code, 0, "alloc_at_fault passed, the rest skipped: {stdout}");
        assert!(stdout.contains("CONFIG_READ_ONLY_THP_FOR_FS"), "{stdout}");
    }
}

#[test]
fn mthp_order_makes_anon_faults_use_that_size() {
    use harness::catalogue::{test_table, Env};
    use harness::model_backend::ModelBackend;
    use harness::runner::{run_case, Case, Outcome};
    let entry = test_table()
        .into_iter()
        .find(|e| {
            e.name == "collapse_max_ptes_none"
                && e.context.name() == "khugepaged"
                && e.mem.name() == "anon"
        })
        .unwrap();
    let mut faults = Vec::new();
    for order in [0u8, 2] {
        let mut b = ModelBackend::new(model::KernelProfile::v6_18());
        let env = Env {
            anon_order: order,
            finfo: None,
            ..Env::default()
        };
        let r = run_case(&mut b, &env, &Case::Test(entry));
        assert_eq!(r.outcome, Outcome::Pass, "-s {order}: {:?}", r.steps);
        faults.push(b.k.vmstat.thp_fault_alloc);
        assert_eq!(
            b.k.thp.anon_orders[2].as_str(),
            "never",
            "settings restored after the case"
        );
    }
    // -s 0: only alloc_at_fault's PMD THP; -s 2: every anon fault of the test is a 16 KiB mTHP.
    assert_eq!(faults[0], 1);
    assert!(faults[1] > 60, "{faults:?}");
}

#[test]
fn linux_mm_extra_collapses_only_under_the_6_12_heuristic() {
    use harness::catalogue::Env;
    use harness::extras::extra_table;
    use harness::model_backend::ModelBackend;
    use harness::runner::{run_case_traced, Case, Outcome};
    let entry = extra_table()
        .into_iter()
        .find(|e| e.name == "collapse_shared_thp_first_page_unmapped")
        .unwrap();
    for (profile, decision) in [
        (model::KernelProfile::v6_1(), "SCAN_EXCEED_SHARED_PTE"),
        (
            model::KernelProfile::v6_12(),
            "collapse_huge_page 0x40000000 (pid 2): SCAN_SUCCEED",
        ),
        (model::KernelProfile::v6_18(), "SCAN_EXCEED_SHARED_PTE"),
    ] {
        let mut b = ModelBackend::new(profile.clone());
        let r = run_case_traced(&mut b, &Env::default(), &Case::Extra(entry), profile.name);
        assert_eq!(r.outcome, Outcome::Pass, "{}: {:?}", profile.name, r.steps);
        let trace = r.trace.unwrap();
        let child_scans: Vec<&str> = trace.lines().filter(|l| l.contains("(pid 2)")).collect();
        assert!(
            child_scans.iter().any(|l| l.contains(decision)),
            "{}: {child_scans:?}",
            profile.name
        );
    }
}

#[test]
fn khugepaged_mode_defaults_to_deterministic_only_when_comparing_or_recording() {
    use harness::catalogue::KhugepagedMode;
    use harness::cli::parse;
    let mode = |args: &[&str]| {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        parse(&args).unwrap().unwrap().khugepaged_mode()
    };
    assert_eq!(mode(&[]), KhugepagedMode::Selftest);
    assert_eq!(mode(&["--backend", "host"]), KhugepagedMode::Selftest);
    assert_eq!(mode(&["--backend", "both"]), KhugepagedMode::Deterministic);
    assert_eq!(
        mode(&["--record", "fixtures"]),
        KhugepagedMode::Deterministic
    );
    assert_eq!(
        mode(&["--backend", "host", "--khugepaged", "deterministic"]),
        KhugepagedMode::Deterministic
    );
    assert_eq!(
        mode(&["--backend", "both", "--khugepaged", "selftest"]),
        KhugepagedMode::Selftest
    );
}

/// The model's traces of every khugepaged-context case (the extras too) in both modes: the
/// deterministic ones observe every step (no `~` line), the selftest-mode ones leave the
/// moments khugepaged could act unobserved, forked children included, and otherwise the two
/// line up call for call and step for step.
#[test]
fn deterministic_mode_observes_every_step_and_lines_up_with_the_selftest_mode() {
    use harness::catalogue::{Env, FileInfo, KhugepagedMode};
    use harness::cli::all_cases;
    use harness::model_backend::ModelBackend;
    use harness::runner::{run_case_traced, Outcome};
    let calls_and_steps = |trace: &str| -> Vec<String> {
        trace
            .lines()
            .skip_while(|l| *l != "--")
            .filter(|l| {
                let t = l.trim_start();
                !(t.starts_with('~') || t.starts_with("smaps(") || t.starts_with("map("))
            })
            .map(str::to_string)
            .collect()
    };
    let mut volatile_cases = Vec::new();
    for case in all_cases()
        .into_iter()
        .filter(|c| c.id().contains("khugepaged:"))
    {
        let mut traces = Vec::new();
        for khugepaged in [KhugepagedMode::Selftest, KhugepagedMode::Deterministic] {
            let mut b = ModelBackend::new(model::KernelProfile::v6_18());
            let env = Env {
                finfo: Some(FileInfo::model_tmpfs("advise")),
                khugepaged,
                ..Env::default()
            };
            b.dir = env.finfo.as_ref().map(|f| f.kind.clone());
            let r = run_case_traced(&mut b, &env, &case, "6.18");
            if r.outcome != Outcome::Pass && !matches!(r.outcome, Outcome::Skip(_)) {
                panic!("{} ({khugepaged:?}): {:?}", case.id(), r.outcome);
            }
            traces.push(r.trace.unwrap());
        }
        assert!(
            !traces[1].lines().any(|l| l.trim_start().starts_with('~')),
            "{}: a volatile line in deterministic mode:\n{}",
            case.id(),
            traces[1]
        );
        if traces[0].lines().any(|l| l.trim_start().starts_with('~')) {
            volatile_cases.push(case.id());
        }
        assert_eq!(
            calls_and_steps(&traces[0]),
            calls_and_steps(&traces[1]),
            "{}",
            case.id()
        );
    }
    assert!(volatile_cases.contains(&"khugepaged:anon/collapse_max_ptes_swap".to_string()));
}

/// MADV_HUGEPAGE is inherited over fork: in the selftest mode a forked child's steps are as
/// volatile as its parent's.
#[test]
fn a_forked_child_inherits_the_advice_and_its_steps_are_volatile() {
    use harness::catalogue::Env;
    use harness::extras::extra_table;
    use harness::model_backend::ModelBackend;
    use harness::runner::{run_case_traced, Case};
    let entry = extra_table()
        .into_iter()
        .find(|e| e.name == "collapse_shared_thp_first_page_unmapped")
        .unwrap();
    let mut b = ModelBackend::new(model::KernelProfile::v6_18());
    let r = run_case_traced(&mut b, &Env::default(), &Case::Extra(entry), "6.18");
    let trace = r.trace.unwrap();
    // The child's first step (the parent only printed the text before forking).
    let mut lines = trace
        .lines()
        .skip_while(|l| !l.starts_with("step ok: Share them over fork()"));
    assert!(lines.next().is_some(), "{trace}");
    let obs = lines.next().unwrap_or_default();
    assert!(obs.trim_start().starts_with('~'), "{trace}");
}
