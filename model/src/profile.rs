//! Kernel profiles: the behaviour of one kernel release, composed from changes.
//!
//! Every behavioural difference between the modelled releases is one [`Switch`]: a named field
//! of [`KernelProfile`] with its history, the release where each value starts, the title of the
//! kernel commit (or series) that made the change, and what the kernel code does from then on.
//! [`KernelProfile::for_release`] starts from 6.1 and applies every change up to the release
//! asked for. Model code asks the profile, never a release number.
//!
//! How each boundary was checked is part of its history entry ([`Change::evidence`]): the
//! Debian `linux-source-6.1` (6.1.192) and `linux-source-6.12` (6.12.117) trees were read for
//! the 6.1 and 6.12 sides; the 6.18 side is the 6.18 reference tree this project follows
//! (`/work/shared/reference/kernel-semantics.md`) and measurements on a 6.18 host; releases
//! after 6.18 come from the patch mails and LWN unless their evidence names Debian's
//! `linux-source-7.2` / `linux-source-7.3` trees, which were read where it says so.

use std::fmt;

/// A kernel release series, `major.minor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Release {
    pub major: u8,
    pub minor: u8,
}

const fn rel(major: u8, minor: u8) -> Release {
    Release { major, minor }
}

/// Every release the model has a profile for, oldest first (6.1 … 6.19, 7.0 … 7.3).
pub const RELEASES: &[Release] = &[
    rel(6, 1),
    rel(6, 2),
    rel(6, 3),
    rel(6, 4),
    rel(6, 5),
    rel(6, 6),
    rel(6, 7),
    rel(6, 8),
    rel(6, 9),
    rel(6, 10),
    rel(6, 11),
    rel(6, 12),
    rel(6, 13),
    rel(6, 14),
    rel(6, 15),
    rel(6, 16),
    rel(6, 17),
    rel(6, 18),
    rel(6, 19),
    rel(7, 0),
    rel(7, 1),
    rel(7, 2),
    rel(7, 3),
];

/// The names of [`RELEASES`], index for index (profiles carry a `&'static str` name).
const RELEASE_NAMES: &[&str] = &[
    "6.1", "6.2", "6.3", "6.4", "6.5", "6.6", "6.7", "6.8", "6.9", "6.10", "6.11", "6.12", "6.13",
    "6.14", "6.15", "6.16", "6.17", "6.18", "6.19", "7.0", "7.1", "7.2", "7.3",
];

impl Release {
    /// The oldest release the model knows.
    pub const OLDEST: Release = rel(6, 1);
    /// The newest release the model knows.
    pub const NEWEST: Release = rel(7, 3);

    /// "6.12".
    pub fn name(self) -> &'static str {
        RELEASES
            .iter()
            .position(|&r| r == self)
            .map_or("?", |i| RELEASE_NAMES[i])
    }

    /// Parses a release number or a full kernel release string: `6.12`, `6.12.48`,
    /// `6.12.48+deb13-amd64`, `6.18.44-fc-v669`, `model-6.18`. The series must be one of
    /// [`RELEASES`].
    pub fn parse(text: &str) -> Result<Release, ProfileError> {
        let bad = || ProfileError::NotARelease(text.to_string());
        let start = text.find(|c: char| c.is_ascii_digit()).ok_or_else(bad)?;
        let mut parts = text[start..].split('.');
        let number = |s: Option<&str>| -> Option<u8> {
            let s = s?;
            let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            s[..end].parse().ok()
        };
        let major = number(parts.next()).ok_or_else(bad)?;
        let minor = number(parts.next()).ok_or_else(bad)?;
        let r = rel(major, minor);
        if RELEASES.contains(&r) {
            Ok(r)
        } else if r < Release::OLDEST {
            Err(ProfileError::TooOld(text.to_string()))
        } else {
            Err(ProfileError::Unknown(text.to_string()))
        }
    }
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Why a release has no profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProfileError {
    /// No `major.minor` in the text.
    NotARelease(String),
    /// Before 6.1.
    TooOld(String),
    /// A series the model does not know (newer than 7.3, or 6.20+).
    Unknown(String),
}

impl fmt::Display for ProfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let known = format!(
            "the model has profiles for {} … {} ({})",
            Release::OLDEST,
            Release::NEWEST,
            RELEASE_NAMES.join(", ")
        );
        match self {
            ProfileError::NotARelease(t) => {
                write!(f, "{t:?} is not a kernel release (expected e.g. 6.12 or 6.12.48+deb13-amd64); {known}")
            }
            ProfileError::TooOld(t) => write!(
                f,
                "kernel {t} is older than {}, the oldest release modelled (no MADV_COLLAPSE before 6.1); {known}",
                Release::OLDEST
            ),
            ProfileError::Unknown(t) => write!(f, "kernel {t} is not a release the model knows; {known}"),
        }
    }
}

impl std::error::Error for ProfileError {}

/// The test khugepaged applies to the folio of each present PTE when counting shared PTEs
/// against `max_ptes_shared` (`hpage_collapse_scan_pmd`, `__collapse_huge_page_isolate`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SharingPredicate {
    /// `page_mapcount(page) > 1`, per subpage: the precise mapcount of the page the PTE maps,
    /// including PMD mappings of the folio elsewhere.
    PageMapcount,
    /// `folio_likely_mapped_shared(folio)`: the folio's total mapcount heuristic, which looks
    /// at page 0 when the total does not decide.
    FolioLikelyMappedShared,
    /// `folio_maybe_mapped_shared(folio)`: the MM-owner tracking answer (no false negatives).
    FolioMaybeMappedShared,
}

/// How /proc/PID/pagemap computes PM_MMAP_EXCLUSIVE for the 512 entries of a PMD-mapped THP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PagemapPmdExclusive {
    /// Each entry tests its own subpage's precise mapcount == 1.
    PerSubpage,
    /// Every entry tests the head page's precise mapcount == 1: the head is passed and never
    /// advanced.
    HeadPage,
}

/// Whether `do_wp_page` may reuse a page of an anonymous large folio.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LargeFolioCowReuse {
    /// The small-page rule applies unchanged: reuse iff the folio's refcount is 1 (a large
    /// folio mapped by a single PTE and nothing else).
    RefcountOne,
    /// Never reuse a large folio, always copy (`wp_can_reuse_anon_folio` returns false).
    Never,
    /// Reuse when this MM is the only mapper and every reference is a mapping
    /// (`__wp_can_reuse_large_anon_folio`, needs CONFIG_MM_ID).
    ExclusiveMapper,
}

/// When the khugepaged thread runs (and `khugepaged_enter_vma` registers an MM): the test
/// `start_stop_khugepaged` and `khugepaged_enter_vma` make of the THP settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KhugepagedThread {
    /// `hugepage_flags_enabled()`: the global `enabled` is always or madvise.
    Global,
    /// The global `enabled`, or any anonymous size always or madvise.
    GlobalOrAnySize,
    /// `hugepage_pmd_enabled()`: the anonymous PMD size enabled (inherit counting the
    /// global setting), or the global setting with CONFIG_READ_ONLY_THP_FOR_FS.
    PmdSize,
    /// [`KhugepagedThread::PmdSize`], or `shmem_hpage_pmd_enabled()`. From 7.2 the mTHP
    /// collapse series replaces the test with `hugepage_enabled()` (the global setting, any
    /// anonymous size, or shmem's PMD size), which [`Switch::KhugepagedMthpCollapse`] carries.
    PmdSizeOrShmem,
}

/// One behavioural switch of [`KernelProfile`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Switch {
    LargeFolioCowReuse,
    AnonMthp,
    KhugepagedThread,
    ZapBatchesLargeFolioPtes,
    KhugepagedSharing,
    ScanAnonCheckBeforeShared,
    ShmemMthp,
    PagemapPmdExclusive,
    UnderusedThpShrinker,
    MmId,
    CollapseBatchesLargeFolioPtes,
    CollapseRequiresWritablePte,
    RetractPageTablesEveryMm,
    ScanNoPteTable,
    FileThpWithoutReadOnlyConfig,
    KhugepagedMthpCollapse,
    MadviseCollapseWritesBackDirty,
    MadviseCollapseShortRangeSucceeds,
    KhugepagedProgressCountsScannedPtes,
}

/// One value of a switch: from which release it holds, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    /// First release with this value (6.1 for the baseline).
    pub release: Release,
    /// The value, as `--profile list` prints it.
    pub value: &'static str,
    /// Title of the kernel commit or patch series that made the change (the baseline names
    /// the 6.1 code instead).
    pub commit: &'static str,
    /// What the kernel code does with this value.
    pub what: &'static str,
    /// How the release boundary was checked.
    pub evidence: &'static str,
}

const SRC_61_612: &str = "read in Debian's linux-source-6.1 and linux-source-6.12";

impl Switch {
    /// Every switch, in the order its first change happened.
    pub const ALL: &'static [Switch] = &[
        Switch::LargeFolioCowReuse,
        Switch::RetractPageTablesEveryMm,
        Switch::AnonMthp,
        Switch::KhugepagedThread,
        Switch::ZapBatchesLargeFolioPtes,
        Switch::KhugepagedSharing,
        Switch::ScanAnonCheckBeforeShared,
        Switch::ShmemMthp,
        Switch::PagemapPmdExclusive,
        Switch::UnderusedThpShrinker,
        Switch::MmId,
        Switch::CollapseBatchesLargeFolioPtes,
        Switch::CollapseRequiresWritablePte,
        Switch::ScanNoPteTable,
        Switch::FileThpWithoutReadOnlyConfig,
        Switch::KhugepagedMthpCollapse,
        Switch::MadviseCollapseWritesBackDirty,
        Switch::MadviseCollapseShortRangeSucceeds,
        Switch::KhugepagedProgressCountsScannedPtes,
    ];

    /// The field name in [`KernelProfile`].
    pub fn name(self) -> &'static str {
        match self {
            Switch::LargeFolioCowReuse => "large_folio_cow_reuse",
            Switch::AnonMthp => "anon_mthp",
            Switch::KhugepagedThread => "khugepaged_thread",
            Switch::ZapBatchesLargeFolioPtes => "zap_batches_large_folio_ptes",
            Switch::KhugepagedSharing => "khugepaged_sharing",
            Switch::ScanAnonCheckBeforeShared => "scan_anon_check_before_shared",
            Switch::ShmemMthp => "shmem_mthp",
            Switch::PagemapPmdExclusive => "pagemap_pmd_exclusive",
            Switch::UnderusedThpShrinker => "underused_thp_shrinker",
            Switch::MmId => "mm_id",
            Switch::CollapseBatchesLargeFolioPtes => "collapse_batches_large_folio_ptes",
            Switch::CollapseRequiresWritablePte => "collapse_requires_writable_pte",
            Switch::ScanNoPteTable => "scan_no_pte_table",
            Switch::RetractPageTablesEveryMm => "retract_page_tables_every_mm",
            Switch::FileThpWithoutReadOnlyConfig => "file_thp_without_read_only_config",
            Switch::KhugepagedMthpCollapse => "khugepaged_mthp_collapse",
            Switch::MadviseCollapseWritesBackDirty => "madvise_collapse_writes_back_dirty",
            Switch::MadviseCollapseShortRangeSucceeds => "madvise_collapse_short_range_succeeds",
            Switch::KhugepagedProgressCountsScannedPtes => {
                "khugepaged_progress_counts_scanned_ptes"
            }
        }
    }

    /// The values of the switch, oldest first; the first holds from 6.1.
    pub fn history(self) -> &'static [Change] {
        match self {
            Switch::LargeFolioCowReuse => &[
                Change {
                    release: Release::OLDEST,
                    value: "refcount-one",
                    commit: "do_wp_page() reuse test on the folio refcount (6.1)",
                    what: "a write fault on an anonymous page reuses it iff the folio refcount \
                           is 1 (plus the swap cache), large folio or not; a THP PTE-mapped by \
                           one PTE only is reused",
                    evidence: "read in linux-source-6.1 (mm/memory.c do_wp_page)",
                },
                Change {
                    release: Release { major: 6, minor: 6 },
                    value: "never",
                    commit: "wp_can_reuse_anon_folio(): large folios are never reused (6.6; \
                             exact commit title not verified)",
                    what: "wp_can_reuse_anon_folio() returns false for any large folio: every \
                           write to a COW-shared page of one copies it",
                    evidence: "present in linux-source-6.12; the 6.6 boundary is from the \
                               reference, not checked against a tag",
                },
                Change {
                    release: Release {
                        major: 6,
                        minor: 15,
                    },
                    value: "exclusive-mapper",
                    commit: "mm: COW reuse support for PTE-mapped THP with CONFIG_MM_ID (MM \
                             owner tracking series; title recalled, not checked)",
                    what: "a large folio is reused when this MM is its only mapper \
                           (folio_maybe_mapped_shared false, CONFIG_MM_ID) and every reference \
                           is a mapping",
                    evidence: "6.18 reference tree; absent from linux-source-6.12; still so in \
                               linux-source-7.3 (mm/memory.c)",
                },
            ],
            Switch::AnonMthp => &[
                Change {
                    release: Release::OLDEST,
                    value: "no",
                    commit: "PMD-size THP only (6.1)",
                    what: "no hugepages-<N>kB directories; anonymous faults allocate an order-0 \
                           page or, where `enabled` allows, a PMD THP",
                    evidence: "read in linux-source-6.1 (no thpsize kobjects in \
                               mm/huge_memory.c)",
                },
                Change {
                    release: Release { major: 6, minor: 8 },
                    value: "yes",
                    commit: "mm: thp: introduce multi-size THP sysfs interface",
                    what: "hugepages-<N>kB/enabled for orders 2..9 \
                           (always/inherit/madvise/never); alloc_anon_folio tries the highest \
                           allowed order at an anonymous fault",
                    evidence: "present in linux-source-6.12; release from the series' merge \
                               (6.8)",
                },
            ],
            Switch::KhugepagedThread => &[
                Change {
                    release: Release::OLDEST,
                    value: "global",
                    commit: "start_stop_khugepaged() on hugepage_flags_enabled() (6.1)",
                    what: "the thread runs, and MMs are registered, only while the global \
                           `enabled` is always or madvise; shmem_enabled does not count",
                    evidence: "read in linux-source-6.1 (include/linux/huge_mm.h \
                               hugepage_flags_enabled, mm/khugepaged.c); on the matrix's \
                               6.1 kernel the 7.3 selftest's mthp_khugepaged waits time out \
                               (full_scans still) with `enabled` never and shmem_enabled \
                               advise",
                },
                Change {
                    release: Release { major: 6, minor: 8 },
                    value: "global-or-any-size",
                    commit: "mm: thp: introduce multi-size THP sysfs interface",
                    what: "hugepage_flags_enabled() also counts any anonymous size set to \
                           always or madvise",
                    evidence: "recalled from the series (no 6.8 .. 6.10 source read); \
                               replaced before linux-source-6.12",
                },
                Change {
                    release: Release {
                        major: 6,
                        minor: 11,
                    },
                    value: "pmd-size",
                    commit: "mm: fix khugepaged activation policy",
                    what: "hugepage_pmd_enabled(): only the anonymous PMD size (inherit \
                           counting the global setting), or the global setting with \
                           CONFIG_READ_ONLY_THP_FOR_FS; neither other sizes nor shmem count",
                    evidence: "read in linux-source-6.12 (mm/khugepaged.c); on the matrix's \
                               6.12 kernel the 7.3 selftest's mthp_khugepaged waits time out; \
                               the 6.11 boundary is the fix's merge as recalled, not checked \
                               against a tag",
                },
                Change {
                    release: Release {
                        major: 6,
                        minor: 13,
                    },
                    value: "pmd-size-or-shmem",
                    commit: "hugepage_pmd_enabled() counts shmem_hpage_pmd_enabled() (exact \
                             commit title not verified)",
                    what: "shmem's PMD size enabled (shmem_enabled not deny) also keeps the \
                           thread running",
                    evidence: "absent from linux-source-6.12, present in the 6.18 reference \
                               and linux-source-7.3; on the matrix's 6.16 to 7.1 kernels \
                               khugepaged keeps scanning with `enabled` never and \
                               shmem_enabled advise; 6.13 to 6.15 were not read, so 6.13 is \
                               a lower bound of the release",
                },
            ],
            Switch::ZapBatchesLargeFolioPtes => &[
                Change {
                    release: Release::OLDEST,
                    value: "no",
                    commit: "page_remove_rmap() per PTE (6.1)",
                    what: "zap removes the rmap of one PTE at a time; the first PTE whose page \
                           becomes unmapped while the THP has no PMD mapping queues the THP \
                           for deferred split (thp_deferred_split_page), even when the rest \
                           of the THP is unmapped right after",
                    evidence: "read in linux-source-6.1 (mm/rmap.c page_remove_rmap, \
                               mm/huge_memory.c deferred_split_huge_page)",
                },
                Change {
                    release: Release { major: 6, minor: 9 },
                    value: "yes",
                    commit: "mm/memory: optimize unmap/zap with PTE-mapped THP",
                    what: "zap removes a batch of PTEs of one folio with \
                           folio_remove_rmap_ptes(); __folio_remove_rmap queues the folio only \
                           if pages became unmapped and others stay mapped (partially_mapped)",
                    evidence: "batched form read in linux-source-6.12; the 6.9 boundary is \
                               from the series date, not checked against a tag",
                },
            ],
            Switch::KhugepagedSharing => &[
                Change {
                    release: Release::OLDEST,
                    value: "page_mapcount",
                    commit: "max_ptes_shared with page_mapcount(page) > 1 (5.8)",
                    what: "khugepaged counts a PTE as shared when its own page's precise \
                           mapcount is above 1",
                    evidence: "read in linux-source-6.1 (hpage_collapse_scan_pmd)",
                },
                Change {
                    release: Release {
                        major: 6,
                        minor: 10,
                    },
                    value: "folio_likely_mapped_shared",
                    commit: "mm/khugepaged: replace page_mapcount() check by \
                             folio_likely_mapped_shared()",
                    what: "every PTE of a folio that folio_likely_mapped_shared() calls shared \
                           counts; the guess looks at page 0 when the total mapcount does not \
                           decide",
                    evidence: "read in linux-source-6.12; mainline 1bafe96e89f0 (6.10)",
                },
                Change {
                    release: Release {
                        major: 6,
                        minor: 15,
                    },
                    value: "folio_maybe_mapped_shared",
                    commit: "mm: convert folio_likely_mapped_shared() to \
                             folio_maybe_mapped_shared()",
                    what: "the MM-owner slots decide: shared once two MMs mapped the folio at \
                           the same time, no false negatives",
                    evidence: "6.18 reference tree; patch mail (MM owner tracking series, 6.15); \
                               still so in linux-source-7.3 (collapse_scan_pmd, \
                               __collapse_huge_page_isolate)",
                },
            ],
            Switch::ScanAnonCheckBeforeShared => &[
                Change {
                    release: Release::OLDEST,
                    value: "no",
                    commit: "hpage_collapse_scan_pmd() order of checks (6.1)",
                    what: "the sharing test runs before the !folio_test_anon test",
                    evidence: "read in linux-source-6.1",
                },
                Change {
                    release: Release {
                        major: 6,
                        minor: 10,
                    },
                    value: "yes",
                    commit: "mm/khugepaged: replace page_mapcount() check by \
                             folio_likely_mapped_shared()",
                    what: "SCAN_PAGE_ANON is decided before the sharing test",
                    evidence: "read in linux-source-6.12",
                },
            ],
            Switch::ShmemMthp => &[
                Change {
                    release: Release::OLDEST,
                    value: "no",
                    commit: "shmem PMD THP only (6.1)",
                    what: "no hugepages-<N>kB/shmem_enabled; shmem allocates PMD THPs by \
                           shmem_enabled and huge= only",
                    evidence: "read in linux-source-6.1",
                },
                Change {
                    release: Release {
                        major: 6,
                        minor: 11,
                    },
                    value: "yes",
                    commit: "mm: shmem: add multi-size THP sysfs interface for anonymous shmem",
                    what: "hugepages-<N>kB/shmem_enabled per size \
                           (always/inherit/within_size/advise/never)",
                    evidence: "present in linux-source-6.12 (thpsize_shmem_enabled); 6.11 from \
                               the series' merge",
                },
            ],
            Switch::PagemapPmdExclusive => &[
                Change {
                    release: Release::OLDEST,
                    value: "head-page",
                    commit: "pagemap_pmd_range() tests page_mapcount(head) once (6.1)",
                    what: "all 512 entries of a PMD mapping carry the head page's \
                           PM_MMAP_EXCLUSIVE",
                    evidence: "read in linux-source-6.1 (fs/proc/task_mmu.c)",
                },
                Change {
                    release: Release {
                        major: 6,
                        minor: 11,
                    },
                    value: "per-subpage",
                    commit: "fs/proc/task_mmu: properly detect PM_MMAP_EXCLUSIVE per page of \
                             PMD-mapped THPs",
                    what: "each entry tests its own subpage's precise mapcount",
                    evidence: "read in linux-source-6.12; 6.11 from the patch date",
                },
                Change {
                    release: Release {
                        major: 6,
                        minor: 15,
                    },
                    value: "head-page",
                    commit: "fs/proc/task_mmu: remove per-page mapcount dependency for \
                             PM_MMAP_EXCLUSIVE (CONFIG_NO_PAGE_MAPCOUNT series)",
                    what: "the PMD path passes the head page for every entry again",
                    evidence: "6.18 reference tree; measured on the 6.18 host (512/512 \
                               entries exclusive); still so in linux-source-7.3 \
                               (pagemap_pmd_range_thp passes the head page)",
                },
            ],
            Switch::UnderusedThpShrinker => &[
                Change {
                    release: Release::OLDEST,
                    value: "no",
                    commit: "deferred split only for partially mapped THPs (6.1)",
                    what: "a THP joins the deferred-split queue only when unmapping leaves \
                           part of it mapped",
                    evidence: "read in linux-source-6.1",
                },
                Change {
                    release: Release {
                        major: 6,
                        minor: 12,
                    },
                    value: "yes",
                    commit: "mm: split underused THPs",
                    what: "every THP made at fault or by collapse is queued \
                           (deferred_split_folio(folio, false)) for the underused shrinker; \
                           PG_partially_mapped (\"mm: introduce a pageflag for partially \
                           mapped folios\") keeps thp_deferred_split_page for the partial case",
                    evidence: "read in linux-source-6.12 (mm/huge_memory.c, mm/khugepaged.c)",
                },
            ],
            Switch::MmId => &[
                Change {
                    release: Release::OLDEST,
                    value: "no",
                    commit: "per-page mapcounts only (6.1)",
                    what: "large folios have no owner slots",
                    evidence: "read in linux-source-6.1 and linux-source-6.12",
                },
                Change {
                    release: Release {
                        major: 6,
                        minor: 15,
                    },
                    value: "yes",
                    commit: "mm/rmap: basic MM owner tracking for large folios (!hugetlb)",
                    what: "large folios record up to two owning MMs (_mm_id[2], \
                           _mm_id_mapcount[2]) and a maybe-shared bit",
                    evidence:
                        "6.18 reference tree; patch mail (6.15); still so in linux-source-7.3 \
                               (folio->_mm_ids)",
                },
            ],
            Switch::CollapseBatchesLargeFolioPtes => &[
                Change {
                    release: Release::OLDEST,
                    value: "no",
                    commit: "__collapse_huge_page_copy_succeeded() releases PTE by PTE (6.1)",
                    what: "an anonymous collapse removes the rmap of its source pages one PTE \
                           at a time, so a large source folio is partially mapped after its \
                           first page and queued for deferred split (thp_deferred_split_page) \
                           before its last page goes",
                    evidence: "read in linux-source-6.1 and 6.12 (page_remove_rmap / \
                               folio_remove_rmap_pte per PTE); collapse-pte-mapped-thp.scn \
                               counts +1 on the 6.1, 6.12 and 6.16 guests",
                },
                Change {
                    release: Release {
                        major: 6,
                        minor: 17,
                    },
                    value: "yes",
                    commit: "khugepaged: optimize __collapse_huge_page_copy_succeeded() by PTE \
                             batching",
                    what: "consecutive PTEs mapping consecutive pages of one large folio are \
                           cleared and unmapped in one folio_remove_rmap_ptes(); a source \
                           folio wholly inside the range leaves in one step and is not queued",
                    evidence: "collapse-pte-mapped-thp.scn: thp_deferred_split_page +1 on the \
                               6.16 guest, +0 on the 6.17, 6.18, 6.19, 7.0, 7.1, 7.2 and 7.3 \
                               guests and this 6.18 host; the series is from the 2025 patch \
                               mail, its tag not read",
                },
            ],
            Switch::CollapseRequiresWritablePte => &[
                Change {
                    release: Release::OLDEST,
                    value: "yes",
                    commit: "SCAN_PAGE_RO (6.1)",
                    what: "collapse needs at least one writable PTE in the range, else \
                           SCAN_PAGE_RO (MADV_COLLAPSE: EINVAL)",
                    evidence: SRC_61_612,
                },
                Change {
                    release: Release {
                        major: 6,
                        minor: 18,
                    },
                    value: "no",
                    commit: "mm: Enable khugepaged to operate on non-writable VMAs",
                    what: "SCAN_PAGE_RO is gone; read-only ranges collapse",
                    evidence:
                        "absent from the 6.18 reference tree; patch mail 2025-09; absent from \
                               linux-source-7.2 and 7.3",
                },
            ],
            Switch::RetractPageTablesEveryMm => &[
                Change {
                    release: Release::OLDEST,
                    value: "no",
                    commit: "retract_page_tables() under each MM's mmap_write_trylock (6.1)",
                    what: "after collapse_file, page tables over the range are retracted in \
                           every MM whose mmap_lock khugepaged can take; MADV_COLLAPSE \
                           retracts only its own and maps the new THP there itself \
                           (set_huge_pmd), so its scan_file reports SCAN_SUCCEED (a VMA with \
                           an anon_vma: SCAN_FAIL)",
                    evidence: "read in Debian's linux-source-6.1 (retract_page_tables with \
                               target_mm, set_huge_pmd); seen on Debian's 6.1.0-50 in the qemu \
                               guest: MADV_COLLAPSE of a memfd traces scan_file \
                               result=succeeded",
                },
                Change {
                    release: Release { major: 6, minor: 6 },
                    value: "yes",
                    commit: "mm/khugepaged: retract_page_tables() without mmap or vma lock",
                    what: "retract_page_tables takes no MM lock and retracts in every MM; \
                           MADV_COLLAPSE's collapse_file answers SCAN_PTE_MAPPED_HUGEPAGE and \
                           the call maps the THP through collapse_pte_mapped_thp",
                    evidence: "read in Debian's linux-source-6.12 (collapse_file: `if (cc && \
                               !cc->is_khugepaged) result = SCAN_PTE_MAPPED_HUGEPAGE`); the \
                               release is the series' merge (6.6), not checked on a 6.2 .. \
                               6.5 kernel",
                },
            ],
            Switch::ScanNoPteTable => &[
                Change {
                    release: Release::OLDEST,
                    value: "no",
                    commit: "find_pmd_or_thp_or_none() tells SCAN_PMD_NULL from SCAN_PMD_NONE \
                             (6.1)",
                    what: "a range without a PTE table is SCAN_PMD_NONE when the PMD entry is \
                           empty and SCAN_PMD_NULL otherwise (no PMD level, a non-present or \
                           bad PMD, no PTE table to map); MADV_COLLAPSE steps over \
                           SCAN_PMD_NULL but stops at SCAN_PMD_NONE (EINVAL)",
                    evidence: SRC_61_612,
                },
                Change {
                    release: Release {
                        major: 6,
                        minor: 19,
                    },
                    value: "yes",
                    commit: "mm/khugepaged: continue to collapse on SCAN_PMD_NONE; \
                             mm/khugepaged: unify SCAN_PMD_NONE and SCAN_PMD_NULL into \
                             SCAN_NO_PTE_TABLE",
                    what: "every such range is SCAN_NO_PTE_TABLE (tracepoint status \
                           `no_pte_table`), which MADV_COLLAPSE steps over and \
                           collapse_pte_mapped_thp treats as an emptied range (installs the \
                           PMD)",
                    evidence: "the huge_memory status strings of Debian's vmlinux images: \
                               pmd_null and pmd_none up to 6.18.15, no_pte_table from 6.19.14 \
                               on; read in linux-source-7.2 and 7.3 (mm/khugepaged.c \
                               find_pmd_or_thp_or_none, madvise_collapse); seen as \
                               `status=no_pte_table` in the 7.3 guest's scenario runs",
                },
            ],
            Switch::FileThpWithoutReadOnlyConfig => &[
                Change {
                    release: Release::OLDEST,
                    value: "no",
                    commit: "file_thp_enabled() needs CONFIG_READ_ONLY_THP_FOR_FS (6.1)",
                    what: "khugepaged and MADV_COLLAPSE build regular-file THPs only with \
                           CONFIG_READ_ONLY_THP_FOR_FS (off in Debian's and this host's \
                           kernels), and only for files nobody has open for writing",
                    evidence: SRC_61_612,
                },
                Change {
                    release: Release { major: 7, minor: 2 },
                    value: "yes",
                    commit: "Remove CONFIG_READ_ONLY_THP_FOR_FS and enable file THP for \
                             writable files (series)",
                    what: "file_thp_enabled() asks the mapping for PMD-order folio support \
                           instead of the config: regular files on large-folio filesystems \
                           (ext4, xfs) collapse, also while open for writing (collapse_file no \
                           longer fails on inode_is_open_for_write; a dirty folio still stops \
                           it); hugepage_pmd_enabled() no longer counts the config",
                    evidence: "read in Debian's linux-source-7.2 and linux-source-7.3 \
                               (mm/huge_memory.c file_thp_enabled, mm/khugepaged.c \
                               collapse_file) against linux-source-6.12; 7.1 has no \
                               linux-source package: the lower bound is the series' patch mails \
                               (\"[PATCH 7.2 v3]\", 2026-04)",
                },
            ],
            Switch::MadviseCollapseWritesBackDirty => &[
                Change {
                    release: Release::OLDEST,
                    value: "no",
                    commit: "madvise_collapse() gives up on dirty file folios (6.1)",
                    what: "MADV_COLLAPSE of a regular file's range with dirty page-cache \
                           folios fails (collapse_file refuses dirty folios)",
                    evidence: SRC_61_612,
                },
                Change {
                    release: Release { major: 7, minor: 2 },
                    value: "yes",
                    commit: "MADV_COLLAPSE writes dirty file folios back and retries once \
                             (collapse_single_pmd's triggered_wb)",
                    what: "collapse_file reports a dirty or writeback folio as \
                           SCAN_PAGE_DIRTY_OR_WRITEBACK (SCAN_FAIL before; MADV_COLLAPSE: \
                           EAGAIN, not EINVAL), and MADV_COLLAPSE (not khugepaged) then runs \
                           filemap_write_and_wait_range over the PMD range and tries once more",
                    evidence: "absent from linux-source-6.12's madvise_collapse, present in \
                               linux-source-7.2 and 7.3; 6.13 .. 7.1 were not read, so 7.2 is \
                               an upper bound of the release",
                },
            ],
            Switch::MadviseCollapseShortRangeSucceeds => &[
                Change {
                    release: Release::OLDEST,
                    value: "no",
                    commit: "madvise_collapse() compares thps with (hend - hstart) >> \
                             HPAGE_PMD_SHIFT (6.1)",
                    what: "MADV_COLLAPSE of a range inside one PMD range that holds no PMD \
                           boundary fails with EINVAL: hend is below hstart, the block count \
                           wraps around and the initial SCAN_FAIL gives the errno",
                    evidence: "read in linux-source-6.1 and linux-source-6.12; \
                               collapse-short-range.scn: EINVAL on this 6.18 host and the \
                               6.19, 7.0 and 7.1 guests",
                },
                Change {
                    release: Release { major: 7, minor: 2 },
                    value: "yes",
                    commit: "madvise_collapse() returns 0 when hstart >= hend",
                    what: "such a range succeeds (0) without collapsing anything",
                    evidence: "read in linux-source-7.2; collapse-short-range.scn: 0 on the \
                               7.2 guest, EINVAL on 7.1",
                },
            ],
            Switch::KhugepagedProgressCountsScannedPtes => &[
                Change {
                    release: Release::OLDEST,
                    value: "no",
                    commit: "khugepaged_scan_mm_slot() adds HPAGE_PMD_NR per range (6.1)",
                    what: "every PMD range khugepaged visits costs HPAGE_PMD_NR pages of the \
                           wake-up's pages_to_scan, whatever its scan found",
                    evidence: SRC_61_612,
                },
                Change {
                    release: Release { major: 7, minor: 2 },
                    value: "yes",
                    commit: "khugepaged counts its progress in cc->progress as it scans",
                    what: "a range costs the PTEs hpage_collapse_scan_pmd looked at (1 when \
                           there is no PTE table), a page-cache range 1 when it is already a \
                           THP and HPAGE_PMD_NR otherwise; the slot, a skipped VMA and a VMA \
                           the cursor has passed still cost 1 each",
                    evidence: "read in linux-source-7.2 and 7.3 (cc->progress in \
                               hpage_collapse_scan_pmd, hpage_collapse_scan_file and the mm \
                               slot walk); 6.13 .. 7.1 were not read, so 7.2 is an upper \
                               bound of the release",
                },
            ],
            Switch::KhugepagedMthpCollapse => &[
                Change {
                    release: Release::OLDEST,
                    value: "no",
                    commit: "khugepaged collapses to PMD order only (6.1)",
                    what: "khugepaged and MADV_COLLAPSE build PMD THPs only",
                    evidence: SRC_61_612,
                },
                Change {
                    release: Release { major: 7, minor: 2 },
                    value: "yes",
                    commit: "khugepaged: add mTHP collapse support (series)",
                    what: "khugepaged also collapses anonymous ranges to the enabled mTHP \
                           orders (collapse_possible_orders, mthp_collapse): the scan accepts \
                           every none PTE, then blocks are tried from the PMD order down to \
                           order 2; below the PMD order max_ptes_none is scaled to the order \
                           when it is 511 and is 0 otherwise, and a shared or swapped-out PTE \
                           refuses the block; the thread also runs when only an mTHP size is \
                           enabled (hugepage_enabled: the global `enabled` alone, any anonymous \
                           size, or shmem's PMD size; khugepaged_thread's rule before). \
                           MADV_COLLAPSE and file memory stay at the PMD order",
                    evidence: "read in Debian's linux-source-7.2 and linux-source-7.3 \
                               (mm/khugepaged.c); 7.1 has no linux-source package, so the \
                               lower bound is the series' merge per its patch mails (v18, \
                               2026-05)",
                },
            ],
        }
    }

    /// How many changes of this switch happened up to and including `r` (0: the 6.1 value).
    pub fn step_at(self, r: Release) -> usize {
        self.history()[1..]
            .iter()
            .filter(|c| c.release <= r)
            .count()
    }

    /// The change that gives `r` its value of this switch.
    pub fn change_at(self, r: Release) -> &'static Change {
        &self.history()[self.step_at(r)]
    }
}

/// Behaviour switches of one kernel release. Construct with [`KernelProfile::for_release`]
/// (or the [`KernelProfile::v6_1`], [`KernelProfile::v6_12`], [`KernelProfile::v6_18`]
/// shorthands). Each field's history is in [`Switch::history`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelProfile {
    /// The release ("6.12").
    pub name: &'static str,
    pub release: Release,
    /// khugepaged's sharing test; [`Switch::KhugepagedSharing`].
    pub khugepaged_sharing: SharingPredicate,
    /// CONFIG_MM_ID owner slots; [`Switch::MmId`]. Without it the slots stay empty and
    /// `folio_maybe_mapped_shared` is true for every large folio mapped twice.
    pub mm_id: bool,
    /// [`Switch::LargeFolioCowReuse`].
    pub large_folio_cow_reuse: LargeFolioCowReuse,
    /// [`Switch::CollapseRequiresWritablePte`].
    pub collapse_requires_writable_pte: bool,
    /// An anonymous collapse releases a large source folio's PTEs in batches;
    /// [`Switch::CollapseBatchesLargeFolioPtes`].
    pub collapse_batches_large_folio_ptes: bool,
    /// [`Switch::PagemapPmdExclusive`].
    pub pagemap_pmd_exclusive: PagemapPmdExclusive,
    /// [`Switch::UnderusedThpShrinker`].
    pub underused_thp_shrinker: bool,
    /// [`Switch::ScanAnonCheckBeforeShared`].
    pub scan_anon_check_before_shared: bool,
    /// hugepages-<N>kB/enabled exist and anonymous faults may allocate mTHPs;
    /// [`Switch::AnonMthp`].
    pub anon_mthp: bool,
    /// When the khugepaged thread runs; [`Switch::KhugepagedThread`].
    pub khugepaged_thread: KhugepagedThread,
    /// hugepages-<N>kB/shmem_enabled exist; [`Switch::ShmemMthp`].
    pub shmem_mthp: bool,
    /// Zap removes a folio's PTEs in one batch; [`Switch::ZapBatchesLargeFolioPtes`].
    pub zap_batches_large_folio_ptes: bool,
    /// Regular-file collapse without CONFIG_READ_ONLY_THP_FOR_FS;
    /// [`Switch::FileThpWithoutReadOnlyConfig`].
    pub file_thp_without_read_only_config: bool,
    /// [`Switch::RetractPageTablesEveryMm`].
    pub retract_page_tables_every_mm: bool,
    /// One SCAN_NO_PTE_TABLE for SCAN_PMD_NULL and SCAN_PMD_NONE; [`Switch::ScanNoPteTable`].
    pub scan_no_pte_table: bool,
    /// khugepaged collapses anonymous memory to mTHP orders; [`Switch::KhugepagedMthpCollapse`].
    pub khugepaged_mthp_collapse: bool,
    /// MADV_COLLAPSE writes dirty file folios back and retries;
    /// [`Switch::MadviseCollapseWritesBackDirty`].
    pub madvise_collapse_writes_back_dirty: bool,
    /// MADV_COLLAPSE of a range holding no PMD boundary succeeds;
    /// [`Switch::MadviseCollapseShortRangeSucceeds`].
    pub madvise_collapse_short_range_succeeds: bool,
    /// [`Switch::KhugepagedProgressCountsScannedPtes`].
    pub khugepaged_progress_counts_scanned_ptes: bool,
}

impl KernelProfile {
    /// The profile of release `r`: the 6.1 values with every later change up to `r` applied.
    pub fn of(r: Release) -> KernelProfile {
        let mut p = KernelProfile {
            name: r.name(),
            release: r,
            khugepaged_sharing: SharingPredicate::PageMapcount,
            mm_id: false,
            large_folio_cow_reuse: LargeFolioCowReuse::RefcountOne,
            collapse_requires_writable_pte: true,
            pagemap_pmd_exclusive: PagemapPmdExclusive::HeadPage,
            underused_thp_shrinker: false,
            scan_anon_check_before_shared: false,
            anon_mthp: false,
            khugepaged_thread: KhugepagedThread::Global,
            shmem_mthp: false,
            zap_batches_large_folio_ptes: false,
            collapse_batches_large_folio_ptes: false,
            file_thp_without_read_only_config: false,
            scan_no_pte_table: false,
            retract_page_tables_every_mm: false,
            khugepaged_mthp_collapse: false,
            madvise_collapse_writes_back_dirty: false,
            madvise_collapse_short_range_succeeds: false,
            khugepaged_progress_counts_scanned_ptes: false,
        };
        for &s in Switch::ALL {
            p.set_step(s, s.step_at(r));
        }
        p
    }

    /// Sets switch `s` to the value of its history entry `step`.
    fn set_step(&mut self, s: Switch, step: usize) {
        let on = step > 0;
        match s {
            Switch::LargeFolioCowReuse => {
                self.large_folio_cow_reuse = [
                    LargeFolioCowReuse::RefcountOne,
                    LargeFolioCowReuse::Never,
                    LargeFolioCowReuse::ExclusiveMapper,
                ][step]
            }
            Switch::AnonMthp => self.anon_mthp = on,
            Switch::KhugepagedThread => {
                self.khugepaged_thread = [
                    KhugepagedThread::Global,
                    KhugepagedThread::GlobalOrAnySize,
                    KhugepagedThread::PmdSize,
                    KhugepagedThread::PmdSizeOrShmem,
                ][step]
            }
            Switch::ZapBatchesLargeFolioPtes => self.zap_batches_large_folio_ptes = on,
            Switch::KhugepagedSharing => {
                self.khugepaged_sharing = [
                    SharingPredicate::PageMapcount,
                    SharingPredicate::FolioLikelyMappedShared,
                    SharingPredicate::FolioMaybeMappedShared,
                ][step]
            }
            Switch::ScanAnonCheckBeforeShared => self.scan_anon_check_before_shared = on,
            Switch::ShmemMthp => self.shmem_mthp = on,
            Switch::PagemapPmdExclusive => {
                self.pagemap_pmd_exclusive = [
                    PagemapPmdExclusive::HeadPage,
                    PagemapPmdExclusive::PerSubpage,
                    PagemapPmdExclusive::HeadPage,
                ][step]
            }
            Switch::UnderusedThpShrinker => self.underused_thp_shrinker = on,
            Switch::MmId => self.mm_id = on,
            Switch::CollapseBatchesLargeFolioPtes => self.collapse_batches_large_folio_ptes = on,
            Switch::CollapseRequiresWritablePte => self.collapse_requires_writable_pte = !on,
            Switch::FileThpWithoutReadOnlyConfig => self.file_thp_without_read_only_config = on,
            Switch::ScanNoPteTable => self.scan_no_pte_table = on,
            Switch::RetractPageTablesEveryMm => self.retract_page_tables_every_mm = on,
            Switch::KhugepagedMthpCollapse => self.khugepaged_mthp_collapse = on,
            Switch::MadviseCollapseWritesBackDirty => self.madvise_collapse_writes_back_dirty = on,
            Switch::MadviseCollapseShortRangeSucceeds => {
                self.madvise_collapse_short_range_succeeds = on
            }
            Switch::KhugepagedProgressCountsScannedPtes => {
                self.khugepaged_progress_counts_scanned_ptes = on
            }
        }
    }

    /// This profile with switch `s` set to its value at release `r` (the rest unchanged):
    /// flipping one switch at a time to find which change altered an outcome.
    pub fn with_switch_of(&self, s: Switch, r: Release) -> KernelProfile {
        let mut p = self.clone();
        p.set_step(s, s.step_at(r));
        p
    }

    /// The switches whose value differs between releases `a` and `b`.
    pub fn switches_changed(a: Release, b: Release) -> Vec<Switch> {
        Switch::ALL
            .iter()
            .copied()
            .filter(|s| s.step_at(a) != s.step_at(b))
            .collect()
    }

    /// Debian bookworm's 6.1.
    pub fn v6_1() -> Self {
        Self::of(rel(6, 1))
    }

    /// Debian trixie's 6.12.
    pub fn v6_12() -> Self {
        Self::of(rel(6, 12))
    }

    /// 6.18, the release this project develops on.
    pub fn v6_18() -> Self {
        Self::of(rel(6, 18))
    }

    /// The profile of every release, oldest first.
    pub fn all() -> Vec<KernelProfile> {
        RELEASES.iter().map(|&r| Self::of(r)).collect()
    }

    /// One profile per distinct behaviour: the first release of every combination of switch
    /// values, oldest first (for tests that need each behaviour once, not each release).
    pub fn eras() -> Vec<KernelProfile> {
        let mut out: Vec<KernelProfile> = Vec::new();
        for p in Self::all() {
            let same = out.last().is_some_and(|q| {
                Switch::ALL
                    .iter()
                    .all(|s| s.step_at(q.release) == s.step_at(p.release))
            });
            if !same {
                out.push(p);
            }
        }
        out
    }

    /// Looks a profile up by its release number ("6.1", "6.12", "7.3").
    pub fn by_name(name: &str) -> Option<KernelProfile> {
        Self::all().into_iter().find(|p| p.name == name)
    }

    /// The profile for a release number or kernel release string (`6.12`,
    /// `6.12.48+deb13-amd64`, `6.18.44-fc-v669`); an error naming the known releases for
    /// anything older than 6.1, newer than 7.3 or not a release.
    pub fn for_release(release: &str) -> Result<KernelProfile, ProfileError> {
        Release::parse(release).map(Self::of)
    }

    /// `--profile list`: every switch, each value with the release where it starts, the
    /// kernel commit and what the code does.
    pub fn list() -> String {
        let mut out = String::new();
        for &s in Switch::ALL {
            out.push_str(s.name());
            out.push('\n');
            for c in s.history() {
                out.push_str(&format!(
                    "  {:<5} {:<26} {}\n        {}\n        evidence: {}\n",
                    c.release.to_string(),
                    c.value,
                    squash(c.commit),
                    squash(c.what),
                    squash(c.evidence)
                ));
            }
        }
        out
    }
}

/// Collapses the runs of spaces that line continuations leave in the tables above.
fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl Default for KernelProfile {
    fn default() -> Self {
        Self::v6_18()
    }
}

impl fmt::Display for KernelProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_parse_to_their_own_profile() {
        let name = |s: &str| KernelProfile::for_release(s).unwrap().name;
        assert_eq!(name("6.1.0-56-amd64"), "6.1");
        assert_eq!(name("6.12.48+deb13-amd64"), "6.12");
        assert_eq!(name("6.14.2"), "6.14");
        assert_eq!(name("6.18.44-fc-v669"), "6.18");
        assert_eq!(name("model-6.18"), "6.18");
        assert_eq!(name("7.0.1"), "7.0");
        assert_eq!(name("7.3"), "7.3");
    }

    #[test]
    fn unknown_releases_are_refused_with_what_is_known() {
        for (text, err) in [
            ("5.15.0", ProfileError::TooOld("5.15.0".into())),
            ("6.20", ProfileError::Unknown("6.20".into())),
            ("7.4.1", ProfileError::Unknown("7.4.1".into())),
            ("garbage", ProfileError::NotARelease("garbage".into())),
            ("6", ProfileError::NotARelease("6".into())),
        ] {
            let got = KernelProfile::for_release(text).unwrap_err();
            assert_eq!(got, err);
            let msg = got.to_string();
            assert!(
                msg.contains("6.1 … 7.3") && msg.contains("6.19, 7.0"),
                "{msg}"
            );
        }
    }

    #[test]
    fn the_three_reference_eras_keep_their_values() {
        let p = KernelProfile::v6_1();
        assert_eq!(p.khugepaged_sharing, SharingPredicate::PageMapcount);
        assert_eq!(p.large_folio_cow_reuse, LargeFolioCowReuse::RefcountOne);
        assert!(p.collapse_requires_writable_pte && !p.anon_mthp && !p.shmem_mthp);
        assert!(!p.zap_batches_large_folio_ptes && !p.underused_thp_shrinker);
        let p = KernelProfile::v6_12();
        assert_eq!(
            p.khugepaged_sharing,
            SharingPredicate::FolioLikelyMappedShared
        );
        assert_eq!(p.pagemap_pmd_exclusive, PagemapPmdExclusive::PerSubpage);
        assert_eq!(p.large_folio_cow_reuse, LargeFolioCowReuse::Never);
        assert!(p.anon_mthp && p.shmem_mthp && p.underused_thp_shrinker && !p.mm_id);
        let p = KernelProfile::v6_18();
        assert_eq!(
            p.khugepaged_sharing,
            SharingPredicate::FolioMaybeMappedShared
        );
        assert_eq!(p.pagemap_pmd_exclusive, PagemapPmdExclusive::HeadPage);
        assert!(p.mm_id && !p.collapse_requires_writable_pte);
        assert!(!p.file_thp_without_read_only_config);
        assert!(
            KernelProfile::for_release("7.3")
                .unwrap()
                .file_thp_without_read_only_config
        );
    }

    #[test]
    fn boundaries_flip_exactly_the_switches_of_their_changes() {
        let r = |s: &str| Release::parse(s).unwrap();
        assert_eq!(
            KernelProfile::switches_changed(r("6.7"), r("6.8")),
            vec![Switch::AnonMthp, Switch::KhugepagedThread]
        );
        assert_eq!(
            KernelProfile::switches_changed(r("6.14"), r("6.15")),
            vec![
                Switch::LargeFolioCowReuse,
                Switch::KhugepagedSharing,
                Switch::PagemapPmdExclusive,
                Switch::MmId
            ]
        );
        assert_eq!(
            KernelProfile::switches_changed(r("6.16"), r("6.17")),
            vec![Switch::CollapseBatchesLargeFolioPtes]
        );
        // Flipping every changed switch of a boundary turns one profile into the next.
        for w in RELEASES.windows(2) {
            let mut p = KernelProfile::of(w[0]);
            for s in KernelProfile::switches_changed(w[0], w[1]) {
                p = p.with_switch_of(s, w[1]);
            }
            let next = KernelProfile::of(w[1]);
            assert_eq!((p.release, p.name), (w[0], w[0].name()));
            p.release = next.release;
            p.name = next.name;
            assert_eq!(p, next);
        }
    }

    #[test]
    fn every_history_is_ordered_and_listed() {
        let list = KernelProfile::list();
        for &s in Switch::ALL {
            let h = s.history();
            assert_eq!(h[0].release, Release::OLDEST, "{}", s.name());
            assert!(h.windows(2).all(|w| w[0].release < w[1].release));
            assert!(list.contains(s.name()));
            for c in h {
                // Each commit title on one line, its continuation spaces collapsed.
                let one_line = c.commit.split_whitespace().collect::<Vec<_>>().join(" ");
                assert!(list.contains(&one_line), "{}", c.commit);
                assert!(!c.commit.contains("  ") || !list.contains(c.commit));
            }
        }
        assert_eq!(RELEASES.len(), RELEASE_NAMES.len());
        let eras: Vec<&str> = KernelProfile::eras().iter().map(|p| p.name).collect();
        assert_eq!(
            eras,
            [
                "6.1", "6.6", "6.8", "6.9", "6.10", "6.11", "6.12", "6.13", "6.15", "6.17", "6.18",
                "6.19", "7.2"
            ]
        );
    }
}
