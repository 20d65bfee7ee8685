//! The case from the 2024 linux-mm discussion of folio_likely_mapped_shared(): a THP shared
//! over fork, both processes PTE-map the same 256 subpages (1..=256, the first subpage mapped by
//! neither); the scanned process also maps one other, writable page and has 255 empty PTEs.
//! The per-page test (≤ 6.9) and folio_maybe_mapped_shared (6.15+) call the 256 PTEs shared;
//! folio_likely_mapped_shared (6.10–6.14) calls the folio exclusive: its known false negative.

mod common;
use common::*;
use model::madvise::Advice;
use model::page_table::Pte;
use model::KernelProfile;

/// Builds the case through user operations; returns the kernel, the scanned pid and the THP.
fn build(profile: KernelProfile) -> (Sys, model::Pid, model::FolioId) {
    let mut s = Sys::new(profile);
    let parent = s.p;
    s.mmap_anon(parent, BASE, PMD);
    s.thp_at(parent, BASE);
    let (thp, _) = s.folio_at(parent, BASE);
    let child = s.fork(parent);
    for pid in [parent, child] {
        s.madvise(pid, BASE, PAGE, Advice::DontNeed).unwrap();
        s.madvise(pid, BASE + 257 * PAGE, 255 * PAGE, Advice::DontNeed)
            .unwrap();
    }
    // The scanned process's one other, writable page.
    s.write(parent, BASE, 1);
    (s, parent, thp)
}

/// Counts, over the PMD range, the present PTEs each predicate calls shared, the way
/// khugepaged's scan applies them (per PTE, to the page or to its folio).
fn shared_counts(s: &Sys, pid: model::Pid) -> (usize, usize, usize, usize, usize) {
    let (mut per_page, mut likely, mut maybe, mut none, mut writable) = (0, 0, 0, 0, 0);
    for i in 0..512u64 {
        match s.k.mm(pid).unwrap().page_table.pte(BASE + i * PAGE) {
            Pte::None => none += 1,
            Pte::Present(p) => {
                let f = s.k.folio(p.folio);
                per_page += f.page_mapcount_shared(p.page as usize) as usize;
                likely += f.folio_likely_mapped_shared() as usize;
                maybe += f.folio_maybe_mapped_shared(s.k.profile.mm_id) as usize;
                writable += p.write as usize;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    (per_page, likely, maybe, none, writable)
}

#[test]
fn linux_mm_case_on_6_18_accessors() {
    let (s, parent, thp) = build(KernelProfile::v6_18());
    let f = s.k.folio(thp);
    assert_eq!(f.folio_mapcount(), 512, "256 PTEs in each of two processes");
    assert_eq!(f.folio_entire_mapcount(), 0);
    assert_eq!(
        f.folio_precise_page_mapcount(0),
        0,
        "first subpage mapped by neither"
    );
    assert!((1..=256).all(|i| f.folio_precise_page_mapcount(i) == 2));
    assert!(f.mm_ids_shared);
    assert!(f.folio_maybe_mapped_shared(true));
    assert!(!f.folio_likely_mapped_shared(), "the false negative");
    let (per_page, likely, maybe, none, writable) = shared_counts(&s, parent);
    assert_eq!(per_page, 256);
    assert_eq!(maybe, 256);
    assert_eq!(likely, 0);
    assert_eq!(none, 255);
    assert_eq!(writable, 1);
}

#[test]
fn linux_mm_case_on_6_12_and_6_1() {
    // Without MM-ID the folio is "maybe shared" anyway; the 6.10 heuristic still misses it,
    // the per-page test still sees it.
    for profile in [KernelProfile::v6_12(), KernelProfile::v6_1()] {
        let (s, parent, _) = build(profile);
        let (per_page, likely, maybe, none, writable) = shared_counts(&s, parent);
        assert_eq!(
            (per_page, likely, maybe, none, writable),
            (256, 0, 256, 255, 1)
        );
    }
}
