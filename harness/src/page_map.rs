//! A run-length picture of a test area's pages: which are none, present, swapped or the zero
//! page, PMD-mapped or not, which folio each belongs to (numbered by first appearance so the
//! model and a host compare), the folio order, the precise mapcount and the exclusive bit.
//!
//! `0-255 pte f0[0..] o9 mc2 | 256-510 none | 511 pte f1 o0 mc1 ex` reads: pages 0-255 are
//! PTE-mapped pages 0.. of folio f0 (order 9), each mapped twice; 256-510 are none; page 511 is
//! an exclusive small page.

use std::collections::BTreeMap;

use crate::backend::{PageObs, PageState};

/// One run of alike pages.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Run {
    first: usize,
    last: usize,
    key: String,
}

/// Renders `pages` as one line of runs.
pub fn render(pages: &[PageObs]) -> String {
    let mut numbering: BTreeMap<u64, usize> = BTreeMap::new();
    let mut runs: Vec<Run> = Vec::new();
    let mut prev: Option<(PageObs, usize)> = None;
    for (i, p) in pages.iter().enumerate() {
        let folio_no = p.folio.map(|f| {
            let n = numbering.len();
            *numbering.entry(f).or_insert(n)
        });
        let key = match p.state {
            PageState::None => "none".to_string(),
            PageState::Swap => "swap".to_string(),
            PageState::Zero => {
                if p.pmd_mapped {
                    "hugezero".into()
                } else {
                    "zero".into()
                }
            }
            PageState::Present => {
                let mut k = format!(
                    "{} f{}",
                    if p.pmd_mapped { "pmd" } else { "pte" },
                    folio_no.unwrap_or(0)
                );
                if p.order > 0 {
                    k.push_str(&format!("[{}..] o{}", p.index_in_folio, p.order));
                } else {
                    k.push_str(" o0");
                }
                k.push_str(&format!(" mc{}", p.mapcount));
                if p.exclusive {
                    k.push_str(" ex");
                }
                if !p.anon {
                    k.push_str(" file");
                }
                k
            }
        };
        // A page continues the previous run when it looks alike and, for folio pages, is the
        // next page of the same folio.
        let continues = match (&prev, runs.last()) {
            (Some((pp, _)), Some(last)) => {
                let same_shape = pp.state == p.state
                    && pp.pmd_mapped == p.pmd_mapped
                    && pp.order == p.order
                    && pp.mapcount == p.mapcount
                    && pp.exclusive == p.exclusive
                    && pp.anon == p.anon;
                // Same folio, next page; or a run of small pages, each a new folio in turn.
                let folio_ok = match (pp.folio, p.folio) {
                    (Some(a), Some(b)) if a == b => p.index_in_folio == pp.index_in_folio + 1,
                    (Some(a), Some(b)) => {
                        p.order == 0
                            && numbering.get(&b).copied() == numbering.get(&a).map(|n| n + 1)
                    }
                    (None, None) => true,
                    _ => false,
                };
                same_shape && folio_ok && last.last + 1 == i
            }
            _ => false,
        };
        if continues {
            runs.last_mut().expect("checked").last = i;
        } else {
            runs.push(Run {
                first: i,
                last: i,
                key,
            });
        }
        prev = Some((*p, i));
    }
    runs.iter()
        .map(|r| {
            if r.first == r.last {
                format!("{} {}", r.first, strip_range_marker(&r.key))
            } else if r.key.contains(" o0") && r.key.starts_with("pte f") {
                // Small pages: one folio each, numbered in turn.
                let first_no: usize = r.key[5..]
                    .split(' ')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                let last_no = first_no + (r.last - r.first);
                format!(
                    "{}-{} {}",
                    r.first,
                    r.last,
                    r.key.replacen(
                        &format!("f{first_no}"),
                        &format!("f{first_no}-f{last_no}"),
                        1
                    )
                )
            } else {
                format!("{}-{} {}", r.first, r.last, r.key)
            }
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

/// A single page shows its own index in the folio, not a range start.
fn strip_range_marker(key: &str) -> String {
    key.replace("..]", "]")
}

/// One run of a rendered map line, read back: pages `first..=last` and their description.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ParsedRun {
    first: usize,
    last: usize,
    key: String,
}

/// Splits a map observation (`map(0x40000000+512): 0-511 pmd f0[0..] o9 mc1 ex | ...`, with or
/// without leading spaces) into its `map(...)` head and its runs.
fn parse_map_line(line: &str) -> Option<(String, Vec<ParsedRun>)> {
    let (head, runs) = line.trim().split_once(": ")?;
    if !head.starts_with("map(") {
        return None;
    }
    let mut out = Vec::new();
    for run in runs.split(" | ") {
        let (range, key) = run.split_once(' ')?;
        let (first, last) = match range.split_once('-') {
            Some((a, b)) => (a.parse().ok()?, b.parse().ok()?),
            None => {
                let n = range.parse().ok()?;
                (n, n)
            }
        };
        out.push(ParsedRun {
            first,
            last,
            key: key.to_string(),
        });
    }
    Some((head.to_string(), out))
}

static IN_FOLIO: once_cell::sync::Lazy<regex::Regex> =
    once_cell::sync::Lazy::new(|| regex::Regex::new(r"f(\d+)\[(\d+)\.\.\]").expect("valid"));
static SMALL: once_cell::sync::Lazy<regex::Regex> =
    once_cell::sync::Lazy::new(|| regex::Regex::new(r"f(\d+)-f(\d+)").expect("valid"));
static ONE: once_cell::sync::Lazy<regex::Regex> =
    once_cell::sync::Lazy::new(|| regex::Regex::new(r"\bf(\d+)(\[\d+\])?").expect("valid"));

/// The description of pages `from..=to` of `run` (inside it): a folio range keeps its
/// notation, starting at the right page (`f0[256..]`, `f3-f5`).
fn slice_key(run: &ParsedRun, from: usize, to: usize) -> String {
    let k = from - run.first;
    let single = from == to;
    if let Some(c) = IN_FOLIO.captures(&run.key) {
        let (n, idx): (usize, usize) = (c[1].parse().unwrap_or(0), c[2].parse().unwrap_or(0));
        let sub = if single {
            format!("f{n}[{}]", idx + k)
        } else {
            format!("f{n}[{}..]", idx + k)
        };
        return IN_FOLIO.replace(&run.key, sub.as_str()).into_owned();
    }
    if let Some(c) = SMALL.captures(&run.key) {
        let a: usize = c[1].parse().unwrap_or(0);
        let sub = if single {
            format!("f{}", a + k)
        } else {
            format!("f{}-f{}", a + k, a + k + (to - from))
        };
        return SMALL.replace(&run.key, sub.as_str()).into_owned();
    }
    run.key.clone()
}

/// Page `page` of `run`: its folio's number, if any, and the rest of its description with the
/// number left out (`pmd f#[3] o9 mc1 ex`). Folios are numbered by first appearance on each
/// side, so one extra folio on one side renumbers all later ones: only the shape and a
/// consistent pairing of numbers make a difference.
fn page_shape(run: &ParsedRun, page: usize) -> (Option<usize>, String) {
    let key = slice_key(run, page, page);
    match ONE.captures(&key) {
        Some(c) => {
            let n = c[1].parse().ok();
            let idx = c.get(2).map_or("", |m| m.as_str()).to_string();
            (
                n,
                ONE.replace(&key, format!("f#{idx}").as_str()).into_owned(),
            )
        }
        None => (None, key),
    }
}

/// Pairs folio numbers of two sides as pages are compared in order; a number paired with two
/// different ones is a real difference.
#[derive(Default)]
struct FolioPairing {
    left_to_right: BTreeMap<usize, usize>,
    right_to_left: BTreeMap<usize, usize>,
}

impl FolioPairing {
    fn consistent(&mut self, l: Option<usize>, r: Option<usize>) -> bool {
        match (l, r) {
            (None, None) => true,
            (Some(l), Some(r)) => {
                let a = *self.left_to_right.entry(l).or_insert(r);
                let b = *self.right_to_left.entry(r).or_insert(l);
                a == r && b == l
            }
            _ => false,
        }
    }
}

/// The description of each range of pages on which neither side changes, for one side.
fn segment_keys(runs: &[ParsedRun], bounds: &[(usize, usize)]) -> Vec<String> {
    bounds
        .iter()
        .map(|&(a, b)| {
            runs.iter()
                .find(|r| r.first <= a && b <= r.last)
                .map_or_else(|| "(not observed)".to_string(), |r| slice_key(r, a, b))
        })
        .collect()
}

/// Two page-map observations side by side, aligned on page ranges: only the ranges that
/// differ and `context` ranges around each are shown (`...` marks what is left out), one range
/// a line, differing lines marked `!`. None when the lines are not both map observations.
pub fn aligned_diff(
    left: &str,
    right: &str,
    left_name: &str,
    right_name: &str,
    context: usize,
) -> Option<String> {
    const MAX_ROWS: usize = 40;
    let (lhead, lruns) = parse_map_line(left)?;
    let (rhead, rruns) = parse_map_line(right)?;
    // Range boundaries: wherever a run starts or ends on either side.
    let mut cuts: Vec<usize> = lruns
        .iter()
        .chain(rruns.iter())
        .flat_map(|r| [r.first, r.last + 1])
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    let bounds: Vec<(usize, usize)> = cuts.windows(2).map(|w| (w[0], w[1] - 1)).collect();
    let lkeys = segment_keys(&lruns, &bounds);
    let rkeys = segment_keys(&rruns, &bounds);
    let mut pairing = FolioPairing::default();
    let differs: Vec<bool> = bounds
        .iter()
        .map(|&(a, b)| {
            let lrun = lruns.iter().find(|r| r.first <= a && b <= r.last);
            let rrun = rruns.iter().find(|r| r.first <= a && b <= r.last);
            let (Some(lrun), Some(rrun)) = (lrun, rrun) else {
                return lrun.is_some() || rrun.is_some();
            };
            let mut differ = false;
            for page in a..=b {
                let (ln, ls) = page_shape(lrun, page);
                let (rn, rs) = page_shape(rrun, page);
                // Every page is paired, even after a difference, so later pages compare.
                differ |= !pairing.consistent(ln, rn) | (ls != rs);
            }
            differ
        })
        .collect();
    let shown: Vec<bool> = (0..bounds.len())
        .map(|i| {
            let lo = i.saturating_sub(context);
            let hi = (i + context).min(bounds.len().saturating_sub(1));
            differs[lo..=hi].iter().any(|&d| d)
        })
        .collect();
    let ranges: Vec<String> = bounds
        .iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    let rw = ranges.iter().map(String::len).max().unwrap_or(0).max(5);
    let lw = lkeys
        .iter()
        .zip(&shown)
        .filter(|(_, &s)| s)
        .map(|(k, _)| k.len())
        .max()
        .unwrap_or(0)
        .max(left_name.len());
    let mut out = String::new();
    if lhead != rhead {
        out.push_str(&format!("  {left_name}: {lhead}, {right_name}: {rhead}\n"));
    }
    out.push_str(&format!(
        "  {:1} {:<rw$}  {:<lw$}  {right_name}\n",
        "", "pages", left_name
    ));
    let (mut rows, mut gap) = (0, false);
    let total_differing = differs.iter().filter(|&&d| d).count();
    let mut differing_shown = 0;
    for i in 0..bounds.len() {
        if !shown[i] {
            gap = true;
            continue;
        }
        if rows == MAX_ROWS {
            out.push_str(&format!(
                "  ... and {} more differing range(s)\n",
                total_differing - differing_shown
            ));
            break;
        }
        if gap {
            out.push_str("  ...\n");
        }
        gap = false;
        let mark = if differs[i] { "!" } else { "" };
        differing_shown += differs[i] as usize;
        out.push_str(&format!(
            "  {mark:1} {:<rw$}  {:<lw$}  {}\n",
            ranges[i], lkeys[i], rkeys[i]
        ));
        rows += 1;
    }
    if gap && rows > 0 && rows < MAX_ROWS {
        out.push_str("  ...\n");
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn present(folio: u64, idx: u32, order: u8, mc: i32, ex: bool, pmd: bool) -> PageObs {
        PageObs {
            state: PageState::Present,
            pmd_mapped: pmd,
            folio: Some(folio),
            index_in_folio: idx,
            order,
            mapcount: mc,
            exclusive: ex,
            anon: true,
        }
    }

    #[test]
    fn runs_and_numbering() {
        let mut pages = vec![PageObs::default(); 6];
        pages[0] = present(77, 0, 9, 2, false, false);
        pages[1] = present(77, 1, 9, 2, false, false);
        pages[4] = PageObs {
            state: PageState::Swap,
            ..PageObs::default()
        };
        pages[5] = present(12, 0, 0, 1, true, false);
        assert_eq!(
            render(&pages),
            "0-1 pte f0[0..] o9 mc2 | 2-3 none | 4 swap | 5 pte f1 o0 mc1 ex"
        );
    }

    #[test]
    fn small_pages_in_turn_form_one_run() {
        let pages: Vec<PageObs> = (0..4)
            .map(|i| present(100 + i, 0, 0, 1, true, false))
            .collect();
        assert_eq!(render(&pages), "0-3 pte f0-f3 o0 mc1 ex");
        let mut shared = pages.clone();
        shared[2].mapcount = 2;
        assert_eq!(
            render(&shared),
            "0-1 pte f0-f1 o0 mc1 ex | 2 pte f2 o0 mc2 ex | 3 pte f3 o0 mc1 ex"
        );
    }

    #[test]
    fn aligned_diff_shows_the_differing_ranges_with_context() {
        // Four THPs; the model still PTE-maps the third, and pages 1536-1539 differ in
        // mapcount.
        let host = "  map(0x40000000+2048): 0-511 pmd f0[0..] o9 mc1 ex | 512-1023 pmd f1[0..] o9 mc1 ex | 1024-1535 pmd f2[0..] o9 mc1 ex | 1536-2047 pmd f3[0..] o9 mc1 ex";
        let model = "  map(0x40000000+2048): 0-511 pmd f0[0..] o9 mc1 ex | 512-1023 pmd f1[0..] o9 mc1 ex | 1024-1535 pte f2[0..] o9 mc1 ex | 1536-1539 pmd f3[0..] o9 mc2 | 1540-2047 pmd f3[4..] o9 mc1 ex";
        let d = aligned_diff(host, model, "host", "model", 1).unwrap();
        let lines: Vec<&str> = d.lines().collect();
        assert_eq!(lines.len(), 6, "{d}");
        assert!(
            lines[0].contains("pages") && lines[0].ends_with("model"),
            "{d}"
        );
        assert_eq!(lines[1], "  ...", "{d}");
        assert!(
            lines[2].starts_with("    512-1023") && !lines[2].contains('!'),
            "{d}"
        );
        assert_eq!(
            lines[3].split_whitespace().collect::<Vec<_>>(),
            [
                "!",
                "1024-1535",
                "pmd",
                "f2[0..]",
                "o9",
                "mc1",
                "ex",
                "pte",
                "f2[0..]",
                "o9",
                "mc1",
                "ex"
            ]
        );
        assert!(
            lines[4].starts_with("  ! 1536-1539") && lines[4].ends_with("pmd f3[0..] o9 mc2"),
            "{d}"
        );
        // The unchanged rest of the host's run starts at the right page.
        assert!(
            lines[5].starts_with("    1540-2047") && lines[5].contains("pmd f3[4..] o9 mc1 ex  "),
            "{d}"
        );
        // Columns line up: the model column starts at the same offset on every row.
        let col = lines[3].rfind("pte f2").unwrap();
        assert_eq!(lines[0].rfind("model").unwrap(), col, "{d}");
        assert_eq!(
            aligned_diff(host, host, "host", "model", 2)
                .unwrap()
                .lines()
                .count(),
            1
        );
        assert!(aligned_diff("step ok: x", model, "host", "model", 2).is_none());
    }

    #[test]
    fn aligned_diff_slices_small_page_runs() {
        let host = "map(0x40000000+4): 0-3 pte f0-f3 o0 mc1 ex";
        let model = "map(0x40000000+4): 0-1 pte f0-f1 o0 mc1 ex | 2 swap | 3 pte f2 o0 mc1 ex";
        let d = aligned_diff(host, model, "host", "model", 1).unwrap();
        let lines: Vec<&str> = d.lines().collect();
        assert_eq!(lines.len(), 4, "{d}");
        assert_eq!(
            lines[1], "    0-1    pte f0-f1 o0 mc1 ex  pte f0-f1 o0 mc1 ex",
            "{d}"
        );
        assert_eq!(lines[2], "  ! 2      pte f2 o0 mc1 ex     swap", "{d}");
        // Page 3 is the host's fourth folio and the model's third: numbered apart, alike.
        assert_eq!(
            lines[3], "    3      pte f3 o0 mc1 ex     pte f2 o0 mc1 ex",
            "{d}"
        );
        // A folio that one side maps twice and the other maps as two is a difference.
        let shared = "map(0x40000000+2): 0 pte f0 o0 mc1 ex | 1 pte f0 o0 mc1 ex";
        let apart = "map(0x40000000+2): 0-1 pte f0-f1 o0 mc1 ex";
        let d = aligned_diff(shared, apart, "host", "model", 0).unwrap();
        assert!(
            d.contains("! 1      pte f0 o0 mc1 ex  pte f1 o0 mc1 ex"),
            "{d}"
        );
    }

    #[test]
    fn pmd_mapped_thp_is_one_run() {
        let pages: Vec<PageObs> = (0..512).map(|i| present(5, i, 9, 1, true, true)).collect();
        assert_eq!(render(&pages), "0-511 pmd f0[0..] o9 mc1 ex");
    }
}
