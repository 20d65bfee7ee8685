//! Running host cases safely. Each case runs in a fresh, single-threaded process (this binary
//! re-executed with `--host-case`), so the selftest's fork(2) never happens in a
//! multi-threaded test runner. Around it, the coordinating process:
//! - serialises host cases across processes with a file lock (THP settings are global);
//! - restores what a killed earlier run left (the journal), and says so;
//! - journals the THP settings (and read_ahead_kb) before anything changes, and restores
//!   them after the case, whatever happened: normal end, failure, panic, a crashed case
//!   process, SIGINT/SIGTERM/SIGHUP/SIGQUIT;
//! - creates, enables and removes a swapfile for the swap cases when no swap is active;
//! - mounts a private tmpfs (huge=advise) for file cases that were given no directory.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Instant;

use crate::catalogue::{DirKind, Env, FileInfo, KhugepagedMode, MemType};
use crate::runner::{run_case, unsupported_reason, Case, CaseResult, Outcome};
use crate::steps::Step;

use super::backend::HostBackend;
use super::journal::{self, Journal, SavedState};
use super::{probe, swapfile};

/// How host cases are run.
#[derive(Clone, Debug)]
pub struct HostRunOptions {
    /// The binary to re-execute for each case (this `khugepaged`).
    pub exe: PathBuf,
    /// Create a temporary swapfile when the case needs swap and none is active.
    pub swapfile: bool,
    /// Mount a private tmpfs (huge=advise) for file cases when no `[dir]` was given.
    pub private_tmpfs: bool,
    /// Record the case's trace (with the private directory shown as `$DIR`).
    pub trace: bool,
}

/// Runs a host case; a failure that only shows khugepaged racing ahead of the test (see
/// `crosscheck::unmodelled_reasons`; khugepaged.c since 6.17 leaves the range advised between
/// waits, so the daemon may collapse it before the next sanity check) is retried once, and
/// the result says so.
pub fn run_case_retrying_races(case: &Case, env: &Env, opts: &HostRunOptions) -> CaseResult {
    let first = run_case_isolated(case, env, opts);
    // (determinism) khugepaged acts only inside the waits: a failure is the result, not luck.
    if env.khugepaged == KhugepagedMode::Deterministic {
        return first;
    }
    let raced = matches!(first.outcome, Outcome::Fail(_))
        && crate::crosscheck::unmodelled_reasons(&first)
            .iter()
            .any(|r| r.starts_with("khugepaged collapsed"));
    if !raced {
        return first;
    }
    let mut second = run_case_isolated(case, env, opts);
    let why = match &first.outcome {
        Outcome::Fail(w) => w.clone(),
        _ => String::new(),
    };
    second.steps.insert(
        0,
        Step {
            text: format!(
                "(first attempt failed: {why}: khugepaged raced ahead of the test; retried once)"
            ),
            ..Step::default()
        },
    );
    second
}

/// Cases that need an active swap device (check_swap).
pub fn needs_swap(case: &Case) -> bool {
    matches!(case, Case::Test(e) if e.name == "collapse_swapin_single_pte" || e.name == "collapse_max_ptes_swap")
}

/// The signal that interrupted the coordinator, or 0.
static INTERRUPTED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    INTERRUPTED.store(sig, Ordering::SeqCst);
}

/// SIGINT, SIGTERM, SIGHUP and SIGQUIT only set a flag: the coordinator finishes restoring,
/// then exits with 128 + signal.
fn install_signal_handlers() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let act = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        let _ = unsafe { sigaction(s, &act) };
    }
}

/// The cross-process lock: one host case at a time on this machine.
struct HostLock {
    _lock: nix::fcntl::Flock<fs::File>,
}

fn lock_path() -> PathBuf {
    let d = Path::new("/run/lock");
    if d.is_dir() {
        d.join("khugepaged-harness.lock")
    } else {
        std::env::temp_dir().join("khugepaged-harness.lock")
    }
}

impl HostLock {
    fn acquire() -> Result<HostLock, String> {
        let path = lock_path();
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| format!("opening {}: {e}", path.display()))?;
        let lock = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| format!("locking {}: {e}", path.display()))?;
        Ok(HostLock { _lock: lock })
    }
}

/// A private directory (mode 0700, a fresh name) inside `parent`.
fn private_dir(parent: &Path) -> Result<PathBuf, String> {
    for n in 0..1000u32 {
        let p = parent.join(format!("khugepaged-harness.{}.{n}", std::process::id()));
        match fs::DirBuilder::new().mode(0o700).create(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(format!(
                    "creating a private directory in {}: {e}",
                    parent.display()
                ))
            }
        }
    }
    Err(format!(
        "no free private directory name in {}",
        parent.display()
    ))
}

/// Where swapfiles go: a disk filesystem (swap on tmpfs is impossible).
fn swap_parent() -> PathBuf {
    let v = Path::new("/var/tmp");
    if v.is_dir() {
        v.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

fn skip(case: &Case, reason: String) -> CaseResult {
    CaseResult {
        case: *case,
        steps: Vec::new(),
        outcome: Outcome::Skip(reason),
        elapsed: Default::default(),
        trace: None,
    }
}

fn fail(case: &Case, reason: String, steps: Vec<Step>, start: Instant) -> CaseResult {
    CaseResult {
        case: *case,
        steps,
        outcome: Outcome::Fail(reason),
        elapsed: start.elapsed(),
        trace: None,
    }
}

/// Runs `case` on this machine's kernel in its own process; see the module documentation.
pub fn run_case_isolated(case: &Case, env: &Env, opts: &HostRunOptions) -> CaseResult {
    let start = Instant::now();
    if let Some(reason) = probe::host_unsupported_reason() {
        return skip(case, reason);
    }
    let private_tmpfs =
        case.mem() == Some(MemType::File) && env.finfo.is_none() && opts.private_tmpfs;
    if !private_tmpfs {
        if let Some(reason) = unsupported_reason(&mut HostBackend::default(), env, case) {
            return skip(case, reason);
        }
    }
    let swap_needed = needs_swap(case) && !swapfile::swap_active();
    if swap_needed && !opts.swapfile {
        return skip(
            case,
            "no active swap, and the temporary swapfile is turned off (--no-swapfile)".into(),
        );
    }
    install_signal_handlers();
    let _lock = match HostLock::acquire() {
        Ok(l) => l,
        Err(e) => return fail(case, e, Vec::new(), start),
    };
    match journal::recover_leftover() {
        Ok(Some(msg)) => eprintln!("khugepaged: {msg}"),
        Ok(None) => {}
        Err(e) => return fail(case, e, Vec::new(), start),
    }
    // Everything the case may change, saved before anything changes.
    let extra: Vec<String> = match env.finfo.as_ref().map(|f| &f.kind) {
        Some(DirKind::Disk {
            read_ahead_kb_path: Some(p),
        }) => vec![p.clone()],
        _ => Vec::new(),
    };
    let state = match SavedState::capture(&extra) {
        Ok(s) => s,
        Err(e) => return fail(case, e, Vec::new(), start),
    };
    let mut journal = match Journal::begin(state) {
        Ok(j) => j,
        Err(e) => return fail(case, e, Vec::new(), start),
    };
    let mut case_env = env.clone();
    if let Err(e) = prepare(
        case,
        env,
        &mut case_env,
        &mut journal,
        swap_needed,
        private_tmpfs,
    ) {
        let errs = journal.finish();
        return fail(
            case,
            format!("{e}{}", restore_note(&errs)),
            Vec::new(),
            start,
        );
    }
    let result = spawn_case(case, &case_env, opts);
    let errs = journal.finish();
    let sig = INTERRUPTED.load(Ordering::SeqCst);
    if sig != 0 {
        eprintln!(
            "khugepaged: interrupted by signal {sig}; THP settings restored{}",
            restore_note(&errs)
        );
        std::process::exit(128 + sig);
    }
    match result {
        Ok((steps, outcome, trace)) if errs.is_empty() => CaseResult {
            case: *case,
            steps,
            outcome,
            elapsed: start.elapsed(),
            trace,
        },
        Ok((steps, _, _)) => fail(
            case,
            format!(
                "restoring settings after the case failed: {}",
                errs.join("; ")
            ),
            steps,
            start,
        ),
        Err((why, steps)) => fail(case, format!("{why}{}", restore_note(&errs)), steps, start),
    }
}

fn restore_note(errs: &[String]) -> String {
    if errs.is_empty() {
        String::new()
    } else {
        format!(" (and restoring settings failed: {})", errs.join("; "))
    }
}

/// Swapfile, private directory for the test file, private tmpfs: each recorded in the
/// journal before it is made.
fn prepare(
    case: &Case,
    env: &Env,
    case_env: &mut Env,
    journal: &mut Journal,
    swap_needed: bool,
    private_tmpfs: bool,
) -> Result<(), String> {
    if swap_needed {
        let dir = private_dir(&swap_parent())?;
        journal.state.dirs.push(dir.clone());
        journal.state.swapfiles.push(dir.join("swapfile"));
        journal.write()?;
        swapfile::create_and_enable(&dir)?;
    }
    if case.mem() == Some(MemType::File) {
        if private_tmpfs {
            let dir = private_dir(&std::env::temp_dir())?;
            journal.state.dirs.push(dir.clone());
            journal.state.mounts.push(dir.clone());
            journal.write()?;
            nix::mount::mount(
                Some("tmpfs"),
                dir.as_path(),
                Some("tmpfs"),
                nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
                Some("huge=advise,mode=0700,size=64m"),
            )
            .map_err(|e| format!("mounting a private tmpfs on {}: {e}", dir.display()))?;
            case_env.finfo = Some(FileInfo::new(
                &dir.to_string_lossy(),
                DirKind::Tmpfs {
                    huge: "advise".into(),
                },
            ));
        } else if let Some(f) = &env.finfo {
            // The test file goes into a private directory on the same filesystem as [dir].
            let dir = private_dir(Path::new(&f.dir))?;
            journal.state.dirs.push(dir.clone());
            journal.write()?;
            case_env.finfo = Some(FileInfo::new(&dir.to_string_lossy(), f.kind.clone()));
        }
    }
    Ok(())
}

/// Arguments that describe a case and its environment to the case process.
fn case_args(case: &Case, env: &Env, trace: bool) -> Vec<String> {
    let mut a = vec![
        "--host-case".to_string(),
        case.id(),
        "--anon-order".into(),
        env.anon_order.to_string(),
    ];
    if trace {
        a.push("--trace".into());
    }
    // (determinism) How khugepaged runs: the case process sets it up (runner, catalogue).
    a.push("--khugepaged".into());
    a.push(env.khugepaged.name().into());
    if let Some(f) = &env.finfo {
        a.push("--file-dir".into());
        a.push(f.dir.clone());
        a.push("--file-kind".into());
        a.push(match &f.kind {
            DirKind::Tmpfs { huge } => format!("tmpfs:{huge}"),
            DirKind::Disk { read_ahead_kb_path } => {
                format!("disk:{}", read_ahead_kb_path.clone().unwrap_or_default())
            }
        });
    }
    a
}

type CaseOutput = Result<(Vec<Step>, Outcome, Option<String>), (String, Vec<Step>)>;

fn spawn_case(case: &Case, env: &Env, opts: &HostRunOptions) -> CaseOutput {
    let out = Command::new(&opts.exe)
        .args(case_args(case, env, opts.trace))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| {
            (
                format!("starting the case process {}: {e}", opts.exe.display()),
                Vec::new(),
            )
        })?;
    let all = String::from_utf8_lossy(&out.stdout);
    // Trace lines ("T\t...") follow the verdict; the rest is steps and the verdict.
    let mut trace = String::new();
    let mut rest = String::new();
    for line in all.lines() {
        match line.strip_prefix("T\t") {
            Some(t) => {
                trace.push_str(t);
                trace.push('\n');
            }
            None => {
                rest.push_str(line);
                rest.push('\n');
            }
        }
    }
    let text = rest;
    let trace = (!trace.is_empty()).then(|| {
        let dir = env
            .finfo
            .as_ref()
            .map(|f| f.dir.clone())
            .unwrap_or_default();
        if dir.is_empty() {
            trace.clone()
        } else {
            trace.replace(&dir, "$DIR")
        }
    });
    let (steps_text, outcome_line) = match text
        .rfind("\nO\t")
        .map(|i| i + 1)
        .or_else(|| text.starts_with("O\t").then_some(0))
    {
        Some(i) => (&text[..i], Some(text[i..].trim_end())),
        None => (&text[..], None),
    };
    let steps = Step::decode_all(steps_text).unwrap_or_default();
    use std::os::unix::process::ExitStatusExt;
    if let Some(sig) = out.status.signal() {
        return Err((
            format!("the case process was killed by signal {sig}"),
            steps,
        ));
    }
    match outcome_line.map(|l| l.splitn(3, '\t').collect::<Vec<_>>()) {
        Some(f) if f.len() >= 2 => Ok((
            steps,
            match f[1] {
                "pass" => Outcome::Pass,
                "skip" => Outcome::Skip(f.get(2).unwrap_or(&"").to_string()),
                _ => Outcome::Fail(f.get(2).unwrap_or(&"").to_string()),
            },
            trace,
        )),
        _ => Err((
            format!(
                "the case process exited with {} without a verdict",
                out.status
            ),
            steps,
        )),
    }
}

/// `khugepaged --host-case <id> ...`: the case process. Runs one case with the host backend
/// and writes its steps and outcome to stdout. Returns the exit code.
pub fn case_process_main(args: &[String]) -> i32 {
    let mut id = None;
    let mut traced = false;
    let mut env = Env::default();
    let (mut dir, mut kind) = (None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--host-case" => id = it.next().cloned(),
            "--anon-order" => env.anon_order = it.next().and_then(|v| v.parse().ok()).unwrap_or(0),
            "--file-dir" => dir = it.next().cloned(),
            "--file-kind" => kind = it.next().cloned(),
            "--trace" => traced = true,
            // (determinism)
            "--khugepaged" => match it.next().and_then(|v| KhugepagedMode::from_name(v)) {
                Some(m) => env.khugepaged = m,
                None => {
                    eprintln!("khugepaged --host-case: bad --khugepaged");
                    return 2;
                }
            },
            _ => {}
        }
    }
    if let (Some(d), Some(k)) = (dir, kind) {
        let kind = match k.split_once(':') {
            Some(("tmpfs", huge)) => DirKind::Tmpfs {
                huge: huge.to_string(),
            },
            Some(("disk", p)) => DirKind::Disk {
                read_ahead_kb_path: (!p.is_empty()).then(|| p.to_string()),
            },
            _ => {
                eprintln!("khugepaged --host-case: bad --file-kind {k}");
                return 2;
            }
        };
        env.finfo = Some(FileInfo::new(&d, kind));
    }
    let all = crate::cli::all_cases();
    let Some(case) = id.and_then(|id| all.into_iter().find(|c| c.id() == id)) else {
        eprintln!("khugepaged --host-case: unknown case");
        return 2;
    };
    let mut b = HostBackend::default();
    let r = if traced {
        let profile =
            model::KernelProfile::for_release(&crate::backend::Backend::kernel_release(&b))
                .map_or("none".to_string(), |p| p.name.to_string());
        crate::runner::run_case_traced(&mut b, &env, &case, &profile)
    } else {
        run_case(&mut b, &env, &case)
    };
    let mut out = String::new();
    for s in &r.steps {
        out.push_str(&s.encode());
    }
    let line = match &r.outcome {
        Outcome::Pass => "O\tpass\n".to_string(),
        Outcome::Fail(w) => format!("O\tfail\t{}\n", w.replace(['\t', '\n'], " ")),
        Outcome::Skip(w) => format!("O\tskip\t{}\n", w.replace(['\t', '\n'], " ")),
    };
    out.push_str(&line);
    if let Some(t) = &r.trace {
        for l in t.lines() {
            out.push_str(&format!("T\t{l}\n"));
        }
    }
    let mut stdout = std::io::stdout();
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
    0
}
