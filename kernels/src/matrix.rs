//! Recording fixtures on the matrix's kernels, and the matrix report (kernels × selections,
//! from the recorded fixtures replayed on the model).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use harness::crosscheck::{self, AWAITING};

use crate::catalog;
use crate::guest::{EXT4, OUT, TMPFS_HUGE};
use crate::protocol::MARK;
use crate::{fetch, vm};

/// The selections recorded on every kernel: the same as the 6.18 host fixtures, plus the file
/// cases on an ext4 directory (recorded where the kernel collapses regular files, skipped
/// with the reason elsewhere).
pub const SELECTIONS: &[(&str, &[&str])] = &[
    ("all:all tmpfs", &["--tmpfs", "--extras", "all:all"]),
    ("-s 2 all:anon", &["-s", "2", "all:anon"]),
    ("-s 4 all:shmem", &["-s", "4", "all:shmem"]),
    ("all:file ext4", &["all:file", "/mnt/ext4/khugepaged"]),
    (MTHP, &["-c", "4", "mthp_khugepaged:anon"]),
];

/// The mthp_khugepaged context as run_vmtests.sh runs it (7.3's selftest): recorded where the
/// kernel's era runs the 7.3 catalogue (7.2 on), whose khugepaged builds mTHPs.
const MTHP: &str = "-c 4 mthp_khugepaged:anon";

/// Whether selection `label` is recorded on `release`.
fn recorded_on(label: &str, release: &str) -> bool {
    label != MTHP || {
        let profile = model::KernelProfile::for_release(release).ok();
        harness::catalogue::Catalogue::for_kernel(profile.as_ref())
            == harness::catalogue::Catalogue::V7_3
    }
}

/// The report's columns: the selections, with the extras apart.
const COLUMNS: &[&str] = &[
    "all:all tmpfs",
    "extras",
    "-s 2 all:anon",
    "-s 4 all:shmem",
    "all:file ext4",
    MTHP,
];

/// The log of a recording kept beside the fixtures: the init's lines and the harness's
/// recorded / not recorded lines.
pub const RECORD_LOG: &str = "record.log";

pub fn fixtures_root() -> PathBuf {
    catalog::workspace_root().join("fixtures")
}

/// Records every kernel in `ks`, one after the other; prints the times.
pub fn record_all(ks: &[String], timeout: Duration) -> Result<i32, String> {
    Ok(each_kernel(ks, |k| {
        record_one(k, timeout).map(|l| (l.clone(), l))
    }))
}

/// Runs `run` for every kernel in `ks`, one after the other, printing what each returns
/// (`(shown now, its line in the times)`) or its error; then the times, the failures and
/// the total. Exit status 1 when a kernel failed.
pub(crate) fn each_kernel(
    ks: &[String],
    mut run: impl FnMut(&str) -> Result<(String, String), String>,
) -> i32 {
    let start = Instant::now();
    let mut failed = Vec::new();
    let mut times = Vec::new();
    for k in ks {
        match run(k) {
            Ok((shown, time)) => {
                println!("{shown}");
                times.push(time);
            }
            Err(e) => {
                eprintln!("ci/kernels: {k}: {e}");
                failed.push(format!("{k}: {}", e.lines().next().unwrap_or("")));
            }
        }
    }
    println!("\nTimes (wall clock):");
    for t in &times {
        println!("  {t}");
    }
    for f in &failed {
        println!("  FAILED {f}");
    }
    println!(
        "  total {:.0}s for {} kernel(s)",
        start.elapsed().as_secs_f64(),
        ks.len()
    );
    i32::from(!failed.is_empty())
}

fn record_one(k: &str, timeout: Duration) -> Result<String, String> {
    let t = Instant::now();
    let f = fetch::resolve(k)?;
    let fetch_time = t.elapsed();
    // Some packages come without loadable modules (Debian published no linux-modules-* for
    // 6.19, 7.0 and 7.1) and these kernels have no block driver, ext4 or zram built in: no
    // swap and no disk then. The swap cases are skipped with that reason and the ext4
    // selection is not run; record.log says so.
    let has_disk = fetch::has_module(&f, "virtio_blk")? && fetch::has_module(&f, "ext4")?;
    let has_swap = fetch::has_module(&f, "zram")? || has_disk;
    let mut notes = Vec::new();
    if !has_swap {
        notes.push(format!(
            "{MARK} no swap: {} has neither zram nor a disk driver to swap to (no loadable modules in its packages); swap cases skipped (--no-swapfile)",
            f.release
        ));
    }
    if !has_disk {
        notes.push(format!(
            "{MARK} not run: {}: {} has no virtio_blk or ext4 (no loadable modules in its packages)",
            SELECTIONS[3].0, f.release
        ));
    }
    let commands = SELECTIONS
        .iter()
        .filter(|(_, args)| has_disk || !args.iter().any(|a| a.starts_with(EXT4)))
        .filter(|(label, _)| recorded_on(label, &f.release))
        .map(|(_, args)| {
            let mut argv = vec!["/bin/khugepaged".to_string(), "--record".into(), OUT.into()];
            if !has_swap {
                argv.push("--no-swapfile".into());
            }
            argv.extend(args.iter().map(|a| a.to_string()));
            argv
        })
        .collect();
    let job = vm::GuestJob {
        commands,
        extra_files: Vec::new(),
        timeout,
        stream: true,
    };
    let r = vm::boot(&f, &job)?;
    // Each --record run exits 0 (fixtures written) or 4 (nothing to record: all skipped).
    for l in &r.console {
        if let Some(rest) = l.split_once(&format!("{MARK} exit ")).map(|(_, r)| r) {
            let status = rest.split_whitespace().nth(2).unwrap_or("?");
            if status != "0" && status != "4" {
                return Err(format!("a recording run failed in the guest: {l}"));
            }
        }
    }
    // The guest names the directory after its uname -r.
    let traces: Vec<_> = r
        .out
        .iter()
        .filter(|e| e.name.ends_with(".trace"))
        .collect();
    let release = traces
        .first()
        .and_then(|e| e.name.split_once('/'))
        .map(|(r, _)| r.to_string())
        .ok_or_else(|| format!("the guest recorded no fixtures for {}", f.release))?;
    if let Some(e) = traces
        .iter()
        .find(|e| !e.name.starts_with(&format!("{release}/")))
    {
        return Err(format!("the guest recorded {} outside {release}/", e.name));
    }
    let dir = fixtures_root().join(&release);
    // Replace the release's traces; AWAITING stays (the replay test says when it is stale).
    fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    if let Ok(entries) = fs::read_dir(&dir) {
        for e in entries.flatten() {
            if e.path().extension().is_some_and(|x| x == "trace") {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    for e in &traces {
        let name = e.name.rsplit('/').next().unwrap_or(&e.name);
        crosscheck::write_atomically(&dir.join(name), &String::from_utf8_lossy(&e.data))?;
    }
    let log: String = notes
        .iter()
        .cloned()
        .chain(r.console.iter().cloned())
        .filter_map(|l| {
            if let Some(i) = l.find(MARK) {
                Some(l[i..].to_string())
            } else if l.starts_with("recorded ")
                || l.starts_with("not recorded ")
                || l.contains(" fixture(s) written")
            {
                Some(l)
            } else {
                None
            }
        })
        .map(|l| l + "\n")
        .collect();
    crosscheck::write_atomically(&dir.join(RECORD_LOG), &log)?;
    let boot = r.boot;
    let rec = r.total.saturating_sub(r.boot);
    let (disagree, unmarked, stale) = disagreements(&dir)?;
    Ok(format!(
        "{} {}: fetch {:.0}s, boot {:.0}s, record {:.0}s; {} fixtures, {} disagree with the model{}{}",
        k,
        release,
        fetch_time.as_secs_f64(),
        boot.as_secs_f64(),
        rec.as_secs_f64(),
        traces.len(),
        disagree,
        if unmarked.is_empty() {
            String::new()
        } else {
            format!(
                " ({} not in {AWAITING} yet: {})",
                unmarked.len(),
                unmarked.join(", ")
            )
        },
        if stale.is_empty() {
            String::new()
        } else {
            format!(
                "; {AWAITING} lines that now agree (remove them): {}",
                stale.join(", ")
            )
        }
    ))
}

/// Replays `dir`'s fixtures: how many disagree, those AWAITING does not name, and the
/// AWAITING entries whose fixture now agrees (or is gone).
fn disagreements(dir: &Path) -> Result<(usize, Vec<String>, Vec<String>), String> {
    let awaiting = crosscheck::awaiting(dir)?;
    let mut n = 0;
    let mut unmarked = Vec::new();
    let mut disagreeing = Vec::new();
    for p in fixture_files(dir) {
        if crosscheck::replay(&p).is_err() {
            n += 1;
            let file = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if !awaiting.contains_key(&file) {
                unmarked.push(file.clone());
            }
            disagreeing.push(file);
        }
    }
    let stale = awaiting
        .into_keys()
        .filter(|f| !disagreeing.contains(f))
        .collect();
    Ok((n, unmarked, stale))
}

fn fixture_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map(|es| {
            es.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "trace"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// One cell of the report.
#[derive(Default, Clone, Copy)]
struct Cell {
    agree: usize,
    disagree: usize,
    both_fail: usize,
    skip: usize,
    awaiting: usize,
}

fn column_of(text: &str) -> &'static str {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or("")
            .to_string()
    };
    let env = field("env");
    if field("case").starts_with("extra") {
        "extras"
    } else if env.contains("collapse_order=") {
        MTHP
    } else if env.contains("file=disk") {
        "all:file ext4"
    } else if env.contains("anon_order=2") {
        "-s 2 all:anon"
    } else if env.contains("anon_order=4") {
        "-s 4 all:shmem"
    } else {
        "all:all tmpfs"
    }
}

/// Cases the recording skipped (no trace), per column, from record.log.
fn skipped_from_log(dir: &Path) -> BTreeMap<&'static str, usize> {
    let mut out = BTreeMap::new();
    let Ok(log) = fs::read_to_string(dir.join(RECORD_LOG)) else {
        return out;
    };
    let mut column = "all:all tmpfs";
    for l in log.lines() {
        if let Some(run) = l.strip_prefix(&format!("{MARK} run ")) {
            column = SELECTIONS
                .iter()
                .find(|(_, args)| run.ends_with(&args.join(" ")))
                .map(|(c, _)| *c)
                .unwrap_or("all:all tmpfs");
        } else if l.starts_with("not recorded ") && l.contains(": skip: ") {
            *out.entry(column).or_default() += 1;
        }
    }
    out
}

/// `ci/kernels report`: prints the table and writes fixtures/MATRIX.md.
pub fn report(markdown_only: bool) -> Result<i32, String> {
    let root = fixtures_root();
    let mut releases: Vec<PathBuf> = fs::read_dir(&root)
        .map_err(|e| format!("{}: {e}", root.display()))?
        .flatten()
        .map(|e| e.path())
        // Release directories (scenarios/ holds no traces).
        .filter(|p| p.is_dir() && !fixture_files(p).is_empty())
        .collect();
    releases.sort_by_key(|p| release_key(&p.file_name().unwrap_or_default().to_string_lossy()));
    let mut rows = Vec::new();
    for dir in &releases {
        let awaiting = crosscheck::awaiting(dir)?;
        let mut cells: BTreeMap<&str, Cell> = BTreeMap::new();
        for p in fixture_files(dir) {
            let text = fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            let cell = cells.entry(column_of(&text)).or_default();
            let file = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            match crosscheck::replay(&p) {
                Ok(Some(_)) => cell.skip += 1,
                Ok(None) if text.lines().any(|l| l.starts_with("outcome: fail")) => {
                    cell.both_fail += 1
                }
                Ok(None) => cell.agree += 1,
                Err(_) => {
                    cell.disagree += 1;
                    if awaiting.contains_key(&file) {
                        cell.awaiting += 1;
                    }
                }
            }
        }
        for (col, n) in skipped_from_log(dir) {
            cells.entry(col).or_default().skip += n;
        }
        let release = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let profile = model::KernelProfile::for_release(&release)
            .map(|p| p.name.to_string())
            .unwrap_or_else(|_| "-".into());
        rows.push((release, profile, cells));
    }
    let cell_text = |c: Option<&Cell>| match c {
        None => "-".to_string(),
        Some(c) => format!("{}/{}/{}/{}", c.agree, c.disagree, c.both_fail, c.skip),
    };
    // Plain text.
    let mut text = format!("{:<24} {:<7}", "kernel", "profile");
    for c in COLUMNS {
        text.push_str(&format!(" {c:>15}"));
    }
    text.push('\n');
    for (release, profile, cells) in &rows {
        text.push_str(&format!("{release:<24} {profile:<7}"));
        for c in COLUMNS {
            text.push_str(&format!(" {:>15}", cell_text(cells.get(c))));
        }
        text.push('\n');
    }
    text.push_str("cells: agree/disagree/both fail/skip (fixtures replayed on the model with the profile for_release picks; skip = not recorded because the kernel skipped, or unmodelled)\n");
    let mut total_await = 0;
    for (release, _, cells) in &rows {
        let a: usize = cells.values().map(|c| c.awaiting).sum();
        let d: usize = cells.values().map(|c| c.disagree).sum();
        total_await += a;
        if d > 0 {
            text.push_str(&format!(
                "{release}: {d} disagree, {a} of them in its {AWAITING} (waiting on a model issue)\n"
            ));
        }
    }
    // Markdown.
    let mut md = String::from(
        "# Kernel matrix\n\nWritten by `ci/kernels report` from the fixtures: each is replayed on the \
         model with the profile `KernelProfile::for_release` picks. Cells: agree / disagree / both \
         fail / skip (skip: the kernel skipped the case, or the fixture depends on something the \
         model does not model). Disagreeing fixtures wait on the model issue named in their \
         release's `AWAITING` file.\n\n| kernel | profile |",
    );
    for c in COLUMNS {
        md.push_str(&format!(" {c} |"));
    }
    md.push_str("\n|---|---|");
    for _ in COLUMNS {
        md.push_str("---|");
    }
    md.push('\n');
    for (release, profile, cells) in &rows {
        md.push_str(&format!("| {release} | {profile} |"));
        for c in COLUMNS {
            md.push_str(&format!(" {} |", cell_text(cells.get(c))));
        }
        md.push('\n');
    }
    let _ = total_await;
    // What waits on the model, and the C selftest references.
    let mut waits = String::new();
    let mut selftests = String::new();
    for dir in &releases {
        let release = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        for (file, reason) in crosscheck::awaiting(dir)? {
            waits.push_str(&format!("- {release}/{file}: {reason}\n"));
        }
        if let Ok(log) = fs::read_to_string(dir.join(SELFTEST_LOG)) {
            let origin = log
                .lines()
                .nth(1)
                .and_then(|l| l.split_once(" from "))
                .map(|(_, o)| o.trim_end_matches("; built with gcc -static").to_string())
                .unwrap_or_default();
            selftests.push_str(&format!("- {release} (from {origin}):\n"));
            for c in selftest_comparison(dir)?.unwrap_or_default() {
                if let Some(first) = &c.c_did_not_run {
                    selftests.push_str(&format!(
                        "  - {} (C {}): the C selftest did not run it: {first:?}\n",
                        c.label, c.exit
                    ));
                    continue;
                }
                selftests.push_str(&format!(
                    "  - {} (C {}): on the kernel {}; on the model {}\n",
                    c.label,
                    c.exit,
                    c.kernel.summary(),
                    if c.model == c.kernel {
                        "the same".to_string()
                    } else {
                        c.model.summary()
                    }
                ));
                for (side, lines) in [
                    ("C only", &c.kernel.c_only),
                    ("harness only", &c.kernel.h_only),
                ] {
                    for (n, l) in distinct_counted(lines).into_iter().take(MAX_LISTED) {
                        selftests.push_str(&format!("    - {side}: {n}x `{l}`\n"));
                    }
                    let distinct = distinct_counted(lines).len();
                    if distinct > MAX_LISTED {
                        selftests.push_str(&format!(
                            "    - {side}: {} more distinct lines\n",
                            distinct - MAX_LISTED
                        ));
                    }
                }
            }
        }
    }
    if !waits.is_empty() {
        md.push_str(&format!(
            "\n## Waiting on the model ({AWAITING})\n\n{waits}"
        ));
    }
    if !selftests.is_empty() {
        md.push_str(&format!(
            "\n## The kernels' own C selftest ({SELFTEST_LOG}) against the harness\n\nEach selection's step lines in the C output against the harness's on that kernel (its fixtures) and on the model (the same cases with the fixtures' profile and settings), by longest common subsequence; the test file's directory is `$DIR` and a wait's dots after the fourth are folded (their number is timing). Lines only one side has are listed by kernel side, with how often each occurs.\n\n{selftests}"
        ));
    }
    md.push_str(&crate::newest::report_section(&releases)?);
    crosscheck::write_atomically(&root.join("MATRIX.md"), &md)?;
    if markdown_only {
        print!("{md}");
    } else {
        print!("{text}");
        println!("(also written to {})", root.join("MATRIX.md").display());
    }
    Ok(0)
}

/// Distinct lines of the report's step-line differences listed per side.
const MAX_LISTED: usize = 6;

/// The distinct lines of `v` with how often each occurs, in order of first occurrence.
pub(crate) fn distinct_counted(v: &[String]) -> Vec<(usize, &str)> {
    let mut out: Vec<(usize, &str)> = Vec::new();
    for l in v {
        match out.iter_mut().find(|(_, s)| *s == l.as_str()) {
            Some(e) => e.0 += 1,
            None => out.push((1, l)),
        }
    }
    out
}

fn release_key(r: &str) -> Vec<u32> {
    r.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .take(3)
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// The C selftest's invocations for the same selections as `SELECTIONS` (the tmpfs one on a
/// huge=advise tmpfs the guest mounts), with the harness selection each matches.
const C_SELECTIONS: &[(&str, &[&str])] = &[
    ("all:all tmpfs", &["all:all", TMPFS_HUGE]),
    ("-s 2 all:anon", &["-s", "2", "all:anon"]),
    ("-s 4 all:shmem", &["-s", "4", "all:shmem"]),
    ("all:file ext4", &["all:file", "/mnt/ext4/khugepaged"]),
    (MTHP, &["-c", "4", "mthp_khugepaged:anon"]),
];

/// The C selftest's output on each kernel, beside its fixtures.
pub const SELFTEST_LOG: &str = "selftest.log";

/// `ci/kernels selftest KERNEL…`: each release's own C selftest (or the nearest series'),
/// built static on the host, run in the guest on the recording's selections; its output is
/// kept as fixtures/<release>/selftest.log and its step lines compared with the harness's
/// recorded ones.
pub fn selftest_all(ks: &[String], timeout: Duration) -> Result<i32, String> {
    let mut failed = 0;
    for k in ks {
        match selftest_one(k, timeout) {
            Ok(summary) => println!("{summary}"),
            Err(e) => {
                failed += 1;
                eprintln!("ci/kernels: {k}: {e}");
            }
        }
    }
    Ok(i32::from(failed > 0))
}

pub(crate) fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\x1b' {
            for d in it.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The test file's directory differs between runs (the selftest's dir, the harness's private
/// tmpfs): shown as $DIR.
fn normalize_step(line: &str) -> String {
    line.split(' ')
        .map(|w| match w.rfind("/collapse_test_file") {
            Some(i) if w.starts_with('/') || w.starts_with('$') => format!("$DIR{}", &w[i..]),
            _ => w.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The step lines of selftest output ("<what>... OK|Fail|Skip"), without the settings
/// save/restore lines the harness does not trace. A verdict printed on a line of its own
/// (7.2+'s collapse_compound_extreme: the message with ksft_print_msg, then " OK") completes
/// the message line before it, which the harness's trace records as that step's text.
pub(crate) fn c_step_lines(lines: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut previous: Option<String> = None;
    for l in lines {
        // A progress line rewritten with '\r' ends as its last version.
        let l = strip_ansi(l);
        let last = l.rsplit('\r').find(|p| !p.trim().is_empty()).unwrap_or("");
        let l = last.trim().trim_start_matches("# ").to_string();
        let bare_verdict = matches!(l.as_str(), "OK" | "Fail" | "Skip" | "Timeout");
        if bare_verdict {
            if let Some(p) = previous.take() {
                out.push(comparable_step(&p));
            }
            continue;
        }
        // `Timeout`: a wait that saw neither the collapse nor two full scans (khugepaged
        // stopped).
        let is_step = l.contains("...")
            && ["OK", "Fail", "Skip", "Timeout"]
                .iter()
                .any(|v| l.ends_with(v))
            && !l.starts_with("Save THP")
            && !l.starts_with("Restore THP");
        if is_step {
            out.push(comparable_step(&l));
            previous = None;
        } else {
            previous =
                (!l.is_empty() && !l.starts_with("ok ") && !l.starts_with("not ok ")).then_some(l);
        }
    }
    out
}

/// A step line as the comparison with the C selftest takes it: the test file's directory as
/// `$DIR`, and a khugepaged wait's dots after the first folded into it. The C prints one dot
/// per failed check, every 0.5 s: whether the first check failed is the test's business
/// ("msg...." against "msg..."), how many more followed is timing.
pub fn comparable_step(line: &str) -> String {
    let line = normalize_step(line);
    let mut out = String::with_capacity(line.len());
    let mut dots = 0;
    for ch in line.chars() {
        dots = if ch == '.' { dots + 1 } else { 0 };
        if dots <= 4 {
            out.push(ch);
        }
    }
    out
}

/// Two sequences of step lines compared by their longest common subsequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepDiff {
    pub common: usize,
    /// Lines only the C selftest printed, and only the harness, in order.
    pub c_only: Vec<String>,
    pub h_only: Vec<String>,
}

pub fn diff_steps(c: &[String], h: &[String]) -> StepDiff {
    let (n, m) = (c.len(), h.len());
    let mut t = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            t[i][j] = if c[i] == h[j] {
                t[i + 1][j + 1] + 1
            } else {
                t[i + 1][j].max(t[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let (mut c_only, mut h_only) = (Vec::new(), Vec::new());
    while i < n || j < m {
        if i < n && j < m && c[i] == h[j] {
            i += 1;
            j += 1;
        } else if j == m || (i < n && t[i + 1][j] >= t[i][j + 1]) {
            c_only.push(c[i].clone());
            i += 1;
        } else {
            h_only.push(h[j].clone());
            j += 1;
        }
    }
    StepDiff {
        common: t[0][0] as usize,
        c_only,
        h_only,
    }
}

impl StepDiff {
    /// One line: the counts, with the first line only each side has.
    pub fn summary(&self) -> String {
        if self.c_only.is_empty() && self.h_only.is_empty() {
            return format!("all {} step lines equal", self.common);
        }
        let first = |v: &[String]| {
            v.first()
                .map(|s| format!("{s:?}"))
                .unwrap_or_else(|| "-".into())
        };
        format!(
            "{} equal; {} only in the C (first {}), {} only in the harness (first {})",
            self.common,
            self.c_only.len(),
            first(&self.c_only),
            self.h_only.len(),
            first(&self.h_only)
        )
    }
}

fn compare_steps(label: &str, c: &[String], h: &[String]) -> String {
    format!("{label}: {}", diff_steps(c, h).summary())
}

/// The recorded fixtures of a selection, in the selftest's case order.
fn selection_fixtures(dir: &Path, args: &[&str]) -> Result<Vec<(PathBuf, String)>, String> {
    let args: Vec<String> = args
        .iter()
        .filter(|a| **a != "--extras" && **a != "--record")
        .map(|a| a.to_string())
        .collect();
    let mut o = harness::cli::parse(&args)?.ok_or("help")?;
    // The catalogue the kernel's recording ran (its era's), not the model's default.
    let release = dir.file_name().map(|n| n.to_string_lossy().into_owned());
    let profile = release.and_then(|r| model::KernelProfile::for_release(&r).ok());
    o.catalogue = Some(harness::catalogue::Catalogue::for_kernel(profile.as_ref()));
    let env = harness::catalogue::Env {
        anon_order: o.anon_order,
        collapse_order: o.collapse_order,
        finfo: o.dir.as_ref().map(|d| {
            harness::catalogue::FileInfo::new(
                d,
                harness::catalogue::DirKind::Disk {
                    read_ahead_kb_path: None,
                },
            )
        }),
        ..Default::default()
    };
    let mut out = Vec::new();
    for case in harness::cli::select_cases(&o) {
        let p = dir.join(crosscheck::fixture_name(&case, &env));
        if let Ok(text) = fs::read_to_string(&p) {
            out.push((p, text));
        }
    }
    Ok(out)
}

/// The step lines of a trace, comparable with the C's.
fn trace_step_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            ["step ok: ", "step fail: ", "step skip: "]
                .iter()
                .find_map(|v| l.strip_prefix(v))
        })
        .map(|l| comparable_step(l.trim()))
        .collect()
}

/// The harness's step lines for a selection on the kernel, from the recorded fixtures.
fn harness_step_lines(dir: &Path, args: &[&str]) -> Result<Vec<String>, String> {
    Ok(selection_fixtures(dir, args)?
        .iter()
        .flat_map(|(_, text)| trace_step_lines(text))
        .collect())
}

/// The same cases on the model, with the profile, environment and settings each fixture
/// recorded (as its replay runs them).
fn model_step_lines(dir: &Path, args: &[&str]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for (p, text) in selection_fixtures(dir, args)? {
        let at = |e: String| format!("{}: {e}", p.display());
        let (header, _) = harness::trace::parse(&text).map_err(at)?;
        let profile = model::KernelProfile::by_name(&header.profile)
            .map_or_else(|| model::KernelProfile::for_release(&header.kernel), Ok)
            .map_err(|e| at(e.to_string()))?;
        let case = harness::cli::all_cases()
            .into_iter()
            .find(|c| c.id() == header.case)
            .ok_or_else(|| at(format!("unknown case {:?}", header.case)))?;
        let env = crosscheck::env_from_header(&header.env).map_err(at)?;
        let read_only = header.read_only_thp_for_fs.unwrap_or(matches!(
            env.finfo.as_ref().map(|f| &f.kind),
            Some(harness::catalogue::DirKind::Disk { .. })
        ));
        let run = crosscheck::model_trace(&profile, read_only, &env, &case);
        out.extend(trace_step_lines(run.trace.as_deref().unwrap_or("")));
    }
    Ok(out)
}

/// One selection of a release's selftest.log compared with the harness's step lines.
#[derive(Debug)]
pub struct SelftestComparison {
    pub label: &'static str,
    /// The C printed no step line: its first line of output (a usage message, when that
    /// release's selftest lacks an option the selection needs).
    pub c_did_not_run: Option<String>,
    /// How the C run ended (`## exit` line).
    pub exit: String,
    pub kernel: StepDiff,
    pub model: StepDiff,
}

/// Reads `dir`'s selftest.log and compares each selection's step lines with the recorded
/// fixtures (the harness on that kernel) and with the model run on the same cases (the
/// release's profile). None when the release has no selftest.log.
pub fn selftest_comparison(dir: &Path) -> Result<Option<Vec<SelftestComparison>>, String> {
    let Ok(log) = fs::read_to_string(dir.join(SELFTEST_LOG)) else {
        return Ok(None);
    };
    let mut out = Vec::new();
    let mut section: Option<(&'static str, Vec<String>)> = None;
    for l in log.lines() {
        if let Some(args) = l.strip_prefix("## khugepaged ") {
            section = C_SELECTIONS
                .iter()
                .find(|(_, a)| a.join(" ") == args.trim())
                .map(|(label, _)| (*label, Vec::new()));
        } else if let Some(exit) = l.strip_prefix("## exit ") {
            let Some((label, lines)) = section.take() else {
                continue;
            };
            let harness_args = SELECTIONS
                .iter()
                .find(|(l, _)| *l == label)
                .map(|(_, a)| *a)
                .unwrap_or(&[]);
            let c = c_step_lines(&lines);
            let c_did_not_run = c.is_empty().then(|| {
                // The first line that says something: KTAP's header comes before the
                // option parsing of 7.x's selftests.
                lines
                    .iter()
                    .map(|l| l.trim())
                    .find(|l| !l.is_empty() && !l.starts_with("TAP version"))
                    .unwrap_or("no output")
                    .to_string()
            });
            out.push(SelftestComparison {
                label,
                c_did_not_run,
                exit: exit.to_string(),
                kernel: diff_steps(&c, &harness_step_lines(dir, harness_args)?),
                model: diff_steps(&c, &model_step_lines(dir, harness_args)?),
            });
        } else if let Some((_, lines)) = section.as_mut() {
            lines.push(l.to_string());
        }
    }
    Ok(Some(out))
}

fn selftest_one(k: &str, timeout: Duration) -> Result<String, String> {
    let f = fetch::resolve(k)?;
    let series = fetch::selftest_series(&f.release)
        .ok_or_else(|| format!("no source series for release {}", f.release))?;
    let (bin, version) = fetch::selftest_binary(series)?;
    let has_disk = fetch::has_module(&f, "virtio_blk")? && fetch::has_module(&f, "ext4")?;
    let selections: Vec<&(&str, &[&str])> = C_SELECTIONS
        .iter()
        .filter(|(_, a)| has_disk || !a.iter().any(|x| x.starts_with(EXT4)))
        .filter(|(label, _)| recorded_on(label, &f.release))
        .collect();
    let commands = selections
        .iter()
        .map(|(_, args)| {
            let mut argv = vec!["/bin/khugepaged-c".to_string()];
            argv.extend(args.iter().map(|a| a.to_string()));
            argv
        })
        .collect();
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
    // Split the console by the init's run/exit lines.
    let mut runs: Vec<(String, Vec<String>, String)> = Vec::new();
    for l in &r.console {
        if let Some((_, rest)) = l.split_once(&format!("{MARK} run ")) {
            let args = rest.split_once(": ").map(|(_, a)| a).unwrap_or(rest);
            runs.push((args.to_string(), Vec::new(), String::new()));
        } else if let Some((_, rest)) = l.split_once(&format!("{MARK} exit ")) {
            if let Some(last) = runs.last_mut() {
                last.2 = rest.to_string();
            }
        } else if let Some(last) = runs.last_mut().filter(|r| r.2.is_empty()) {
            last.1.push(l.clone());
        }
    }
    let dir = fixtures_root().join(&release);
    let origin = if f.release.starts_with(&format!("{series}."))
        || f.release.starts_with(&format!("{series}-"))
    {
        format!("its own series' source, linux-source-{series} {version}")
    } else {
        format!(
            "linux-source-{series} {version}: Debian has no linux-source package for this release's series; {series} is the nearest that exists"
        )
    };
    let mut log = format!(
        "# The kernel's own khugepaged selftest on {release}, under qemu (ci/kernels selftest)\n\
         # khugepaged.c, vm_util.c and thp_settings.c/hugepage_settings.c from {origin}; built with gcc -static\n"
    );
    let mut summary = format!("{k} {release}: selftest from linux-source-{series} {version}");
    for (n, (args, lines, exit)) in runs.iter().enumerate() {
        log.push_str(&format!(
            "\n## khugepaged {}\n",
            args.trim_start_matches("/bin/khugepaged-c ")
        ));
        for l in lines {
            log.push_str(&strip_ansi(l));
            log.push('\n');
        }
        log.push_str(&format!("## exit {exit}\n"));
        let (label, _) = selections[n];
        let harness_args = SELECTIONS
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, a)| *a)
            .unwrap_or(&[]);
        // The comparison is `ci/kernels report`'s (it follows re-recorded fixtures); the
        // summary shows it once.
        let c = c_step_lines(lines);
        let h = harness_step_lines(&dir, harness_args)?;
        summary.push_str(&format!("\n  {}", compare_steps(label, &c, &h)));
    }
    if !has_disk {
        log.push_str(&format!("\n## not run: all:file on ext4: {release} has no virtio_blk or ext4 (no loadable modules in its packages)\n"));
    }
    fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    crosscheck::write_atomically(&dir.join(SELFTEST_LOG), &log)?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_waits_dots_after_the_first_tick_are_timing() {
        assert_eq!(comparable_step("Collapse.... OK"), "Collapse.... OK");
        assert_eq!(comparable_step("Collapse....... Fail"), "Collapse.... Fail");
        assert_eq!(comparable_step("Collapse... OK"), "Collapse... OK");
        assert_eq!(
            comparable_step("Opening /mnt/x/collapse_test_file read only... OK"),
            "Opening $DIR/collapse_test_file read only... OK"
        );
    }

    #[test]
    fn c_step_lines_take_the_last_version_of_a_rewritten_line_and_drop_ktap_prefixes() {
        let c = lines(&[
            "TAP version 13",
            "# Save THP and khugepaged settings... OK",
            "Construct 1/512...\rConstruct 2/512...\rConstruct 512/512... OK",
            "# Collapse multiple fully populated PTE table...... Fail",
            "ok 2 collapse_full",
            "Restore THP and khugepaged settings... OK",
        ]);
        assert_eq!(
            c_step_lines(&c),
            lines(&[
                "Construct 512/512... OK",
                "Collapse multiple fully populated PTE table.... Fail"
            ])
        );
    }

    #[test]
    fn a_verdict_on_its_own_line_completes_the_message_before_it() {
        let c = lines(&[
            "# Run test: collapse_compound_extreme (khugepaged:anon)",
            "# Construct PTE page table full of different PTE-mapped compound pages",
            " OK",
            "# Collapse PTE table full of different compound pages.... OK",
            "ok 46 collapse_compound_extreme",
        ]);
        assert_eq!(
            c_step_lines(&c),
            lines(&[
                "Construct PTE page table full of different PTE-mapped compound pages",
                "Collapse PTE table full of different compound pages.... OK"
            ])
        );
    }

    /// Selections where a release's own C selftest printed exactly the harness's step lines,
    /// on the kernel and on the model: the harness's text must stay the C's there.
    #[test]
    fn the_c_selftests_print_the_harness_step_lines() {
        for (release, label) in [
            ("6.1.0-50-amd64", "all:all tmpfs"),
            ("6.12.95+deb12-amd64", "-s 2 all:anon"),
            ("7.3.4+deb13-amd64", "-s 4 all:shmem"),
        ] {
            let dir = fixtures_root().join(release);
            let all = selftest_comparison(&dir)
                .unwrap_or_else(|e| panic!("{release}: {e}"))
                .unwrap_or_else(|| panic!("{release}: no {SELFTEST_LOG}"));
            let c = all
                .iter()
                .find(|c| c.label == label)
                .unwrap_or_else(|| panic!("{release}: no {label} in {SELFTEST_LOG}"));
            assert!(c.kernel.common > 0, "{release} {label}: nothing compared");
            assert!(
                c.kernel.c_only.is_empty() && c.kernel.h_only.is_empty(),
                "{release} {label}, on the kernel: {}",
                c.kernel.summary()
            );
            assert_eq!(c.model, c.kernel, "{release} {label}, on the model");
        }
    }

    #[test]
    fn diff_steps_lists_what_only_one_side_has() {
        let d = diff_steps(
            &lines(&["a", "b", "c", "d"]),
            &lines(&["a", "x", "c", "d", "e"]),
        );
        assert_eq!(d.common, 3);
        assert_eq!(d.c_only, lines(&["b"]));
        assert_eq!(d.h_only, lines(&["x", "e"]));
        assert!(d
            .summary()
            .starts_with("3 equal; 1 only in the C (first \"b\")"));
        let same = diff_steps(&lines(&["a"]), &lines(&["a"]));
        assert_eq!(same.summary(), "all 1 step lines equal");
        assert_eq!(
            distinct_counted(&lines(&["x", "y", "x"])),
            vec![(2, "x"), (1, "y")]
        );
    }
}
