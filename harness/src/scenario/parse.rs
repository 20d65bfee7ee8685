//! The scenario language: tokenizer, parser and the static check that validates a whole file
//! (names, ranges, processes, settings) before anything runs. The grammar is documented in
//! fixtures/scenarios/README.md.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use model::scan_result::ScanResult;
use model::{Errno, KernelProfile, HPAGE_PMD_NR};
use once_cell::sync::Lazy;
use regex::Regex;

use crate::backend::Madv;

/// Largest mapping a scenario may create (64 PMDs): keeps a typo from allocating gigabytes.
pub const MAX_PAGES: u64 = 64 * HPAGE_PMD_NR as u64;
/// Most full scans one `khugepaged` line may ask for.
pub const MAX_SCANS: u64 = 100;
/// The longest `sleep` line: an hour of virtual time.
pub const MAX_SLEEP_MS: u64 = 3_600_000;
/// Deepest include nesting (a cycle is reported before that).
const MAX_INCLUDE_DEPTH: usize = 16;

/// Where a token is: file, 1-based line and column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loc {
    pub file: Arc<PathBuf>,
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.col)
    }
}

/// A parse or validation error: where, what was expected, what was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub loc: Loc,
    pub expected: String,
    pub found: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: expected {}, found {}",
            self.loc, self.expected, self.found
        )
    }
}

fn err(loc: &Loc, expected: impl Into<String>, found: impl Into<String>) -> ParseError {
    ParseError {
        loc: loc.clone(),
        expected: expected.into(),
        found: found.into(),
    }
}

/// The one place a release named in a scenario becomes a model profile, so per-release
/// profiles (when `KernelProfile::for_release` grows them) apply here unchanged.
pub fn lookup_profile(release: &str) -> Result<KernelProfile, String> {
    KernelProfile::for_release(release).map_err(|e| e.to_string())
}

/// (major, minor) of a release string such as `6.12` or `6.12.117-amd64`.
pub fn release_version(s: &str) -> Option<(u32, u32)> {
    static RE: Lazy<Regex> =
        Lazy::new(|| Regex::new(r"^(\d{1,3})\.(\d{1,3})(?:[.\-+].*)?$").unwrap());
    let c = RE.captures(s)?;
    Some((c[1].parse().ok()?, c[2].parse().ok()?))
}

/// Inclusive page range inside a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub first: u64,
    pub last: u64,
}

impl Range {
    pub fn pages(self) -> u64 {
        self.last - self.first + 1
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}..{}", self.first, self.last)
        }
    }
}

/// What a mapping maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapKind {
    Anon,
    Memfd,
    /// A file on a tmpfs mounted with `huge=`.
    TmpfsFile {
        huge: String,
    },
    /// A regular file on a block-device filesystem (the host's /var/tmp; ext4 in the qemu
    /// guests).
    DiskFile,
}

/// A selector of `on ...:`: which releases a line applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selector {
    Exact((u32, u32)),
    From((u32, u32)),
    Between((u32, u32), (u32, u32)),
}

impl Selector {
    pub fn matches(self, v: (u32, u32)) -> bool {
        match self {
            Selector::Exact(a) => v == a,
            Selector::From(a) => v >= a,
            Selector::Between(a, b) => a <= v && v <= b,
        }
    }
}

/// A property every page of a `expect pagemap` range must have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageProp {
    /// Mapped by a PMD.
    Pmd,
    /// Present and mapped by a PTE.
    Pte,
    /// Present (either way).
    Present,
    None,
    Swap,
    Zero,
    /// PM_MMAP_EXCLUSIVE set.
    Exclusive,
    /// PM_MMAP_EXCLUSIVE clear on a present page.
    Shared,
    /// Present, in a folio of this order (`4kB` ... `2048kB`: the folio's size).
    Folio(u8),
}

impl PageProp {
    const WORDS: [(&'static str, PageProp); 18] = [
        ("pmd", PageProp::Pmd),
        ("pte", PageProp::Pte),
        ("present", PageProp::Present),
        ("none", PageProp::None),
        ("swap", PageProp::Swap),
        ("zero", PageProp::Zero),
        ("exclusive", PageProp::Exclusive),
        ("shared", PageProp::Shared),
        ("4kB", PageProp::Folio(0)),
        ("8kB", PageProp::Folio(1)),
        ("16kB", PageProp::Folio(2)),
        ("32kB", PageProp::Folio(3)),
        ("64kB", PageProp::Folio(4)),
        ("128kB", PageProp::Folio(5)),
        ("256kB", PageProp::Folio(6)),
        ("512kB", PageProp::Folio(7)),
        ("1024kB", PageProp::Folio(8)),
        ("2048kB", PageProp::Folio(9)),
    ];

    pub fn name(self) -> &'static str {
        Self::WORDS.iter().find(|(_, p)| *p == self).unwrap().0
    }
}

/// smaps fields a scenario can check (kB).
pub const SMAPS_FIELDS: [&str; 5] = [
    "Rss",
    "AnonHugePages",
    "ShmemPmdMapped",
    "FilePmdMapped",
    "Swap",
];

/// /proc/vmstat counters the model counts (others, e.g. thp_deferred_split_page, are not
/// modelled yet and are refused rather than read as a silent 0).
pub const VMSTAT_COUNTERS: [&str; 13] = [
    "thp_fault_alloc",
    "thp_file_alloc",
    "thp_split_pmd",
    "thp_split_page",
    "thp_deferred_split_page",
    "thp_swpout",
    "pswpin",
    "pswpout",
    "thp_collapse_alloc",
    "thp_scan_exceed_none_pte",
    "thp_scan_exceed_swap_pte",
    "thp_scan_exceed_share_pte",
    "pages_collapsed",
];

/// What one scenario line checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expectation {
    Smaps {
        map: String,
        field: &'static str,
        kb: u64,
    },
    Pagemap {
        map: String,
        range: Option<Range>,
        props: Vec<PageProp>,
    },
    Kpagecount {
        map: String,
        range: Option<Range>,
        count: i32,
    },
    SamePage {
        map: String,
        page: u64,
        label: String,
        same: bool,
    },
    Vmstat {
        counter: &'static str,
        delta: u64,
    },
    ScanResult {
        map: String,
        result: ScanResult,
    },
}

/// One operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Set {
        path: String,
        value: String,
    },
    Fork {
        name: String,
    },
    Switch {
        name: String,
    },
    In {
        name: String,
        body: Vec<Stmt>,
    },
    On {
        selectors: Vec<Selector>,
        body: Vec<Stmt>,
    },
    Exit {
        name: String,
    },
    Map {
        name: String,
        kind: MapKind,
        pages: u64,
        /// A file's size in pages where `size` sets it apart from the mapping's (a mapping
        /// that runs past the end of its file); None: the file is as long as the mapping.
        size: Option<u64>,
    },
    Munmap {
        map: String,
    },
    Access {
        write: bool,
        map: String,
        range: Option<Range>,
    },
    Madvise {
        map: String,
        advice: Madv,
        range: Option<Range>,
        expect: Option<Errno>,
    },
    Mremap {
        from: String,
        to: String,
        offset_pages: u64,
    },
    KhugepagedScans(u64),
    /// The current process sleeps this many milliseconds (khugepaged wakes meanwhile).
    Sleep(u64),
    KhugepagedUntil {
        map: String,
        max_scans: u64,
    },
    Mark,
    Remember {
        map: String,
        page: u64,
        label: String,
    },
    Expect(Expectation),
}

/// A parsed line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stmt {
    pub loc: Loc,
    /// The source line, trimmed (for logs and failures).
    pub text: String,
    pub op: Op,
}

/// A parsed and validated scenario file.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub path: PathBuf,
    /// The releases of the `profile` line as written (without one: the first release of
    /// every distinct behaviour, `KernelProfile::eras`).
    pub releases: Vec<String>,
    pub body: Vec<Stmt>,
}

struct Line {
    loc: Loc,
    indent: usize,
    text: String,
    toks: Vec<(String, usize)>,
}

fn tokenize(text: &str, file: &Arc<PathBuf>) -> Vec<Line> {
    static TOKEN: Lazy<Regex> = Lazy::new(|| Regex::new(r"\S+").unwrap());
    let mut lines = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let code = raw.split('#').next().unwrap_or("");
        let toks: Vec<(String, usize)> = TOKEN
            .find_iter(code)
            .map(|m| {
                (
                    m.as_str().to_string(),
                    code[..m.start()].chars().count() + 1,
                )
            })
            .collect();
        if toks.is_empty() {
            continue;
        }
        lines.push(Line {
            loc: Loc {
                file: file.clone(),
                line: i + 1,
                col: toks[0].1,
            },
            indent: toks[0].1 - 1,
            text: code.trim().to_string(),
            toks,
        });
    }
    lines
}

/// A cursor over one line's tokens.
struct Toks<'a> {
    line: &'a Line,
    pos: usize,
}

impl<'a> Toks<'a> {
    fn loc(&self) -> Loc {
        let col = match self.line.toks.get(self.pos) {
            Some((_, c)) => *c,
            None => self
                .line
                .toks
                .last()
                .map(|(t, c)| c + t.chars().count())
                .unwrap_or(1),
        };
        Loc {
            col,
            ..self.line.loc.clone()
        }
    }

    fn peek(&self) -> Option<&'a str> {
        self.line.toks.get(self.pos).map(|(t, _)| t.as_str())
    }

    fn found(&self) -> String {
        match self.peek() {
            Some(t) => format!("`{t}`"),
            None => "end of line".into(),
        }
    }

    fn fail<T>(&self, expected: impl Into<String>) -> Result<T, ParseError> {
        Err(err(&self.loc(), expected, self.found()))
    }

    fn next(&mut self, expected: &str) -> Result<&'a str, ParseError> {
        match self.peek() {
            Some(t) => {
                self.pos += 1;
                Ok(t)
            }
            None => self.fail(expected),
        }
    }

    fn word(&mut self, w: &str) -> Result<(), ParseError> {
        if self.peek() == Some(w) {
            self.pos += 1;
            Ok(())
        } else {
            self.fail(format!("`{w}`"))
        }
    }

    fn eat(&mut self, w: &str) -> bool {
        if self.peek() == Some(w) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn choice<T: Copy>(&mut self, what: &str, options: &[(&str, T)]) -> Result<T, ParseError> {
        match self
            .peek()
            .and_then(|t| options.iter().find(|(w, _)| *w == t))
        {
            Some((_, v)) => {
                self.pos += 1;
                Ok(*v)
            }
            None => {
                let names: Vec<&str> = options.iter().map(|(w, _)| *w).collect();
                self.fail(format!("{what} ({})", names.join(", ")))
            }
        }
    }

    fn name(&mut self, what: &str) -> Result<String, ParseError> {
        static NAME: Lazy<Regex> = Lazy::new(|| Regex::new(r"^[A-Za-z_][A-Za-z0-9_\-]*$").unwrap());
        match self.peek() {
            Some(t) if NAME.is_match(t) => {
                self.pos += 1;
                Ok(t.to_string())
            }
            _ => self.fail(format!("{what} (a letter, then letters, digits, _ or -)")),
        }
    }

    fn number(&mut self, what: &str) -> Result<u64, ParseError> {
        static NUM: Lazy<Regex> =
            Lazy::new(|| Regex::new(r"^(?:0x[0-9a-fA-F]{1,15}|[0-9]{1,18})$").unwrap());
        match self.peek() {
            Some(t) if NUM.is_match(t) => {
                self.pos += 1;
                Ok(match t.strip_prefix("0x") {
                    Some(h) => u64::from_str_radix(h, 16).unwrap_or(u64::MAX),
                    None => t.parse().unwrap_or(u64::MAX),
                })
            }
            _ => self.fail(what),
        }
    }

    /// `N` or `A..B` (inclusive), if the next token is one.
    fn range_opt(&mut self) -> Result<Option<Range>, ParseError> {
        static RANGE: Lazy<Regex> =
            Lazy::new(|| Regex::new(r"^([0-9]{1,9})(?:\.\.([0-9]{1,9}))?$").unwrap());
        let Some(t) = self.peek() else {
            return Ok(None);
        };
        let Some(c) = RANGE.captures(t) else {
            return Ok(None);
        };
        let first: u64 = c[1].parse().unwrap_or(u64::MAX);
        let last: u64 = c.get(2).map_or(first, |m| m.as_str().parse().unwrap_or(0));
        if last < first {
            return self.fail("a page range FIRST..LAST with FIRST <= LAST");
        }
        self.pos += 1;
        Ok(Some(Range { first, last }))
    }

    fn range(&mut self) -> Result<Range, ParseError> {
        match self.range_opt()? {
            Some(r) => Ok(r),
            None => self.fail("a page number or range FIRST..LAST"),
        }
    }

    fn end(&self) -> Result<(), ParseError> {
        match self.peek() {
            None => Ok(()),
            Some(_) => self.fail("end of line"),
        }
    }
}

fn errno_by_name(s: &str) -> Option<Errno> {
    (1..=200)
        .filter_map(Errno::from_number)
        .find(|e| e.name() == s)
}

fn selector(t: &str) -> Option<Selector> {
    if let Some(a) = t.strip_suffix('+') {
        return release_version(a).map(Selector::From);
    }
    if let Some((a, b)) = t.split_once('-') {
        if let (Some(a), Some(b)) = (release_version(a), release_version(b)) {
            return Some(Selector::Between(a, b));
        }
    }
    release_version(t).map(Selector::Exact)
}

const ADVICES: [(&str, Madv); 8] = [
    ("hugepage", Madv::HugePage),
    ("nohugepage", Madv::NoHugePage),
    ("dontneed", Madv::DontNeed),
    ("cold", Madv::Cold),
    ("pageout", Madv::PageOut),
    ("populate_read", Madv::PopulateRead),
    ("populate_write", Madv::PopulateWrite),
    ("collapse", Madv::Collapse),
];

/// Parses `expect 0|ERRNO` at the end of a system-call line (None: success expected).
fn expect_errno(t: &mut Toks) -> Result<Option<Errno>, ParseError> {
    if !t.eat("expect") {
        return Ok(None);
    }
    let tok = t.next("0 or an errno name (EINVAL, EAGAIN, EBUSY, ENOMEM, ...)")?;
    if tok == "0" {
        return Ok(None);
    }
    match errno_by_name(tok) {
        Some(e) => Ok(Some(e)),
        None => {
            t.pos -= 1;
            t.fail("0 or an errno name (EINVAL, EAGAIN, EBUSY, ENOMEM, ...)")
        }
    }
}

fn parse_expect(t: &mut Toks) -> Result<Expectation, ParseError> {
    let what = t.choice(
        "what to check",
        &[
            ("smaps", 0),
            ("pagemap", 1),
            ("kpagecount", 2),
            ("same-page", 3),
            ("other-page", 4),
            ("vmstat", 5),
            ("scan-result", 6),
        ],
    )?;
    let e = match what {
        0 => {
            let map = t.name("a mapping name")?;
            let opts: Vec<(&str, &'static str)> = SMAPS_FIELDS.iter().map(|f| (*f, *f)).collect();
            let field = t.choice("an smaps field", &opts)?;
            let kb = t.number("a size in kB")?;
            t.eat("kB");
            Expectation::Smaps { map, field, kb }
        }
        1 => {
            let map = t.name("a mapping name")?;
            let range = t.range_opt()?;
            let mut props = vec![t.choice("a page state", &PageProp::WORDS)?];
            while t.peek().is_some() {
                props.push(t.choice("a page state", &PageProp::WORDS)?);
            }
            Expectation::Pagemap { map, range, props }
        }
        2 => {
            let map = t.name("a mapping name")?;
            let range = Some(t.range()?);
            let count = t.number("a mapcount")?.min(i32::MAX as u64) as i32;
            Expectation::Kpagecount { map, range, count }
        }
        3 | 4 => {
            let map = t.name("a mapping name")?;
            let page = t.range()?;
            if page.pages() != 1 {
                return Err(err(&t.loc(), "one page number", format!("`{page}`")));
            }
            t.word("as")?;
            let label = t.name("the label of a `remember` line")?;
            Expectation::SamePage {
                map,
                page: page.first,
                label,
                same: what == 3,
            }
        }
        5 => {
            let opts: Vec<(&str, &'static str)> =
                VMSTAT_COUNTERS.iter().map(|f| (*f, *f)).collect();
            let counter = t.choice("a vmstat counter the model counts", &opts)?;
            let d = t.next("a change such as +1 or +0")?;
            let delta = d
                .strip_prefix('+')
                .and_then(|n| n.parse::<u64>().ok())
                .ok_or_else(|| {
                    t.pos -= 1;
                    err(&t.loc(), "a change such as +1 or +0", format!("`{d}`"))
                })?;
            Expectation::Vmstat { counter, delta }
        }
        _ => {
            let map = t.name("a mapping name")?;
            let tok = t.next("a scan result such as SCAN_SUCCEED")?;
            let result = ScanResult::parse(tok).ok_or_else(|| {
                t.pos -= 1;
                err(
                    &t.loc(),
                    "a scan result such as SCAN_SUCCEED or SCAN_EXCEED_SHARED_PTE",
                    format!("`{tok}`"),
                )
            })?;
            Expectation::ScanResult { map, result }
        }
    };
    t.end()?;
    Ok(e)
}

fn parse_sizes(t: &mut Toks) -> Result<u64, ParseError> {
    let n = t.number("a size")?;
    let unit = t.choice(
        "a unit",
        &[
            ("pages", 1),
            ("page", 1),
            ("pmd", HPAGE_PMD_NR as u64),
            ("pmds", HPAGE_PMD_NR as u64),
        ],
    )?;
    let pages = n.saturating_mul(unit);
    if pages == 0 || pages > MAX_PAGES {
        t.pos -= 2;
        return t.fail(format!("a size of 1 to {MAX_PAGES} pages"));
    }
    Ok(pages)
}

/// The optional `size SIZE` of a file mapping: the file's own length, shorter or longer than
/// the mapping (ftruncate'd to it), so that a mapping can run past the end of its file.
fn parse_file_size(t: &mut Toks) -> Result<Option<u64>, ParseError> {
    if t.eat("size") {
        parse_sizes(t).map(Some)
    } else {
        Ok(None)
    }
}

/// Parses the operation of one line (header lines `in`/`on` get their body from the caller).
fn parse_op(t: &mut Toks) -> Result<Op, ParseError> {
    let kw = t.next("an operation")?;
    let op = match kw {
        "set" => {
            let path = t.next("a THP sysfs file (e.g. enabled, khugepaged/max_ptes_shared)")?;
            let value = t.next("a value")?.to_string();
            let mut scratch = model::Kernel::default();
            if path == super::run::PAGES_TO_SCAN {
                t.pos -= 2;
                return t.fail(format!(
                    "a setting other than {path}: in a scenario every khugepaged wake-up scans \
                     whole rounds (each MM once), so that `khugepaged scans N` means the same \
                     on the model and on a machine with other processes' MMs"
                ));
            }
            if scratch.sysfs_read(path).is_err() {
                t.pos -= 2;
                return t.fail("a file below /sys/kernel/mm/transparent_hugepage");
            }
            if scratch.sysfs_write(path, &value).is_err() {
                t.pos -= 1;
                return t.fail(format!("a value {path} accepts"));
            }
            Op::Set {
                path: path.to_string(),
                value,
            }
        }
        "fork" => Op::Fork {
            name: t.name("a name for the child process")?,
        },
        "process" => Op::Switch {
            name: t.name("a process name")?,
        },
        "exit" => Op::Exit {
            name: t.name("a process name")?,
        },
        "mmap" => {
            t.word("anon")?;
            let name = t.name("a mapping name")?;
            Op::Map {
                name,
                kind: MapKind::Anon,
                pages: parse_sizes(t)?,
                size: None,
            }
        }
        "memfd" => {
            let name = t.name("a mapping name")?;
            let pages = parse_sizes(t)?;
            Op::Map {
                name,
                kind: MapKind::Memfd,
                pages,
                size: parse_file_size(t)?,
            }
        }
        "file" => {
            let name = t.name("a mapping name")?;
            let pages = parse_sizes(t)?;
            t.word("on")?;
            let kind = match t.choice("a filesystem", &[("tmpfs", false), ("disk", true)])? {
                true => MapKind::DiskFile,
                false if t.peek().is_some_and(|w| w.starts_with("huge=")) => {
                    let h = t.choice(
                        "a tmpfs huge= option",
                        &[
                            ("huge=never", "never"),
                            ("huge=always", "always"),
                            ("huge=within_size", "within_size"),
                            ("huge=advise", "advise"),
                        ],
                    )?;
                    MapKind::TmpfsFile {
                        huge: h.to_string(),
                    }
                }
                false => MapKind::TmpfsFile {
                    huge: "advise".to_string(),
                },
            };
            Op::Map {
                name,
                kind,
                pages,
                size: parse_file_size(t)?,
            }
        }
        "munmap" => Op::Munmap {
            map: t.name("a mapping name")?,
        },
        "read" | "write" => {
            let map = t.name("a mapping name")?;
            Op::Access {
                write: kw == "write",
                map,
                range: t.range_opt()?,
            }
        }
        "madvise" | "collapse" => {
            let map = t.name("a mapping name")?;
            let advice = if kw == "collapse" {
                Madv::Collapse
            } else {
                t.choice("an advice", &ADVICES)?
            };
            let range = t.range_opt()?;
            let expect = expect_errno(t)?;
            Op::Madvise {
                map,
                advice,
                range,
                expect,
            }
        }
        "mremap" => {
            let from = t.name("a mapping name")?;
            t.word("to")?;
            let to = t.name("a name for the moved mapping")?;
            let offset_pages = if t.eat("offset") {
                let n = t.number("an offset in pages")?;
                t.eat("pages");
                if n >= HPAGE_PMD_NR as u64 {
                    return t.fail("an offset below 512 pages");
                }
                n
            } else {
                0
            };
            Op::Mremap {
                from,
                to,
                offset_pages,
            }
        }
        "khugepaged" => match t.choice("`scans` or `until`", &[("scans", 0), ("until", 1)])? {
            0 => {
                let n = t.number("a number of full scans")?;
                if n == 0 || n > MAX_SCANS {
                    t.pos -= 1;
                    return t.fail(format!("1 to {MAX_SCANS} full scans"));
                }
                Op::KhugepagedScans(n)
            }
            _ => {
                t.word("collapsed")?;
                let map = t.name("a mapping name")?;
                let max_scans = if t.eat("within") {
                    let n = t.number("a number of full scans")?;
                    t.eat("scans");
                    if n == 0 || n > MAX_SCANS {
                        return t.fail(format!("1 to {MAX_SCANS} full scans"));
                    }
                    n
                } else {
                    8
                };
                Op::KhugepagedUntil { map, max_scans }
            }
        },
        "mark" => {
            t.word("vmstat")?;
            Op::Mark
        }
        "sleep" => {
            let ms = t.number("milliseconds")?;
            if ms == 0 || ms > MAX_SLEEP_MS {
                t.pos -= 1;
                return t.fail(format!("1 to {MAX_SLEEP_MS} milliseconds"));
            }
            t.word("ms")?;
            Op::Sleep(ms)
        }
        "remember" => {
            let map = t.name("a mapping name")?;
            let page = t.range()?;
            if page.pages() != 1 {
                return t.fail("one page number");
            }
            t.word("as")?;
            Op::Remember {
                map,
                page: page.first,
                label: t.name("a label")?,
            }
        }
        "expect" => Op::Expect(parse_expect(t)?),
        _ => {
            t.pos -= 1;
            return t.fail(
                "an operation (set, fork, process, in, on, exit, mmap, memfd, file, munmap, read, write, madvise, collapse, mremap, khugepaged, sleep, mark, remember, expect, include, profile)",
            );
        }
    };
    t.end()?;
    Ok(op)
}

/// Reads the header of `in NAME:` / `on SEL...:`; returns the op with an empty body and
/// whether the rest of the line holds an inline statement.
fn parse_header(t: &mut Toks) -> Result<Op, ParseError> {
    let kw = t.next("an operation")?;
    let mut words = Vec::new();
    let mut locs = Vec::new();
    loop {
        let loc = t.loc();
        let Some(tok) = t.peek() else {
            return t.fail("`:` ending the header");
        };
        t.pos += 1;
        let (w, done) = match tok.strip_suffix(':') {
            Some(w) => (w, true),
            None => (tok, false),
        };
        for part in w.split(',').filter(|p| !p.is_empty()) {
            words.push(part.to_string());
            locs.push(loc.clone());
        }
        if done {
            break;
        }
    }
    if kw == "in" {
        if words.len() != 1 {
            return Err(err(
                &locs.first().cloned().unwrap_or_else(|| t.loc()),
                "one process name before `:`",
                format!("{} words", words.len()),
            ));
        }
        return Ok(Op::In {
            name: words.remove(0),
            body: Vec::new(),
        });
    }
    let mut selectors = Vec::new();
    for (w, loc) in words.iter().zip(&locs) {
        match selector(w) {
            Some(s) => selectors.push(s),
            None => {
                return Err(err(
                    loc,
                    "a release (6.12), a release and later (6.15+) or a range (6.10-6.14)",
                    format!("`{w}`"),
                ))
            }
        }
    }
    if selectors.is_empty() {
        return t.fail("a release before `:`");
    }
    Ok(Op::On {
        selectors,
        body: Vec::new(),
    })
}

struct Parser {
    errors: Vec<ParseError>,
    releases: Option<(Vec<String>, Loc)>,
    stack: Vec<PathBuf>,
}

impl Parser {
    fn parse_file(&mut self, path: &Path, text: &str, include_loc: Option<&Loc>) -> Vec<Stmt> {
        let canon = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        if self.stack.contains(&canon) || self.stack.len() >= MAX_INCLUDE_DEPTH {
            if let Some(loc) = include_loc {
                self.errors.push(err(
                    loc,
                    "an include that does not include itself",
                    format!("a cycle through {}", path.display()),
                ));
            }
            return Vec::new();
        }
        self.stack.push(canon);
        let lines = tokenize(text, &Arc::new(path.to_path_buf()));
        let mut i = 0;
        let body = self.block(&lines, &mut i, None, path);
        self.stack.pop();
        body
    }

    /// Parses lines from `i` while they are indented deeper than `parent_indent`.
    fn block(
        &mut self,
        lines: &[Line],
        i: &mut usize,
        parent_indent: Option<usize>,
        path: &Path,
    ) -> Vec<Stmt> {
        let mut out = Vec::new();
        let indent = lines.get(*i).map(|l| l.indent);
        while let Some(line) = lines.get(*i) {
            if parent_indent.is_some_and(|p| line.indent <= p) {
                break;
            }
            if Some(line.indent) != indent {
                self.errors.push(err(
                    &line.loc,
                    format!(
                        "indentation of {} like the line before",
                        indent.unwrap_or(0)
                    ),
                    format!("indentation of {}", line.indent),
                ));
            }
            *i += 1;
            out.extend(self.line(lines, i, line, path, parent_indent.is_none()));
        }
        out
    }

    fn line(
        &mut self,
        lines: &[Line],
        i: &mut usize,
        line: &Line,
        path: &Path,
        top: bool,
    ) -> Vec<Stmt> {
        let mut t = Toks { line, pos: 0 };
        let kw = t.peek().unwrap_or("");
        let result: Result<Vec<Stmt>, ParseError> = match kw {
            "include" => {
                t.pos += 1;
                (|| {
                    let name = t.next("a file name")?;
                    t.end()?;
                    if !top {
                        return Err(err(
                            &line.loc,
                            "`include` at the top level",
                            "it inside a block",
                        ));
                    }
                    let target = path.parent().unwrap_or(Path::new(".")).join(name);
                    let text = std::fs::read_to_string(&target).map_err(|e| {
                        err(
                            &line.loc,
                            format!("a readable file {}", target.display()),
                            e.to_string(),
                        )
                    })?;
                    Ok(self.parse_file(&target, &text, Some(&line.loc)))
                })()
            }
            "profile" => {
                t.pos += 1;
                (|| {
                    if !top || self.stack.len() > 1 {
                        return Err(err(
                            &line.loc,
                            "`profile` at the top level of the scenario file",
                            "it in a block or an included file",
                        ));
                    }
                    if let Some((_, first)) = &self.releases {
                        return Err(err(
                            &line.loc,
                            "one `profile` line",
                            format!("a second one (the first is at {first})"),
                        ));
                    }
                    let mut rel = Vec::new();
                    while t.peek().is_some() {
                        let loc = t.loc();
                        let r = t.next("a release")?;
                        if release_version(r).is_none() {
                            return Err(err(
                                &loc,
                                "a kernel release such as 6.12 or 6.12.48+deb13-amd64",
                                format!("`{r}`"),
                            ));
                        }
                        if let Err(why) = lookup_profile(r) {
                            return Err(err(
                                &loc,
                                "a kernel release the model knows",
                                format!("`{r}`: {why}"),
                            ));
                        }
                        rel.push(r.to_string());
                    }
                    if rel.is_empty() {
                        return t.fail("a kernel release");
                    }
                    self.releases = Some((rel, line.loc.clone()));
                    Ok(Vec::new())
                })()
            }
            "in" | "on" => parse_header(&mut t).map(|mut op| {
                let inline = t.peek().is_some();
                let body = if inline {
                    match parse_op(&mut t) {
                        Ok(o) => vec![Stmt {
                            loc: line.loc.clone(),
                            text: line.text.clone(),
                            op: o,
                        }],
                        Err(e) => {
                            self.errors.push(e);
                            Vec::new()
                        }
                    }
                } else {
                    let start = *i;
                    let body = self.block(lines, i, Some(line.indent), path);
                    if *i == start {
                        self.errors.push(err(
                            &t.loc(),
                            "an indented line after the header",
                            "none",
                        ));
                    }
                    body
                };
                match &mut op {
                    Op::In { body: b, .. } | Op::On { body: b, .. } => *b = body,
                    _ => {}
                }
                vec![Stmt {
                    loc: line.loc.clone(),
                    text: line.text.clone(),
                    op,
                }]
            }),
            _ => parse_op(&mut t).map(|op| {
                vec![Stmt {
                    loc: line.loc.clone(),
                    text: line.text.clone(),
                    op,
                }]
            }),
        };
        match result {
            Ok(s) => s,
            Err(e) => {
                self.errors.push(e);
                // Skip the body of a broken header so its lines are not read as top level.
                while (kw == "in" || kw == "on")
                    && lines.get(*i).is_some_and(|l| l.indent > line.indent)
                {
                    *i += 1;
                }
                Vec::new()
            }
        }
    }
}

/// Parses and validates `text` as the scenario file `path` (includes are read relative to
/// it). Every error of the file is returned, in order.
pub fn parse_str(path: &Path, text: &str) -> Result<Scenario, Vec<ParseError>> {
    let mut p = Parser {
        errors: Vec::new(),
        releases: None,
        stack: Vec::new(),
    };
    let body = p.parse_file(path, text, None);
    let releases = match p.releases.take() {
        Some((r, _)) => r,
        // One release per distinct behaviour.
        None => KernelProfile::eras()
            .iter()
            .map(|k| k.name.to_string())
            .collect(),
    };
    if p.errors.is_empty() {
        // The same mistake seen under several releases is one error; one seen under some
        // releases only (through `on` lines) says which.
        let mut found: Vec<(ParseError, Vec<&str>)> = Vec::new();
        for r in &releases {
            let mut errs = Vec::new();
            check(&body, release_version(r).unwrap_or((0, 0)), &mut errs);
            for e in errs {
                match found.iter_mut().find(|(f, _)| *f == e) {
                    Some((_, rs)) => rs.push(r),
                    None => found.push((e, vec![r])),
                }
            }
        }
        for (mut e, rs) in found {
            if rs.len() < releases.len() {
                e.found = format!("{} (when run as {})", e.found, rs.join(", "));
            }
            p.errors.push(e);
        }
    }
    if p.errors.is_empty() {
        Ok(Scenario {
            path: path.to_path_buf(),
            releases,
            body,
        })
    } else {
        Err(p.errors)
    }
}

/// Reads and parses a scenario file.
pub fn parse_file(path: &Path) -> Result<Scenario, Vec<ParseError>> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_str(path, &text),
        Err(e) => Err(vec![err(
            &Loc {
                file: Arc::new(path.to_path_buf()),
                line: 0,
                col: 0,
            },
            "a readable scenario file",
            e.to_string(),
        )]),
    }
}

/// What the static check knows at a point of the file.
#[derive(Clone, Default)]
struct Known {
    /// Live processes and the mappings each has.
    procs: BTreeMap<String, BTreeSet<String>>,
    current: String,
    /// Every mapping name ever made, with its size (names are never reused).
    sizes: BTreeMap<String, u64>,
    /// Mappings that run past the end of their file: where the file ends (in pages).
    file_ends: BTreeMap<String, u64>,
    labels: BTreeSet<String>,
}

/// The initial process's name.
pub const MAIN: &str = "main";

fn check(body: &[Stmt], release: (u32, u32), errors: &mut Vec<ParseError>) {
    let mut k = Known::default();
    k.procs.insert(MAIN.to_string(), BTreeSet::new());
    k.current = MAIN.to_string();
    check_block(body, release, &mut k, errors);
}

fn check_block(body: &[Stmt], release: (u32, u32), k: &mut Known, errors: &mut Vec<ParseError>) {
    for s in body {
        if let Err(e) = check_stmt(s, release, k, errors) {
            errors.push(e);
        }
    }
}

/// The location of `word` in the statement's line (the line start when it is not there).
fn word_loc(s: &Stmt, word: &str) -> Loc {
    static TOKEN: Lazy<Regex> = Lazy::new(|| Regex::new(r"[^\s:,]+").unwrap());
    let col = TOKEN
        .find_iter(&s.text)
        .skip(1)
        .find(|m| m.as_str() == word || m.as_str().ends_with(&format!("..{word}")))
        .map_or(0, |m| s.text[..m.start()].chars().count());
    Loc {
        col: s.loc.col + col,
        ..s.loc.clone()
    }
}

/// An error of the static check, located at the word it is about.
fn at(s: &Stmt, expected: impl Into<String>, found: impl Into<String>) -> ParseError {
    let found = found.into();
    let word = match found.strip_prefix("page ") {
        Some(n) => n,
        None => found.split('`').nth(1).unwrap_or(""),
    };
    ParseError {
        loc: word_loc(s, word),
        expected: expected.into(),
        found,
    }
}

fn check_stmt(
    s: &Stmt,
    release: (u32, u32),
    k: &mut Known,
    errors: &mut Vec<ParseError>,
) -> Result<(), ParseError> {
    let mapping = |k: &Known, m: &str| -> Result<u64, ParseError> {
        let size = *k.sizes.get(m).ok_or_else(|| {
            at(
                s,
                "a mapping made earlier (mmap, memfd, file)",
                format!("`{m}`"),
            )
        })?;
        if !k.procs[&k.current].contains(m) {
            return Err(at(
                s,
                format!("a mapping of process {}", k.current),
                format!("`{m}`, which {} does not map", k.current),
            ));
        }
        Ok(size)
    };
    let in_range = |m: &str, r: Option<Range>, size: u64| -> Result<(), ParseError> {
        match r {
            Some(r) if r.last >= size => Err(at(
                s,
                format!("pages 0..{} of {m}", size - 1),
                format!("page {}", r.last),
            )),
            _ => Ok(()),
        }
    };
    let process = |k: &Known, p: &str| -> Result<(), ParseError> {
        if k.procs.contains_key(p) {
            Ok(())
        } else {
            let alive: Vec<&str> = k.procs.keys().map(String::as_str).collect();
            Err(at(
                s,
                format!("a live process ({})", alive.join(", ")),
                format!("`{p}`"),
            ))
        }
    };
    match &s.op {
        Op::Set { .. } | Op::KhugepagedScans(_) | Op::Sleep(_) | Op::Mark => {}
        Op::Fork { name } => {
            if k.procs.contains_key(name) {
                return Err(at(
                    s,
                    "a new process name",
                    format!("`{name}`, already alive"),
                ));
            }
            let maps = k.procs[&k.current].clone();
            k.procs.insert(name.clone(), maps);
        }
        Op::Switch { name } => {
            process(k, name)?;
            k.current = name.clone();
        }
        Op::In { name, body } => {
            process(k, name)?;
            let saved = std::mem::replace(&mut k.current, name.clone());
            check_block(body, release, k, errors);
            if !k.procs.contains_key(&saved) {
                return Err(at(
                    s,
                    format!("process {saved} alive after the block"),
                    "it exited inside",
                ));
            }
            k.current = saved;
        }
        Op::On { selectors, body } => {
            if selectors.iter().any(|s| s.matches(release)) {
                check_block(body, release, k, errors);
            }
        }
        Op::Exit { name } => {
            process(k, name)?;
            if *name == k.current {
                return Err(at(
                    s,
                    "another process than the current one",
                    format!("`{name}` (switch with `process` first)"),
                ));
            }
            k.procs.remove(name);
        }
        Op::Map {
            name, pages, size, ..
        } => {
            if k.sizes.contains_key(name) {
                return Err(at(
                    s,
                    "a new mapping name",
                    format!("`{name}`, used before"),
                ));
            }
            k.sizes.insert(name.clone(), *pages);
            if let Some(end) = size.filter(|end| end < pages) {
                k.file_ends.insert(name.clone(), end);
            }
            k.procs.get_mut(&k.current).unwrap().insert(name.clone());
        }
        Op::Munmap { map } => {
            mapping(k, map)?;
            k.procs.get_mut(&k.current).unwrap().remove(map);
        }
        Op::Access { map, range, .. } => {
            let size = mapping(k, map)?;
            in_range(map, *range, size)?;
            // A load or store past the end of the file is SIGBUS (the case process dies).
            let last = range.map_or(size - 1, |r| r.last);
            if let Some(&end) = k.file_ends.get(map).filter(|&&end| last >= end) {
                return Err(at(
                    s,
                    format!(
                        "pages 0..{} of {map}, inside its file (past the end a load or store \
                         is SIGBUS)",
                        end - 1
                    ),
                    format!("page {last}"),
                ));
            }
        }
        Op::Madvise { map, range, .. } => {
            let size = mapping(k, map)?;
            in_range(map, *range, size)?;
        }
        Op::Mremap { from, to, .. } => {
            let size = mapping(k, from)?;
            if k.sizes.contains_key(to) {
                return Err(at(s, "a new mapping name", format!("`{to}`, used before")));
            }
            k.sizes.insert(to.clone(), size);
            if let Some(&end) = k.file_ends.get(from) {
                k.file_ends.insert(to.clone(), end);
            }
            let cur = k.procs.get_mut(&k.current).unwrap();
            cur.remove(from);
            cur.insert(to.clone());
        }
        Op::KhugepagedUntil { map, .. } => {
            let size = mapping(k, map)?;
            if size < HPAGE_PMD_NR as u64 {
                return Err(at(
                    s,
                    "a mapping of at least one PMD (512 pages)",
                    format!("`{map}` of {size} pages"),
                ));
            }
        }
        Op::Remember { map, page, label } => {
            let size = mapping(k, map)?;
            in_range(
                map,
                Some(Range {
                    first: *page,
                    last: *page,
                }),
                size,
            )?;
            k.labels.insert(label.clone());
        }
        Op::Expect(e) => match e {
            Expectation::Smaps { map, .. } | Expectation::ScanResult { map, .. } => {
                mapping(k, map)?;
            }
            Expectation::Pagemap { map, range, .. }
            | Expectation::Kpagecount { map, range, .. } => {
                let size = mapping(k, map)?;
                in_range(map, *range, size)?;
            }
            Expectation::SamePage {
                map, page, label, ..
            } => {
                let size = mapping(k, map)?;
                in_range(
                    map,
                    Some(Range {
                        first: *page,
                        last: *page,
                    }),
                    size,
                )?;
                if !k.labels.contains(label) {
                    return Err(at(
                        s,
                        "a label saved by an earlier `remember` line",
                        format!("`{label}`"),
                    ));
                }
            }
            Expectation::Vmstat { .. } => {}
        },
    }
    Ok(())
}
