//! The newest selftest on every kernel: the harness with the newest catalogue
//! (`--catalogue 7.3`, deterministic khugepaged) and the newest release's own C selftest
//! (linux-source-7.3's khugepaged.c), run in the same guest on the same selections, whatever
//! the kernel's era. The outputs are kept as plain text in `fixtures/<release>/newest-selftest/`
//! (apart from the release's own recordings and selftest.log) and `ci/kernels report` compares
//! their step lines.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use harness::crosscheck;

use crate::guest::{EXT4, TMPFS_HUGE};
use crate::matrix::{self, c_step_lines, diff_steps, StepDiff};
use crate::protocol::MARK;
use crate::{fetch, vm};

/// The directory, under a release's fixtures, of the newest selftest's outputs.
pub const DIR: &str = "newest-selftest";
/// The harness's output (`--catalogue NEWEST`) and the C's, one section per selection.
pub const HARNESS_LOG: &str = "harness.log";
pub const C_LOG: &str = "c.log";

/// The newest source series, whose khugepaged.c the newest catalogue mirrors.
pub fn newest_series() -> &'static str {
    fetch::SOURCE_SERIES[fetch::SOURCE_SERIES.len() - 1]
}

/// One selection: its label, the harness's arguments and the C's (the same selection; the
/// harness mounts its own huge=advise tmpfs with `--tmpfs`, the C gets the guest's).
pub struct Selection {
    pub label: &'static str,
    pub harness: &'static [&'static str],
    pub c: &'static [&'static str],
}

/// What `record` runs, without the extras (the C has none), plus the newest selftest's own
/// context: mthp_khugepaged at two collapse orders.
pub const SELECTIONS: &[Selection] = &[
    Selection {
        label: "all:all tmpfs",
        harness: &["--tmpfs", "all:all"],
        c: &["all:all", TMPFS_HUGE],
    },
    Selection {
        label: "-s 2 all:anon",
        harness: &["-s", "2", "all:anon"],
        c: &["-s", "2", "all:anon"],
    },
    Selection {
        label: "-s 4 all:shmem",
        harness: &["-s", "4", "all:shmem"],
        c: &["-s", "4", "all:shmem"],
    },
    Selection {
        label: "all:file ext4",
        harness: &["all:file", "/mnt/ext4/khugepaged"],
        c: &["all:file", "/mnt/ext4/khugepaged"],
    },
    Selection {
        label: "-c 2 mthp_khugepaged:anon",
        harness: &["-c", "2", "mthp_khugepaged:anon"],
        c: &["-c", "2", "mthp_khugepaged:anon"],
    },
    Selection {
        label: "-c 4 mthp_khugepaged:anon",
        harness: &["-c", "4", "mthp_khugepaged:anon"],
        c: &["-c", "4", "mthp_khugepaged:anon"],
    },
];

/// The harness's options in front of a selection: the host, the newest catalogue, and
/// khugepaged only inside the waits (as `record` runs it).
fn harness_prefix() -> Vec<String> {
    [
        "--backend",
        "host",
        "--khugepaged",
        "deterministic",
        "--catalogue",
        newest_series(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// `ci/kernels newest KERNEL…`: one boot per kernel, each selection run by the harness and
/// then by the C; prints the times and a one-line comparison per selection.
pub fn newest_all(ks: &[String], timeout: Duration) -> Result<i32, String> {
    Ok(crate::matrix::each_kernel(ks, |k| newest_one(k, timeout)))
}

fn newest_one(k: &str, timeout: Duration) -> Result<(String, String), String> {
    let t = Instant::now();
    let f = fetch::resolve(k)?;
    let series = newest_series();
    let (bin, version) = fetch::selftest_binary(series)?;
    let fetch_time = t.elapsed();
    // As `record`: no disk and no swap where the packages have no modules for them.
    let has_disk = fetch::has_module(&f, "virtio_blk")? && fetch::has_module(&f, "ext4")?;
    let has_swap = fetch::has_module(&f, "zram")? || has_disk;
    let selections: Vec<&Selection> = SELECTIONS
        .iter()
        .filter(|s| has_disk || !s.c.iter().any(|a| a.starts_with(EXT4)))
        .collect();
    let mut commands = Vec::new();
    for s in &selections {
        let mut h = vec!["/bin/khugepaged".to_string()];
        h.extend(harness_prefix());
        if !has_swap {
            h.push("--no-swapfile".into());
        }
        h.extend(s.harness.iter().map(|a| a.to_string()));
        commands.push(h);
        let mut c = vec!["/bin/khugepaged-c".to_string()];
        c.extend(s.c.iter().map(|a| a.to_string()));
        commands.push(c);
    }
    let data = fs::read(&bin).map_err(|e| format!("{}: {e}", bin.display()))?;
    let job = vm::GuestJob {
        commands,
        extra_files: vec![("bin/khugepaged-c".into(), data, 0o755)],
        timeout,
        stream: true,
    };
    let r = vm::boot(&f, &job)?;
    let release = r
        .console
        .iter()
        .find_map(|l| {
            l.split_once(&format!("{MARK} init release="))
                .map(|(_, r)| r.trim().to_string())
        })
        .unwrap_or(f.release.clone());
    let runs = split_runs(&r.console);
    if runs.len() != selections.len() * 2 {
        return Err(format!(
            "the guest ran {} of the {} commands (see the console above)",
            runs.len(),
            selections.len() * 2
        ));
    }
    let head = |who: &str| {
        let mut s = format!(
            "# {who} on {release}, under qemu (ci/kernels newest; the C selftest from \
             linux-source-{series} {version}, built with gcc -static)\n"
        );
        if !has_swap {
            s.push_str(&format!(
                "# no swap: {release} has neither zram nor a disk driver to swap to (no loadable modules in its packages)\n"
            ));
        }
        if !has_disk {
            s.push_str(&format!(
                "# not run: all:file ext4: {release} has no virtio_blk or ext4 (no loadable modules in its packages)\n"
            ));
        }
        s
    };
    let mut logs = [
        head(&format!(
            "The harness with --catalogue {series} (deterministic khugepaged)"
        )),
        head(&format!("linux-source-{series}'s C khugepaged selftest")),
    ];
    let mut summary = format!(
        "{k} {release}: harness --catalogue {series} and the C of linux-source-{series} {version}"
    );
    for (n, run) in runs.iter().enumerate() {
        let s = selections[n / 2];
        let log = &mut logs[n % 2];
        log.push_str(&format!("\n## {}: {}\n", s.label, run.command));
        for l in &run.lines {
            log.push_str(&matrix::strip_ansi(l));
            log.push('\n');
        }
        log.push_str(&format!("## exit {}\n", run.exit));
        if n % 2 == 1 {
            let h = &runs[n - 1];
            let d = diff_steps(&c_step_lines(&run.lines), &c_step_lines(&h.lines));
            summary.push_str(&format!(
                "\n  {}: {} (harness {}, C {})",
                s.label,
                d.summary(),
                run_time(&h.exit),
                run_time(&run.exit)
            ));
        }
    }
    let dir = matrix::fixtures_root().join(&release).join(DIR);
    fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    crosscheck::write_atomically(&dir.join(HARNESS_LOG), &logs[0])?;
    crosscheck::write_atomically(&dir.join(C_LOG), &logs[1])?;
    let time = format!(
        "{k} {release}: fetch and build {:.0}s, boot {:.0}s, runs {:.0}s, total {:.0}s",
        fetch_time.as_secs_f64(),
        r.boot.as_secs_f64(),
        r.total.saturating_sub(r.boot).as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
    Ok((summary, time))
}

/// `exit N status S after T` → `T` (or the whole line).
fn run_time(exit: &str) -> String {
    exit.split_once(" after ")
        .map(|(_, t)| t.to_string())
        .unwrap_or_else(|| exit.to_string())
}

/// One command of the guest: its command line, its output and the init's exit line.
struct Run {
    command: String,
    lines: Vec<String>,
    exit: String,
}

/// The console split by the init's run/exit lines.
fn split_runs(console: &[String]) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    for l in console {
        if let Some((_, rest)) = l.split_once(&format!("{MARK} run ")) {
            let command = rest.split_once(": ").map(|(_, a)| a).unwrap_or(rest);
            runs.push(Run {
                command: command.to_string(),
                lines: Vec::new(),
                exit: String::new(),
            });
        } else if let Some((_, rest)) = l.split_once(&format!("{MARK} exit ")) {
            if let Some(last) = runs.last_mut() {
                last.exit = rest.to_string();
            }
        } else if let Some(last) = runs.last_mut().filter(|r| r.exit.is_empty()) {
            last.lines.push(l.clone());
        }
    }
    runs
}

/// A log's sections: label → (output lines, exit line).
fn read_log(path: &Path) -> Result<BTreeMap<String, (Vec<String>, String)>, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = BTreeMap::new();
    let mut section: Option<(String, Vec<String>)> = None;
    for l in text.lines() {
        if let Some(exit) = l.strip_prefix("## exit ") {
            if let Some((label, lines)) = section.take() {
                out.insert(label, (lines, exit.to_string()));
            }
        } else if let Some(rest) = l.strip_prefix("## ") {
            let label = rest.split_once(": ").map(|(l, _)| l).unwrap_or(rest);
            section = Some((label.to_string(), Vec::new()));
        } else if let Some((_, lines)) = section.as_mut() {
            lines.push(l.to_string());
        }
    }
    Ok(out)
}

/// One selection of one kernel: the C's step lines against the harness's.
pub struct Comparison {
    pub label: &'static str,
    pub c_exit: String,
    pub harness_exit: String,
    /// By longest common subsequence, with the wait dots a timing difference (see
    /// [`timing_pairs`]) taken out of `c_only`/`h_only` into `timing`.
    pub diff: StepDiff,
    /// (C line, harness line) pairs that differ only in a wait's first dot.
    pub timing: Vec<(String, String)>,
    /// The C printed no step line: its first line (a usage message, a skip).
    pub c_did_not_run: Option<String>,
    /// Where each side stopped early (kselftest's `Bail out! ...`).
    pub c_bail: Option<String>,
    pub harness_bail: Option<String>,
}

/// The `Bail out!` line of an output, if it stopped early.
fn bail(lines: &[String]) -> Option<String> {
    lines
        .iter()
        .find_map(|l| l.find("Bail out!").map(|i| l[i..].trim().to_string()))
}

/// The comparisons of a release directory's newest-selftest outputs; None without them.
pub fn comparison(release_dir: &Path) -> Result<Option<Vec<Comparison>>, String> {
    let dir = release_dir.join(DIR);
    if !dir.join(C_LOG).exists() {
        return Ok(None);
    }
    let c = read_log(&dir.join(C_LOG))?;
    let h = read_log(&dir.join(HARNESS_LOG))?;
    let mut out = Vec::new();
    for s in SELECTIONS {
        let (Some((c_lines, c_exit)), Some((h_lines, h_exit))) = (c.get(s.label), h.get(s.label))
        else {
            continue;
        };
        let cs = c_step_lines(c_lines);
        out.push(Comparison {
            label: s.label,
            c_exit: c_exit.clone(),
            harness_exit: h_exit.clone(),
            c_did_not_run: cs.is_empty().then(|| {
                c_lines
                    .iter()
                    .map(|l| l.trim())
                    .find(|l| !l.is_empty() && !l.starts_with("TAP version"))
                    .unwrap_or("no output")
                    .to_string()
            }),
            diff: StepDiff {
                common: 0,
                c_only: Vec::new(),
                h_only: Vec::new(),
            },
            timing: Vec::new(),
            c_bail: bail(c_lines),
            harness_bail: bail(h_lines),
        });
        let last = out.last_mut().expect("just pushed");
        (last.diff, last.timing) = timing_pairs(diff_steps(&cs, &c_step_lines(h_lines)));
    }
    Ok(Some(out))
}

/// The one difference that comes from timing, not from the kernel's decisions: the C's
/// khugepaged (awake every 10 ms) may collapse a range, or finish the two full scans the wait
/// waits for, between MADV_HUGEPAGE and the wait's first check, so the C prints `msg... OK`
/// where the harness, whose khugepaged runs only inside the wait after that check
/// (deterministic mode), prints `msg.... OK`. Each C-only
/// line that is a harness-only line without that one dot is paired with it.
pub fn timing_pairs(mut d: StepDiff) -> (StepDiff, Vec<(String, String)>) {
    let mut pairs = Vec::new();
    let mut c_rest = Vec::new();
    for c in std::mem::take(&mut d.c_only) {
        let partner = d.h_only.iter().position(|h| {
            ["OK", "Fail", "Timeout"].iter().any(|v| {
                h.strip_suffix(&format!(".... {v}"))
                    .is_some_and(|head| c == format!("{head}... {v}"))
            })
        });
        match partner {
            Some(i) => pairs.push((c, d.h_only.remove(i))),
            None => c_rest.push(c),
        }
    }
    d.c_only = c_rest;
    (d, pairs)
}

/// Distinct lines listed per side and selection.
const MAX_LISTED: usize = 8;

/// The section of fixtures/MATRIX.md: per kernel and selection, the line agreement.
pub fn report_section(releases: &[PathBuf]) -> Result<String, String> {
    let series = newest_series();
    let mut table = String::new();
    let mut details = String::new();
    let mut all = [0usize; 4];
    for dir in releases {
        let Some(comps) = comparison(dir)? else {
            continue;
        };
        let release = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let mut sum = [0usize; 4];
        let mut cells = Vec::new();
        details.push_str(&format!("- {release}:\n"));
        for s in SELECTIONS {
            let Some(c) = comps.iter().find(|c| c.label == s.label) else {
                cells.push("-".to_string());
                continue;
            };
            let n = [
                c.diff.common,
                c.timing.len(),
                c.diff.c_only.len(),
                c.diff.h_only.len(),
            ];
            for (t, x) in sum.iter_mut().zip(n) {
                *t += x;
            }
            cells.push(format!("{}/{}/{}/{}", n[0], n[1], n[2], n[3]));
            let how = format!(
                "harness {}, C {}",
                exit_words(&c.harness_exit),
                exit_words(&c.c_exit)
            );
            let counts = if n[1..].iter().all(|&x| x == 0) {
                format!("all {} step lines equal", n[0])
            } else {
                format!(
                    "{} equal, {} differ only in a wait's first dot, {} only in the C, {} only in the harness",
                    n[0], n[1], n[2], n[3]
                )
            };
            let mut stops = String::new();
            for (side, b) in [("the C", &c.c_bail), ("the harness", &c.harness_bail)] {
                if let Some(b) = b {
                    stops.push_str(&format!("; {side} stopped: `{b}`"));
                }
            }
            match &c.c_did_not_run {
                Some(first) => details.push_str(&format!(
                    "  - {} ({how}): the C printed no step line ({first:?}); {counts}{stops}\n",
                    c.label
                )),
                None => details.push_str(&format!("  - {} ({how}): {counts}{stops}\n", c.label)),
            }
            for (side, lines) in [("C only", &c.diff.c_only), ("harness only", &c.diff.h_only)] {
                let distinct = matrix::distinct_counted(lines);
                for (n, l) in distinct.iter().take(MAX_LISTED) {
                    details.push_str(&format!("    - {side}: {n}x `{l}`\n"));
                }
                if distinct.len() > MAX_LISTED {
                    details.push_str(&format!(
                        "    - {side}: {} more distinct lines\n",
                        distinct.len() - MAX_LISTED
                    ));
                }
            }
            let timing: Vec<String> = c.timing.iter().map(|(c, _)| c.clone()).collect();
            for (n, l) in matrix::distinct_counted(&timing) {
                details.push_str(&format!(
                    "    - timing: {n}x `{l}` in the C, one dot more in the harness\n"
                ));
            }
        }
        for (t, x) in all.iter_mut().zip(sum) {
            *t += x;
        }
        table.push_str(&format!(
            "| {release} | {} | {}/{}/{}/{} |\n",
            cells.join(" | "),
            sum[0],
            sum[1],
            sum[2],
            sum[3]
        ));
    }
    if table.is_empty() {
        return Ok(String::new());
    }
    let mut md = format!(
        "\n## The newest selftest on every kernel ({DIR}/)\n\n\
         `ci/kernels newest KERNEL...|all` runs, in one boot per kernel, the harness with \
         `--catalogue {series}` (deterministic khugepaged, as `record` runs it) and \
         linux-source-{series}'s C khugepaged selftest on the same selections, whatever the \
         kernel's era, and keeps both outputs in `fixtures/<release>/{DIR}/` ({HARNESS_LOG}, \
         {C_LOG}). Cells: step lines equal / differing only in a wait's first dot (the C's \
         khugepaged, awake every 10 ms, had collapsed the range or done its two full scans \
         before the wait's first check; timing) / only in the C / only in the harness, by longest common subsequence \
         (`$DIR` for the test file's directory, a wait's dots after the fourth folded), as \
         above. Why each remaining line differs: README, \"The newest selftest on every \
         kernel\".\n\n| kernel |"
    );
    for s in SELECTIONS {
        md.push_str(&format!(" {} |", s.label));
    }
    md.push_str(" total |\n|---|");
    for _ in SELECTIONS {
        md.push_str("---|");
    }
    md.push_str("---|\n");
    md.push_str(&table);
    md.push_str(&format!(
        "\nAll kernels: {} equal, {} timing, {} only in the C, {} only in the harness.\n\n{details}",
        all[0], all[1], all[2], all[3]
    ));
    Ok(md)
}

/// `N status S after T` → `status S, T`.
fn exit_words(exit: &str) -> String {
    let mut it = exit.split_whitespace();
    let _n = it.next();
    let rest: Vec<&str> = it.collect();
    match rest.as_slice() {
        ["status", s, "after", t] => format!("status {s} in {t}"),
        _ => exit.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_is_the_last_source_series() {
        assert_eq!(newest_series(), "7.3");
    }

    #[test]
    fn a_log_reads_back_by_selection() {
        let dir = std::env::temp_dir().join(format!("newest-log-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("c.log");
        fs::write(
            &p,
            "# head\n\n## -s 2 all:anon: /bin/khugepaged-c -s 2 all:anon\nTAP version 13\n\
             # Collapse.... OK\n## exit 1 status 0 after 9.1s\n",
        )
        .unwrap();
        let m = read_log(&p).unwrap();
        let (lines, exit) = &m["-s 2 all:anon"];
        assert_eq!(lines.len(), 2);
        assert_eq!(exit, "1 status 0 after 9.1s");
        assert_eq!(exit_words(exit), "status 0 in 9.1s");
        assert_eq!(c_step_lines(lines), vec!["Collapse.... OK".to_string()]);
        let d = diff_steps(
            &["a... OK".to_string(), "b... Fail".to_string()],
            &["a.... OK".to_string(), "b.... OK".to_string()],
        );
        let (d, timing) = timing_pairs(d);
        assert_eq!(
            timing,
            vec![("a... OK".to_string(), "a.... OK".to_string())]
        );
        assert_eq!(d.c_only, vec!["b... Fail".to_string()]);
        assert_eq!(d.h_only, vec!["b.... OK".to_string()]);
        let _ = fs::remove_dir_all(&dir);
    }
}
