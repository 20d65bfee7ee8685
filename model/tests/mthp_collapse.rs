//! khugepaged's collapse to mTHP orders (7.2+, `khugepaged_mthp_collapse`): which blocks and
//! orders `mthp_collapse` picks, the per-order limits (`collapse_max_ptes_none`, `_shared`,
//! `_swap`), and that earlier profiles do none of it.

mod common;
use common::*;
use model::khugepaged::CollapseStage;
use model::madvise::Advice;
use model::scan_result::ScanResult;
use model::{KernelProfile, Pid};

fn profile(r: &str) -> KernelProfile {
    KernelProfile::for_release(r).unwrap()
}

/// The 7.3 selftest's mthp_khugepaged context: PMD THPs off, one mTHP size on madvise.
fn mthp_settings(s: &mut Sys, size_kb: u64) {
    for (path, v) in [
        ("enabled".to_string(), "never"),
        ("defrag".to_string(), "always"),
        ("use_zero_page".to_string(), "0"),
        (format!("hugepages-{size_kb}kB/enabled"), "madvise"),
    ] {
        s.k.sysfs_write(&path, v).unwrap();
    }
}

/// MADV_HUGEPAGE on the PMD range, then two full scans (or a bounded number of wake-ups
/// when the thread does not run).
fn khugepaged_scans(s: &mut Sys, pid: Pid, p: u64) {
    s.madvise(pid, p, PMD, Advice::HugePage).unwrap();
    let target = s.k.khugepaged_state.full_scans + 2;
    for _ in 0..64 {
        if s.k.khugepaged_state.full_scans >= target {
            break;
        }
        s.step("khugepaged wake-up", |k| {
            k.khugepaged_do_scan();
        });
    }
}

/// (order, first page) of every folio mapped in the PMD range at `p`, in address order.
fn folios(s: &Sys, pid: Pid, p: u64) -> Vec<(u8, u64)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < 512 {
        match s.k.folio_at(pid, p + i * PAGE) {
            Some((f, page)) => {
                let order = s.k.folio(f).order;
                assert_eq!(page, 0, "page {i} is not the start of its folio");
                out.push((order, i));
                i += 1 << order;
            }
            None => i += 1,
        }
    }
    out
}

fn setup(r: &str, size_kb: u64, pages: std::ops::Range<u64>) -> Sys {
    let mut s = Sys::new(profile(r));
    let p = s.p;
    s.mmap_anon(p, BASE, PMD);
    // Faulted before the mTHP size is enabled, as the selftest does: order-0 pages.
    s.fill(p, BASE, pages.start * PAGE, pages.end * PAGE);
    mthp_settings(&mut s, size_kb);
    s
}

#[test]
fn a_full_range_becomes_mthps_of_the_enabled_size() {
    let mut s = setup("7.3", 64, 0..512);
    let p = s.p;
    khugepaged_scans(&mut s, p, BASE);
    let got = folios(&s, p, BASE);
    assert_eq!(got.len(), 32, "{got:?}");
    assert!(got.iter().all(|&(o, _)| o == 4), "{got:?}");
    s.validate(p, BASE, 0, PMD);
    assert_eq!(s.k.khugepaged_state.pages_collapsed, 1);
    // Not a PMD THP: smaps shows no AnonHugePages and the PTE table stays.
    assert_eq!(s.k.smaps(p, BASE).unwrap().anon_huge_pages, 0);
}

#[test]
fn before_7_2_khugepaged_does_not_run_for_mthp_sizes_alone() {
    for r in ["6.18", "7.1"] {
        let mut s = setup(r, 64, 0..512);
        let p = s.p;
        khugepaged_scans(&mut s, p, BASE);
        assert!(
            folios(&s, p, BASE).iter().all(|&(o, _)| o == 0),
            "{r}: khugepaged collapsed"
        );
        assert_eq!(s.k.khugepaged_state.full_scans, 0, "{r}: the thread ran");
    }
}

#[test]
fn a_single_block_collapses_and_the_empty_rest_stays_empty() {
    // max_ptes_none 511 scales to 15 for order 4: one present PTE of 16 is enough, none is not.
    let mut s = setup("7.3", 64, 0..16);
    let p = s.p;
    khugepaged_scans(&mut s, p, BASE);
    assert_eq!(folios(&s, p, BASE), vec![(4, 0)]);
    let mut s = setup("7.3", 64, 20..21);
    let p = s.p;
    khugepaged_scans(&mut s, p, BASE);
    assert_eq!(folios(&s, p, BASE), vec![(4, 16)]);
    s.validate(p, BASE, 20 * PAGE, 21 * PAGE);
    assert_eq!(
        s.read(p, BASE + 16 * PAGE),
        0,
        "the hole became a zeroed page"
    );
}

#[test]
fn max_ptes_none_other_than_511_means_none_below_pmd_order() {
    let mut s = setup("7.3", 64, 0..24);
    let p = s.p;
    s.k.sysfs_write("khugepaged/max_ptes_none", "256").unwrap();
    khugepaged_scans(&mut s, p, BASE);
    // Block 0 is full; block 1 has 8 of 16 present and may have no hole.
    let got = folios(&s, p, BASE);
    assert_eq!(got[0], (4, 0));
    assert!(got[1..].iter().all(|&(o, _)| o == 0), "{got:?}");
}

#[test]
fn pmd_order_first_then_smaller_orders() {
    // Both the PMD size (enabled=always) and 64 KiB enabled, max_ptes_none 0: the PMD block
    // has holes, so mthp_collapse goes down to order 4 and collapses the full blocks only.
    let mut s = setup("7.3", 64, 0..40);
    let p = s.p;
    s.k.sysfs_write("enabled", "madvise").unwrap();
    s.k.sysfs_write("khugepaged/max_ptes_none", "0").unwrap();
    khugepaged_scans(&mut s, p, BASE);
    let got = folios(&s, p, BASE);
    assert_eq!(&got[..2], &[(4, 0), (4, 16)], "{got:?}");
    assert!(got[2..].iter().all(|&(o, _)| o == 0), "{got:?}");
    // With holes allowed the PMD order wins.
    let mut s = setup("7.3", 64, 0..40);
    let p = s.p;
    s.k.sysfs_write("enabled", "madvise").unwrap();
    khugepaged_scans(&mut s, p, BASE);
    assert_eq!(folios(&s, p, BASE), vec![(9, 0)]);
    assert_eq!(s.k.smaps(p, BASE).unwrap().anon_huge_pages, 2048);
}

#[test]
fn a_shared_page_keeps_its_block_out_of_mthp_collapse() {
    let mut s = setup("7.3", 64, 0..512);
    let parent = s.p;
    let child = s.fork(parent);
    // The child writes pages 16..512: its copies are exclusive, pages 0..16 stay shared.
    s.fill(child, BASE, 16 * PAGE, PMD);
    khugepaged_scans(&mut s, child, BASE);
    let got = folios(&s, child, BASE);
    assert!(got[..16].iter().all(|&(o, _)| o == 0), "{got:?}");
    assert_eq!(got.len(), 16 + 31, "{got:?}");
    assert!(got[16..].iter().all(|&(o, _)| o == 4), "{got:?}");
    let refused =
        s.k.collapse_log()
            .iter()
            .filter(|r| r.pid == child && r.stage == CollapseStage::CollapseHugePage)
            .any(|r| r.order == 4 && r.result == ScanResult::ExceedSharedPte);
    assert!(refused, "{:?}", s.k.collapse_log());
    // count_collapse_event: below PMD order the refusal is a per-size mTHP stat (not
    // modelled), not the THP_SCAN_EXCEED_SHARED_PTE vmstat event.
    assert_eq!(s.k.vmstat_read("thp_scan_exceed_share_pte"), Some(0));
}

#[test]
fn a_swap_pte_keeps_its_block_out_of_mthp_collapse() {
    let mut s = setup("7.3", 64, 0..512);
    let p = s.p;
    s.step("swapon", |k| k.swapon(4096)).unwrap();
    s.madvise(p, BASE + 20 * PAGE, PAGE, Advice::PageOut)
        .unwrap();
    khugepaged_scans(&mut s, p, BASE);
    let got = folios(&s, p, BASE);
    // Block 1 (pages 16..32) keeps its swap PTE and its small pages.
    assert_eq!(got[0], (4, 0));
    assert!(got[1..16].iter().all(|&(o, _)| o == 0), "{got:?}");
    assert_eq!(got.len(), 1 + 15 + 30, "{got:?}");
    assert_eq!(s.k.smaps(p, BASE).unwrap().swap, 4);
}

/// `mthp_collapse` counts the swap PTEs the scan accepted (`unmapped`) as occupied for the
/// PMD-order block (the fix of its first version, where they were missing from the present-PTE
/// bitmap): with max_ptes_none 0, 511 present PTEs and one swap PTE still make a PMD THP, the
/// swap PTE swapped in, rather than 64K mTHPs around the swapped page.
#[test]
fn swap_ptes_count_as_occupied_for_the_pmd_order() {
    let mut s = setup("7.3", 64, 0..512);
    let p = s.p;
    s.k.sysfs_write("enabled", "madvise").unwrap();
    s.k.sysfs_write("khugepaged/max_ptes_none", "0").unwrap();
    s.step("swapon", |k| k.swapon(4096)).unwrap();
    s.madvise(p, BASE + 20 * PAGE, PAGE, Advice::PageOut)
        .unwrap();
    assert_eq!(s.k.smaps(p, BASE).unwrap().swap, 4);
    khugepaged_scans(&mut s, p, BASE);
    assert_eq!(folios(&s, p, BASE), vec![(9, 0)]);
    assert_eq!(s.k.smaps(p, BASE).unwrap().swap, 0);
}
