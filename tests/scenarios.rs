//! Every scenario under fixtures/scenarios/ on the model, one trial per (file, release its
//! `profile` line names); the parser's error reports; and a fuzz test: deterministic
//! mutations of the shipped files never panic the parser or the model runner.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use harness::scenario::{self, parse_file, parse_str, run_model};
use libtest_mimic::{Arguments, Failed, Trial};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/scenarios")
}

/// The scenario files (`*.scn`; `*.inc` are included pieces), sorted.
fn scenario_files() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root())
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "scn"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn scenario_trials() -> Vec<Trial> {
    let mut trials = Vec::new();
    for path in scenario_files() {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        match parse_file(&path) {
            Err(errors) => {
                let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
                trials.push(Trial::test(format!("scenario/{name}"), move || {
                    Err(Failed::from(text.join("\n")))
                }));
            }
            Ok(sc) => {
                for rel in sc.releases.clone() {
                    let sc = sc.clone();
                    trials.push(Trial::test(format!("scenario/{name}/{rel}"), move || {
                        let o = run_model(&sc, &rel).map_err(Failed::from)?;
                        match o.failure {
                            None => Ok(()),
                            Some(f) => Err(Failed::from(format!(
                                "{}: `{}`: {}\n--- log ---\n{}",
                                f.loc,
                                f.line,
                                f.why,
                                o.log.join("\n")
                            ))),
                        }
                    }));
                }
            }
        }
    }
    trials
}

/// Parse errors name file:line:column, what was expected and what was found; the CLI exits
/// 2 and runs nothing when any file is bad.
fn parse_error_trials() -> Vec<Trial> {
    let cases: &[(&str, &str)] = &[
        ("mmap anon A 1 pmd\nwrite A 0..512\n", "x.scn:2:9: expected pages 0..511 of A, found page 512"),
        ("mmap anon A 1 pmd\nmadvise A sometimes\n", "x.scn:2:11: expected an advice"),
        ("mmap anon A 1 pmd\nin child:\n    write A 0\n", "x.scn:2:4: expected a live process (main), found `child`"),
        ("set khugepaged/max_ptes_none 512\n", "x.scn:1:30: expected a value khugepaged/max_ptes_none accepts, found `512`"),
        ("profile 5.4\n", "x.scn:1:9: expected a kernel release the model knows"),
        ("mmap anon A 1 pmd\ncollapse A expect EWHAT\n", "x.scn:2:19: expected 0 or an errno name"),
        ("on 6.12:\n", "x.scn:1:9: expected an indented line after the header, found none"),
        ("mmap anon A 1 pmd\n  write A 0\n", "x.scn:2:3: expected indentation of 0 like the line before"),
        ("mmap anon A 9999 pmd\n", "x.scn:1:13: expected a size of 1 to 32768 pages, found `9999`"),
        ("profile 6.1 6.18\non 6.18: mmap anon D 2 pages\nwrite D 0\n", "x.scn:3:7: expected a mapping made earlier (mmap, memfd, file), found `D` (when run as 6.1)"),
        ("sleep 0 ms\n", "x.scn:1:7: expected 1 to 3600000 milliseconds, found `0`"),
        ("sleep 5 s\n", "x.scn:1:9: expected `ms`"),
        ("expect scan-result\n", "x.scn:1:19: expected a mapping name (a letter, then letters, digits, _ or -), found end of line"),
        ("file F 1 pmd on nfs\n", "x.scn:1:17: expected a filesystem (tmpfs, disk), found `nfs`"),
        ("memfd M 1 pmd size 100 pages\nread M 99..100\n", "x.scn:2:8: expected pages 0..99 of M, inside its file (past the end a load or store is SIGBUS), found page 100"),
        ("file F 1 pmd on disk size 2 pages\nmremap F to G\nwrite G\n", "x.scn:3:1: expected pages 0..1 of G, inside its file"),
        ("set khugepaged/pages_to_scan 4096\n", "x.scn:1:5: expected a setting other than khugepaged/pages_to_scan: in a scenario every khugepaged wake-up scans whole rounds"),
    ];
    let mut trials = Vec::new();
    for (i, (text, want)) in cases.iter().enumerate() {
        let (text, want) = (text.to_string(), want.to_string());
        trials.push(Trial::test(format!("parse_error/{i}"), move || {
            let errs = match parse_str(Path::new("x.scn"), &text) {
                Ok(_) => return Err(format!("{text:?} parsed; expected {want}").into()),
                Err(e) => e,
            };
            let first = errs[0].to_string();
            if first.starts_with(&want) {
                Ok(())
            } else {
                Err(format!("for {text:?}\n  got: {first}\n want: {want}...").into())
            }
        }));
    }
    trials.push(Trial::test("parse_error/cli_exit_2_runs_nothing", || {
        let dir = std::env::temp_dir().join(format!("scenario-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let bad = dir.join("bad.scn");
        std::fs::write(&bad, "mmap anon A 1 pmd\nwrite B 0\n").map_err(|e| e.to_string())?;
        let good = root().join("linux-mm-case.scn");
        let args = vec![good.display().to_string(), bad.display().to_string()];
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = harness::scenario_cli::main(&args, &mut out, &mut err);
        let _ = std::fs::remove_dir_all(&dir);
        let (out, err) = (String::from_utf8_lossy(&out), String::from_utf8_lossy(&err));
        if code == 2
            && out.is_empty()
            && err.contains("bad.scn:2:7: expected a mapping made earlier")
        {
            Ok(())
        } else {
            Err(format!("exit {code}, stdout {out:?}, stderr {err:?}").into())
        }
    }));
    // Options that contradict each other are usage errors (exit 2) before anything runs; a
    // bad file is found before the host is touched.
    trials.push(Trial::test(
        "parse_error/contradicting_options_exit_2",
        || {
            let good = root().join("linux-mm-case.scn").display().to_string();
            let cases: Vec<(Vec<&str>, &str)> = vec![
                (
                    vec!["--record", "/tmp/x", "--backend", "model"],
                    "--record records host runs",
                ),
                (
                    vec!["--record", "/tmp/x", "--backend", "both"],
                    "--record records host runs",
                ),
                (
                    vec!["--backend", "host", "--profile", "6.12"],
                    "--profile chooses a model profile",
                ),
                (
                    vec!["--backend", "sometimes"],
                    "--backend needs model, host or both",
                ),
                (vec!["--record"], "--record needs a directory"),
                (
                    vec!["--backend", "host", "/nonexistent/x.scn"],
                    "/nonexistent/x.scn",
                ),
            ];
            for (args, want) in cases {
                let mut a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
                if !args.iter().any(|s| s.ends_with(".scn")) && args != ["--record"] {
                    a.push(good.clone());
                }
                let (mut out, mut err) = (Vec::new(), Vec::new());
                let code = harness::scenario_cli::main(&a, &mut out, &mut err);
                let (out, err) = (String::from_utf8_lossy(&out), String::from_utf8_lossy(&err));
                if code != 2 || !out.is_empty() || !err.contains(want) {
                    return Err(
                        format!("{args:?}: exit {code}, stdout {out:?}, stderr {err:?}").into(),
                    );
                }
            }
            Ok(())
        },
    ));
    trials
}

/// splitmix64: a deterministic stream for the mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const NUMBERS: [&str; 12] = [
    "0",
    "1",
    "2",
    "255",
    "256",
    "257",
    "511",
    "512",
    "513",
    "4096",
    "99999999999",
    "1..0",
];
const BYTES: &[u8] = b" \t\n:.#+-,0123456789azAZ_=";

fn mutate(text: &str, words: &[String], rng: &mut Rng) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for _ in 0..1 + rng.below(3) {
        if lines.is_empty() {
            break;
        }
        let i = rng.below(lines.len());
        match rng.below(6) {
            0 => {
                lines.remove(i);
            }
            1 => {
                let l = lines[i].clone();
                let j = rng.below(lines.len());
                lines.insert(j, l);
            }
            2 => {
                // A byte flip (kept valid UTF-8 by replacing whole characters).
                let mut b = lines[i].clone().into_bytes();
                if !b.is_empty() {
                    let p = rng.below(b.len());
                    b[p] = BYTES[rng.below(BYTES.len())];
                }
                lines[i] = String::from_utf8_lossy(&b).into_owned();
            }
            3 => {
                // A number changed.
                let l = &lines[i];
                let starts: Vec<usize> = l
                    .char_indices()
                    .filter(|&(k, c)| {
                        c.is_ascii_digit()
                            && (k == 0 || !l.as_bytes()[k - 1].is_ascii_alphanumeric())
                    })
                    .map(|(k, _)| k)
                    .collect();
                if !starts.is_empty() {
                    let s = starts[rng.below(starts.len())];
                    let e = l[s..]
                        .find(|c: char| !c.is_ascii_digit())
                        .map_or(l.len(), |x| s + x);
                    lines[i] = format!(
                        "{}{}{}",
                        &l[..s],
                        NUMBERS[rng.below(NUMBERS.len())],
                        &l[e..]
                    );
                }
            }
            4 => {
                // A word replaced by another word of the corpus.
                let toks: Vec<&str> = lines[i].split(' ').collect();
                let k = rng.below(toks.len());
                let mut toks: Vec<String> = toks.into_iter().map(str::to_string).collect();
                toks[k] = words[rng.below(words.len())].clone();
                lines[i] = toks.join(" ");
            }
            _ => {
                let j = rng.below(lines.len());
                lines.swap(i, j);
            }
        }
    }
    lines.join("\n")
}

fn fuzz_trial() -> Trial {
    Trial::test("fuzz/mutated_scenarios_never_panic", || {
        let iterations: usize = std::env::var("SCENARIO_FUZZ_ITERATIONS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(3000);
        let mut corpus = Vec::new();
        for p in scenario_files() {
            corpus.push((
                p.clone(),
                std::fs::read_to_string(&p).map_err(|e| e.to_string())?,
            ));
        }
        if corpus.is_empty() {
            return Err("no scenario files to mutate".into());
        }
        let words: Vec<String> = corpus
            .iter()
            .flat_map(|(_, t)| t.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .collect();
        let mut rng = Rng(0x5eed);
        let (mut parsed, mut runs) = (0, 0);
        for n in 0..iterations {
            let (path, text) = &corpus[n % corpus.len()];
            let m = mutate(text, &words, &mut rng);
            let r = catch_unwind(AssertUnwindSafe(|| {
                let mut runs = 0;
                if let Ok(sc) = parse_str(path, &m) {
                    for rel in &sc.releases {
                        let _ = run_model(&sc, rel);
                        runs += 1;
                    }
                    Some(runs)
                } else {
                    None
                }
            }));
            match r {
                Ok(Some(k)) => {
                    parsed += 1;
                    runs += k;
                }
                Ok(None) => {}
                Err(_) => {
                    return Err(format!(
                        "mutation {n} of {} panicked; the input:\n{m}",
                        path.display()
                    )
                    .into())
                }
            }
        }
        // The mutations must reach the runner, not only the parser.
        if parsed * 10 < iterations {
            return Err(format!("only {parsed} of {iterations} mutations parsed").into());
        }
        eprintln!("fuzz: {iterations} mutations, {parsed} parsed, {runs} model runs");
        Ok(())
    })
}

/// The recorded kernel runs (`fixtures/<release>/scenarios/*.trace`), each replayed on the
/// model with that release's profile: every observation, decision and outcome must agree.
fn replay_trials() -> Vec<Trial> {
    let fixtures = root().join("..");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&fixtures)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path().join("scenarios")))
                .filter(|p| p.is_dir())
                .flat_map(|p| std::fs::read_dir(p).into_iter().flatten())
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "trace"))
                .collect()
        })
        .unwrap_or_default();
    paths.sort();
    let mut trials: Vec<Trial> = paths
        .into_iter()
        .map(|p| {
            let release = p
                .parent()
                .and_then(|d| d.parent())
                .and_then(|d| d.file_name())
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            let name = p.file_stem().unwrap().to_string_lossy().to_string();
            Trial::test(format!("replay/{release}/{name}"), move || {
                harness::scenario::record::replay(&p, &root()).map_err(Failed::from)
            })
        })
        .collect();
    // The replay can fail: a recording whose kernel saw something else is reported.
    trials.push(Trial::test("replay/a_changed_observation_is_reported", || {
        let text = "scenario: linux-mm-case.scn\nkernel: 6.18\nkhugepaged: deterministic\noutcome: ok\n--\nprelude.inc:3 [main] set enabled madvise\n";
        let e = harness::scenario::record::replay_text(text, &root())
            .expect_err("a truncated recording was accepted");
        if !e.contains("first difference at trace line 2") {
            return Err(Failed::from(format!("unexpected report: {e}")));
        }
        Ok(())
    }));
    trials
}

/// The shipped scenarios on this host and on the model with this kernel's profile, compared
/// (`khugepaged scenario --backend both`); ignored, with the reason, where the host cannot run
/// them.
fn host_trials() -> Vec<Trial> {
    use harness::host::isolate::{preflight, Preflight};
    use harness::host::scenario::{run_scenario, HostRun};
    let unsupported = match preflight() {
        Preflight::Ready(Some(msg)) => {
            eprintln!("khugepaged: {msg}");
            None
        }
        Preflight::Ready(None) | Preflight::Broken(_) => None,
        Preflight::SkipAll(reason) => Some(reason),
    };
    scenario_files()
        .into_iter()
        .filter_map(|p| parse_file(&p).ok())
        .map(|sc| {
            let name = sc.path.file_name().unwrap().to_string_lossy().to_string();
            let trial = Trial::test(format!("host/scenario/{name}"), move || {
                let exe = Path::new(env!("CARGO_BIN_EXE_khugepaged"));
                let host = match run_scenario(&sc, exe) {
                    HostRun::Ran(o) => o,
                    HostRun::Skipped(why) => return Err(Failed::from(format!("skipped: {why}"))),
                    HostRun::Broken(why) => return Err(Failed::from(why)),
                };
                let release = harness::backend::Backend::kernel_release(
                    &harness::host::backend::HostBackend::default(),
                );
                let model = run_model(&sc, &release).map_err(Failed::from)?;
                let h = scenario::record::outcome_word(&host);
                match scenario::record::disagreement(&h, &host.trace, &model, "host") {
                    None if host.failure.is_none() => Ok(()),
                    None => Err(Failed::from(format!("both fail: {h}"))),
                    Some(d) => Err(Failed::from(d)),
                }
            });
            match &unsupported {
                Some(reason) => trial
                    .with_kind(format!("host: {reason}"))
                    .with_ignored_flag(true),
                None => trial,
            }
        })
        .collect()
}

fn main() {
    let args = Arguments::from_args();
    let mut trials = scenario_trials();
    trials.extend(replay_trials());
    trials.extend(host_trials());
    trials.extend(parse_error_trials());
    trials.extend(explain_trials());
    trials.push(fuzz_trial());
    libtest_mimic::run(&args, trials).exit();
}

/// The `--explain` picture of the linux-mm case, pinned so it cannot change unnoticed: the
/// child's khugepaged attempt on 6.12 (folio_likely_mapped_shared misses the sharing, the
/// range collapses) and on 6.18 (folio_maybe_mapped_shared sees it at the first PTE).
const EXPLAIN_CHILD_6_12: &str = r#"  hpage_collapse_scan_pmd: SCAN_SUCCEED  none_or_zero=255 swap=0 shared=0 referenced=1 writable=1
    sharing predicate folio_likely_mapped_shared(folio):
      pfn 0x100200 order 0 mapcount 1: 1 PTE -> not shared
      pfn 0x100000 order 9 mapcount 512: 256 PTEs -> not shared
  collapse_huge_page: SCAN_SUCCEED  none_or_zero=255 swap=0 shared=0 referenced=1 writable=1
    sharing predicate folio_likely_mapped_shared(folio):
      pfn 0x100200 order 0 mapcount 1: 1 PTE -> not shared
      pfn 0x100000 order 9 mapcount 512: 256 PTEs -> not shared
        before                              after
      0 eSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSS    HHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHH
     32 SSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSS    HHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHH
     64 SSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSS    HHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHH
     96 SSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSS    HHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHH
    128 SSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSS    HHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHH
    160 SSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSS    HHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHH
    192 SSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSS    HHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHH
    224 SSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSS    HHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHH
    256 S...............................    HHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHH
    288 ................................    HHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHH
    320 ................................    HHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHH
    352 ................................    HHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHH
    384 ................................    HHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHH
    416 ................................    HHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHH
    448 ................................    HHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHH
    480 ................................    HHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHH
  legend:
    H PMD-mapped anon THP
    S PTE-mapped page of a large anon folio, mapped more than once
    e small anon page, mapped once (exclusive)
    . none (no PTE)"#;

const EXPLAIN_CHILD_6_18: &str = r#"  hpage_collapse_scan_pmd: SCAN_EXCEED_SHARED_PTE  none_or_zero=0 swap=0 shared=1 referenced=1 writable=1
    sharing predicate folio_maybe_mapped_shared(folio):
      pfn 0x100200 order 0 mapcount 1: 1 PTE -> not shared
      pfn 0x100000 order 9 mapcount 512: 1 PTE -> shared
        before                              after
      0 eSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSS    eSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSS
     32 SSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSS    SSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSS
     64 SSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSS    SSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSS
     96 SSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSS    SSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSS
    128 SSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSS    SSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSS
    160 SSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSS    SSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSS
    192 SSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSS    SSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSS
    224 SSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSS    SSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSS
    256 S...............................    S...............................
    288 ................................    ................................
    320 ................................    ................................
    352 ................................    ................................
    384 ................................    ................................
    416 ................................    ................................
    448 ................................    ................................
    480 ................................    ................................
  legend:
    S PTE-mapped page of a large anon folio, mapped more than once
    e small anon page, mapped once (exclusive)
    . none (no PTE)"#;

fn explain_trials() -> Vec<Trial> {
    let mut trials = Vec::new();
    for (rel, want) in [("6.12", EXPLAIN_CHILD_6_12), ("6.18", EXPLAIN_CHILD_6_18)] {
        trials.push(Trial::test(
            format!("explain/linux-mm-case/{rel}"),
            move || {
                let sc =
                    parse_file(&root().join("linux-mm-case.scn")).map_err(|e| format!("{e:?}"))?;
                let o = run_model(&sc, rel)?;
                if let Some(f) = o.failure {
                    return Err(format!("{}: {}", f.loc, f.why).into());
                }
                let child: Vec<_> = o
                    .attempts
                    .iter()
                    .filter(|a| a.title == "khugepaged on A (0x40000000) in child")
                    .collect();
                let [a] = child[..] else {
                    return Err(format!(
                        "expected one attempt in the child, found {}",
                        child.len()
                    )
                    .into());
                };
                let text = a.text();
                let caused = &text[1];
                if !caused.ends_with("linux-mm-case.scn:15: `khugepaged scans 1`") {
                    return Err(format!("caused-by line: {caused}").into());
                }
                let got = text[2..].join("\n");
                if got == want {
                    Ok(())
                } else {
                    Err(format!("--- got ---\n{got}\n--- pinned ---\n{want}").into())
                }
            },
        ));
    }
    trials.push(Trial::test(
        "sleep/khugepaged_wakes_once_per_period",
        || {
            // Model-only timing (a host's khugepaged wakes at its own phase), so not a shipped
            // scenario: 9 ms of sleep leave the range alone, the 10th millisecond collapses it;
            // with scan_sleep_millisecs 1000, 999 ms do nothing and the next one collapses.
            let text = format!(
                "profile 6.1 6.18\n\
             include {}\n\
             mmap anon A 1 pmd\n\
             write A 0..511\n\
             madvise A hugepage\n\
             sleep 9 ms\n\
             expect pagemap A 0..511 pte\n\
             sleep 1 ms\n\
             expect pagemap A 0..511 pmd\n\
             set khugepaged/scan_sleep_millisecs 1000\n\
             mmap anon B 1 pmd\n\
             write B 0..511\n\
             madvise B hugepage\n\
             mark vmstat\n\
             sleep 999 ms\n\
             expect vmstat thp_collapse_alloc +0\n\
             sleep 1 ms\n\
             expect pagemap B 0..511 pmd\n\
             expect vmstat thp_collapse_alloc +1\n",
                root().join("prelude.inc").display()
            );
            let sc = parse_str(&root().join("sleep.scn"), &text).map_err(|e| format!("{e:?}"))?;
            for rel in &sc.releases {
                let o = run_model(&sc, rel)?;
                if let Some(f) = o.failure {
                    return Err(format!("{rel}: {}: `{}`: {}", f.loc, f.line, f.why).into());
                }
            }
            Ok(())
        },
    ));
    trials.push(Trial::test("vmstat/repeated_refusal_counts_once", || {
        // Two full scans refuse the parent's and the child's range twice each with the same
        // decision; khugepaged counted 4, the scenario's share is the 2 ranges refused.
        let text = format!(
            "profile 6.18\n\
             include {}\n\
             set khugepaged/max_ptes_shared 0\n\
             include {}\n\
             mark vmstat\n\
             khugepaged scans 2\n\
             expect scan-result A SCAN_EXCEED_SHARED_PTE\n\
             expect vmstat thp_scan_exceed_share_pte +2\n",
            root().join("prelude.inc").display(),
            root().join("linux-mm-setup.inc").display()
        );
        let sc = parse_str(&root().join("twice.scn"), &text).map_err(|e| format!("{e:?}"))?;
        let o = run_model(&sc, "6.18")?;
        match o.failure {
            Some(f) => Err(format!("{}: `{}`: {}", f.loc, f.line, f.why).into()),
            None => Ok(()),
        }
    }));
    trials.push(Trial::test(
        "across/names_the_switch_of_each_change",
        || {
            // Each shipped scenario's known boundaries, found by flipping switches alone.
            let cases: &[(&str, &[&str])] = &[
                (
                    "linux-mm-case.scn",
                    &[
                        "at 6.10: changed by\n    khugepaged_sharing = folio_likely_mapped_shared",
                        "at 6.15: changed by\n    khugepaged_sharing = folio_maybe_mapped_shared",
                    ],
                ),
                (
                    "deferred-split.scn",
                    &["at 6.9: changed by\n    zap_batches_large_folio_ptes = yes"],
                ),
                (
                    "mthp-collapse.scn",
                    &["at 7.2: changed by\n    khugepaged_mthp_collapse = yes"],
                ),
            ];
            for (file, wants) in cases {
                let sc = parse_file(&root().join(file)).map_err(|e| format!("{e:?}"))?;
                let text = harness::across::scenario_across(&sc);
                for want in *wants {
                    if !text.contains(want) {
                        return Err(format!("{file}: no `{want}` in\n{text}").into());
                    }
                }
                if text.matches("\n  at ").count() < wants.len() {
                    return Err(format!("{file}: fewer changes than expected\n{text}").into());
                }
            }
            Ok(())
        },
    ));
    trials.push(Trial::test("kernels/table_replays_every_recording", || {
        let file = root().join("linux-mm-case.scn").display().to_string();
        let fixtures = root().join("..").display().to_string();
        let args = vec!["--kernels".to_string(), fixtures, file.clone()];
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = harness::scenario_cli::main(&args, &mut out, &mut err);
        let text = String::from_utf8_lossy(&out).to_string();
        let want = "| 6.18.44-fc-v857 | 6.18 | ok | [main] A pmd 0: SCAN_EXCEED_SHARED_PTE; \
                    [child] A pmd 0: SCAN_EXCEED_SHARED_PTE | agrees |";
        if code != 0 || !text.contains(want) {
            return Err(format!("exit {code}\n{text}{}", String::from_utf8_lossy(&err)).into());
        }
        // A recording the model does not reproduce is reported and fails the command.
        let dir = std::env::temp_dir().join(format!("kernels-table-{}", std::process::id()));
        let rec = dir.join("6.18.1-test/scenarios");
        std::fs::create_dir_all(&rec).map_err(|e| e.to_string())?;
        let real = std::fs::read_to_string(
            root().join("../6.18.44-fc-v857/scenarios/linux-mm-case.trace"),
        )
        .map_err(|e| e.to_string())?;
        let forged = real
            .replace("kernel: 6.18.44-fc-v857", "kernel: 6.18.1-test")
            .replacen("SCAN_EXCEED_SHARED_PTE", "SCAN_SUCCEED", 1);
        std::fs::write(rec.join("linux-mm-case.trace"), forged).map_err(|e| e.to_string())?;
        let args = vec!["--kernels".to_string(), dir.display().to_string(), file];
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = harness::scenario_cli::main(&args, &mut out, &mut err);
        let _ = std::fs::remove_dir_all(&dir);
        let text = String::from_utf8_lossy(&out).to_string();
        if code != 1 || !text.contains("| DISAGREES |") || !text.contains("DISAGREE 6.18.1-test") {
            return Err(format!("exit {code}\n{text}").into());
        }
        Ok(())
    }));
    trials.push(Trial::test("explain/svg_matches_the_picture", || {
        let sc = parse_file(&root().join("linux-mm-case.scn")).map_err(|e| format!("{e:?}"))?;
        let o = run_model(&sc, "6.12")?;
        let a = o.attempts.last().ok_or("no collapse attempt")?;
        let svg = a.svg();
        if !svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\"")
            || !svg.ends_with("</svg>\n")
        {
            return Err("not a stand-alone SVG document".into());
        }
        // One cell per page in each picture, titled with the page's number and kind.
        let (before, after) = a.pictures();
        for (n, pic) in [before, after].into_iter().enumerate() {
            for (i, k) in pic.pages.iter().enumerate() {
                let title = format!("<title>page {i}: {}</title>", k.describe());
                let found = svg.matches(&title).count();
                let want = [before, after].iter().filter(|p| p.pages[i] == *k).count();
                if found != want {
                    return Err(format!(
                        "picture {n}, page {i}: {found} cells titled {title}, expected {want}"
                    )
                    .into());
                }
            }
        }
        Ok(())
    }));
    trials.push(Trial::test("explain/cli_writes_svg_files", || {
        let dir = std::env::temp_dir().join(format!("scenario-svg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let file = root().join("linux-mm-case.scn");
        let args: Vec<String> = vec![
            "--explain".into(),
            "--explain-svg".into(),
            dir.display().to_string(),
            "--profile".into(),
            "6.18".into(),
            file.display().to_string(),
        ];
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = harness::scenario_cli::main(&args, &mut out, &mut err);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        let _ = std::fs::remove_dir_all(&dir);
        let out = String::from_utf8_lossy(&out);
        let attempts = out.matches("collapse attempt ").count();
        let want: Vec<String> = (1..=attempts)
            .map(|n| format!("linux-mm-case-model-6.18-{n:03}.svg"))
            .collect();
        if code == 0 && attempts == 2 && names == want && out.contains("SCAN_EXCEED_SHARED_PTE") {
            Ok(())
        } else {
            Err(format!(
                "exit {code}, {attempts} attempts, files {names:?}, stderr {:?}",
                String::from_utf8_lossy(&err)
            )
            .into())
        }
    }));
    trials
}
