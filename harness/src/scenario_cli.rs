//! `khugepaged scenario`: the command line of scenario files, on the model, this host, or
//! both compared.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::host::scenario::{run_scenario, HostRun};
use crate::scenario::parse::{self, Scenario};
use crate::scenario::record;
use crate::scenario::run::{run_model, Outcome};

/// Usage of `khugepaged scenario`.
pub const USAGE: &str = "\
usage: khugepaged scenario [-v] [--explain] [--explain-svg DIR] [--backend model|host|both]
                           [--profile RELEASE] [--record DIR] FILE...
       khugepaged scenario --kernels DIR FILE...
       khugepaged scenario --across-releases FILE...
  Runs scenario files. On the model (the default): once per release each file names on its
  `profile` line (or only RELEASE). On the host (root; THP needed): once, as this kernel,
  each file in its own process with the THP settings journaled and restored and khugepaged
  in the deterministic mode; collapse decisions are read from the huge_memory tracepoints of
  a private tracefs instance. `both`: the host, then the model with this kernel's profile,
  compared line by line (expectations' observations, decisions, collapse counters).
  --record DIR writes each host run to DIR/<kernel release>/scenarios/<name>.trace (implies
  --backend host), which `cargo test` replays on the model.
  -v prints every line run and every collapse decision.
  --explain prints, for every collapse attempt (khugepaged and MADV_COLLAPSE) on the model,
  its decision record (result, counts, the sharing predicate's answer per folio) and a
  picture of the PMD range before and after (16 rows of 32 pages, with a legend).
  --explain-svg DIR writes the same as DIR/<file>-model-<release>-<n>.svg, one per attempt.
  --kernels DIR: the cross-kernel table of each file instead of a run: every recording of
  it under DIR (DIR/<release>/scenarios/<name>.trace), the kernel's outcome and decisions,
  and whether the model with that release's profile agrees (each replayed); exit 1 when a
  replay disagrees or a file has no recording.
  --across-releases: each file on the model under every release profile (6.1 ... 7.3, with
  that release's `on` lines): verdict, decisions and what the expectations saw per release,
  and where they change, the profile switch(es) that change them alone (flipped one at a
  time on the older profile), with their kernel commits.
  Exit status: 0 all passed (and agreed), 1 a scenario failed or the sides disagree,
  2 a usage or parse error (nothing runs then), 4 the host cannot run scenarios.
";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Model,
    Host,
    Both,
}

/// What to print besides each run's verdict.
#[derive(Clone, Debug, Default)]
struct Show {
    /// Every line run and every decision (`-v`).
    verbose: bool,
    /// Every collapse attempt's decision record and picture (`--explain`).
    explain: bool,
    /// Where to write the same as SVG (`--explain-svg`).
    svg: Option<PathBuf>,
}

fn usage_error(err: &mut dyn Write, msg: &str) -> i32 {
    let _ = writeln!(err, "khugepaged scenario: {msg}\n{USAGE}");
    2
}

/// `khugepaged scenario ARGS...`: parses every file first (any error: exit 2 before anything
/// runs), then runs them. Returns the exit status.
pub fn main(args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let mut show = Show::default();
    let mut only: Option<String> = None;
    let mut backend: Option<Backend> = None;
    let mut record_dir: Option<PathBuf> = None;
    let mut kernels_dir: Option<PathBuf> = None;
    let mut across = false;
    let mut files = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-h" | "--help" => {
                let _ = out.write_all(USAGE.as_bytes());
                return 0;
            }
            "-v" | "--verbose" => show.verbose = true,
            "--explain" => show.explain = true,
            "--explain-svg" => match it.next() {
                Some(d) => show.svg = Some(PathBuf::from(d)),
                None => return usage_error(err, "--explain-svg needs a directory"),
            },
            "--profile" => match it.next() {
                Some(r) => match parse::lookup_profile(r) {
                    Ok(_) => only = Some(r.clone()),
                    Err(why) => {
                        let _ = writeln!(err, "khugepaged scenario: --profile {r}: {why}");
                        return 2;
                    }
                },
                None => return usage_error(err, "--profile needs a release"),
            },
            "--backend" => {
                backend = match it.next().map(String::as_str) {
                    Some("model") => Some(Backend::Model),
                    Some("host") => Some(Backend::Host),
                    Some("both") => Some(Backend::Both),
                    other => {
                        return usage_error(
                            err,
                            &format!(
                                "--backend needs model, host or both, found {}",
                                other.unwrap_or("nothing")
                            ),
                        )
                    }
                }
            }
            "--record" => match it.next() {
                Some(d) => record_dir = Some(PathBuf::from(d)),
                None => return usage_error(err, "--record needs a directory"),
            },
            "--across-releases" => across = true,
            "--kernels" => match it.next() {
                Some(d) => kernels_dir = Some(PathBuf::from(d)),
                None => return usage_error(err, "--kernels needs the fixtures directory"),
            },
            s if s.starts_with('-') => return usage_error(err, &format!("unknown option {s}")),
            f => files.push(PathBuf::from(f)),
        }
    }
    // --across-releases and --kernels answer from the model or the recordings alone.
    let run_options = record_dir.is_some()
        || backend.is_some()
        || only.is_some()
        || show.explain
        || show.svg.is_some();
    if across && (kernels_dir.is_some() || run_options) {
        return usage_error(
            err,
            "--across-releases runs the model under every release; it takes no --backend, \
             --record, --profile, --kernels or --explain",
        );
    }
    if kernels_dir.is_some() && run_options {
        return usage_error(
            err,
            "--kernels prints the recorded kernels' table; it runs nothing, so it takes no \
             --backend, --record, --profile or --explain",
        );
    }
    if record_dir.is_some() {
        match backend {
            None | Some(Backend::Host) => backend = Some(Backend::Host),
            Some(_) => {
                return usage_error(
                    err,
                    "--record records host runs: it goes with --backend host only",
                )
            }
        }
    }
    let backend = backend.unwrap_or(Backend::Model);
    if only.is_some() && backend != Backend::Model {
        return usage_error(
            err,
            "--profile chooses a model profile; a host run is this kernel (with both, the model takes this kernel's profile)",
        );
    }
    if files.is_empty() {
        return usage_error(err, "no scenario file given");
    }
    let mut parsed = Vec::new();
    let mut bad = false;
    for f in &files {
        match parse::parse_file(f) {
            Ok(s) => parsed.push(s),
            Err(errors) => {
                bad = true;
                for e in errors {
                    let _ = writeln!(err, "{e}");
                }
            }
        }
    }
    if bad {
        return 2;
    }
    if let Some(dir) = &kernels_dir {
        return kernel_tables(&parsed, dir, show.verbose, out, err);
    }
    if across {
        for sc in &parsed {
            let _ = write!(out, "{}", crate::across::scenario_across(sc));
        }
        return 0;
    }
    if let Some(d) = &show.svg {
        if let Err(e) = std::fs::create_dir_all(d) {
            let _ = writeln!(
                err,
                "khugepaged scenario: --explain-svg {}: cannot create the directory: {e}",
                d.display()
            );
            return 2;
        }
    }
    if let Some(dir) = &record_dir {
        // Checked before anything runs on the host.
        if let Err(e) = writable(dir) {
            let _ = writeln!(err, "khugepaged scenario: --record {}: {e}", dir.display());
            return 2;
        }
    }
    match backend {
        Backend::Model => run_on_model(&parsed, only.as_deref(), &show, out, err),
        Backend::Host | Backend::Both => run_on_host(
            &parsed,
            backend == Backend::Both,
            record_dir.as_deref(),
            &show,
            out,
            err,
        ),
    }
}

/// `--kernels DIR`: each file's cross-kernel table; -v adds each disagreement in full.
fn kernel_tables(
    parsed: &[Scenario],
    dir: &Path,
    verbose: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let mut status = 0;
    for sc in parsed {
        let rows = match record::kernel_rows(dir, &sc.path) {
            Ok(r) => r,
            Err(e) => {
                let _ = writeln!(err, "khugepaged scenario: --kernels {}: {e}", dir.display());
                return 2;
            }
        };
        let _ = writeln!(
            out,
            "{} on the kernels recorded in {}:",
            sc.path.display(),
            dir.display()
        );
        if rows.is_empty() {
            let _ = writeln!(
                out,
                "  no recording (record one with `khugepaged scenario --record {} {}`)\n",
                dir.display(),
                sc.path.display()
            );
            status = 1;
            continue;
        }
        let _ = writeln!(out, "{}", record::kernel_table(&rows));
        for r in &rows {
            if let Some(d) = &r.disagreement {
                status = 1;
                let first = if verbose {
                    d.as_str()
                } else {
                    d.lines().next().unwrap_or("")
                };
                let _ = writeln!(out, "DISAGREE {}: {first}", r.kernel);
            }
        }
    }
    status
}

fn writable(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating it: {e}"))?;
    let probe = dir.join(format!(".probe.{}", std::process::id()));
    crate::host::create_private_file(&probe).map_err(|e| format!("cannot write in it: {e}"))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Prints a run's log (`-v`), its explanations (`--explain`, `--explain-svg`) and verdict;
/// false when it failed or an SVG could not be written.
fn report(
    out: &mut dyn Write,
    err: &mut dyn Write,
    sc: &Scenario,
    side: &str,
    o: &Outcome,
    show: &Show,
) -> bool {
    if show.verbose {
        for l in &o.log {
            let _ = writeln!(out, "{l}");
        }
    }
    if show.explain {
        for (n, a) in o.attempts.iter().enumerate() {
            let _ = writeln!(out, "collapse attempt {} ({side}): {}", n + 1, a.title);
            for l in a.text().iter().skip(1) {
                let _ = writeln!(out, "{l}");
            }
        }
    }
    if let Some(d) = &show.svg {
        let stem = sc
            .path
            .file_stem()
            .map_or("scenario".into(), |s| s.to_string_lossy().into_owned());
        let side_name = side.replace(' ', "-");
        for (n, a) in o.attempts.iter().enumerate() {
            let path = d.join(format!("{stem}-{side_name}-{:03}.svg", n + 1));
            if let Err(e) = std::fs::write(&path, a.svg()) {
                let _ = writeln!(err, "khugepaged scenario: writing {}: {e}", path.display());
                return false;
            }
        }
    }
    match &o.failure {
        None => {
            let _ = writeln!(out, "ok    {} on {side}", sc.path.display());
            true
        }
        Some(f) => {
            let _ = writeln!(
                out,
                "FAIL  {} on {side}\n    {}: `{}`\n    {}",
                sc.path.display(),
                f.loc,
                f.line,
                f.why
            );
            false
        }
    }
}

fn run_on_model(
    parsed: &[Scenario],
    only: Option<&str>,
    show: &Show,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let mut status = 0;
    for sc in parsed {
        let releases: Vec<String> = match only {
            Some(r) => vec![r.to_string()],
            None => sc.releases.clone(),
        };
        for rel in releases {
            let o = match run_model(sc, &rel) {
                Ok(o) => o,
                Err(e) => {
                    let _ = writeln!(err, "khugepaged scenario: {e}");
                    return 2;
                }
            };
            if !report(out, err, sc, &format!("model {rel}"), &o, show) {
                status = 1;
            }
        }
    }
    status
}

fn run_on_host(
    parsed: &[Scenario],
    both: bool,
    record_dir: Option<&Path>,
    show: &Show,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            let _ = writeln!(err, "khugepaged scenario: finding this program: {e}");
            return 2;
        }
    };
    let kernel = crate::host::backend::HostBackend::default();
    let release = crate::backend::Backend::kernel_release(&kernel);
    if both {
        if let Err(e) = parse::lookup_profile(&release) {
            let _ = writeln!(
                err,
                "khugepaged scenario: the model has no profile for this kernel {release}: {e}"
            );
            return 2;
        }
    }
    let mut status = 0;
    let mut skipped = 0;
    for sc in parsed {
        let host = match run_scenario(sc, &exe) {
            HostRun::Ran(o) => o,
            HostRun::Skipped(why) => {
                let _ = writeln!(out, "skip  {} on host {release}: {why}", sc.path.display());
                skipped += 1;
                continue;
            }
            HostRun::Broken(why) => {
                let _ = writeln!(out, "FAIL  {} on host {release}: {why}", sc.path.display());
                status = 1;
                continue;
            }
        };
        if !report(out, err, sc, &format!("host {release}"), &host, show) {
            status = 1;
        }
        if let Some(dir) = record_dir {
            let path = record::recording_path(dir, &release, &sc.path);
            let text = record::render(&sc.path, &release, &host);
            match crate::crosscheck::write_atomically(&path, &text) {
                Ok(()) => {
                    let _ = writeln!(out, "      recorded {}", path.display());
                }
                Err(e) => {
                    let _ = writeln!(err, "khugepaged scenario: {e}");
                    status = 1;
                }
            }
        }
        if both {
            let model = match run_model(sc, &release) {
                Ok(o) => o,
                Err(e) => {
                    let _ = writeln!(err, "khugepaged scenario: {e}");
                    return 2;
                }
            };
            if !report(out, err, sc, &format!("model {release}"), &model, show) {
                status = 1;
            }
            let h = record::outcome_word(&host);
            match record::disagreement(&h, &host.trace, &model, "host") {
                None => {
                    let _ = writeln!(
                        out,
                        "agree {}: every observation and decision",
                        sc.path.display()
                    );
                }
                Some(d) => {
                    status = 1;
                    let _ = writeln!(out, "DISAGREE {}", sc.path.display());
                    for l in d.lines() {
                        let _ = writeln!(out, "    {l}");
                    }
                }
            }
        }
    }
    if status == 0 && skipped == parsed.len() {
        return 4;
    }
    status
}
