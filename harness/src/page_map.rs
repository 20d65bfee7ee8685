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
    fn pmd_mapped_thp_is_one_run() {
        let pages: Vec<PageObs> = (0..512).map(|i| present(5, i, 9, 1, true, true)).collect();
        assert_eq!(render(&pages), "0-511 pmd f0[0..] o9 mc1 ex");
    }
}
