//! Model against kernel: run a case on the host and on the model, both traced, and compare the
//! traces line by line (calls and their results, step lines, smaps counters, page maps).
//! Also recording host traces as fixtures, and replaying fixtures on the model.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use model::KernelProfile;

use crate::catalogue::{DirKind, Env, FileInfo};
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
    /// The host's run depended on something the model does not model; the reasons.
    Unmodelled(Vec<String>, Difference),
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

/// Known ways a host run can depend on what the model does not model, recognised from the
/// host's own result: allocation failures and khugepaged's timing.
pub fn unmodelled_reasons(host: &CaseResult) -> Vec<String> {
    let mut reasons = Vec::new();
    let texts: Vec<String> = host
        .steps
        .iter()
        .map(|s| s.to_string())
        .chain(match &host.outcome {
            Outcome::Fail(w) => Some(w.clone()),
            _ => None,
        })
        .collect();
    let khugepaged_ctx = host.case.id().starts_with("khugepaged:");
    if khugepaged_ctx && texts.iter().any(|t| t.contains("Unexpected huge page")) {
        reasons.push(
            "khugepaged collapsed the area between two waits (the range was advised and collapsible); \
             the model runs khugepaged only while the test waits for it"
                .into(),
        );
    }
    if texts.iter().any(|t| {
        t.contains("Cannot allocate memory")
            || t.contains("Failed to allocate huge page")
            || t.contains("ENOMEM")
    }) {
        reasons.push("a THP allocation failed on the host (fragmentation); the model's allocations always succeed".into());
    }
    reasons
}

/// Adds `unmodelled:` header lines to a trace.
pub fn annotate(trace_text: &str, reasons: &[String]) -> String {
    if reasons.is_empty() {
        return trace_text.to_string();
    }
    let mut out = String::new();
    let mut done = false;
    for line in trace_text.lines() {
        if !done && line == "--" {
            for r in reasons {
                out.push_str(&format!("unmodelled: {r}\n"));
            }
            done = true;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Runs `case` traced on the model with `profile`, in `env`.
pub fn model_trace(
    profile: &KernelProfile,
    read_only_thp_for_fs: bool,
    env: &Env,
    case: &Case,
) -> CaseResult {
    let mut b = ModelBackend::new(profile.clone());
    b.k.read_only_thp_for_fs = read_only_thp_for_fs;
    b.dir = env.finfo.as_ref().map(|f| f.kind.clone());
    run_case_traced(&mut b, env, case, profile.name)
}

/// The normalized body of a trace, with `dir` shown as `$DIR`.
pub fn body(trace_text: &str, dir: Option<&str>) -> Result<Vec<String>, String> {
    let (_, lines) = trace::parse(trace_text)?;
    Ok(trace::normalize(&lines, dir))
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
    let h = host
        .trace
        .as_deref()
        .map(|t| body(t, None))
        .unwrap_or(Ok(Vec::new()));
    let m = model
        .trace
        .as_deref()
        .map(|t| body(t, model_dir))
        .unwrap_or(Ok(Vec::new()));
    match (h, m) {
        (Ok(h), Ok(m)) => match trace::first_difference(&h, &m) {
            None => Comparison::Agree,
            Some(d) => {
                let reasons = unmodelled_reasons(host);
                if reasons.is_empty() {
                    Comparison::Disagree(d)
                } else {
                    Comparison::Unmodelled(reasons, d)
                }
            }
        },
        (Err(e), _) | (_, Err(e)) => Comparison::Disagree(Difference {
            line: 0,
            left: format!("unreadable trace: {e}"),
            right: String::new(),
            step: String::new(),
            left_map: None,
            right_map: None,
        }),
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
/// `--tmpfs`), `model_env` the model's.
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
    let model = model_trace(
        profile,
        crate::host::probe::read_only_thp_for_fs(),
        model_env,
        case,
    );
    let dir = model_env.finfo.as_ref().map(|f| f.dir.clone());
    let cmp = compare(&host, &model, dir.as_deref());
    (host, model, cmp)
}

/// The fixture file name of a case: `khugepaged_anon_collapse_full.trace`, with `-s2` etc.
/// for an mTHP order.
pub fn fixture_name(case: &Case, env: &Env) -> String {
    let order = if env.anon_order > 0 {
        format!("-s{}", env.anon_order)
    } else {
        String::new()
    };
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

/// Replays one fixture on the model. Ok(None) when they agree; Ok(Some(reasons)) when the
/// fixture says it depends on something unmodelled; Err with a readable diff otherwise.
pub fn replay(path: &Path) -> Result<Option<Vec<String>>, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (header, lines) = trace::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if !header.unmodelled.is_empty() {
        return Ok(Some(header.unmodelled));
    }
    let profile = KernelProfile::by_name(&header.profile)
        .map_or_else(|| KernelProfile::for_release(&header.kernel), Ok)
        .map_err(|e| {
            format!(
                "{}: no model profile for kernel {} (profile {:?}): {e}",
                path.display(),
                header.kernel,
                header.profile
            )
        })?;
    let case = crate::cli::all_cases()
        .into_iter()
        .find(|c| c.id() == header.case)
        .ok_or_else(|| format!("{}: unknown case {:?}", path.display(), header.case))?;
    let env = env_from_header(&header.env).map_err(|e| format!("{}: {e}", path.display()))?;
    // The host records a file case on a disk filesystem only where the kernel collapses
    // regular files (elsewhere it skips without a trace), so such a fixture stands for a kernel
    // with that ability.
    let file_collapse = matches!(
        env.finfo.as_ref().map(|f| &f.kind),
        Some(DirKind::Disk { .. })
    );
    let model = model_trace(&profile, file_collapse, &env, &case);
    let dir = env.finfo.as_ref().map(|f| f.dir.clone());
    let m = body(model.trace.as_deref().unwrap_or(""), dir.as_deref())?;
    let recorded = trace::normalize(&lines, None);
    match trace::first_difference(&recorded, &m) {
        None => Ok(None),
        Some(d) => Err(format!(
            "{}: the model (profile {}) disagrees with the kernel recorded on {}\n{}",
            path.display(),
            profile.name,
            header.kernel,
            trace::describe(&d, "kernel", "model")
        )),
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
