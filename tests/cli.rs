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
        (
            vec!["--across-releases", "--backend", "both"],
            "--across-releases runs the model",
        ),
        (
            vec!["--across-releases", "--profile", "6.1"],
            "--across-releases runs the model",
        ),
        (vec!["--format", "json"], "--format json"),
        (vec!["--khugepaged", "sometimes"], "--khugepaged sometimes"),
        (vec!["--frobnicate"], "unknown option --frobnicate"),
        (
            vec!["--catalogue", "7.9"],
            "--catalogue 7.9: expected one of 6.18, 7.3",
        ),
        (
            vec!["mthp_khugepaged:anon"],
            "mthp_khugepaged needs -c ORDER",
        ),
        (vec!["-c", "9", "mthp_khugepaged:anon"], "-c 9"),
        (
            vec!["-c", "4", "mthp_khugepaged:shmem"],
            "mthp_khugepaged only supports the anon mem_type",
        ),
        (
            vec!["--catalogue", "6.18", "-c", "4", "mthp_khugepaged:anon"],
            "not of the 6.18 one",
        ),
        (
            vec!["--explain", "--backend", "host"],
            "--explain shows the model's decision records",
        ),
        (
            vec!["--explain", "--across-releases"],
            "not with --across-releases",
        ),
        (
            vec!["all:file", "/nonexistent-dir-for-test"],
            "/nonexistent-dir-for-test",
        ),
        // Options that contradict each other: an error, whichever comes first.
        (
            vec!["--record", "/tmp/fx", "--backend", "model"],
            "cannot be combined with --backend model",
        ),
        (
            vec!["--backend", "model", "--record", "/tmp/fx"],
            "cannot be combined with --backend model",
        ),
        (
            vec!["--backend", "both", "--record", "/tmp/fx"],
            "cannot be combined with --backend both",
        ),
        (
            vec!["--record", "/tmp/fx", "--format", "ktap"],
            "cannot be combined with --format ktap",
        ),
        (
            vec!["--backend", "host", "--read-only-thp-for-fs"],
            "--read-only-thp-for-fs configures the model",
        ),
        (
            vec!["--record", "/tmp/fx", "--read-only-thp-for-fs"],
            "with --record the kernel's own",
        ),
        (
            vec!["--backend", "host", "--profile", "6.12"],
            "--profile picks the model's kernel era",
        ),
        (
            vec!["--no-swapfile"],
            "the model (--backend model, the default) always has swap",
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
    // Every option the README uses, each described.
    for opt in [
        "-s:",
        "--backend model|host|both:",
        "--profile RELEASE:",
        "--across-releases:",
        "--format kernel|ktap:",
        "--read-only-thp-for-fs:",
        "--tmpfs:",
        "--no-swapfile:",
        "--trace:",
        "--extras:",
        "--record DIR:",
    ] {
        assert!(
            stdout.contains(&format!("\t\t{opt}")),
            "{opt} missing:\n{stdout}"
        );
    }
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README");
    let used: std::collections::BTreeSet<&str> = readme
        .split(|c: char| c.is_whitespace() || c == '`' || c == '(' || c == ')' || c == ',')
        .filter(|w| {
            w.starts_with("--")
                && w.len() > 2
                && w[2..].chars().all(|c| c.is_ascii_lowercase() || c == '-')
        })
        // cargo's own flags in the README's commands.
        .filter(|w| {
            ![
                "--release",
                "--bin",
                "--workspace",
                "--all-targets",
                "--check",
                "--test",
                "--bench",
                "--example",
                // libtest's and cargo-mutants' (ci/mutants.sh) flags.
                "--include-ignored",
                "--skip",
                "--shard",
                "--iterate",
                // ci/kernels run's (the kernel matrix's) own flags.
                "--repeat",
                "--c-selftest",
                "--c-selftest-from",
            ]
            .contains(w)
        })
        .collect();
    assert!(used.len() >= 8, "{used:?}");
    for opt in used {
        assert!(
            stdout.contains(opt),
            "the README uses {opt}, --help does not list it"
        );
    }
}

#[test]
fn explain_pictures_each_collapse_in_the_trace() {
    let (code, stdout, _) = khugepaged(&[
        "--explain",
        "--only",
        "anon/collapse_full$",
        "khugepaged:anon",
    ]);
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("--- trace (model) ---"),
        "--explain implies --trace"
    );
    // The first of the four ranges: 512 small pages before, one THP after.
    let want = "  # khugepaged on 0x40000000 (pid 1):\n\
                \x20 #   hpage_collapse_scan_pmd: SCAN_SUCCEED  none_or_zero=0 swap=0 shared=0 referenced=512 writable=512\n\
                \x20 #     sharing predicate folio_maybe_mapped_shared(folio):\n";
    assert!(stdout.contains(want), "{stdout}");
    let row = "  #       0 eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee    HHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHH\n";
    assert_eq!(stdout.matches(row).count(), 4, "{stdout}");
}

#[test]
fn ktap_trace_is_diagnostic_lines() {
    let (code, stdout, _) = khugepaged(&["--format", "ktap", "--trace", "madvise:anon"]);
    assert_eq!(code, 0, "{stdout}");
    for line in stdout.lines() {
        assert!(
            line.starts_with('#')
                || line.starts_with("ok ")
                || line.starts_with("not ok ")
                || line == "KTAP version 1"
                || line.starts_with("1.."),
            "not a KTAP line: {line:?}"
        );
    }
    assert!(stdout.contains("# --- trace (model) ---\n# khugepaged-trace 1\n"));
    assert!(stdout.contains("#   map(0x40000000+2048): 0-511 pmd f0[0..] o9 mc1 ex | "));
}

#[test]
fn record_checks_its_directory_before_running_anything() {
    // A directory below a regular file can be neither created nor written, even by root.
    let file = std::env::temp_dir().join(format!("khugepaged-cli-test-{}", std::process::id()));
    std::fs::write(&file, "not a directory").unwrap();
    let dir = file.join("fixtures");
    let (code, stdout, stderr) = khugepaged(&["--record", dir.to_str().unwrap(), "madvise:anon"]);
    std::fs::remove_file(&file).unwrap();
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stdout.is_empty(), "a case ran: {stdout}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--record: cannot create"), "{stderr}");
    assert!(stderr.contains(file.to_str().unwrap()), "{stderr}");
}

#[test]
fn closed_stdout_ends_the_run_quietly_with_141() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    // Far more output than a pipe holds, so the run must notice the reader is gone.
    let mut child = Command::new(env!("CARGO_BIN_EXE_khugepaged"))
        .args(["--trace", "--tmpfs", "all:all"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // The reader (and the pipe's read end) is dropped here, as `head -1` exits.
    assert_eq!(first, "TAP version 13\n");
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(harness::cli::EXIT_STDOUT_CLOSED),
        "{out:?}"
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A result of `case` with the given outcome, steps and trace, as a backend would return it.
fn result(
    case: harness::runner::Case,
    outcome: harness::runner::Outcome,
    steps: Vec<harness::steps::Step>,
    trace: Option<String>,
) -> harness::runner::CaseResult {
    harness::runner::CaseResult {
        case,
        steps,
        outcome,
        elapsed: Default::default(),
        trace,
        restore_error: None,
    }
}

/// A trace of one failing step of `case`, with `map` as its page map.
fn failing_trace(case: &harness::runner::Case, map: &str, outcome: &str) -> String {
    format!(
        "khugepaged-trace 1\nkernel: 6.18.0\nprofile: 6.18\ncase: {}\nenv: anon_order=0 file=-\nsettings: enabled=madvise\n--\n  madvise(0x40000000, 0x200000, MADV_COLLAPSE) = 0\nstep fail: Collapse... Fail\n  map(0x40000000+2048): {map}\noutcome: {outcome}\n",
        case.id()
    )
}

fn collapse_full() -> harness::runner::Case {
    let e = harness::catalogue::test_table()
        .into_iter()
        .find(|e| e.name == "collapse_full" && e.context.name() == "madvise")
        .unwrap();
    harness::runner::Case::Test(e)
}

#[test]
fn both_fail_and_both_skip_are_reported_not_agreed() {
    use harness::cli::{comparison_text, CompareTotals};
    use harness::crosscheck::{compare, Comparison};
    use harness::report::Format;
    use harness::runner::Outcome;
    use harness::steps::{Step, Verdict};
    let case = collapse_full();
    let step = Step {
        text: "Collapse...".into(),
        verdict: Verdict::Fail,
        word: "Fail".into(),
        ..Step::default()
    };
    let map = "0-2047 pte f0-f2047 o0 mc1 ex";
    let t = failing_trace(&case, map, "fail: Collapse... Fail");
    let fail = Outcome::Fail("Collapse... Fail".into());
    let host = result(case, fail.clone(), vec![step.clone()], Some(t.clone()));
    let model = result(case, fail, vec![step], Some(t));
    let cmp = compare(&host, &model, None);
    assert!(matches!(cmp, Comparison::BothFail { .. }), "{cmp:?}");
    let text = comparison_text(Format::Kernel, 2, &host, &model, &cmp);
    assert_eq!(
        text,
        "both fail collapse_full (madvise:anon)\n    host:  Collapse... Fail\n    model: Collapse... Fail\n"
    );
    let ktap = comparison_text(Format::Ktap, 2, &host, &model, &cmp);
    assert!(
        ktap.ends_with("\nnot ok 2 collapse_full (madvise:anon)\n"),
        "{ktap}"
    );
    let mut totals = CompareTotals::default();
    totals.add(&Comparison::Agree);
    totals.add(&cmp);
    assert_eq!(totals.exit_code(), 1, "both fail counts as a failure");
    assert!(totals.ktap_line().contains("pass:1 fail:1 "));

    let skip = |why: &str| result(case, Outcome::Skip(why.into()), Vec::new(), None);
    let (h, m) = (skip("not root"), skip("file tests need a [dir] argument"));
    let cmp = compare(&h, &m, None);
    assert!(matches!(cmp, Comparison::BothSkip { .. }), "{cmp:?}");
    let text = comparison_text(Format::Kernel, 1, &h, &m, &cmp);
    assert!(
        text.starts_with("both skip collapse_full (madvise:anon)\n"),
        "{text}"
    );
    assert!(
        text.contains("host:  not root\n") && text.contains("model: file tests need"),
        "{text}"
    );
    let mut totals = CompareTotals::default();
    totals.add(&cmp);
    assert_eq!(totals.exit_code(), 4);
}

#[test]
fn a_side_that_fails_before_its_first_step_says_why() {
    use harness::cli::comparison_text;
    use harness::crosscheck::{compare, Comparison};
    use harness::report::Format;
    use harness::runner::Outcome;
    let case = collapse_full();
    let killed = "the case process was killed by signal 9";
    let host = result(case, Outcome::Fail(killed.into()), Vec::new(), None);
    let t = failing_trace(&case, "0-2047 none", "pass");
    let model = result(case, Outcome::Pass, Vec::new(), Some(t));
    let cmp = compare(&host, &model, None);
    assert!(matches!(cmp, Comparison::Disagree(_)), "{cmp:?}");
    let text = comparison_text(Format::Kernel, 1, &host, &model, &cmp);
    assert!(
        text.starts_with("DISAGREE  collapse_full (madvise:anon)\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!("    host failed outside its steps: {killed}\n")),
        "{text}"
    );
    assert!(!text.contains("model failed"), "{text}");
}

#[test]
fn disagree_aligns_the_page_maps_where_they_differ() {
    use harness::cli::comparison_text;
    use harness::crosscheck::{compare, Comparison};
    use harness::report::Format;
    use harness::runner::Outcome;
    let case = collapse_full();
    // 2048 small pages, of which the model has three swapped out: maps of 60,000 characters.
    let pages = |swapped: &[usize]| -> String {
        let mut runs = Vec::new();
        let mut f = 0;
        for i in 0..2048 {
            if swapped.contains(&i) {
                runs.push(format!("{i} swap"));
            } else {
                runs.push(format!("{i} pte f{f} o0 mc{} ex", 1 + i % 2));
                f += 1;
            }
        }
        runs.join(" | ")
    };
    let (hmap, mmap) = (pages(&[]), pages(&[1000, 1001, 1500]));
    let host = result(
        case,
        Outcome::Pass,
        Vec::new(),
        Some(failing_trace(&case, &hmap, "pass")),
    );
    let model = result(
        case,
        Outcome::Pass,
        Vec::new(),
        Some(failing_trace(&case, &mmap, "pass")),
    );
    let cmp = compare(&host, &model, None);
    assert!(matches!(cmp, Comparison::Disagree(_)), "{cmp:?}");
    let text = comparison_text(Format::Kernel, 1, &host, &model, &cmp);
    assert!(text.lines().all(|l| l.len() < 200), "{text}");
    assert!(text.contains("!"), "{text}");
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with('!'))
        .collect();
    // Pages 1000 and 1001 swapped, and every later page's folio number shifts by two or three.
    assert!(
        rows[0].contains(" 1000 ") && rows[0].ends_with("swap"),
        "{text}"
    );
    assert!(rows[0].contains("pte f1000 o0 mc1 ex"), "{text}");
    assert!(
        text.contains("      998 "),
        "two ranges of context before: {text}"
    );
    assert!(text.contains("\n      ...\n"), "{text}");
    // Renumbered folios after the swapped pages are no difference.
    assert_eq!(rows.len(), 3, "{text}");
}

#[test]
fn default_run_prints_the_7_3_selftest_output() {
    let (code, stdout, _) = khugepaged(&[]);
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.starts_with(
            "TAP version 13\n# Save THP and khugepaged settings... OK\n1..26\n\
             # Allocate huge page on fault... OK\n# Split huge PMD on MADV_DONTNEED... OK\n\
             ok 1 allocate on fault and split\n# \n\
             # Run test: collapse_full (khugepaged:anon)\n"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("\n# Trigger CoW on page 255 of 512... OK\n"));
    assert!(stdout.contains(
        "\n# Construct PTE page table full of different PTE-mapped compound pages\n OK\n"
    ));
    assert!(
        stdout.contains("\nok 26 madvise_collapse_existing_thps\n"),
        "{stdout}"
    );
    assert!(stdout.ends_with("# Totals: pass:26 fail:0 xfail:0 xpass:0 skip:0 error:0\n"));
    assert!(
        !stdout.contains("\x1b["),
        "no colour when stdout is not a terminal"
    );
}

#[test]
fn catalogue_6_18_prints_the_selftest_lines() {
    let (code, stdout, _) = khugepaged(&["--catalogue", "6.18"]);
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
        // -s 0 counts the PMD size's stat, -s 2 the 16 KiB one.
        let size = if order == 0 { 9 } else { order as usize };
        faults.push(b.k.vmstat.anon_fault_alloc[size]);
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
    use harness::model_backend::ModelBackend;
    use harness::runner::all_cases;
    use harness::runner::{run_case_traced, Outcome};
    let calls_and_steps = |trace: &str| -> Vec<String> {
        trace
            .lines()
            .skip_while(|l| *l != "--")
            .filter(|l| {
                let t = l.trim_start();
                // Decisions are recorded in the deterministic mode only (header `decisions:`).
                !(t.starts_with('~')
                    || t.starts_with("smaps(")
                    || t.starts_with("map(")
                    || harness::decision::is_decision_line(t))
            })
            .map(str::to_string)
            .collect()
    };
    let mut volatile_cases = Vec::new();
    // The 6.18 catalogue (the cases all_cases() has only from 7.3 need its environment).
    let in_618 = |c: &harness::runner::Case| match c {
        harness::runner::Case::Test(e) => harness::catalogue::test_table()
            .iter()
            .any(|t| t.name == e.name && t.context == e.context && t.mem == e.mem),
        _ => true,
    };
    for case in all_cases()
        .into_iter()
        .filter(|c| c.id().contains("khugepaged:") && in_618(c))
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
        assert!(
            traces[0].contains("\ndecisions: no: khugepaged runs on its own")
                && traces[1].contains("\ndecisions: yes\n"),
            "{}: decisions recorded in the deterministic mode only",
            case.id()
        );
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

/// Replaying a fixture recorded with the selftest's khugepaged settings: observations the
/// kernel made where the model says khugepaged may act are not compared; the others are.
#[test]
fn replay_skips_recorded_observations_only_where_the_model_is_volatile() {
    use harness::crosscheck::unobserved_where_volatile;
    let lines = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let recorded = lines(&[
        "step ok: A... OK",
        "  map(0x40000000+512): 0-511 pte",
        "step ok: B... OK",
        "  map(0x40000000+512): 0-511 pmd",
    ]);
    let model = lines(&[
        "step ok: A... OK",
        "  map(0x40000000+512): 0-511 pte",
        "step ok: B... OK",
        "  ~not observed: khugepaged may act on the area now",
    ]);
    assert_eq!(
        unobserved_where_volatile(&recorded, &model),
        lines(&[
            "step ok: A... OK",
            "  map(0x40000000+512): 0-511 pte",
            "step ok: B... OK",
        ])
    );
}

#[test]
fn mthp_khugepaged_collapses_to_the_c_order_from_7_2() {
    let args = ["-c", "4", "mthp_khugepaged:anon"];
    let run = |profile: &str| {
        let mut a = vec!["--profile", profile];
        a.extend(args);
        khugepaged(&a)
    };
    let (code, stdout, _) = run("7.3");
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("\n1..4\n"), "{stdout}");
    assert!(stdout.contains("# Run test: collapse_single_mthp (mthp_khugepaged:anon)\n# Collapse PTE table with half PTE entries present.... OK\nok 4 collapse_single_mthp\n"), "{stdout}");
    // 7.1's khugepaged builds PMD THPs only: the 64 KiB folios never come.
    let (code, stdout, _) = run("7.1");
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("not ok 2 collapse_full\n"), "{stdout}");
    assert!(stdout.contains("ok 3 collapse_empty\n"), "{stdout}");
}
