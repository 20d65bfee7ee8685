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
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::catalogue::{DirKind, Env, FileInfo, KhugepagedMode};
use crate::runner::{unsupported_reason, Case, CaseResult, Outcome};
use crate::steps::Step;

use super::backend::HostBackend;
use super::crash_point::crash_point;
use super::journal::{self, Journal, SavedState};
use super::signals::{exit_if_interrupted, interrupted_by, DeferSignals};
use super::swapfile;

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

/// Runs a host case; a failure where khugepaged is seen racing ahead of the test (see
/// `race::collapse_races`; khugepaged.c since 6.17 leaves the range advised between
/// waits, so the daemon may collapse it before the next sanity check) is retried once, and
/// the result says so.
pub fn run_case_retrying_races(case: &Case, env: &Env, opts: &HostRunOptions) -> CaseResult {
    run_case_retrying_races_streaming(case, env, opts, &mut |_| {})
}

/// [`run_case_retrying_races`], handing each step to `on_step` as it ends: the first
/// attempt's steps, then a line saying that the case runs again, then the second attempt's.
pub fn run_case_retrying_races_streaming(
    case: &Case,
    env: &Env,
    opts: &HostRunOptions,
    on_step: &mut dyn FnMut(&Step),
) -> CaseResult {
    let first = run_case_isolated_streaming(case, env, opts, on_step);
    // (determinism) khugepaged acts only inside the waits: a failure is the result, not luck.
    if env.khugepaged == KhugepagedMode::Deterministic {
        return first;
    }
    let raced = matches!(first.outcome, Outcome::Fail(_))
        && !crate::race::collapse_races(&first).is_empty();
    if !raced {
        return first;
    }
    on_step(&Step {
        text: "(khugepaged raced ahead of the test: running the case once more)".into(),
        ..Step::default()
    });
    let mut second = run_case_isolated_streaming(case, env, opts, on_step);
    let why = match &first.outcome {
        Outcome::Fail(w) => w.clone(),
        _ => String::new(),
    };
    // The note goes to the trace header and under the first step's diagnostics, never into a
    // step's text: explanations search step texts, and the second run must stand on its own.
    let note =
        format!("first attempt failed: {why}: khugepaged raced ahead of the test; retried once");
    if let Some(t) = second.trace.as_mut() {
        if let Some(i) = t.find("\n--\n") {
            t.insert_str(i + 1, &format!("retried: {}\n", note.replace('\n', " ")));
        }
    }
    match second.steps.first_mut() {
        Some(s) => s.detail.insert(0, format!("({note})")),
        None => {
            second.outcome = match second.outcome {
                Outcome::Fail(w) => Outcome::Fail(format!("{w} ({note})")),
                Outcome::Skip(w) => Outcome::Skip(format!("{w} ({note})")),
                Outcome::Pass => Outcome::Pass,
            }
        }
    }
    second
}

pub use super::journal::HostLock;
pub use super::probe::{preflight, Preflight};

/// Cases that need an active swap device (check_swap).
pub fn needs_swap(case: &Case) -> bool {
    matches!(case, Case::Test(e) if e.name == "collapse_swapin_single_pte" || e.name == "collapse_max_ptes_swap")
}

/// A private directory (mode 0700, a fresh name) inside `parent`, journaled before it is
/// made, so a crash between the two leaves nothing the next start does not know about.
pub(crate) fn private_dir_in(parent: &Path, journal: &mut Journal) -> Result<PathBuf, String> {
    for n in 0..1000u32 {
        let p = parent.join(format!(
            "{}{}.{n}",
            journal::PRIVATE_DIR_PREFIX,
            std::process::id()
        ));
        if fs::symlink_metadata(&p).is_ok() {
            continue;
        }
        journal.state.dirs.push(p.clone());
        journal.write()?;
        crash_point("create a private directory");
        match fs::DirBuilder::new().mode(0o700).create(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                // Someone made it meanwhile: not ours to remove.
                journal.state.dirs.pop();
                journal.write()?;
                continue;
            }
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
        restore_error: None,
    }
}

fn fail(case: &Case, reason: String, steps: Vec<Step>, start: Instant) -> CaseResult {
    CaseResult {
        case: *case,
        steps,
        outcome: Outcome::Fail(reason),
        elapsed: start.elapsed(),
        trace: None,
        restore_error: None,
    }
}

/// Runs `case` on this machine's kernel in its own process; see the module documentation.
pub fn run_case_isolated(case: &Case, env: &Env, opts: &HostRunOptions) -> CaseResult {
    run_case_isolated_streaming(case, env, opts, &mut |_| {})
}

/// [`run_case_isolated`], handing each step to `on_step` as the case process ends it.
pub fn run_case_isolated_streaming(
    case: &Case,
    env: &Env,
    opts: &HostRunOptions,
    on_step: &mut dyn FnMut(&Step),
) -> CaseResult {
    let start = Instant::now();
    // A killed run's journal is restored before anything looks at the machine: it may have
    // left `enabled=never`, which the probe would take for "no THP" and skip everything.
    match preflight() {
        Preflight::Broken(e) => return fail(case, e, Vec::new(), start),
        Preflight::SkipAll(reason) => return skip(case, reason),
        Preflight::Ready(_) => {}
    }
    let private_tmpfs =
        case.mem().is_some_and(|m| m.is_file()) && env.finfo.is_none() && opts.private_tmpfs;
    if !private_tmpfs {
        if let Some(reason) = unsupported_reason(&mut HostBackend::default(), env, case) {
            return skip(case, reason);
        }
    }
    let _signals = DeferSignals::new();
    let lock = match HostLock::acquire() {
        Ok(l) => l,
        Err(e) => {
            exit_if_interrupted();
            return fail(case, e, Vec::new(), start);
        }
    };
    // Under the lock: a run killed since our start is repaired before its state is read.
    match journal::recover_leftover() {
        Ok(Some(msg)) => eprintln!("khugepaged: {msg}"),
        Ok(None) => {}
        Err(e) => return fail(case, e, Vec::new(), start),
    }
    // Decided under the lock, so another run's temporary swapfile is never taken for the
    // user's swap.
    let swap_needed = needs_swap(case) && !swapfile::swap_active();
    if swap_needed && !opts.swapfile {
        return skip(
            case,
            "no active swap, and the temporary swapfile is turned off (--no-swapfile)".into(),
        );
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
    let prepared = prepare(
        case,
        env,
        &mut case_env,
        &mut journal,
        swap_needed,
        private_tmpfs,
    );
    // A traced case reads the kernel's collapse decisions from a private tracefs instance;
    // one that cannot be made is not fatal: the trace says why decisions were not recorded.
    let tracing = match &prepared {
        Ok(()) if opts.trace => Some(
            super::tracefs::create_instance(&mut journal, &mut |j: &mut Journal| {
                private_dir_in(&std::env::temp_dir(), j)
            })
            .map_err(|e| format!("no tracefs instance: {e}")),
        ),
        _ => None,
    };
    let result = match prepared {
        Err(e) => Err((e, Vec::new())),
        // A signal during the preparation: do not start the case.
        Ok(()) if interrupted_by() != 0 => Err((
            "interrupted before the case started".to_string(),
            Vec::new(),
        )),
        Ok(()) => spawn_case(case, &case_env, opts, tracing.as_ref(), &lock, on_step),
    };
    let errs = journal.finish();
    drop(lock);
    let sig = interrupted_by();
    if sig != 0 {
        if errs.is_empty() {
            eprintln!("khugepaged: interrupted by signal {sig}; THP settings restored");
        } else {
            eprintln!(
                "khugepaged: interrupted by signal {sig}; restoring the THP settings failed: {}",
                errs.join("; ")
            );
        }
        std::process::exit(128 + sig);
    }
    let restore_error = (!errs.is_empty()).then(|| errs.join("; "));
    let mut r = match result {
        Ok((steps, outcome, trace)) => CaseResult {
            case: *case,
            steps,
            outcome,
            elapsed: start.elapsed(),
            trace,
            restore_error: None,
        },
        Err((why, steps)) => fail(case, why, steps, start),
    };
    // The case's own verdict stands; the machine left changed is reported apart from it.
    r.restore_error = restore_error;
    r
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
        let dir = private_dir_in(&swap_parent(), journal)?;
        journal.state.swapfiles.push(dir.join("swapfile"));
        journal.write()?;
        swapfile::create_and_enable(&dir)?;
    }
    if case.mem().is_some_and(|m| m.is_file()) {
        if private_tmpfs {
            let dir = private_dir_in(&std::env::temp_dir(), journal)?;
            journal.state.mounts.push(dir.clone());
            journal.write()?;
            crash_point("mount the private tmpfs");
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
            let dir = private_dir_in(Path::new(&f.dir), journal)?;
            case_env.finfo = Some(FileInfo::new(&dir.to_string_lossy(), f.kind.clone()));
        }
    }
    Ok(())
}

/// Arguments that describe a case and its environment to the case process; `tracing` is the
/// tracefs instance of a traced case (or why there is none).
fn case_args(
    case: &Case,
    env: &Env,
    trace: bool,
    tracing: Option<&Result<PathBuf, String>>,
) -> Vec<String> {
    let mut a = vec![
        "--host-case".to_string(),
        case.id(),
        "--anon-order".into(),
        env.anon_order.to_string(),
        "--catalogue".into(),
        env.catalogue.name().into(),
        "--collapse-order".into(),
        env.collapse_order.to_string(),
    ];
    if trace {
        a.push("--trace".into());
    }
    match tracing {
        Some(Ok(dir)) => {
            a.push("--tracefs".into());
            a.push(dir.to_string_lossy().into_owned());
        }
        Some(Err(why)) => {
            a.push("--no-tracefs".into());
            a.push(why.clone());
        }
        None => {}
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

/// Makes `cmd` a case process: it dies with this coordinator (PR_SET_PDEATHSIG, and at once
/// if the coordinator is already gone) and holds the host lock until it is gone.
pub(crate) fn case_process_setup(cmd: &mut Command, lock: &HostLock) {
    use std::os::unix::process::CommandExt;
    let parent = nix::unistd::getpid().as_raw();
    let lock_fds = lock.raw_fds();
    // SAFETY: between fork and exec the closure only makes async-signal-safe system calls
    // (prctl, getppid, fcntl, _exit) and touches no allocator or lock.
    unsafe {
        cmd.pre_exec(move || {
            // The case process dies with the coordinator ...
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // ... including when the coordinator died before the prctl above took effect.
            if libc::getppid() != parent {
                libc::_exit(137);
            }
            // ... and holds the host lock until it is gone.
            for &fd in &lock_fds {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

fn spawn_case(
    case: &Case,
    env: &Env,
    opts: &HostRunOptions,
    tracing: Option<&Result<PathBuf, String>>,
    lock: &HostLock,
    on_step: &mut dyn FnMut(&Step),
) -> CaseOutput {
    let mut cmd = Command::new(&opts.exe);
    case_process_setup(&mut cmd, lock);
    let mut child = cmd
        .args(case_args(case, env, opts.trace, tracing))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| {
            (
                format!("starting the case process {}: {e}", opts.exe.display()),
                Vec::new(),
            )
        })?;
    let stdout = child.stdout.take().expect("piped stdout");
    let read = read_case_stream(std::io::BufReader::new(stdout), on_step);
    let status = child
        .wait()
        .map_err(|e| (format!("waiting for the case process: {e}"), Vec::new()))?;
    let (steps, outcome_line, trace) = read?;
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
    use std::os::unix::process::ExitStatusExt;
    if let Some(sig) = status.signal() {
        return Err((
            format!("the case process was killed by signal {sig}"),
            steps,
        ));
    }
    match outcome_line
        .as_deref()
        .map(|l| l.splitn(3, '\t').collect::<Vec<_>>())
    {
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
            format!("the case process exited with {status} without a verdict"),
            steps,
        )),
    }
}

/// What a case process wrote: its steps, its verdict line, its trace.
type CaseStream = (Vec<Step>, Option<String>, String);

/// Reads the case process's output as it comes: steps (each closed by an `E` line, handed to
/// `on_step` at once), then the verdict line (`O`), then the trace (`T` lines).
fn read_case_stream(
    input: impl std::io::BufRead,
    on_step: &mut dyn FnMut(&Step),
) -> Result<CaseStream, (String, Vec<Step>)> {
    let mut steps = Vec::new();
    let mut pending = String::new();
    let mut outcome = None;
    let mut trace = String::new();
    for line in input.lines() {
        let line = line.map_err(|e| {
            (
                format!("reading the case process's output: {e}"),
                steps.clone(),
            )
        })?;
        if let Some(t) = line.strip_prefix("T\t") {
            trace.push_str(t);
            trace.push('\n');
        } else if line.starts_with("O\t") {
            outcome = Some(line);
        } else if line == "E" {
            let decoded = Step::decode_all(&pending).map_err(|e| {
                (
                    format!("the case process wrote a step that cannot be read ({e}): {pending:?}"),
                    steps.clone(),
                )
            })?;
            for s in decoded {
                on_step(&s);
                steps.push(s);
            }
            pending.clear();
        } else {
            pending.push_str(&line);
            pending.push('\n');
        }
    }
    if !pending.is_empty() {
        return Err((
            format!("the case process's output ended inside a step: {pending:?}"),
            steps,
        ));
    }
    Ok((steps, outcome, trace))
}

/// `khugepaged --host-case <id> ...`: the case process. Runs one case with the host backend
/// and writes its steps and outcome to stdout. Returns the exit code.
pub fn case_process_main(args: &[String]) -> i32 {
    super::crash_point::mark_case_process();
    let mut id = None;
    let mut traced = false;
    let mut env = Env::default();
    let (mut dir, mut kind) = (None, None);
    let mut tracing: Result<PathBuf, String> =
        Err("the coordinator made no tracefs instance".into());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--host-case" => id = it.next().cloned(),
            "--anon-order" => env.anon_order = it.next().and_then(|v| v.parse().ok()).unwrap_or(0),
            "--catalogue" => {
                match it
                    .next()
                    .and_then(|v| crate::catalogue::Catalogue::from_name(v))
                {
                    Some(c) => env.catalogue = c,
                    None => {
                        eprintln!("khugepaged --host-case: bad --catalogue");
                        return 2;
                    }
                }
            }
            "--collapse-order" => {
                env.collapse_order = it.next().and_then(|v| v.parse().ok()).unwrap_or(0)
            }
            "--file-dir" => dir = it.next().cloned(),
            "--file-kind" => kind = it.next().cloned(),
            "--trace" => traced = true,
            "--tracefs" => {
                if let Some(d) = it.next() {
                    tracing = Ok(PathBuf::from(d));
                }
            }
            "--no-tracefs" => {
                if let Some(why) = it.next() {
                    tracing = Err(why.clone());
                }
            }
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
    let all = crate::runner::all_cases();
    let Some(case) = id.and_then(|id| all.into_iter().find(|c| c.id() == id)) else {
        eprintln!("khugepaged --host-case: unknown case");
        return 2;
    };
    let mut b = HostBackend::default();
    if traced {
        b.observe_decisions(tracing.as_deref().map_err(Clone::clone));
    }
    let profile = traced.then(|| {
        model::KernelProfile::for_release(&crate::backend::Backend::kernel_release(&b))
            .map_or("none".to_string(), |p| p.name.to_string())
    });
    // Each step goes to the coordinator as it ends, so a person watching sees the test move;
    // an `E` line closes each step.
    let mut stream = |step: &Step| {
        let mut stdout = std::io::stdout();
        let _ = stdout.write_all(format!("{}E\n", step.encode()).as_bytes());
        let _ = stdout.flush();
    };
    let r = crate::runner::run_case_streaming(&mut b, &env, &case, profile.as_deref(), &mut stream);
    let mut out = match &r.outcome {
        Outcome::Pass => "O\tpass\n".to_string(),
        Outcome::Fail(w) => format!("O\tfail\t{}\n", w.replace(['\t', '\n'], " ")),
        Outcome::Skip(w) => format!("O\tskip\t{}\n", w.replace(['\t', '\n'], " ")),
    };
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
