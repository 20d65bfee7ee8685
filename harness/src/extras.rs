//! Tests of this project's own, written in khugepaged.c's style against the same backend, for
//! behaviour the selftest does not pin down. They run as `extra/...` trials (model and host)
//! and with `--extras` on the command line; the drop-in CLI leaves them out by default.

use model::SharingPredicate;

use crate::backend::Madv;
use crate::catalogue::{Abort, Context, Ctx, MemType, TestEntry};

type R = Result<(), Abort>;

/// The 2024 linux-mm case against `folio_likely_mapped_shared()`: a THP shared over fork in
/// which both processes PTE-map pages 1..=256 and nobody maps page 0. The scanned process
/// (the child) also maps its own page 0 and has 255 none PTEs. With max_ptes_shared=0 and
/// max_ptes_none=255, khugepaged must refuse (EXCEED_SHARED_PTE) unless the kernel's sharing
/// test is 6.10–6.14's heuristic, which looks at page 0 only and calls the folio exclusive.
pub fn collapse_shared_thp_first_page_unmapped(t: &mut Ctx, c: Context, ops: MemType) -> R {
    let ps = t.page_size();
    let heuristic = t.era.as_ref().map(|p| p.khugepaged_sharing)
        == Some(SharingPredicate::FolioLikelyMappedShared);
    let mut settings = t.current_settings()?;
    settings.max_ptes_shared = 0;
    settings.max_ptes_none = 255;
    t.push_settings(settings)?;
    let p = t.alloc_hpage(ops)?;
    t.printf("Keep only pages 1-256 of the huge page, PTE-mapped...");
    let _ = t.madvise(p, ps, Madv::DontNeed);
    let _ = t.madvise(p + 257 * ps, 255 * ps, Madv::DontNeed);
    if t.check_huge(ops, p, 0) {
        t.success("OK");
    } else {
        t.fail("Fail");
    }
    t.printf("Share them over fork()...");
    let status = t.fork_child(&|t: &mut Ctx| {
        if t.check_huge(ops, p, 0) {
            t.success("OK");
        } else {
            t.fail("Fail");
        }
        t.printf("Write page 0 in the child...");
        t.fault(ops, p, 0, ps)?;
        t.success("OK");
        t.collapse(
            c,
            "Maybe collapse 256 shared PTEs of a THP whose first page nobody maps",
            p,
            1,
            ops,
            heuristic,
        )?;
        t.validate_memory(p, 0, 257 * ps)?;
        t.cleanup_area(ops, p, t.hpage_pmd_size());
        Ok(())
    })?;
    t.exit_status += status;
    t.cleanup_area(ops, p, t.hpage_pmd_size());
    t.pop_settings()
}

/// The extra tests, in order.
pub fn extra_table() -> Vec<TestEntry> {
    vec![TestEntry {
        name: "collapse_shared_thp_first_page_unmapped",
        func: collapse_shared_thp_first_page_unmapped,
        context: Context::Khugepaged,
        mem: MemType::Anon,
    }]
}
