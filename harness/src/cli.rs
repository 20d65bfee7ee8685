//! The `khugepaged` command: a drop-in for the selftest binary, with backend, profile and
//! output-format options.

use std::io::{IsTerminal, Write};

use model::KernelProfile;

use crate::catalogue::{test_table, Context, Env, FileInfo, KhugepagedMode, MemType};
use crate::model_backend::ModelBackend;
use crate::report::{kernel_case, ktap_case, Format, Totals};
use crate::runner::{run_case, Case, CaseResult, Outcome};

/// Which backend(s) to run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendChoice {
    Model,
    Host,
    Both,
}

/// Parsed command line.
#[derive(Clone, Debug)]
pub struct Options {
    pub anon_order: u8,
    pub contexts: Vec<Context>,
    pub mems: Vec<MemType>,
    pub dir: Option<String>,
    pub backend: BackendChoice,
    pub profile: Option<KernelProfile>,
    pub format: Format,
    pub read_only_thp_for_fs: bool,
    /// Host: create a temporary swapfile for the swap cases when no swap is active.
    pub swapfile: bool,
    /// File tests on a private tmpfs mounted huge=advise instead of a `[dir]`.
    pub private_tmpfs: bool,
    /// Record host traces as fixtures under this directory.
    pub record: Option<String>,
    /// Print each case's trace after its lines.
    pub trace: bool,
    /// Also run this project's own tests (`extras`), after the selftest's.
    pub extras: bool,
    /// How khugepaged runs; None: deterministic for `--backend both` and `--record`, the
    /// selftest's own settings otherwise.
    pub khugepaged: Option<KhugepagedMode>,
}

impl Options {
    /// The khugepaged mode of this run (see [`Options::khugepaged`]).
    pub fn khugepaged_mode(&self) -> KhugepagedMode {
        self.khugepaged.unwrap_or(
            if self.record.is_some() || self.backend == BackendChoice::Both {
                KhugepagedMode::Deterministic
            } else {
                KhugepagedMode::Selftest
            },
        )
    }
}

/// What a run does with no flags: both contexts, anonymous memory (the selftest without
/// arguments), on the model.
impl Default for Options {
    fn default() -> Options {
        Options {
            anon_order: 0,
            contexts: Context::ALL.to_vec(),
            mems: vec![MemType::Anon],
            dir: None,
            backend: BackendChoice::Model,
            profile: None,
            format: Format::Kernel,
            read_only_thp_for_fs: false,
            swapfile: true,
            private_tmpfs: false,
            record: None,
            trace: false,
            extras: false,
            khugepaged: None,
        }
    }
}

/// The selftest's usage text, plus this tool's options.
pub fn usage() -> String {
    "\nUsage: khugepaged [OPTIONS] <test type> [dir]\n\n\
     \t<test type>\t: <context>:<mem_type>\n\
     \t<context>\t: [all|khugepaged|madvise]\n\
     \t<mem_type>\t: [all|anon|file|shmem]\n\
     \n\t\"file,all\" mem_type requires [dir] argument\n\
     \n\t\"file,all\" mem_type requires kernel built with\n\
     \tCONFIG_READ_ONLY_THP_FOR_FS=y\n\
     \n\tif [dir] is a (sub)directory of a tmpfs mount, tmpfs must be\n\
     \tmounted with huge=advise option for khugepaged tests to work\n\
     \n\tSupported Options:\n\
     \t\t-h: This help message.\n\
     \t\t-s: mTHP size, expressed as page order.\n\
     \t\t    Defaults to 0. Use this size for anon or shmem allocations.\n\
     \t\t--backend model|host|both: where to run (default model; model never touches\n\
     \t\t    the system).\n\
     \t\t--profile 6.1|6.12|6.18: kernel era the model follows (default 6.18; with\n\
     \t\t    the host, the host kernel's era).\n\
     \t\t--format kernel|ktap: the selftest's own lines (default) or KTAP.\n\
     \t\t--read-only-thp-for-fs: give the model CONFIG_READ_ONLY_THP_FOR_FS=y.\n\
     \t\t--khugepaged selftest|deterministic: khugepaged as the selftest sets it up\n\
     \t\t    (wakes every 10 ms, may act between two waits), or woken one pass at a\n\
     \t\t    time inside the test's waits only (default with --backend both and\n\
     \t\t    --record).\n"
        .to_string()
}

/// Parses arguments (without the program name). Err is a one-line usage error; Ok(None)
/// means help was asked for.
pub fn parse(args: &[String]) -> Result<Option<Options>, String> {
    let mut o = Options::default();
    let mut positional = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match a.as_str() {
            "-h" | "--help" => return Ok(None),
            "-s" => {
                let v = value("-s")?;
                o.anon_order = v
                    .parse()
                    .ok()
                    .filter(|&n: &u8| n <= model::HPAGE_PMD_ORDER)
                    .ok_or_else(|| {
                        format!(
                            "-s {v}: the mTHP order must be a number from 0 to {}",
                            model::HPAGE_PMD_ORDER
                        )
                    })?;
            }
            "--backend" => {
                o.backend = match value("--backend")?.as_str() {
                    "model" => BackendChoice::Model,
                    "host" => BackendChoice::Host,
                    "both" => BackendChoice::Both,
                    v => return Err(format!("--backend {v}: expected model, host or both")),
                }
            }
            "--profile" => {
                let v = value("--profile")?;
                o.profile = Some(KernelProfile::by_name(&v).ok_or_else(|| {
                    let names: Vec<&str> = KernelProfile::all().iter().map(|p| p.name).collect();
                    format!("--profile {v}: expected one of {}", names.join(", "))
                })?);
            }
            "--format" => {
                o.format = match value("--format")?.as_str() {
                    "kernel" => Format::Kernel,
                    "ktap" => Format::Ktap,
                    v => return Err(format!("--format {v}: expected kernel or ktap")),
                }
            }
            "--read-only-thp-for-fs" => o.read_only_thp_for_fs = true,
            "--no-swapfile" => o.swapfile = false,
            "--tmpfs" => o.private_tmpfs = true,
            "--trace" => o.trace = true,
            "--extras" => o.extras = true,
            "--khugepaged" => {
                let v = value("--khugepaged")?;
                o.khugepaged = Some(KhugepagedMode::from_name(&v).ok_or_else(|| {
                    format!("--khugepaged {v}: expected selftest or deterministic")
                })?);
            }
            "--record" => {
                o.record = Some(value("--record")?);
                o.backend = BackendChoice::Host;
            }
            s if s.starts_with('-') && s.len() > 1 => return Err(format!("unknown option {s}")),
            s => positional.push(s.to_string()),
        }
    }
    if let Some(tt) = positional.first() {
        let (ctx, mem) = tt.split_once(':').ok_or_else(|| {
            format!("test type {tt:?}: expected <context>:<mem_type>, e.g. all:anon")
        })?;
        o.contexts = match ctx {
            "all" => Context::ALL.to_vec(),
            "khugepaged" => vec![Context::Khugepaged],
            "madvise" => vec![Context::Madvise],
            v => {
                return Err(format!(
                    "context {v:?}: expected all, khugepaged or madvise"
                ))
            }
        };
        o.mems = match mem {
            "all" => vec![MemType::File, MemType::Anon, MemType::Shmem],
            "anon" => vec![MemType::Anon],
            "file" => vec![MemType::File],
            "shmem" => vec![MemType::Shmem],
            v => return Err(format!("mem_type {v:?}: expected all, anon, file or shmem")),
        };
        if o.mems.contains(&MemType::File) {
            match positional.len() {
                2 if o.private_tmpfs => return Err("--tmpfs and a [dir] exclude each other".into()),
                2 => o.dir = Some(positional[1].clone()),
                1 if o.private_tmpfs => {}
                1 => {
                    return Err(
                        "\"file\" and \"all\" mem_type need a [dir] argument (or --tmpfs)".into(),
                    )
                }
                _ => return Err(format!("unexpected argument {:?}", positional[2])),
            }
        } else if positional.len() > 1 {
            return Err(format!(
                "unexpected argument {:?} (only file tests take a [dir])",
                positional[1]
            ));
        }
    }
    Ok(Some(o))
}

/// The cases the options select, in the TEST() table's order, after alloc_at_fault.
pub fn select_cases(o: &Options) -> Vec<Case> {
    let mut cases = vec![Case::AllocAtFault];
    cases.extend(
        test_table()
            .into_iter()
            .filter(|e| o.contexts.contains(&e.context) && o.mems.contains(&e.mem))
            .map(Case::Test),
    );
    if o.extras {
        cases.extend(
            crate::extras::extra_table()
                .into_iter()
                .filter(|e| o.contexts.contains(&e.context) && o.mems.contains(&e.mem))
                .map(Case::Extra),
        );
    }
    cases
}

/// Every case of the table (all contexts and memory types), after alloc_at_fault.
pub fn all_cases() -> Vec<Case> {
    let mut cases = vec![Case::AllocAtFault];
    cases.extend(test_table().into_iter().map(Case::Test));
    cases.extend(crate::extras::extra_table().into_iter().map(Case::Extra));
    cases
}

/// Builds the environment: `-s` and the `[dir]` with its filesystem.
pub fn env_for(o: &Options) -> Result<Env, String> {
    let finfo = match &o.dir {
        Some(d) => Some(FileInfo::new(d, crate::host::fsinfo::dir_kind(d)?)),
        None => None,
    };
    if o.private_tmpfs && o.backend != BackendChoice::Host && finfo.is_none() {
        // The model's stand-in for the private tmpfs.
        return Ok(Env {
            anon_order: o.anon_order,
            finfo: Some(FileInfo::model_tmpfs("advise")),
            khugepaged: o.khugepaged_mode(),
        });
    }
    Ok(Env {
        anon_order: o.anon_order,
        finfo,
        khugepaged: o.khugepaged_mode(),
    })
}

/// A fresh model process for one case.
pub fn model_backend(o: &Options, env: &Env) -> ModelBackend {
    let mut b = ModelBackend::new(effective_profile(o));
    b.k.read_only_thp_for_fs = o.read_only_thp_for_fs;
    b.dir = env.finfo.as_ref().map(|f| f.kind.clone());
    b
}

/// Runs one case on the chosen backend(s).
fn run_one(o: &Options, env: &Env, case: &Case) -> Result<Vec<(&'static str, CaseResult)>, String> {
    let mut out = Vec::new();
    if matches!(o.backend, BackendChoice::Host | BackendChoice::Both) {
        let hopts = host_options(o, o.trace)?;
        out.push((
            "host",
            crate::host::isolate::run_case_retrying_races(case, &host_env(o, env), &hopts),
        ));
    }
    if matches!(o.backend, BackendChoice::Model | BackendChoice::Both) {
        let mut b = model_backend(o, env);
        let r = if o.trace {
            let profile = effective_profile(o);
            crate::runner::run_case_traced(&mut b, env, case, profile.name)
        } else {
            run_case(&mut b, env, case)
        };
        out.push(("model", r));
    }
    Ok(out)
}

/// The model profile for a run: the one asked for, else (with the host) the host kernel's
/// era, else 6.18.
pub fn effective_profile(o: &Options) -> KernelProfile {
    if let Some(p) = &o.profile {
        return p.clone();
    }
    if o.backend != BackendChoice::Model {
        if let Ok(u) = nix::sys::utsname::uname() {
            if let Some(p) = KernelProfile::for_release(&u.release().to_string_lossy()) {
                return p;
            }
        }
    }
    KernelProfile::default()
}

fn host_options(o: &Options, trace: bool) -> Result<crate::host::isolate::HostRunOptions, String> {
    Ok(crate::host::isolate::HostRunOptions {
        exe: std::env::current_exe().map_err(|e| format!("finding this program: {e}"))?,
        swapfile: o.swapfile,
        private_tmpfs: o.private_tmpfs,
        trace,
    })
}

/// The host's environment: with --tmpfs the host makes its own tmpfs per case (the model
/// keeps its stand-in).
fn host_env(o: &Options, env: &Env) -> Env {
    if o.private_tmpfs {
        Env {
            finfo: None,
            ..env.clone()
        }
    } else {
        env.clone()
    }
}

fn write_out(out: &mut dyn Write, s: &str) -> Result<(), String> {
    out.write_all(s.as_bytes())
        .map_err(|e| format!("writing output: {e}"))
}

/// `--backend both`: every case on the host and on the model, traces compared.
fn compare_all(o: &Options, env: &Env, out: &mut dyn Write) -> Result<i32, String> {
    use crate::crosscheck::{cross_check, model_env, Comparison};
    let hopts = host_options(o, false)?;
    let profile = effective_profile(o);
    let host_env = host_env(o, env);
    let menv = model_env(env, o.private_tmpfs);
    let cases = select_cases(o);
    let (mut agree, mut disagree, mut skipped, mut unmodelled) = (0, 0, 0, 0);
    if o.format == Format::Ktap {
        write_out(out, &format!("KTAP version 1\n1..{}\n", cases.len()))?;
    } else {
        write_out(
            out,
            &format!(
                "Comparing this kernel with the model (profile {})\n",
                profile.name
            ),
        )?;
    }
    for (n, case) in cases.iter().enumerate() {
        let (_host, _model, cmp) = cross_check(case, &host_env, &menv, &hopts, &profile);
        let title = case.title();
        let text = match &cmp {
            Comparison::Agree => {
                agree += 1;
                match o.format {
                    Format::Kernel => format!("agree     {title}\n"),
                    Format::Ktap => format!("ok {} {title}\n", n + 1),
                }
            }
            Comparison::HostSkipped(why) => {
                skipped += 1;
                match o.format {
                    Format::Kernel => {
                        format!("skipped   {title}: the host could not run it: {why}\n")
                    }
                    Format::Ktap => format!("ok {} {title} # SKIP host: {why}\n", n + 1),
                }
            }
            Comparison::Unmodelled(reasons, d) => {
                unmodelled += 1;
                let detail = format!(
                    "{}because: {}\n",
                    crate::trace::describe(d, "host", "model"),
                    reasons.join("; ")
                );
                match o.format {
                    Format::Kernel => format!("explained {title}: the host run depends on what the model does not model\n{}", indent(&detail, "    ")),
                    Format::Ktap => format!("{}ok {} {title} # SKIP unmodelled: {}\n", indent(&detail, "# "), n + 1, reasons.join("; ")),
                }
            }
            Comparison::Disagree(d) => {
                disagree += 1;
                let detail = crate::trace::describe(d, "host", "model");
                match o.format {
                    Format::Kernel => format!("DISAGREE  {title}\n{}", indent(&detail, "    ")),
                    Format::Ktap => format!("{}not ok {} {title}\n", indent(&detail, "# "), n + 1),
                }
            }
        };
        write_out(out, &text)?;
    }
    let summary = format!("{agree} agree, {disagree} disagree, {unmodelled} explained (unmodelled), {skipped} skipped");
    match o.format {
        Format::Kernel => write_out(out, &format!("{summary}\n"))?,
        Format::Ktap => write_out(
            out,
            &format!("# {summary}\n# Totals: pass:{agree} fail:{disagree} xfail:0 xpass:0 skip:{} error:0\n", skipped + unmodelled),
        )?,
    }
    Ok(if disagree > 0 {
        1
    } else if agree == 0 && skipped > 0 {
        4
    } else {
        0
    })
}

fn indent(text: &str, prefix: &str) -> String {
    text.lines().map(|l| format!("{prefix}{l}\n")).collect()
}

/// `--record DIR`: host traces of the selected cases, written as fixtures.
fn record(o: &Options, env: &Env, root: &str, out: &mut dyn Write) -> Result<i32, String> {
    let hopts = host_options(o, true)?;
    let host_env = host_env(o, env);
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .map_err(|e| format!("uname: {e}"))?;
    let dir = crate::crosscheck::fixture_dir(std::path::Path::new(root), &release);
    let (mut written, mut not) = (0, 0);
    for case in select_cases(o) {
        let r = crate::host::isolate::run_case_retrying_races(&case, &host_env, &hopts);
        match &r.trace {
            Some(t) => {
                let path = dir.join(crate::crosscheck::fixture_name(&case, env));
                let reasons = crate::crosscheck::unmodelled_reasons(&r);
                crate::crosscheck::write_atomically(
                    &path,
                    &crate::crosscheck::annotate(t, &reasons),
                )?;
                written += 1;
                write_out(
                    out,
                    &format!(
                        "recorded {} ({})\n",
                        path.display(),
                        outcome_word(&r.outcome)
                    ),
                )?;
            }
            None => {
                not += 1;
                write_out(
                    out,
                    &format!(
                        "not recorded {}: {}\n",
                        case.title(),
                        outcome_word(&r.outcome)
                    ),
                )?;
            }
        }
    }
    write_out(
        out,
        &format!(
            "{written} fixture(s) written to {}, {not} case(s) not recorded\n",
            dir.display()
        ),
    )?;
    Ok(if written == 0 { 4 } else { 0 })
}

fn outcome_word(o: &Outcome) -> String {
    match o {
        Outcome::Pass => "pass".into(),
        Outcome::Fail(w) => format!("fail: {w}"),
        Outcome::Skip(w) => format!("skip: {w}"),
    }
}

/// Runs the selected cases, printing as it goes. Returns the exit code.
pub fn run(o: &Options, out: &mut dyn Write) -> Result<i32, String> {
    let env = env_for(o)?;
    if let Some(root) = &o.record {
        return record(o, &env, root, out);
    }
    if o.backend == BackendChoice::Both {
        return compare_all(o, &env, out);
    }
    let mut o = o.clone();
    o.profile = Some(effective_profile(&o));
    let cases = select_cases(&o);
    let colour = o.format == Format::Kernel && std::io::stdout().is_terminal();
    let mut totals = Totals::default();
    let w = |out: &mut dyn Write, s: &str| {
        out.write_all(s.as_bytes())
            .map_err(|e| format!("writing output: {e}"))
    };
    let ok = if colour {
        "\x1b[32mOK\x1b[0m\n"
    } else {
        "OK\n"
    };
    let per_case = if o.backend == BackendChoice::Both {
        2
    } else {
        1
    };
    match o.format {
        Format::Kernel => w(out, &format!("Save THP and khugepaged settings... {ok}"))?,
        Format::Ktap => w(
            out,
            &format!("KTAP version 1\n1..{}\n", cases.len() * per_case),
        )?,
    }
    let mut n = 0;
    for case in cases.iter() {
        for (backend, r) in run_one(&o, &env, case)? {
            n += 1;
            totals.add(&r.outcome);
            let mut r = r;
            if o.backend == BackendChoice::Both {
                if let Outcome::Fail(why) = &mut r.outcome {
                    *why = format!("{backend}: {why}");
                }
            }
            match o.format {
                Format::Kernel => {
                    if o.backend == BackendChoice::Both {
                        w(out, &format!("\n[{backend}]"))?;
                    }
                    w(out, &kernel_case(&r, colour))?;
                    if let Some(t) = &r.trace {
                        w(
                            out,
                            &format!("--- trace ({backend}) ---\n{t}--- end of trace ---\n"),
                        )?;
                    }
                }
                Format::Ktap => w(out, &ktap_case(n, &r))?,
            }
        }
    }
    match o.format {
        Format::Kernel => w(out, &format!("Restore THP and khugepaged settings... {ok}"))?,
        Format::Ktap => w(out, &format!("{}\n", totals.ktap_line()))?,
    }
    Ok(totals.exit_code())
}
