//! The `khugepaged` command: a drop-in for the selftest binary, with backend, profile and
//! output-format options.

use std::io::{IsTerminal, Write};

use model::KernelProfile;

use crate::catalogue::{test_table_of, Catalogue, Context, Env, FileInfo, KhugepagedMode, MemType};
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
    /// `-c`: the mTHP order of the mthp_khugepaged context (7.3 catalogue).
    pub collapse_order: u8,
    /// `--catalogue RELEASE`; None: the model runs the newest, a host its kernel's era's.
    pub catalogue: Option<Catalogue>,
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
    /// Model only: the trace also explains every collapse attempt (decision record and the
    /// picture of its range); implies `trace`.
    pub explain: bool,
    /// Also run this project's own tests (`extras`), after the selftest's.
    pub extras: bool,
    /// `--profile list`: print every profile switch and exit.
    pub list_profiles: bool,
    /// Run the selected cases on the model under every release profile.
    pub across_releases: bool,
    /// Only the cases whose id (`khugepaged:anon/collapse_full`) matches this regex.
    pub only: Option<regex::Regex>,
    /// Only restore what an interrupted host run left, then exit.
    pub recover: bool,
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
            collapse_order: 0,
            catalogue: None,
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
            explain: false,
            extras: false,
            list_profiles: false,
            across_releases: false,
            only: None,
            recover: false,
            khugepaged: None,
        }
    }
}

/// The selftest's usage text, plus this tool's options.
pub fn usage() -> String {
    "\nUsage: khugepaged [OPTIONS] <test type> [dir]\n\n\
     \t<test type>\t: <context>:<mem_type>\n\
     \t<context>\t: [all|khugepaged|mthp_khugepaged|madvise]\n\
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
     \t\t-c: collapse order for mTHP collapse, expressed as page order (the\n\
     \t\t    mthp_khugepaged context, anon only, 7.3 catalogue; 1 .. 8).\n\
     \t\t--catalogue RELEASE: which release's khugepaged.c to follow, 6.18 or 7.3\n\
     \t\t    (default: 7.3 on the model; a host's own era: 7.3 from 7.2, else\n\
     \t\t    6.18). 7.3's adds read-write file tests, mthp_khugepaged, KTAP output.\n\
     \t\t--backend model|host|both: where to run (default model; model never touches\n\
     \t\t    the system; host runs this kernel (root); both runs each case on both,\n\
     \t\t    traced, and compares them).\n\
     \t\t--profile RELEASE: kernel release the model follows, 6.1 .. 7.3 or a full\n\
     \t\t    release string (default 6.18; with --backend both, the host's\n\
     \t\t    release). Not with --backend host. --profile list prints every switch\n\
     \t\t    with the release where it flips and its kernel commit.\n\
     \t\t--across-releases: run the cases on the model under every release and\n\
     \t\t    name the switch behind each change of outcome (with --only to pick a\n\
     \t\t    case).\n\
     \t\t--format kernel|ktap: the selftest's own lines (default) or KTAP.\n\
     \t\t--read-only-thp-for-fs: give the model CONFIG_READ_ONLY_THP_FOR_FS=y\n\
     \t\t    (--backend model only; a host kernel has its own).\n\
     \t\t--tmpfs: file tests on a private tmpfs mounted huge=advise instead of a\n\
     \t\t    [dir] (on the host: mounted per case and removed after it).\n\
     \t\t--no-swapfile: host: skip the swap tests when no swap is active instead\n\
     \t\t    of enabling a temporary swapfile for them.\n\
     \t\t--trace: print each case's trace (calls, steps, smaps, page maps) after\n\
     \t\t    its lines; with --format ktap as \"#\" lines.\n\
     \t\t--explain: --trace, and under each collapse its decision record and a\n\
     \t\t    picture of the PMD range before and after (--backend model only).\n\
     \t\t--extras: also run this tool's own tests, after the selftest's.\n\
     \t\t--record DIR: run on this kernel (--backend host) and write each case's\n\
     \t\t    trace to DIR/<kernel release>/ as a fixture. Not with --format ktap.\n\
     \t\t--only REGEX: only the cases whose id (e.g. khugepaged:anon/collapse_full)\n\
     \t\t    matches REGEX (alloc_at_fault runs first in every case regardless).\n\
     \t\t--recover: only restore what an interrupted host run left (its journal), then\n\
     \t\t    exit.\n\
     \t\t--khugepaged selftest|deterministic: khugepaged as the selftest sets it up\n\
     \t\t    (wakes every 10 ms, may act between two waits), or woken one pass at a\n\
     \t\t    time inside the test's waits only (default with --backend both and\n\
     \t\t    --record).\n\
     \n\tkhugepaged scenario [-v] [--explain] [--explain-svg DIR] FILE...: run scenario\n\
     \t    files (fixtures/scenarios/README.md); --explain prints each collapse\n\
     \t    attempt's decision record and page picture, --explain-svg writes them as SVG.\n\
     \t    `scenario --kernels DIR FILE...`: the cross-kernel table of the recordings;\n\
     \t    `scenario --across-releases FILE...`: the switch behind each change.\n\
     \n\tExit status: 0 passed, 1 a test failed (or, with --backend both, host and\n\
     \tmodel disagree or both fail) or the settings could not be restored, 2 usage\n\
     \terror, 4 everything skipped, 141 stdout was closed (e.g. by head); the run\n\
     \tstops, the machine restored.\n"
        .to_string()
}

/// `khugepaged scenario ...` when `args` starts with `scenario`: its exit status.
pub fn subcommand(args: &[String]) -> Option<i32> {
    let rest = args.strip_prefix(&["scenario".to_string()])?;
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    Some(crate::scenario_cli::main(rest, &mut out, &mut err))
}

/// Parses arguments (without the program name). Err is a one-line usage error; Ok(None)
/// means help was asked for.
pub fn parse(args: &[String]) -> Result<Option<Options>, String> {
    let mut o = Options::default();
    let mut positional = Vec::new();
    let mut backend_given = None;
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
            "-c" => {
                let v = value("-c")?;
                o.collapse_order = v
                    .parse()
                    .ok()
                    .filter(|&n: &u8| n > 0 && n < model::HPAGE_PMD_ORDER)
                    .ok_or_else(|| {
                        format!(
                            "-c {v}: the collapse order must be a number from 1 to {}",
                            model::HPAGE_PMD_ORDER - 1
                        )
                    })?;
            }
            "--catalogue" => {
                let v = value("--catalogue")?;
                o.catalogue = Some(Catalogue::from_name(&v).ok_or_else(|| {
                    let known: Vec<&str> = Catalogue::ALL.iter().map(|c| c.name()).collect();
                    format!("--catalogue {v}: expected one of {}", known.join(", "))
                })?);
            }
            "--backend" => {
                let (choice, name) = match value("--backend")?.as_str() {
                    "model" => (BackendChoice::Model, "model"),
                    "host" => (BackendChoice::Host, "host"),
                    "both" => (BackendChoice::Both, "both"),
                    v => return Err(format!("--backend {v}: expected model, host or both")),
                };
                o.backend = choice;
                backend_given = Some(name);
            }
            "--profile" => {
                let v = value("--profile")?;
                if v == "list" {
                    o.list_profiles = true;
                } else {
                    o.profile = Some(
                        KernelProfile::for_release(&v)
                            .map_err(|e| format!("--profile {v}: {e}"))?,
                    );
                }
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
            "--explain" => {
                o.explain = true;
                o.trace = true;
            }
            "--extras" => o.extras = true,
            "--khugepaged" => {
                let v = value("--khugepaged")?;
                o.khugepaged = Some(KhugepagedMode::from_name(&v).ok_or_else(|| {
                    format!("--khugepaged {v}: expected selftest or deterministic")
                })?);
            }
            "--across-releases" => o.across_releases = true,
            "--only" => {
                let v = value("--only")?;
                o.only = Some(
                    regex::Regex::new(&v)
                        .map_err(|e| format!("--only {v:?}: not a regular expression: {e}"))?,
                );
            }
            "--recover" => o.recover = true,
            "--record" => o.record = Some(value("--record")?),
            s if s.starts_with('-') && s.len() > 1 => return Err(format!("unknown option {s}")),
            s => positional.push(s.to_string()),
        }
    }
    check_combinations(&mut o, backend_given)?;
    if let Some(tt) = positional.first() {
        let (ctx, mem) = tt.split_once(':').ok_or_else(|| {
            format!("test type {tt:?}: expected <context>:<mem_type>, e.g. all:anon")
        })?;
        o.contexts = match ctx {
            "all" => Context::ALL.to_vec(),
            "khugepaged" => vec![Context::Khugepaged],
            "madvise" => vec![Context::Madvise],
            "mthp_khugepaged" => vec![Context::MthpKhugepaged],
            v => {
                return Err(format!(
                    "context {v:?}: expected all, khugepaged, mthp_khugepaged or madvise"
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
        if o.contexts.contains(&Context::MthpKhugepaged) {
            if effective_catalogue(&o) == Catalogue::V6_18 {
                return Err(
                    "mthp_khugepaged is a context of the 7.3 selftest, not of the 6.18 one \
                     (--catalogue 7.3)"
                        .into(),
                );
            }
            if o.mems != [MemType::Anon] {
                return Err("mthp_khugepaged only supports the anon mem_type".into());
            }
            if o.collapse_order == 0 {
                return Err(format!(
                    "mthp_khugepaged needs -c ORDER, the mTHP order to collapse to (1 to {})",
                    model::HPAGE_PMD_ORDER - 1
                ));
            }
        }
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

/// Options that contradict each other are a usage error rather than one silently winning.
fn check_combinations(o: &mut Options, backend_given: Option<&str>) -> Result<(), String> {
    if o.record.is_some() {
        if let Some(b @ ("model" | "both")) = backend_given {
            return Err(format!(
                "--record records this kernel's traces (it runs --backend host); it cannot be combined with --backend {b}"
            ));
        }
        if o.format == Format::Ktap {
            return Err(
                "--record prints the fixtures it writes, not test results; it cannot be combined with --format ktap"
                    .into(),
            );
        }
        o.backend = BackendChoice::Host;
    }
    let how = if o.record.is_some() {
        "--record"
    } else {
        match o.backend {
            BackendChoice::Model => "--backend model",
            BackendChoice::Host => "--backend host",
            BackendChoice::Both => "--backend both",
        }
    };
    if o.read_only_thp_for_fs && o.backend != BackendChoice::Model {
        return Err(format!(
            "--read-only-thp-for-fs configures the model; with {how} the kernel's own CONFIG_READ_ONLY_THP_FOR_FS applies"
        ));
    }
    if o.profile.is_some() && o.backend == BackendChoice::Host {
        return Err(format!(
            "--profile picks the model's kernel era; with {how} only this kernel runs (use --backend both to compare it with a profile)"
        ));
    }
    if o.across_releases && (o.backend != BackendChoice::Model || o.profile.is_some()) {
        return Err(format!(
            "--across-releases runs the model under every release; it takes no --profile and runs no kernel (not with {how})"
        ));
    }
    if o.explain && (o.backend != BackendChoice::Model || o.across_releases) {
        let how = if o.across_releases {
            "--across-releases"
        } else {
            how
        };
        return Err(format!(
            "--explain shows the model's decision records in a model trace; not with {how} (use khugepaged scenario --explain, or --backend model)"
        ));
    }
    if !o.swapfile && o.backend == BackendChoice::Model {
        return Err(
            "--no-swapfile is about this machine's swap; the model (--backend model, the default) always has swap"
                .into(),
        );
    }
    Ok(())
}

/// The cases the options select, in the TEST() table's order, after alloc_at_fault.
pub fn select_cases(o: &Options) -> Vec<Case> {
    let mut cases = select_unfiltered(o);
    if let Some(re) = &o.only {
        cases.retain(|c| re.is_match(&c.id()));
    }
    cases
}

fn select_unfiltered(o: &Options) -> Vec<Case> {
    let mut cases = vec![Case::AllocAtFault];
    cases.extend(
        test_table_of(effective_catalogue(o))
            .into_iter()
            .filter(|e| o.contexts.contains(&e.context) && o.mems.contains(&e.mem.family()))
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

pub use crate::runner::all_cases;

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
            catalogue: effective_catalogue(o),
            collapse_order: o.collapse_order,
        });
    }
    Ok(Env {
        anon_order: o.anon_order,
        finfo,
        khugepaged: o.khugepaged_mode(),
        catalogue: effective_catalogue(o),
        collapse_order: o.collapse_order,
    })
}

/// The catalogue of a run: the one asked for; else, when a kernel runs (host, both,
/// record), that kernel's era's; else (the model alone) the newest.
pub fn effective_catalogue(o: &Options) -> Catalogue {
    if let Some(c) = o.catalogue {
        return c;
    }
    if o.backend == BackendChoice::Model && o.record.is_none() {
        return Catalogue::NEWEST;
    }
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    Catalogue::for_kernel(KernelProfile::for_release(&release).ok().as_ref())
}

/// A fresh model process for one case.
pub fn model_backend(o: &Options, env: &Env) -> ModelBackend {
    let mut b = ModelBackend::new(effective_profile(o));
    b.k.read_only_thp_for_fs = o.read_only_thp_for_fs;
    b.dir = env.finfo.as_ref().map(|f| f.kind.clone());
    b.explain = o.explain;
    b.k.decision_detail = o.explain;
    b
}

/// Runs one case on the chosen backend (host or model; `--backend both` is `compare_all`).
fn run_one(o: &Options, env: &Env, case: &Case) -> Result<CaseResult, String> {
    if o.backend == BackendChoice::Host {
        let hopts = host_options(o, o.trace)?;
        return Ok(crate::host::isolate::run_case_retrying_races(
            case,
            &host_env(o, env),
            &hopts,
        ));
    }
    let mut b = model_backend(o, env);
    Ok(if o.trace {
        let profile = effective_profile(o);
        crate::runner::run_case_traced(&mut b, env, case, profile.name)
    } else {
        run_case(&mut b, env, case)
    })
}

/// The model profile for a run: the one asked for, else (with the host) the host kernel's
/// era, else 6.18.
pub fn effective_profile(o: &Options) -> KernelProfile {
    if let Some(p) = &o.profile {
        return p.clone();
    }
    if o.backend != BackendChoice::Model {
        if let Ok(u) = nix::sys::utsname::uname() {
            if let Ok(p) = KernelProfile::for_release(&u.release().to_string_lossy()) {
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

/// Exit status when stdout was closed before the run ended (`khugepaged | head`): what a
/// program killed by SIGPIPE reports in a shell (128 + 13), so `set -o pipefail` still sees
/// that the run was cut short. The machine is restored before that, as after any case.
pub const EXIT_STDOUT_CLOSED: i32 = 141;

/// Where the report goes. A closed pipe is not an error: the printer notes it, drops what
/// follows, and the run stops after the case in progress (which restores the machine).
pub struct Printer<'a> {
    out: &'a mut dyn Write,
    closed: bool,
}

impl<'a> Printer<'a> {
    pub fn new(out: &'a mut dyn Write) -> Printer<'a> {
        Printer { out, closed: false }
    }

    /// Writes `s`; Err only for a write error other than a closed pipe.
    pub fn put(&mut self, s: &str) -> Result<(), String> {
        if self.closed {
            return Ok(());
        }
        match self
            .out
            .write_all(s.as_bytes())
            .and_then(|_| self.out.flush())
        {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            Err(e) => Err(format!("writing output: {e}")),
        }
    }

    /// Whether the reader went away (EPIPE): no more cases should start.
    pub fn closed(&self) -> bool {
        self.closed
    }
}

/// Tallies of a `--backend both` run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompareTotals {
    pub agree: usize,
    pub disagree: usize,
    pub both_fail: usize,
    pub both_skip: usize,
    pub unmodelled: usize,
    pub skipped: usize,
}

impl CompareTotals {
    pub fn add(&mut self, cmp: &crate::crosscheck::Comparison) {
        use crate::crosscheck::Comparison::*;
        match cmp {
            Agree => self.agree += 1,
            Disagree(_) => self.disagree += 1,
            BothFail { .. } => self.both_fail += 1,
            BothSkip { .. } => self.both_skip += 1,
            Unmodelled(..) => self.unmodelled += 1,
            HostSkipped(_) => self.skipped += 1,
        }
    }

    /// 1 when host and model disagree or both fail (as a failing selftest would), 4 when
    /// nothing could be compared, else 0.
    pub fn exit_code(&self) -> i32 {
        if self.disagree > 0 || self.both_fail > 0 {
            1
        } else if self.agree == 0 && self.unmodelled == 0 && self.skipped + self.both_skip > 0 {
            4
        } else {
            0
        }
    }

    pub fn summary(&self) -> String {
        format!(
            "{} agree, {} disagree, {} both fail, {} both skip, {} explained (unmodelled), {} skipped",
            self.agree,
            self.disagree,
            self.both_fail,
            self.both_skip,
            self.unmodelled,
            self.skipped
        )
    }

    pub fn ktap_line(&self) -> String {
        format!(
            "# Totals: pass:{} fail:{} xfail:0 xpass:0 skip:{} error:0",
            self.agree,
            self.disagree + self.both_fail,
            self.skipped + self.unmodelled + self.both_skip
        )
    }
}

/// The report of one compared case (`n` counts from 1), in `format`.
pub fn comparison_text(
    format: Format,
    n: usize,
    host: &CaseResult,
    model: &CaseResult,
    cmp: &crate::crosscheck::Comparison,
) -> String {
    use crate::crosscheck::Comparison;
    let title = host.case.title();
    // A side that failed outside its step lines (before its first step, a crashed case
    // process) says why; its trace alone would only show where it stopped.
    let mut early = String::new();
    for (side, r) in [("host", host), ("model", model)] {
        if let Some(why) = crate::report::unexplained_failure(r) {
            early.push_str(&format!("{side} failed outside its steps: {why}\n"));
        }
    }
    // Traces compared without their decisions say so (a host without tracefs, the selftest's
    // khugepaged settings).
    let unseen = crate::crosscheck::decisions_note(host, model);
    match (cmp, format) {
        (Comparison::Agree, Format::Kernel) => match unseen {
            None => format!("agree     {title}\n"),
            Some(why) => format!(
                "agree     {title}\n    (decisions not compared: {})\n",
                one_line(&why)
            ),
        },
        (Comparison::Agree, Format::Ktap) => match unseen {
            None => format!("ok {n} {title}\n"),
            Some(why) => format!(
                "# decisions not compared: {}\nok {n} {title}\n",
                one_line(&why)
            ),
        },
        (Comparison::HostSkipped(why), Format::Kernel) => {
            format!("skipped   {title}: the host could not run it: {why}\n")
        }
        (Comparison::HostSkipped(why), Format::Ktap) => {
            format!("ok {n} {title} # SKIP host: {}\n", one_line(why))
        }
        (Comparison::BothSkip { host, model }, Format::Kernel) => {
            format!("both skip {title}\n    host:  {host}\n    model: {model}\n")
        }
        (Comparison::BothSkip { host, model }, Format::Ktap) => format!(
            "ok {n} {title} # SKIP both: host: {}; model: {}\n",
            one_line(host),
            one_line(model)
        ),
        (Comparison::BothFail { host, model }, Format::Kernel) => {
            format!("both fail {title}\n    host:  {host}\n    model: {model}\n")
        }
        (Comparison::BothFail { host, model }, Format::Ktap) => format!(
            "# both fail: host: {}\n# both fail: model: {}\nnot ok {n} {title}\n",
            one_line(host),
            one_line(model)
        ),
        (Comparison::Unmodelled(events, d), _) => {
            let reasons: Vec<String> = events.iter().map(|e| e.header_form()).collect();
            let detail = format!(
                "{early}{}because: {}\n",
                crate::trace::describe(d, "host", "model"),
                reasons.join("; ")
            );
            match format {
                Format::Kernel => format!(
                    "explained {title}: the host run depends on what the model does not model\n{}",
                    indent(&detail, "    ")
                ),
                Format::Ktap => format!(
                    "{}ok {n} {title} # SKIP unmodelled: {}\n",
                    indent(&detail, "# "),
                    reasons.join("; ")
                ),
            }
        }
        (Comparison::Disagree(d), _) => {
            let detail = format!("{early}{}", crate::trace::describe(d, "host", "model"));
            match format {
                Format::Kernel => format!("DISAGREE  {title}\n{}", indent(&detail, "    ")),
                Format::Ktap => format!("{}not ok {n} {title}\n", indent(&detail, "# ")),
            }
        }
    }
}

/// Before the first host case: restore what an interrupted run left (said on stderr and in
/// the output), stop on a journal that cannot be used, and print a skip that applies to every
/// case once. Some(exit code) when the run ends here.
fn host_preflight(o: &Options, out: &mut Printer) -> Result<Option<i32>, String> {
    use crate::host::isolate::{preflight, Preflight};
    let p = preflight();
    let ktap = o.format == Format::Ktap;
    let note = |out: &mut Printer, msg: &str| {
        eprintln!("khugepaged: {msg}");
        out.put(&format!("{}{msg}\n", if ktap { "# " } else { "" }))
    };
    match p {
        Preflight::Broken(e) => {
            note(out, &e)?;
            Ok(Some(1))
        }
        Preflight::Ready(restored) => {
            match restored {
                Some(msg) => note(out, &msg)?,
                None if o.recover => eprintln!("khugepaged: no interrupted run to restore"),
                None => {}
            }
            Ok(o.recover.then_some(0))
        }
        Preflight::SkipAll(reason) if o.recover => {
            // Nothing was left to restore; the machine's own state is not ours to judge.
            let _ = reason;
            Ok(Some(0))
        }
        Preflight::SkipAll(reason) => {
            if ktap {
                out.put(&format!("KTAP version 1\n1..0 # SKIP {reason}\n"))?;
            } else {
                out.put(&format!("{reason}\n"))?;
            }
            Ok(Some(4))
        }
    }
}

fn one_line(s: &str) -> String {
    s.replace('\n', " ")
}

/// A case's trace, framed for the kernel format or as KTAP diagnostics.
fn trace_text(format: Format, side: &str, trace: &str) -> String {
    match format {
        Format::Kernel => format!("--- trace ({side}) ---\n{trace}--- end of trace ---\n"),
        Format::Ktap => format!(
            "# --- trace ({side}) ---\n{}# --- end of trace ---\n",
            indent(trace, "# ")
        ),
    }
}

/// The restore failure as the last word of a run: the kernel line, or KTAP's bail-out.
fn restore_failure_text(format: Format, why: &str, colour: bool) -> String {
    match format {
        Format::Kernel => crate::report::restore_line(Some(why), colour),
        Format::Ktap => format!(
            "Bail out! Restore THP and khugepaged settings failed: {}\n",
            one_line(why)
        ),
    }
}

/// `--backend both`: every case on the host and on the model, traces compared.
fn compare_all(o: &Options, env: &Env, p: &mut Printer) -> Result<i32, String> {
    use crate::crosscheck::{cross_check, model_env};
    let hopts = host_options(o, false)?;
    let profile = effective_profile(o);
    let host_env = host_env(o, env);
    let menv = model_env(env, o.private_tmpfs);
    let cases = select_cases(o);
    let mut totals = CompareTotals::default();
    if o.format == Format::Ktap {
        p.put(&format!("KTAP version 1\n1..{}\n", cases.len()))?;
    } else {
        p.put(&format!(
            "Comparing this kernel with the model (profile {})\n",
            profile.name
        ))?;
    }
    for (n, case) in cases.iter().enumerate() {
        let (host, model, cmp) = cross_check(case, &host_env, &menv, &hopts, &profile);
        totals.add(&cmp);
        p.put(&comparison_text(o.format, n + 1, &host, &model, &cmp))?;
        if o.trace {
            for (side, r) in [("host", &host), ("model", &model)] {
                if let Some(t) = &r.trace {
                    p.put(&trace_text(o.format, side, t))?;
                }
            }
        }
        if let Some(why) = &host.restore_error {
            p.put(&restore_failure_text(o.format, why, false))?;
            return Ok(1);
        }
        if p.closed() {
            return Ok(EXIT_STDOUT_CLOSED);
        }
    }
    match o.format {
        Format::Kernel => p.put(&format!("{}\n", totals.summary()))?,
        Format::Ktap => p.put(&format!("# {}\n{}\n", totals.summary(), totals.ktap_line()))?,
    }
    Ok(if p.closed() {
        EXIT_STDOUT_CLOSED
    } else {
        totals.exit_code()
    })
}

fn indent(text: &str, prefix: &str) -> String {
    text.lines().map(|l| format!("{prefix}{l}\n")).collect()
}

/// Makes sure fixtures can be written under `dir` before any case runs: creates it, writes
/// and removes a probe file. Returns whether the directory was created here.
pub fn check_writable_dir(dir: &std::path::Path) -> Result<bool, String> {
    let existed = dir.is_dir();
    std::fs::create_dir_all(dir).map_err(|e| {
        format!(
            "--record: cannot create {}: {e} (give a directory you can write to)",
            dir.display()
        )
    })?;
    let probe = dir.join(format!(".khugepaged-write-probe.{}", std::process::id()));
    let written = crate::host::create_private_file(&probe).and_then(|mut f| f.write_all(b"probe"));
    let removed = std::fs::remove_file(&probe);
    written.and(removed).map_err(|e| {
        format!(
            "--record: cannot write in {}: {e} (check its permissions and free space)",
            dir.display()
        )
    })?;
    Ok(!existed)
}

/// `--record DIR`: host traces of the selected cases, written as fixtures.
fn record(o: &Options, env: &Env, root: &str, p: &mut Printer) -> Result<i32, String> {
    let hopts = host_options(o, true)?;
    let host_env = host_env(o, env);
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .map_err(|e| format!("uname: {e}"))?;
    let dir = crate::crosscheck::fixture_dir(std::path::Path::new(root), &release);
    let created = check_writable_dir(&dir)?;
    let (mut written, mut not) = (0, 0);
    let mut restore_error = None;
    for case in select_cases(o) {
        let r = crate::host::isolate::run_case_retrying_races(&case, &host_env, &hopts);
        match &r.trace {
            Some(t) => {
                let path = dir.join(crate::crosscheck::fixture_name(&case, env));
                let events = crate::crosscheck::explanations(&r);
                crate::crosscheck::write_atomically(
                    &path,
                    &crate::crosscheck::annotate(t, &events),
                )?;
                written += 1;
                p.put(&format!(
                    "recorded {} ({})\n",
                    path.display(),
                    outcome_word(&r.outcome)
                ))?;
            }
            None => {
                not += 1;
                p.put(&format!(
                    "not recorded {}: {}\n",
                    case.title(),
                    outcome_word(&r.outcome)
                ))?;
            }
        }
        if r.restore_error.is_some() {
            restore_error = r.restore_error;
            break;
        }
        if p.closed() {
            break;
        }
    }
    if written == 0 && created {
        // Nothing recorded: leave no empty release directory behind.
        let _ = std::fs::remove_dir(&dir);
    }
    p.put(&format!(
        "{written} fixture(s) written to {}, {not} case(s) not recorded\n",
        dir.display()
    ))?;
    if let Some(why) = restore_error {
        p.put(&restore_failure_text(Format::Kernel, &why, false))?;
        return Ok(1);
    }
    Ok(if p.closed() {
        EXIT_STDOUT_CLOSED
    } else if written == 0 {
        4
    } else {
        0
    })
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
    if o.list_profiles {
        Printer::new(out).put(&KernelProfile::list())?;
        return Ok(0);
    }
    if o.across_releases {
        let env = env_for(o)?;
        let mut model = |p: &KernelProfile| {
            let mut b = ModelBackend::new(p.clone());
            b.k.read_only_thp_for_fs = o.read_only_thp_for_fs;
            b.dir = env.finfo.as_ref().map(|f| f.kind.clone());
            b
        };
        let (text, code) = crate::across::run(&select_cases(o), &env, &mut model);
        Printer::new(out).put(&text)?;
        return Ok(code);
    }
    let mut p = Printer::new(out);
    if o.recover || o.backend != BackendChoice::Model || o.record.is_some() {
        if let Some(code) = host_preflight(o, &mut p)? {
            return Ok(code);
        }
    }
    let env = env_for(o)?;
    if let Some(root) = &o.record {
        return record(o, &env, root, &mut p);
    }
    if o.backend == BackendChoice::Both {
        return compare_all(o, &env, &mut p);
    }
    let mut o = o.clone();
    o.profile = Some(effective_profile(&o));
    let cases = select_cases(&o);
    let colour = o.format == Format::Kernel && std::io::stdout().is_terminal();
    let side = match o.backend {
        BackendChoice::Host => "host",
        _ => "model",
    };
    let mut totals = Totals::default();
    let ok = if colour {
        "\x1b[32mOK\x1b[0m\n"
    } else {
        "OK\n"
    };
    // 7.3's khugepaged.c prints kselftest's TAP itself: that is its own output.
    let tap13 = o.format == Format::Kernel && env.catalogue.ktap_output();
    match o.format {
        Format::Kernel if tap13 => p.put(&crate::report::tap13_header(cases.len()))?,
        Format::Kernel => p.put(&format!("Save THP and khugepaged settings... {ok}"))?,
        Format::Ktap => p.put(&format!("KTAP version 1\n1..{}\n", cases.len()))?,
    }
    for (n, case) in cases.iter().enumerate() {
        let r = if tap13 {
            let r = run_one(&o, &env, case)?;
            p.put(&crate::report::tap13_case(n + 1, &r))?;
            if crate::report::tap13_aborted(&r) {
                // The C program exits here: no later test runs.
                p.put(&crate::report::tap13_bail(cases.len(), n, &totals))?;
                return Ok(if p.closed() { EXIT_STDOUT_CLOSED } else { 1 });
            }
            r
        } else if o.backend == BackendChoice::Host && o.format == Format::Kernel {
            // Host steps appear as the case process ends them, as the selftest prints.
            p.put(&crate::report::kernel_case_head(case))?;
            let hopts = host_options(&o, o.trace)?;
            let mut failed_write = None;
            let r = crate::host::isolate::run_case_retrying_races_streaming(
                case,
                &host_env(&o, &env),
                &hopts,
                &mut |s| {
                    if failed_write.is_none() {
                        failed_write = p.put(&crate::report::kernel_step(s, colour)).err();
                    }
                },
            );
            if let Some(e) = failed_write {
                return Err(e);
            }
            p.put(&crate::report::kernel_case_tail(&r))?;
            r
        } else {
            let r = run_one(&o, &env, case)?;
            match o.format {
                Format::Kernel => p.put(&kernel_case(&r, colour))?,
                Format::Ktap => p.put(&ktap_case(n + 1, &r))?,
            }
            r
        };
        totals.add(&r.outcome);
        if let Some(t) = &r.trace {
            p.put(&trace_text(o.format, side, t))?;
        }
        if let Some(why) = &r.restore_error {
            // The machine may be left changed: no further case runs on top of it.
            let format = if tap13 { Format::Ktap } else { o.format };
            p.put(&restore_failure_text(format, why, colour))?;
            if format == Format::Ktap {
                p.put(&format!("{}\n", totals.ktap_line()))?;
            }
            return Ok(1);
        }
        if p.closed() {
            return Ok(EXIT_STDOUT_CLOSED);
        }
    }
    match o.format {
        Format::Kernel if tap13 => p.put(&crate::report::tap13_trailer(&totals))?,
        Format::Kernel => p.put(&crate::report::restore_line(None, colour))?,
        Format::Ktap => p.put(&format!("{}\n", totals.ktap_line()))?,
    }
    Ok(if p.closed() {
        EXIT_STDOUT_CLOSED
    } else if tap13 {
        totals.tap13_exit_code()
    } else {
        totals.exit_code()
    })
}
