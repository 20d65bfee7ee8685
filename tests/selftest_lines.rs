//! The catalogue's step lines against the kernels' own C selftest: for every
//! `fixtures/<release>/selftest.log` recorded with a khugepaged.c this project mirrors (the
//! 7.2 and 7.3 sources: the 7.3 catalogue, whose output for these selections is 7.2's too),
//! each selection runs on the model under that release's profile, and its step lines
//! ("<what>... OK|Fail|Skip", settings save/restore aside) must equal the C program's, line
//! for line. Logs built from an older source (6.1, 6.12) follow a khugepaged.c neither
//! catalogue mirrors and are not compared. The only difference allowed is the timing of
//! one wait's progress dots ([`timing_only`]).
//!
//! `newest-lines/...`: every kernel's `newest-selftest/harness.log` (`ci/kernels newest`: the
//! harness with the 7.3 catalogue, deterministic khugepaged, on that kernel, whatever its
//! era) against the model under the release's profile, run the same way: their step lines
//! must be equal, the test file's directory aside. How they compare with the 7.3 C
//! selftest's on the same kernel is fixtures/MATRIX.md's newest-selftest section.

use std::path::{Path, PathBuf};

use harness::catalogue::{Catalogue, DirKind, Env, FileInfo, KhugepagedMode};
use harness::cli::{parse, select_cases};
use harness::model_backend::ModelBackend;
use harness::runner::run_case;
use libtest_mimic::{Arguments, Failed, Trial};
use model::KernelProfile;

/// The one way a line may differ, because it comes from timing and not from the kernel's
/// decisions: khugepaged.c's wait prints a dot for each 0.5 s tick that ends without the
/// collapse. On the kernel, khugepaged wakes every 10 ms and sometimes collapses the range in
/// the microseconds between the wait's MADV_HUGEPAGE and its first check (seen in the `-s 2`
/// runs, one line in one wait per run, a different one each time: 7.0, 7.2, 7.3); then it
/// prints no dot. The model's virtual clock always looks first, so it prints one dot. Allowed
/// only for that: the same step with the same verdict, the kernel's line without the one dot.
fn timing_only(c: &str, model: &str) -> bool {
    ["OK", "Fail"].iter().any(|v| {
        let tail = format!(".... {v}");
        model
            .strip_suffix(&tail)
            .is_some_and(|head| c == format!("{head}... {v}"))
    })
}

/// Whether the release was recorded without swap (`record.log`: its kernel has nothing to
/// swap to), so the model runs without it too.
fn recorded_without_swap(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("record.log")).is_ok_and(|l| l.contains("no swap:"))
}

fn fixtures_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

/// The khugepaged.c series a log was built from (its second header line).
fn source_series(log: &str) -> Option<String> {
    let header = log.lines().nth(1)?;
    let rest = header.split("linux-source-").nth(1)?;
    Some(rest.split_whitespace().next()?.to_string())
}

/// The step lines of selftest output, as `ci/kernels selftest` compares them.
fn step_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.trim().trim_start_matches("# ").to_string())
        .filter(|l| {
            l.contains("...")
                && ["OK", "Fail", "Skip", "Timeout"]
                    .iter()
                    .any(|v| l.ends_with(v))
                && !l.starts_with("Save THP")
                && !l.starts_with("Restore THP")
        })
        .collect()
}

/// The selections of a log: the `## khugepaged ARGS` line and the output up to `## exit`.
fn selections(log: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut current: Option<(String, String)> = None;
    for l in log.lines() {
        if let Some(args) = l.strip_prefix("## khugepaged ") {
            current = Some((args.to_string(), String::new()));
        } else if l.starts_with("## exit") {
            out.extend(current.take());
        } else if let Some((_, text)) = current.as_mut() {
            text.push_str(l);
            text.push('\n');
        }
    }
    out
}

/// The model's output for a selection, in the 7.3 selftest's format.
fn model_output(release: &str, args: &str, swap: bool) -> Result<String, String> {
    let argv: Vec<String> = args.split_whitespace().map(String::from).collect();
    let mut o = parse(&argv)?.ok_or("help")?;
    o.catalogue = Some(Catalogue::V7_3);
    o.profile = Some(KernelProfile::for_release(release).map_err(|e| e.to_string())?);
    // The recorded directories: a huge=advise tmpfs, or a directory of an ext4 disk.
    let finfo = o.dir.as_ref().map(|d| {
        let kind = if d.contains("tmpfs") {
            DirKind::Tmpfs {
                huge: "advise".into(),
            }
        } else {
            DirKind::Disk {
                read_ahead_kb_path: None,
            }
        };
        FileInfo::new(d, kind)
    });
    let env = Env {
        anon_order: o.anon_order,
        finfo,
        khugepaged: KhugepagedMode::Selftest,
        catalogue: Catalogue::V7_3,
        collapse_order: o.collapse_order,
    };
    let cases = select_cases(&o);
    let mut text = harness::report::tap13_header(cases.len());
    for (n, case) in cases.iter().enumerate() {
        let profile = o.profile.clone().expect("set above");
        let mut b = if swap {
            ModelBackend::new(profile)
        } else {
            ModelBackend::without_swap(profile)
        };
        b.dir = env.finfo.as_ref().map(|f| f.kind.clone());
        let r = run_case(&mut b, &env, case);
        text.push_str(&harness::report::tap13_case(n + 1, &r));
        if harness::report::tap13_aborted(&r) {
            // khugepaged.c exits there.
            break;
        }
    }
    Ok(text)
}

/// Compares line by line; Err lists every difference that is not [`timing_only`].
fn compare(c: &[String], m: &[String]) -> Result<(), Failed> {
    compare_sides("C:     ", c, m)
}

/// [`compare`], the first side named `first` (padded to the width of "model: ").
fn compare_sides(first: &str, c: &[String], m: &[String]) -> Result<(), Failed> {
    let mut problems = Vec::new();
    for i in 0..c.len().max(m.len()) {
        let (cl, ml) = (c.get(i), m.get(i));
        if cl == ml || cl.zip(ml).is_some_and(|(c, m)| timing_only(c, m)) {
            continue;
        }
        problems.push(format!(
            "step line {}:\n    {first}{}\n    model: {}",
            i + 1,
            cl.map_or("(none)", |s| s.as_str()),
            ml.map_or("(none)", |s| s.as_str())
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Failed::from(problems.join("\n")))
    }
}

/// Each release directory under fixtures/ that holds `file`, with the release and the text.
fn release_logs(file: &str) -> Vec<(PathBuf, String, String)> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(fixtures_root())
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    dirs.sort();
    dirs.into_iter()
        .filter_map(|dir| {
            let log = std::fs::read_to_string(dir.join(file)).ok()?;
            let release = dir.file_name()?.to_string_lossy().into_owned();
            Some((dir, release, log))
        })
        .collect()
}

fn trials() -> Vec<Trial> {
    let mut trials = Vec::new();
    for (dir, release, log) in release_logs("selftest.log") {
        let series = source_series(&log).unwrap_or_default();
        let swap = !recorded_without_swap(&dir);
        for (args, c_text) in selections(&log) {
            let name = format!("selftest-lines/{release}/{args}");
            let mirrored = series == "7.2" || series == "7.3";
            // An option the release's khugepaged.c lacks (7.2's has no `-c`): the C printed
            // its usage, there is nothing to compare.
            let usage = step_lines(&c_text).is_empty() && c_text.contains("Usage:");
            let release = release.clone();
            let trial = Trial::test(name, move || {
                let m_text = model_output(&release, &args, swap).map_err(Failed::from)?;
                compare(&step_lines(&c_text), &step_lines(&m_text))
            });
            trials.push(if usage {
                trial
                    .with_kind(format!(
                        "khugepaged.c of {series} printed its usage for these options"
                    ))
                    .with_ignored_flag(true)
            } else if mirrored {
                trial
            } else {
                trial
                    .with_kind(format!(
                        "khugepaged.c of {series}: not a mirrored catalogue"
                    ))
                    .with_ignored_flag(true)
            });
        }
    }
    trials
}

/// The sections of a `newest-selftest/*.log`: the harness's command line (after `## LABEL: `)
/// and its output up to `## exit`.
fn newest_sections(log: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut current: Option<(String, String, String)> = None;
    for l in log.lines() {
        if l.starts_with("## exit") {
            out.extend(current.take());
        } else if let Some((label, command)) =
            l.strip_prefix("## ").and_then(|r| r.split_once(": "))
        {
            current = Some((label.to_string(), command.to_string(), String::new()));
        } else if let Some((_, _, text)) = current.as_mut() {
            text.push_str(l);
            text.push('\n');
        }
    }
    out
}

/// The test file's directory differs (the harness's private directories, the model's): `$DIR`.
/// And a wait's dots after the fourth are folded: a wait that times out lasts 30 s of wall
/// time on the host without full_scans moving, 300 passes on the model (whether the first
/// check failed, the fourth dot, is the test's business).
fn without_dir(lines: Vec<String>) -> Vec<String> {
    lines
        .into_iter()
        .map(|l| {
            let l = l
                .split(' ')
                .map(|w| match w.rfind("/collapse_test_file") {
                    Some(i) if w.starts_with('/') => format!("$DIR{}", &w[i..]),
                    _ => w.to_string(),
                })
                .collect::<Vec<_>>()
                .join(" ");
            let mut out = String::with_capacity(l.len());
            let mut dots = 0;
            for ch in l.chars() {
                dots = if ch == '.' { dots + 1 } else { 0 };
                if dots <= 4 {
                    out.push(ch);
                }
            }
            out
        })
        .collect()
}

/// The model's output for a harness command line of `ci/kernels newest` (`--backend host`
/// and its host options included), as the host ran it: deterministic khugepaged, the
/// catalogue asked for, the private tmpfs or the ext4 directory, swap as the kernel had it.
fn model_output_for_command(release: &str, command: &str, swap: bool) -> Result<String, String> {
    let argv: Vec<String> = command
        .split_whitespace()
        .skip(1)
        .map(String::from)
        .collect();
    let o = parse(&argv)?.ok_or("help")?;
    let profile = KernelProfile::for_release(release).map_err(|e| e.to_string())?;
    let finfo = if o.private_tmpfs {
        Some(FileInfo::model_tmpfs("advise"))
    } else {
        o.dir.as_ref().map(|d| {
            FileInfo::new(
                d,
                DirKind::Disk {
                    read_ahead_kb_path: None,
                },
            )
        })
    };
    let catalogue = harness::cli::effective_catalogue(&o);
    let env = Env {
        anon_order: o.anon_order,
        finfo,
        khugepaged: o.khugepaged.unwrap_or(KhugepagedMode::Deterministic),
        catalogue,
        collapse_order: o.collapse_order,
    };
    let cases = select_cases(&o);
    let mut text = String::new();
    for case in &cases {
        // Without swap the host skips the swap cases (--no-swapfile), with no step line.
        if !swap && harness::host::isolate::needs_swap(case) {
            continue;
        }
        let mut b = if swap {
            ModelBackend::new(profile.clone())
        } else {
            ModelBackend::without_swap(profile.clone())
        };
        b.dir = env.finfo.as_ref().map(|f| f.kind.clone());
        let r = run_case(&mut b, &env, case);
        text.push_str(&harness::report::tap13_case(1, &r));
        if harness::report::tap13_aborted(&r) {
            break;
        }
    }
    Ok(text)
}

/// `newest-selftest/AWAITING`: `LABEL: why` for a selection whose kernel run went wrong in a
/// way that is the run's, not the kernel's behaviour (the reason names what was seen).
const NEWEST_AWAITING: &str = "AWAITING";

fn newest_awaiting(dir: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(dir.join("newest-selftest").join(NEWEST_AWAITING))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(": "))
        .map(|(l, why)| (l.trim().to_string(), why.trim().to_string()))
        .collect()
}

fn newest_trials() -> Vec<Trial> {
    let mut trials = Vec::new();
    for (dir, release, log) in release_logs("newest-selftest/harness.log") {
        let swap = !log.lines().any(|l| l.starts_with("# no swap:"));
        let awaiting = newest_awaiting(&dir);
        for (label, command, h_text) in newest_sections(&log) {
            let run = {
                let release = release.clone();
                move || -> Result<(), Failed> {
                    let m_text =
                        model_output_for_command(&release, &command, swap).map_err(Failed::from)?;
                    compare_sides(
                        "kernel: ",
                        &without_dir(step_lines(&h_text)),
                        &without_dir(step_lines(&m_text)),
                    )
                }
            };
            let name = format!("{release}/{label}");
            match awaiting.iter().find(|(l, _)| *l == label) {
                // A kernel run that went wrong in a way the model does not (and should not)
                // follow: listed with the reason, and checked to still differ.
                Some((_, why)) => {
                    trials.push(
                        Trial::test(format!("newest-lines/{name}"), || Ok(()))
                            .with_kind(why.clone())
                            .with_ignored_flag(true),
                    );
                    trials.push(Trial::test(
                        format!("newest-awaiting/{name}"),
                        move || match run() {
                            Ok(()) => Err(Failed::from(format!(
                                "the model now prints the kernel's lines: remove `{label}` from \
                                 newest-selftest/{NEWEST_AWAITING}"
                            ))),
                            Err(_) => Ok(()),
                        },
                    ));
                }
                None => trials.push(Trial::test(format!("newest-lines/{name}"), run)),
            }
        }
    }
    trials
}

fn main() {
    let args = Arguments::from_args();
    let mut all = trials();
    all.extend(newest_trials());
    libtest_mimic::run(&args, all).exit();
}
