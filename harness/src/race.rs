//! Recognising, in a host run with the selftest's own khugepaged settings, that khugepaged
//! collapsed the test area between two steps on its own (the 6.17+ selftest leaves the area
//! advised between waits). The evidence is what the kernel did, as the run saw it, tied to the
//! step where it was seen; what a collapse there can explain is for the comparison to decide.

use crate::catalogue::Context;
use crate::runner::CaseResult;
use crate::steps::{Step, Verdict};

/// A collapse the test did not ask for, and where it was seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CollapseRace {
    /// Index of the step (in the run's steps) that saw it.
    pub step: usize,
    /// That step's line.
    pub step_text: String,
    /// What the kernel was seen to have done.
    pub seen: String,
}

/// PMD-mapped pages in a rendered page map (`0-511 pmd f0[0..] o9 mc1 ex | 512 pte ...`).
pub fn pmd_mapped_pages(map: &str) -> u64 {
    map.split(" | ")
        .filter_map(|seg| {
            let mut words = seg.split_whitespace();
            let range = words.next()?;
            (words.next()? == "pmd").then_some(range)
        })
        .map(|range| match range.split_once('-') {
            Some((a, b)) => match (a.parse::<u64>(), b.parse::<u64>()) {
                (Ok(a), Ok(b)) if b >= a => b - a + 1,
                _ => 0,
            },
            None => 1,
        })
        .sum()
}

/// The page map a step recorded: its observation or, for a failed check, its diagnostics.
fn step_map(s: &Step) -> Option<&str> {
    s.obs
        .iter()
        .filter_map(|o| o.strip_prefix("map(").and_then(|r| r.split_once("): ")))
        .map(|(_, m)| m)
        .chain(
            s.detail
                .iter()
                .filter_map(|d| d.strip_prefix("page map ").and_then(|r| r.split_once(": ")))
                .map(|(_, m)| m),
        )
        .next()
}

/// Calls that may make the area huge on the test's request: a khugepaged wait, MADV_COLLAPSE.
fn asks_for_collapse(call: &str) -> bool {
    call.starts_with("wait for khugepaged") || call.contains("MADV_COLLAPSE")
}

/// Whether `case` (a selftest case or an extra) runs in the khugepaged context, where the area
/// stays advised between waits.
pub fn in_khugepaged_context(case: &crate::runner::Case) -> bool {
    match case {
        crate::runner::Case::Test(e) | crate::runner::Case::Extra(e) => {
            e.context == Context::Khugepaged
        }
        crate::runner::Case::AllocAtFault => false,
    }
}

/// The collapses khugepaged made on its own in `host`, a run of a khugepaged-context case
/// (selftest or extra), each with the step that saw it:
/// - a wait's or MADV_COLLAPSE's sanity check found the area huge ("Unexpected huge page"):
///   nothing the test did since its last wait makes a huge page;
/// - in a traced run, a failed check whose page map shows PMD mappings, while the area was
///   advised and no wait or MADV_COLLAPSE came since the previous step (a fault makes a THP
///   only where no page table exists yet, and these tests fault into ranges they faulted
///   before).
pub fn collapse_races(host: &CaseResult) -> Vec<CollapseRace> {
    if !in_khugepaged_context(&host.case) {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut advised = false;
    for (i, s) in host.steps.iter().enumerate() {
        let mut collapse_asked = false;
        for c in &s.calls {
            if c.contains("MADV_HUGEPAGE") {
                advised = true;
            } else if c.contains("MADV_NOHUGEPAGE") {
                advised = false;
            }
            collapse_asked |= asks_for_collapse(c);
        }
        let text = s.to_string();
        if s.verdict == Verdict::Fail && text.contains("Unexpected huge page") {
            out.push(CollapseRace {
                step: i,
                step_text: text,
                seen: s.detail.first().cloned().unwrap_or_else(|| {
                    "check_huge found the area huge before the test asked for a collapse".into()
                }),
            });
            continue;
        }
        let traced = !s.calls.is_empty();
        if s.verdict == Verdict::Fail && traced && advised && !collapse_asked {
            if let Some(map) = step_map(s) {
                let pmd = pmd_mapped_pages(map);
                if pmd > 0 {
                    out.push(CollapseRace {
                        step: i,
                        step_text: text,
                        seen: format!(
                            "{pmd} pages PMD-mapped with no wait or MADV_COLLAPSE since the \
                             previous step: {map}"
                        ),
                    });
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::test_table;
    use crate::runner::{Case, Outcome};

    fn case(name: &str, ctx: &str) -> Case {
        Case::Test(
            test_table()
                .into_iter()
                .find(|e| e.name == name && e.context.name() == ctx && e.mem.name() == "anon")
                .unwrap(),
        )
    }

    fn step(text: &str, verdict: Verdict, calls: &[&str], detail: &[&str]) -> Step {
        Step {
            text: text.into(),
            verdict,
            word: if verdict == Verdict::Fail {
                "Fail".into()
            } else {
                "OK".into()
            },
            calls: calls.iter().map(|c| c.to_string()).collect(),
            detail: detail.iter().map(|c| c.to_string()).collect(),
            ..Step::default()
        }
    }

    fn run(case: Case, steps: Vec<Step>) -> CaseResult {
        CaseResult {
            case,
            steps,
            outcome: Outcome::Fail(String::new()),
            elapsed: Default::default(),
            trace: None,
            restore_error: None,
        }
    }

    #[test]
    fn counts_pmd_mapped_pages() {
        assert_eq!(pmd_mapped_pages("0-511 pmd f0[0..] o9 mc1 ex"), 512);
        assert_eq!(
            pmd_mapped_pages("0-64 swap | 65-511 pte f0-f446 o0 mc1 ex"),
            0
        );
        assert_eq!(pmd_mapped_pages("0-511 pmd f0 | 512-1023 pmd f1"), 1024);
    }

    /// The swap case of issue 11: khugepaged collapsed the range after the refill, so the
    /// swap-out found nothing to swap.
    #[test]
    fn a_failed_swapout_over_a_collapsed_advised_area_is_a_race() {
        let steps = vec![
            step(
                "Maybe collapse with max_ptes_swap exceeded...",
                Verdict::Ok,
                &[
                    "madvise(0x40000000, 0x200000, MADV_HUGEPAGE) = 0",
                    "wait for khugepaged = done",
                ],
                &[],
            ),
            step(
                "Swapout 64 of 512 pages...",
                Verdict::Fail,
                &[
                    "fill(0x40000000, 512 pages) = 0",
                    "madvise(0x40000000, 0x40000, MADV_PAGEOUT) = 0",
                ],
                &[
                    "check_swap: Swap 0 kB, expected 256 kB",
                    "page map 0x40000000+512 pages: 0-511 pmd f0[0..] o9 mc1 ex",
                ],
            ),
        ];
        let r = collapse_races(&run(case("collapse_max_ptes_swap", "khugepaged"), steps));
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(r[0].step, 1);
        assert!(r[0].seen.starts_with("512 pages PMD-mapped"), "{r:?}");
    }

    #[test]
    fn a_collapse_the_test_asked_for_or_an_unadvised_area_is_no_race() {
        let failed_wait = step(
            "Collapse PTE table full of compound pages...",
            Verdict::Fail,
            &[
                "madvise(0x40000000, 0x200000, MADV_HUGEPAGE) = 0",
                "wait for khugepaged = done",
            ],
            &["page map 0x40000000+512 pages: 0-511 pmd f0[0..] o9 mc1 ex"],
        );
        let r = run(
            case("collapse_full_of_compound", "khugepaged"),
            vec![failed_wait],
        );
        assert!(collapse_races(&r).is_empty());
        let unadvised = step(
            "Split huge page...",
            Verdict::Fail,
            &["madvise(0x40000000, 0x200000, MADV_NOHUGEPAGE) = 0"],
            &["page map 0x40000000+512 pages: 0-511 pmd f0[0..] o9 mc1 ex"],
        );
        let r = run(
            case("collapse_full_of_compound", "khugepaged"),
            vec![unadvised],
        );
        assert!(collapse_races(&r).is_empty());
        // The madvise context keeps khugepaged out of the way (enabled=never).
        let abort = step("Unexpected huge page", Verdict::Fail, &[], &[]);
        let r = run(
            case("collapse_max_ptes_swap", "madvise"),
            vec![abort.clone()],
        );
        assert!(collapse_races(&r).is_empty());
        let r = run(case("collapse_max_ptes_swap", "khugepaged"), vec![abort]);
        assert_eq!(collapse_races(&r).len(), 1);
    }

    #[test]
    fn extras_in_the_khugepaged_context_are_recognised_too() {
        let e = crate::extras::extra_table()[0];
        let abort = step("Unexpected huge page", Verdict::Fail, &[], &[]);
        let r = run(Case::Extra(e), vec![abort]);
        assert_eq!(collapse_races(&r).len(), 1);
    }
}
