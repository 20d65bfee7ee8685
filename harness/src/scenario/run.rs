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

pub use crate::decision::{model_decisions, Decision, ProcId};

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
    /// Creates a regular file on a block-device filesystem (open for writing, never linked
    /// anywhere the next run could meet it). Err: why there is none.
    fn create_disk_file(&mut self) -> Result<crate::backend::Fd, String>;
    /// Collapse decisions since the last call, oldest first. Err when this backend cannot
    /// observe them (the reason).
    fn take_decisions(&mut self) -> Result<Vec<Decision>, String>;
    /// The same, with the model's full decision records of them where the backend has them
    /// (`--explain`); the default has none.
    fn take_decisions_explained(&mut self) -> Result<(Vec<Decision>, Vec<CollapseReport>), String> {
        self.take_decisions().map(|d| (d, Vec::new()))
    }
    /// The model's invariant checker (page tables, mapcounts, page cache and swap agree);
    /// a real kernel has none to run.
    fn check_model_invariants(&mut self) -> Result<(), String> {
        Ok(())
    }
    /// One khugepaged wake-up: a single `khugepaged_do_scan` pass.
    fn khugepaged_wake(&mut self) -> Result<(), String> {
        self.khugepaged_pass()
    }
    /// After a settings write: returns once khugepaged sleeps again (deterministic mode).
    fn after_settings_write(&mut self) -> Result<(), String> {
        self.khugepaged_settle()
    }
}

impl ModelBackend {
    /// A new file with a fresh name in the model's stand-in for a directory of `kind`.
    fn create_file_in(&mut self, kind: DirKind) -> Result<crate::backend::Fd, Errno> {
        let saved = self.dir.replace(kind);
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
        self.create_file_in(DirKind::Tmpfs {
            huge: huge.to_string(),
        })
    }

    fn check_model_invariants(&mut self) -> Result<(), String> {
        self.k.check_invariants().map_err(|v| v.0.join("; "))
    }

    fn create_disk_file(&mut self) -> Result<crate::backend::Fd, String> {
        self.create_file_in(DirKind::Disk {
            read_ahead_kb_path: None,
        })
        .map_err(|e| e.name().to_string())
    }

    fn take_decisions(&mut self) -> Result<Vec<Decision>, String> {
        self.take_decisions_explained().map(|(d, _)| d)
    }

    fn take_decisions_explained(&mut self) -> Result<(Vec<Decision>, Vec<CollapseReport>), String> {
        let with_writable = self.k.profile.collapse_requires_writable_pte;
        let log = self.k.take_collapse_log();
        // The full records only where they carry the pictures (scenarios, --explain).
        let records = if self.k.decision_detail {
            log.clone()
        } else {
            Vec::new()
        };
        Ok((model_decisions(log, with_writable), records))
    }
}

/// Why a scenario failed: the line and what went wrong there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub loc: Loc,
    pub line: String,
    pub why: String,
}

/// The result of one run: the log (every line run, with the decisions it caused), the trace
/// (what each line observed, in a form two backends can be compared in) and the failure, if
/// any.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub log: Vec<String>,
    pub trace: Vec<String>,
    pub failure: Option<Failure>,
    /// Every collapse attempt with its decision records, where the backend gives them.
    pub attempts: Vec<Attempt>,
}

#[derive(Clone, Debug)]
struct Mapping {
    addr: u64,
    pages: u64,
    /// The processes that have it (the creator and every process forked from one).
    owners: Vec<ProcId>,
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
    /// The decision lines traced for the current scenario line.
    traced_decisions: std::collections::BTreeSet<String>,
    /// Whether the current line is a `khugepaged` line.
    khugepaged_line: bool,
    /// Per exceed counter: khugepaged's repeated visits so far (an identical decision on the
    /// same range again within one `khugepaged` line), and their number at the last mark.
    repeat_visits: BTreeMap<&'static str, u64>,
    repeat_visits_at_mark: BTreeMap<&'static str, u64>,
    /// Why this backend cannot report collapse decisions, if it cannot.
    no_decisions: Option<String>,
    log: Vec<String>,
    attempts: Vec<Attempt>,
    /// The line being run (`file:line: text`), for the attempts it causes.
    line: String,
    trace: Vec<String>,
}

pub const PAGES_TO_SCAN: &str = "khugepaged/pages_to_scan";
/// The `pages_to_scan` every wake-up runs with in a scenario: more than any machine's MMs add
/// up to, so that one `khugepaged_do_scan` visits every MM once and stops at the list's head.
pub const WHOLE_ROUND_PAGES: u64 = 1 << 30;

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

/// The /proc/vmstat counter khugepaged adds one to for a scan with this result
/// (`hpage_collapse_scan_pmd`, `hpage_collapse_scan_file`, `__collapse_huge_page_isolate`).
fn exceed_counter(r: ScanResult) -> Option<&'static str> {
    match r {
        ScanResult::ExceedNonePte => Some("thp_scan_exceed_none_pte"),
        ScanResult::ExceedSwapPte => Some("thp_scan_exceed_swap_pte"),
        ScanResult::ExceedSharedPte => Some("thp_scan_exceed_share_pte"),
        _ => None,
    }
}

fn ps() -> u64 {
    model::PAGE_SIZE
}

impl<B: ScenarioExt> Runner<'_, B> {
    fn collect(&mut self) {
        let (ds, records) = match self.b.take_decisions_explained() {
            Ok(x) => x,
            Err(why) => {
                self.no_decisions = Some(why);
                return;
            }
        };
        for d in ds {
            let who = self.who(d.process);
            self.log.push(format!("    # {} ({who})", d.text));
            // Only decisions on the scenario's own mappings are compared: a host scans every
            // MM on the machine.
            // A range scanned again unchanged gives the same decision: how often khugepaged
            // passes it in one line depends on where its cursor stood among every MM of the
            // machine, so a repeat is not traced.
            if let (Some(rec), Some(place)) = (&d.record, self.place(&d)) {
                let line = format!("  decision [{who}] {place}: {} {rec}", d.result);
                if self.traced_decisions.insert(line.clone()) {
                    self.trace.push(line);
                } else if self.khugepaged_line {
                    if let Some(c) = exceed_counter(d.result) {
                        *self.repeat_visits.entry(c).or_default() += 1;
                    }
                }
            }
            self.decisions.push(d);
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

    /// Where a decision lies, by mapping name and PMD index (`A pmd 0`), when it is on a
    /// mapping the scenario made in that process.
    fn place(&self, d: &Decision) -> Option<String> {
        let addr = d.addr?;
        self.maps
            .iter()
            .filter(|(_, m)| m.owners.contains(&d.process))
            .find(|(_, m)| addr + HPAGE_PMD_SIZE > m.addr && addr < m.addr + m.pages * ps())
            .map(|(n, m)| {
                let first = m.addr & !(HPAGE_PMD_SIZE - 1);
                format!("{n} pmd {}", (addr - first) / HPAGE_PMD_SIZE)
            })
    }

    fn current_name(&self) -> String {
        let p = self.b.current_process();
        self.names.get(&p).cloned().unwrap_or_default()
    }

    fn map(&self, name: &str) -> R<Mapping> {
        self.maps
            .get(name)
            .cloned()
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

    /// khugepaged's counters, read around every line that can collapse (compared in traces:
    /// they count the decisions khugepaged and MADV_COLLAPSE took).
    fn collapse_counters(&mut self) -> Vec<(&'static str, u64)> {
        const COUNTERS: [&str; 5] = [
            "thp_collapse_alloc",
            "thp_scan_exceed_none_pte",
            "thp_scan_exceed_swap_pte",
            "thp_scan_exceed_share_pte",
            "pages_collapsed",
        ];
        COUNTERS
            .iter()
            .map(|c| (*c, self.b.vmstat(c).unwrap_or(0)))
            .collect()
    }

    fn snapshot(&mut self) {
        self.repeat_visits_at_mark = self.repeat_visits.clone();
        for c in VMSTAT_COUNTERS {
            if let Some(v) = self.b.vmstat(c) {
                self.baseline.insert(c, v);
            }
        }
    }

    fn khugepaged_wake(&mut self) -> R<()> {
        self.b.khugepaged_wake()?;
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
            if !matches!(s.op, Op::In { .. } | Op::On { .. }) {
                let file = s.loc.file.file_name().unwrap_or_default().to_string_lossy();
                self.trace.push(format!(
                    "{file}:{} [{}] {}",
                    s.loc.line,
                    self.current_name(),
                    s.text
                ));
            }
            let collapses = matches!(
                s.op,
                Op::KhugepagedScans(_)
                    | Op::KhugepagedUntil { .. }
                    | Op::Madvise {
                        advice: crate::backend::Madv::Collapse,
                        ..
                    }
            );
            let before = if collapses {
                self.collapse_counters()
            } else {
                Vec::new()
            };
            let by_khugepaged = matches!(s.op, Op::KhugepagedScans(_) | Op::KhugepagedUntil { .. });
            self.traced_decisions.clear();
            self.khugepaged_line = by_khugepaged;
            let r = self.stmt(s);
            self.collect();
            if collapses {
                let deltas: Vec<String> = self
                    .collapse_counters()
                    .into_iter()
                    .zip(before)
                    .filter(|((_, now), (_, then))| now != then)
                    .map(|((c, now), (_, then))| {
                        // A scan count of khugepaged's depends on how often it passed the
                        // range (see above); a collapse happens once.
                        if by_khugepaged && c.starts_with("thp_scan_exceed") {
                            format!("{c} counted")
                        } else {
                            format!("{c} +{}", now.saturating_sub(then))
                        }
                    })
                    .collect();
                if !deltas.is_empty() {
                    self.trace.push(format!("  vmstat {}", deltas.join(" ")));
                }
            }
            if let Err(Fail::Here(why)) = &r {
                self.trace.push(format!("  FAIL: {why}"));
            }
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
            _ => {
                self.simple(s).map_err(Fail::Here)?;
                self.b.check_model_invariants().map_err(|v| {
                    Fail::Here(format!("the model broke its invariants on this line: {v}"))
                })
            }
        }
    }

    /// A line without a body.
    fn simple(&mut self, s: &Stmt) -> R<()> {
        match &s.op {
            Op::Set { path, value } => {
                self.b
                    .thp_write(path, value)
                    .map_err(|e| format!("writing {value} to {path}: {}", e.name()))?;
                // A write of any khugepaged setting may wake it or restart it.
                self.b.after_settings_write()
            }
            Op::Fork { name } => {
                let p = self
                    .b
                    .fork_process()
                    .map_err(|e| format!("fork: {}", e.name()))?;
                let parent = self.b.current_process();
                for m in self.maps.values_mut() {
                    if m.owners.contains(&parent) {
                        m.owners.push(p);
                    }
                }
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
            Op::Map {
                name,
                kind,
                pages,
                size,
            } => {
                let len = pages * ps();
                let target = match kind {
                    MapKind::Anon => MapTarget::PrivateAnon,
                    MapKind::Memfd | MapKind::TmpfsFile { .. } | MapKind::DiskFile => {
                        let errno = |e: Errno| format!("creating the file: {}", e.name());
                        let fd = match kind {
                            MapKind::TmpfsFile { huge } => {
                                self.b.create_tmpfs_file(huge).map_err(errno)?
                            }
                            MapKind::DiskFile => self.b.create_disk_file().map_err(|e| {
                                format!("creating a file on a block-device filesystem: {e}")
                            })?,
                            _ => self.b.memfd_create(name).map_err(errno)?,
                        };
                        self.b
                            .ftruncate(fd, size.map_or(len, |s| s * ps()))
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
                let owners = vec![self.b.current_process()];
                self.maps.insert(
                    name.clone(),
                    Mapping {
                        addr,
                        pages: *pages,
                        owners,
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
                        owners: vec![self.b.current_process()],
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
                            d.process == me && d.addr == Some(h) && d.result == ScanResult::Succeed
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
                            .find(|d| d.process == me && d.addr.is_some_and(|a| pmds.contains(&a)))
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
                self.trace.push(format!("  = {field} {got} kB"));
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
                self.trace.push(format!("  = {}", summary(&obs, first)));
                for (i, o) in obs.iter().enumerate() {
                    if let Some(p) = props.iter().find(|p| !has(o, **p)) {
                        let bad = obs[i..]
                            .iter()
                            .filter(|o| props.iter().any(|p| !has(o, *p)))
                            .count();
                        return Err(format!(
                            "expected page(s) {} of {map} to be {}{}, but page {} is {} ({bad} of {n} pages differ)",
                            range.map_or(format!("0..{}", n - 1), |r| r.to_string()),
                            if matches!(p, PageProp::Folio(_)) { "in a " } else { "" },
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
                let obs = self.b.page_map(addr, n as usize)?;
                self.trace
                    .push(format!("  = kpagecount {}", counts(&obs, first)));
                for (i, o) in obs.iter().enumerate() {
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
                self.trace.push(format!(
                    "  = {}",
                    if is_same {
                        "the same page"
                    } else {
                        "another page"
                    }
                ));
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
                // A range refused again unchanged within one `khugepaged` line counts once,
                // as it is traced once (see `collect`).
                let repeats = self.repeat_visits.get(counter).copied().unwrap_or(0)
                    - self
                        .repeat_visits_at_mark
                        .get(counter)
                        .copied()
                        .unwrap_or(0);
                let got = now.saturating_sub(base).saturating_sub(repeats);
                self.trace.push(format!("  = {counter} +{got}"));
                if got == *delta {
                    Ok(())
                } else {
                    Err(format!(
                        "expected {counter} +{delta} since the start or the last `mark vmstat`, found +{got}"
                    ))
                }
            }
            Expectation::ScanResult { map, result } => {
                if let Some(why) = &self.no_decisions {
                    return Err(format!(
                        "this backend cannot observe collapse decisions: {why}"
                    ));
                }
                let m = self.map(map)?;
                let me = self.b.current_process();
                let end = m.addr + m.pages * ps();
                // Only what the kernel traces: both backends see the same decisions then (the
                // model's collapse_pte_mapped_thp has no tracepoint to compare with).
                let last = self
                    .decisions
                    .iter()
                    .rev()
                    .filter(|d| d.process == me && d.record.is_some())
                    .find(|d| {
                        d.addr
                            .is_some_and(|a| a + HPAGE_PMD_SIZE > m.addr && a < end)
                    })
                    .ok_or_else(|| {
                        let unplaced: Vec<&str> = self
                            .decisions
                            .iter()
                            .filter(|d| d.process == me && d.addr.is_none())
                            .map(|d| d.text.as_str())
                            .collect();
                        format!(
                            "expected {result}, but no collapse attempt on {map} in process {} yet{}",
                            self.current_name(),
                            if unplaced.is_empty() {
                                String::new()
                            } else {
                                format!(
                                    " ({} decision(s) in this process could not be placed on a mapping: {})",
                                    unplaced.len(),
                                    unplaced.join("; ")
                                )
                            }
                        )
                    })?;
                self.trace.push(format!("  = {}", last.result));
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

/// The page states of a range, run-length encoded (`0..255 pte present exclusive o9 |
/// 256..511 none`): what a pagemap expectation saw, without addresses or page frames, so two
/// backends compare.
fn summary(obs: &[PageObs], first: u64) -> String {
    let word = |o: &PageObs| match o.state {
        PageState::None => "none".to_string(),
        PageState::Swap => "swap".to_string(),
        PageState::Zero => "zero".to_string(),
        PageState::Present => format!(
            "{} o{} {}",
            if o.pmd_mapped { "pmd" } else { "pte" },
            o.order,
            if o.exclusive { "exclusive" } else { "shared" }
        ),
    };
    runs(obs.iter().map(word), first)
}

/// kpagecount of each page of a range, run-length encoded.
fn counts(obs: &[PageObs], first: u64) -> String {
    runs(
        obs.iter()
            .map(|o| if o.folio.is_some() { o.mapcount } else { 0 }.to_string()),
        first,
    )
}

fn runs(words: impl Iterator<Item = String>, first: u64) -> String {
    let mut out: Vec<(u64, u64, String)> = Vec::new();
    for (i, w) in words.enumerate() {
        let p = first + i as u64;
        match out.last_mut() {
            Some((_, last, lw)) if *lw == w => *last = p,
            _ => out.push((p, p, w)),
        }
    }
    out.iter()
        .map(|(a, b, w)| {
            if a == b {
                format!("{a} {w}")
            } else {
                format!("{a}..{b} {w}")
            }
        })
        .collect::<Vec<_>>()
        .join(" | ")
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
        PageProp::Folio(order) => present && o.folio.is_some() && o.order == order,
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
        no_decisions: None,
        traced_decisions: Default::default(),
        khugepaged_line: false,
        repeat_visits: BTreeMap::new(),
        repeat_visits_at_mark: BTreeMap::new(),
        log: Vec::new(),
        attempts: Vec::new(),
        line: String::new(),
        trace: Vec::new(),
    };
    // Where one khugepaged pass stops depends on every MM of the machine (a pass ends when
    // `pages_to_scan` units are spent), so on a real machine a `khugepaged scans 1` that began
    // with khugepaged's cursor in another process's MM could pass the scenario's first MM by,
    // or visit it twice. Both backends therefore scan whole rounds: every wake-up visits each
    // MM once, in list order; one wake-up first brings the cursor to the list's head.
    let start =
        r.b.thp_write(PAGES_TO_SCAN, &WHOLE_ROUND_PAGES.to_string())
            .map_err(|e| {
                format!(
                    "writing {WHOLE_ROUND_PAGES} to {PAGES_TO_SCAN}: {}",
                    e.name()
                )
            })
            .and_then(|()| r.b.after_settings_write())
            .and_then(|()| r.b.khugepaged_wake());
    if let Err(why) = start {
        return Outcome {
            log: Vec::new(),
            trace: Vec::new(),
            failure: Some(Failure {
                loc: Loc {
                    file: std::sync::Arc::new(sc.path.clone()),
                    line: 1,
                    col: 1,
                },
                line: String::new(),
                why: format!("preparing khugepaged's whole-round passes: {why}"),
            }),
            attempts: Vec::new(),
        };
    }
    if let Err(why) = r.b.take_decisions() {
        r.no_decisions = Some(why);
    }
    r.snapshot();
    let failure = r.run_block(&sc.body).err();
    Outcome {
        log: r.log,
        trace: r.trace,
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
