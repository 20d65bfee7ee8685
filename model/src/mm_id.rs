//! CONFIG_MM_ID owner tracking of large folios (6.15+; include/linux/rmap.h
//! `folio_add_return_large_mapcount`, `folio_sub_return_large_mapcount`,
//! `folio_set_large_mapcount`).
//!
//! A large folio remembers up to two MMs that map it, each with its own mapcount, and a
//! "maybe shared" bit. The bit is exact while at most two MMs are involved; a third MM that
//! never got a slot can leave it set after the slot owners are gone (a false positive).

use crate::folio::Folio;

/// `mm_id_t`: an MM's owner id, allocated from 1 (0 is MM_ID_DUMMY, a free slot).
pub type MmId = u32;

/// The free-slot marker.
pub const MM_ID_DUMMY: MmId = 0;

/// `folio_set_large_mapcount` for a new folio mapped `count` times by `mm`.
pub fn set_large_mapcount(folio: &mut Folio, count: i32, mm: MmId, tracking: bool) {
    folio.large_mapcount = count - 1;
    if tracking {
        folio.mm_id = [mm, MM_ID_DUMMY];
        folio.mm_id_mapcount = [count - 1, -1];
        folio.mm_ids_shared = false;
    }
}

/// `folio_add_return_large_mapcount`: `diff` more mappings by `mm`.
pub fn add_large_mapcount(folio: &mut Folio, diff: i32, mm: MmId, tracking: bool) {
    folio.large_mapcount += diff;
    if !tracking {
        return;
    }
    let new_total = folio.large_mapcount;
    if folio.mm_id[0] == mm {
        folio.mm_id_mapcount[0] += diff;
    } else if folio.mm_id[1] == mm {
        folio.mm_id_mapcount[1] += diff;
    } else if folio.mm_id[0] == MM_ID_DUMMY {
        folio.mm_id[0] = mm;
        folio.mm_id_mapcount[0] = diff - 1;
        // Someone else already maps it: the folio is now shared.
        if new_total != diff - 1 {
            folio.mm_ids_shared = true;
        }
    } else if folio.mm_id[1] == MM_ID_DUMMY {
        folio.mm_id[1] = mm;
        folio.mm_id_mapcount[1] = diff - 1;
        folio.mm_ids_shared = true;
    }
    // Both slots held by other MMs: the shared bit is already set; only the total changes.
}

/// `folio_sub_return_large_mapcount`: `diff` fewer mappings by `mm`.
pub fn sub_large_mapcount(folio: &mut Folio, diff: i32, mm: MmId, tracking: bool) {
    folio.large_mapcount -= diff;
    if !tracking {
        return;
    }
    let new_total = folio.large_mapcount;
    for slot in 0..2 {
        if folio.mm_id[slot] == mm {
            folio.mm_id_mapcount[slot] -= diff;
            if folio.mm_id_mapcount[slot] >= 0 {
                // The owner still maps it: sharing did not change.
                return;
            }
            folio.mm_id_mapcount[slot] = -1;
            folio.mm_id[slot] = MM_ID_DUMMY;
            break;
        }
    }
    // If one slot owns every remaining mapping (including "none remain"), it is exclusive.
    if folio.mm_id_mapcount[0] == new_total || folio.mm_id_mapcount[1] == new_total {
        folio.mm_ids_shared = false;
    }
}
