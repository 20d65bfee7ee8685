//! Runs a parsed scenario on a backend. System calls and /proc reads go through the
//! [`Backend`] trait; what the trait lacks (processes that stay alive side by side, vmstat by
//! name, the decision records of collapse attempts) is [`ScenarioExt`], implemented for the
//! model only so far.

use std::collections::BTreeMap;

use model::scan_result::ScanResult;
use model::{Errno, KernelProfile, HPAGE_PMD_NR, HPAGE_PMD_SIZE};

use super::parse::{
    release_version, Expectation, Loc, MapKind, Op, PageProp, Range, Scenario, Stmt, MAIN,
    VMSTAT_COUNTERS,
};
use crate::backend::{Backend, MapTarget, PageObs, PageState};
use crate::catalogue::DirKind;
use crate::explain::{self, Attempt};
use crate::model_backend::ModelBackend;
use model::khugepaged::CollapseReport;

/// A process handle of a [`ScenarioExt`] backend.
pub type ProcId = u64;

/// One collapse decision the backend recorded (model: a `CollapseReport`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub process: ProcId,
    /// The PMD-aligned address of the range.
    pub addr: u64,
    pub result: ScanResult,
    /// The decision record in words, for logs and failures.
    pub text: String,
}

/// What a scenario needs beyond the selftest's [`Backend`]: several processes alive at once,
/// /proc/vmstat by name, files on a tmpfs, and the record of every collapse decision.
pub trait ScenarioExt: Backend {
    fn current_process(&self) -> ProcId;
    /// fork(): the child stays alive; the current process does not change.
    fn fork_process(&mut self) -> Result<ProcId, Errno>;
    fn switch_process(&mut self, p: ProcId);
    fn exit_process(&mut self, p: ProcId) -> Result<(), Errno>;
    /// A /proc/vmstat counter (or khugepaged's pages_collapsed) by name.
    fn vmstat(&mut self, name: &str) -> Option<u64>;
    /// Creates a file on a tmpfs mounted with `huge=` (open for writing).
    fn create_tmpfs_file(&mut self, huge: &str) -> Result<crate::backend::Fd, Errno>;
    /// Collapse decisions since the last call, oldest first.
    fn take_decisions(&mut self) -> Vec<Decision>;
    /// The same, each with the model's full decision record where the backend has one
    /// (`--explain`); the default has none.
    fn take_decisions_explained(&mut self) -> Vec<(Decision, Option<CollapseReport>)> {
        self.take_decisions()
            .into_iter()
            .map(|d| (d, None))
            .collect()
    }
}

impl ScenarioExt for ModelBackend {
    fn current_process(&self) -> ProcId {
        self.pid as ProcId
    }

    fn fork_process(&mut self) -> Result<ProcId, Errno> {
        self.k.fork(self.pid).map(|p| p as ProcId)
    }

    fn switch_process(&mut self, p: ProcId) {
        self.pid = p as model::Pid;
    }

    fn exit_process(&mut self, p: ProcId) -> Result<(), Errno> {
        self.k.exit(p as model::Pid)
    }

    fn vmstat(&mut self, name: &str) -> Option<u64> {
        if name == "pages_collapsed" {
            // khugepaged's sysfs counter, read as the file.
            return self
                .k
                .sysfs_read("khugepaged/pages_collapsed")
                .ok()?
                .trim()
                .parse()
                .ok();
        }
        self.k.vmstat_read(name)
    }

    fn create_tmpfs_file(&mut self, huge: &str) -> Result<crate::backend::Fd, Errno> {
        let saved = self.dir.replace(DirKind::Tmpfs {
            huge: huge.to_string(),
        });
        let mut n = 0;
        let fd = loop {
            match self.create_file(&format!("scenario-file-{n}")) {
                Err(Errno::EEXIST) => n += 1,
                r => break r,
            }
        };
        self.dir = saved;
        fd
    }

    fn take_decisions(&mut self) -> Vec<Decision> {
        self.take_decisions_explained()
            .into_iter()
            .map(|(d, _)| d)
            .collect()
    }

    fn take_decisions_explained(&mut self) -> Vec<(Decision, Option<CollapseReport>)> {
        use model::khugepaged::{CollapseContext, CollapseStage};
        self.k
            .take_collapse_log()
            .into_iter()
            .map(|r| {
                let ctx = match r.context {
                    CollapseContext::Khugepaged => "khugepaged",
                    CollapseContext::Madvise => "MADV_COLLAPSE",
                };
                let stage = match r.stage {
                    CollapseStage::ScanPmd => "scan_pmd",
                    CollapseStage::CollapseHugePage => "collapse_huge_page",
                    CollapseStage::ScanFile => "scan_file",
                    CollapseStage::PteMappedThp => "collapse_pte_mapped_thp",
                };
                let d = Decision {
                    process: r.pid as ProcId,
                    addr: r.addr,
                    result: r.result,
                    text: format!(
                        "{ctx} {stage} {:#x}: {} none={} swap={} shared={} referenced={} writable={} present={}",
                        r.addr, r.result, r.none_or_zero, r.swap, r.shared, r.referenced, r.writable, r.present
                    ),
                };
                (d, Some(r))
            })
            .collect()
    }
}

/// Why a scenario failed: the line and what went wrong there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub loc: Loc,
    pub line: String,
    pub why: String,
}

/// The result of one run: the log (every line run, with the decisions it caused) and the
/// failure, if any.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub log: Vec<String>,
    pub failure: Option<Failure>,
    /// Every collapse attempt with its decision records, where the backend gives them.
    pub attempts: Vec<Attempt>,
}

#[derive(Clone, Copy, Debug)]
struct Mapping {
    addr: u64,
    pages: u64,
}

struct Runner<'a, B: ScenarioExt> {
    b: &'a mut B,
    release: (u32, u32),
    procs: BTreeMap<String, ProcId>,
    names: BTreeMap<ProcId, String>,
    maps: BTreeMap<String, Mapping>,
    next_hint: u64,
    /// Remembered pages by label: the page's PFN (the folio's head PFN plus the index).
    labels: BTreeMap<String, u64>,
    baseline: BTreeMap<&'static str, u64>,
    decisions: Vec<Decision>,
    log: Vec<String>,
    attempts: Vec<Attempt>,
    /// The line being run (`file:line: text`), for the attempts it causes.
    line: String,
}

/// The first address hint; every mapping gets its own PMD-aligned stretch after it.
const FIRST_HINT: u64 = 0x4000_0000;
/// Wake-ups one `khugepaged` line may use before it gives up (a stopped or idle thread).
const MAX_WAKEUPS: u64 = 2_000;

type R<T> = Result<T, String>;

/// A failed line: here, or inside a nested block (already located at its innermost line).
enum Fail {
    Here(String),
    Inner(Failure),
}

impl From<String> for Fail {
    fn from(s: String) -> Fail {
        Fail::Here(s)
    }
}

fn ps() -> u64 {
    model::PAGE_SIZE
}

impl<B: ScenarioExt> Runner<'_, B> {
    fn collect(&mut self) {
        let mut records = Vec::new();
        for (d, r) in self.b.take_decisions_explained() {
            let who = self.who(d.process);
            self.log.push(format!("    # {} ({who})", d.text));
            self.decisions.push(d);
            records.extend(r);
        }
        for g in explain::group(records) {
            let r = &g[0];
            let map = self
                .maps
                .iter()
                .find(|(_, m)| r.addr < m.addr + m.pages * ps() && m.addr < r.addr + HPAGE_PMD_SIZE)
                .map_or(String::new(), |(n, _)| format!("{n} "));
            let title = format!(
                "{} on {map}({:#x}) in {}",
                explain::context_name(r.context),
                r.addr,
                self.who(r.pid as ProcId)
            );
            self.attempts.push(Attempt {
                title,
                line: Some(self.line.clone()),
                records: g,
            });
        }
    }

    fn who(&self, p: ProcId) -> String {
        self.names
            .get(&p)
            .cloned()
            .unwrap_or_else(|| format!("pid {p}"))
    }

    fn current_name(&self) -> String {
        let p = self.b.current_process();
        self.names.get(&p).cloned().unwrap_or_default()
    }

    fn map(&self, name: &str) -> R<Mapping> {
        self.maps
            .get(name)
            .copied()
            .ok_or_else(|| format!("no mapping {name}"))
    }

    fn span(&self, name: &str, range: Option<Range>) -> R<(u64, u64)> {
        let m = self.map(name)?;
        let r = range.unwrap_or(Range {
            first: 0,
            last: m.pages - 1,
        });
        Ok((m.addr + r.first * ps(), r.pages()))
    }

    fn snapshot(&mut self) {
        for c in VMSTAT_COUNTERS {
            if let Some(v) = self.b.vmstat(c) {
                self.baseline.insert(c, v);
            }
        }
    }

    fn khugepaged_wake(&mut self) -> R<()> {
        let ms: u64 = self
            .b
            .thp_read("khugepaged/scan_sleep_millisecs")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(10_000);
        self.b.sleep_us(ms.max(1) * 1000);
        self.collect();
        Ok(())
    }

    fn full_scans(&mut self) -> R<u64> {
        self.b
            .thp_read("khugepaged/full_scans")
            .map_err(|e| format!("reading khugepaged/full_scans: {e:?}"))?
            .trim()
            .parse()
            .map_err(|e| format!("khugepaged/full_scans: {e}"))
    }

    fn run_block(&mut self, body: &[Stmt]) -> Result<(), Failure> {
        for s in body {
            self.line = format!("{}:{}: `{}`", s.loc.file.display(), s.loc.line, s.text);
            self.log.push(format!(
                "{}:{}: [{}] {}",
                s.loc.file.display(),
                s.loc.line,
                self.current_name(),
                s.text
            ));
            let r = self.stmt(s);
            self.collect();
            match r {
                Ok(()) => {}
                Err(Fail::Here(why)) => {
                    return Err(Failure {
                        loc: s.loc.clone(),
                        line: s.text.clone(),
                        why,
                    })
                }
                Err(Fail::Inner(f)) => return Err(f),
            }
        }
        Ok(())
    }

    fn nested(&mut self, body: &[Stmt]) -> Result<(), Fail> {
        self.run_block(body).map_err(Fail::Inner)
    }

    fn syscall(what: &str, r: Result<(), Errno>, expect: Option<Errno>) -> R<()> {
        match (r, expect) {
            (Ok(()), None) => Ok(()),
            (Err(e), Some(x)) if e == x => Ok(()),
            (Ok(()), Some(x)) => Err(format!("{what}: expected {}, got success (0)", x.name())),
            (Err(e), None) => Err(format!(
                "{what}: expected success (0), got {} ({}); add `expect {}` if intended",
                e.name(),
                e.strerror(),
                e.name()
            )),
            (Err(e), Some(x)) => Err(format!("{what}: expected {}, got {}", x.name(), e.name())),
        }
    }

    fn stmt(&mut self, s: &Stmt) -> Result<(), Fail> {
        match &s.op {
            Op::In { name, body } => {
                let saved = self.b.current_process();
                self.b.switch_process(self.procs[name]);
                let r = self.nested(body);
                self.b.switch_process(saved);
                r
            }
            Op::On { selectors, body } => {
                if selectors.iter().any(|s| s.matches(self.release)) {
                    self.nested(body)
                } else {
                    Ok(())
                }
            }
            _ => self.simple(s).map_err(Fail::Here),
        }
    }

    /// A line without a body.
    fn simple(&mut self, s: &Stmt) -> R<()> {
        match &s.op {
            Op::Set { path, value } => self
                .b
                .thp_write(path, value)
                .map_err(|e| format!("writing {value} to {path}: {}", e.name())),
            Op::Fork { name } => {
                let p = self
                    .b
                    .fork_process()
                    .map_err(|e| format!("fork: {}", e.name()))?;
                self.procs.insert(name.clone(), p);
                self.names.insert(p, name.clone());
                Ok(())
            }
            Op::Switch { name } => {
                self.b.switch_process(self.procs[name]);
                Ok(())
            }
            Op::In { .. } | Op::On { .. } => unreachable!("handled by stmt"),
            Op::Exit { name } => {
                let p = self.procs.remove(name).expect("checked");
                self.b
                    .exit_process(p)
                    .map_err(|e| format!("exit: {}", e.name()))
            }
            Op::Map { name, kind, pages } => {
                let len = pages * ps();
                let target = match kind {
                    MapKind::Anon => MapTarget::PrivateAnon,
                    MapKind::Memfd | MapKind::TmpfsFile { .. } => {
                        let fd = match kind {
                            MapKind::TmpfsFile { huge } => self.b.create_tmpfs_file(huge),
                            _ => self.b.memfd_create(name),
                        }
                        .map_err(|e| format!("creating the file: {}", e.name()))?;
                        self.b
                            .ftruncate(fd, len)
                            .map_err(|e| format!("ftruncate: {}", e.name()))?;
                        MapTarget::SharedRw(fd)
                    }
                };
                let hint = self.next_hint;
                self.next_hint += len.div_ceil(HPAGE_PMD_SIZE) * HPAGE_PMD_SIZE + HPAGE_PMD_SIZE;
                let addr = self.b.mmap(hint, len, target);
                if let MapTarget::SharedRw(fd) = target {
                    // The mapping keeps the file; the descriptor is not needed any more.
                    let _ = self.b.close(fd);
                }
                let addr = addr.map_err(|e| format!("mmap: {}", e.name()))?;
                self.maps.insert(
                    name.clone(),
                    Mapping {
                        addr,
                        pages: *pages,
                    },
                );
                Ok(())
            }
            Op::Munmap { map } => {
                let m = self.map(map)?;
                self.b
                    .munmap(m.addr, m.pages * ps())
                    .map_err(|e| format!("munmap: {}", e.name()))
            }
            Op::Access { write, map, range } => {
                let (addr, n) = self.span(map, *range)?;
                let first = range.map_or(0, |r| r.first);
                for i in 0..n {
                    let a = addr + i * ps();
                    let r = if *write {
                        self.b.write_u32(a, (first + i) as u32)
                    } else {
                        self.b.read_u32(a).map(|_| ())
                    };
                    r.map_err(|e| {
                        format!(
                            "{} page {}: {}",
                            if *write { "write to" } else { "read of" },
                            first + i,
                            e.name()
                        )
                    })?;
                }
                Ok(())
            }
            Op::Madvise {
                map,
                advice,
                range,
                expect,
            } => {
                let (addr, n) = self.span(map, *range)?;
                let r = self.b.madvise(addr, n * ps(), *advice);
                Self::syscall(advice.name(), r, *expect)
            }
            Op::Mremap {
                from,
                to,
                offset_pages,
            } => {
                let m = self.map(from)?;
                let len = m.pages * ps();
                let dest = self.next_hint + offset_pages * ps();
                self.next_hint += (len + offset_pages * ps()).div_ceil(HPAGE_PMD_SIZE)
                    * HPAGE_PMD_SIZE
                    + HPAGE_PMD_SIZE;
                let addr = self
                    .b
                    .mremap_fixed(m.addr, len, len, dest)
                    .map_err(|e| format!("mremap: {}", e.name()))?;
                self.maps.insert(
                    to.clone(),
                    Mapping {
                        addr,
                        pages: m.pages,
                    },
                );
                Ok(())
            }
            Op::KhugepagedScans(n) => {
                let target = self.full_scans()? + n;
                let mut wakeups = 0;
                while self.full_scans()? < target {
                    if wakeups == MAX_WAKEUPS {
                        return Err(format!(
                            "khugepaged did not complete {n} full scan(s) in {MAX_WAKEUPS} wake-ups: it is stopped (enabled=never) or no MM is registered (no MADV_HUGEPAGE / enabled=always VMA)"
                        ));
                    }
                    self.khugepaged_wake()?;
                    wakeups += 1;
                }
                Ok(())
            }
            Op::KhugepagedUntil { map, max_scans } => {
                let m = self.map(map)?;
                let me = self.b.current_process();
                let first = (m.addr + HPAGE_PMD_SIZE - 1) & !(HPAGE_PMD_SIZE - 1);
                let end = (m.addr + m.pages * ps()) & !(HPAGE_PMD_SIZE - 1);
                let pmds: Vec<u64> = (first..end).step_by(HPAGE_PMD_SIZE as usize).collect();
                if pmds.is_empty() {
                    return Err(format!("{map} covers no whole PMD range"));
                }
                let target = self.full_scans()? + max_scans;
                let since = self.decisions.len();
                let mut wakeups = 0;
                loop {
                    let mut done = true;
                    for &h in &pmds {
                        let collapsed = self.decisions[since..].iter().any(|d| {
                            d.process == me && d.addr == h && d.result == ScanResult::Succeed
                        });
                        if !collapsed
                            && !self
                                .b
                                .page_map(h, HPAGE_PMD_NR)?
                                .iter()
                                .all(|o| o.pmd_mapped)
                        {
                            done = false;
                            break;
                        }
                    }
                    if done {
                        return Ok(());
                    }
                    if self.full_scans()? >= target || wakeups == MAX_WAKEUPS {
                        let last = self.decisions[since..]
                            .iter()
                            .rev()
                            .find(|d| d.process == me && pmds.contains(&d.addr))
                            .map_or("khugepaged never scanned it".to_string(), |d| {
                                format!("last decision: {}", d.text)
                            });
                        return Err(format!(
                            "{map} not collapsed after {max_scans} full scan(s); {last}"
                        ));
                    }
                    self.khugepaged_wake()?;
                    wakeups += 1;
                }
            }
            Op::Mark => {
                self.snapshot();
                Ok(())
            }
            Op::Sleep(ms) => {
                self.b.sleep_us(ms * 1000);
                Ok(())
            }
            Op::Remember { map, page, label } => {
                let (addr, _) = self.span(map, None)?;
                let o = self.b.page_map(addr + page * ps(), 1)?[0];
                let Some(pfn) = page_pfn(&o) else {
                    return Err(format!(
                        "page {page} of {map} is not mapped (nothing to remember)"
                    ));
                };
                self.labels.insert(label.clone(), pfn);
                Ok(())
            }
            Op::Expect(e) => self.expect(e),
        }
    }

    fn expect(&mut self, e: &Expectation) -> R<()> {
        match e {
            Expectation::Smaps { map, field, kb } => {
                let m = self.map(map)?;
                let s = self
                    .b
                    .smaps(m.addr)?
                    .ok_or_else(|| format!("no smaps block starts at {map} ({:#x})", m.addr))?;
                let got = match *field {
                    "Rss" => s.rss,
                    "AnonHugePages" => s.anon_huge_pages,
                    "ShmemPmdMapped" => s.shmem_pmd_mapped,
                    "FilePmdMapped" => s.file_pmd_mapped,
                    _ => s.swap,
                };
                if got == *kb {
                    Ok(())
                } else {
                    Err(format!("expected {field} {kb} kB, found {got} kB"))
                }
            }
            Expectation::Pagemap { map, range, props } => {
                let (addr, n) = self.span(map, *range)?;
                let first = range.map_or(0, |r| r.first);
                let obs = self.b.page_map(addr, n as usize)?;
                for (i, o) in obs.iter().enumerate() {
                    if let Some(p) = props.iter().find(|p| !has(o, **p)) {
                        let bad = obs[i..]
                            .iter()
                            .filter(|o| props.iter().any(|p| !has(o, *p)))
                            .count();
                        return Err(format!(
                            "expected page(s) {} of {map} to be {}, but page {} is {} ({bad} of {n} pages differ)",
                            range.map_or(format!("0..{}", n - 1), |r| r.to_string()),
                            p.name(),
                            first + i as u64,
                            describe(o)
                        ));
                    }
                }
                Ok(())
            }
            Expectation::Kpagecount { map, range, count } => {
                let (addr, n) = self.span(map, *range)?;
                let first = range.map_or(0, |r| r.first);
                for (i, o) in self.b.page_map(addr, n as usize)?.iter().enumerate() {
                    let got = if o.folio.is_some() { o.mapcount } else { 0 };
                    if got != *count {
                        return Err(format!(
                            "expected kpagecount {count}, but page {} has {got} ({})",
                            first + i as u64,
                            describe(o)
                        ));
                    }
                }
                Ok(())
            }
            Expectation::SamePage {
                map,
                page,
                label,
                same,
            } => {
                let (addr, _) = self.span(map, None)?;
                let o = self.b.page_map(addr + page * ps(), 1)?[0];
                let is_same = page_pfn(&o) == Some(self.labels[label]);
                if is_same == *same {
                    Ok(())
                } else if *same {
                    Err(format!(
                        "expected page {page} of {map} to be the page remembered as {label}, found another ({})",
                        describe(&o)
                    ))
                } else {
                    Err(format!(
                        "expected page {page} of {map} to differ from the page remembered as {label}, found the same one"
                    ))
                }
            }
            Expectation::Vmstat { counter, delta } => {
                let now = self
                    .b
                    .vmstat(counter)
                    .ok_or_else(|| format!("this backend does not count {counter}"))?;
                let base = self.baseline.get(counter).copied().unwrap_or(0);
                let got = now.saturating_sub(base);
                if got == *delta {
                    Ok(())
                } else {
                    Err(format!(
                        "expected {counter} +{delta} since the start or the last `mark vmstat`, found +{got}"
                    ))
                }
            }
            Expectation::ScanResult { map, result } => {
                let m = self.map(map)?;
                let me = self.b.current_process();
                let end = m.addr + m.pages * ps();
                let last = self
                    .decisions
                    .iter()
                    .rev()
                    .find(|d| d.process == me && d.addr + HPAGE_PMD_SIZE > m.addr && d.addr < end)
                    .ok_or_else(|| {
                        format!(
                            "expected {result}, but no collapse attempt on {map} in process {} yet",
                            self.current_name()
                        )
                    })?;
                if last.result == *result {
                    Ok(())
                } else {
                    Err(format!(
                        "expected {result}, found {} (last decision: {})",
                        last.result, last.text
                    ))
                }
            }
        }
    }
}

/// The PFN of an observed page: its folio's head PFN plus its index (model and host alike
/// report the head's PFN as the folio identity). A split keeps it.
fn page_pfn(o: &PageObs) -> Option<u64> {
    o.folio.map(|f| f + o.index_in_folio as u64)
}

fn has(o: &PageObs, p: PageProp) -> bool {
    let present = o.state == PageState::Present;
    match p {
        PageProp::Pmd => present && o.pmd_mapped,
        PageProp::Pte => present && !o.pmd_mapped,
        PageProp::Present => present,
        PageProp::None => o.state == PageState::None,
        PageProp::Swap => o.state == PageState::Swap,
        PageProp::Zero => o.state == PageState::Zero,
        PageProp::Exclusive => present && o.exclusive,
        PageProp::Shared => present && !o.exclusive,
    }
}

fn describe(o: &PageObs) -> String {
    match o.state {
        PageState::None => "none".into(),
        PageState::Swap => "swap".into(),
        PageState::Zero => "the zero page".into(),
        PageState::Present => format!(
            "{}, order {} folio, kpagecount {}, {}",
            if o.pmd_mapped { "pmd" } else { "pte" },
            o.order,
            o.mapcount,
            if o.exclusive { "exclusive" } else { "shared" }
        ),
    }
}

/// Runs `sc` on `b` as kernel release `release` (which selects the `on ...:` lines).
pub fn run_on<B: ScenarioExt>(sc: &Scenario, release: &str, b: &mut B) -> Outcome {
    let main = b.current_process();
    let mut r = Runner {
        b,
        release: release_version(release).unwrap_or((0, 0)),
        procs: BTreeMap::from([(MAIN.to_string(), main)]),
        names: BTreeMap::from([(main, MAIN.to_string())]),
        maps: BTreeMap::new(),
        next_hint: FIRST_HINT,
        labels: BTreeMap::new(),
        baseline: BTreeMap::new(),
        decisions: Vec::new(),
        log: Vec::new(),
        attempts: Vec::new(),
        line: String::new(),
    };
    r.b.take_decisions();
    r.snapshot();
    let failure = r.run_block(&sc.body).err();
    Outcome {
        log: r.log,
        failure,
        attempts: r.attempts,
    }
}

/// Runs `sc` on a fresh model machine with the profile of `release`.
pub fn run_model(sc: &Scenario, release: &str) -> Result<Outcome, String> {
    let profile: KernelProfile = super::parse::lookup_profile(release)?;
    let mut b = ModelBackend::new(profile);
    // `--explain` shows the pictures and per-folio answers of every decision.
    b.k.decision_detail = true;
    Ok(run_on(sc, release, &mut b))
}
