//! Why a collapse attempt ended as it did, for people: the model's decision records
//! ([`CollapseReport`]) of one attempt on one PMD range, rendered as text (the counts, the
//! sharing predicate's answer for every folio it was asked about, and a 16×32 picture of the
//! range before and after, one character a page) or as a stand-alone SVG of the same.

use std::fmt::Write as _;

use model::decision::{FolioSeen, PageKind, RangePicture};
use model::khugepaged::{CollapseContext, CollapseReport, CollapseStage};
use model::HPAGE_PMD_NR;

/// Pages per row of the picture (16 rows of 32 pages: one PMD range).
pub const ROW: usize = 32;

/// One collapse attempt: the records of consecutive stages on one range in one process (the
/// scan, then the collapse it led to), with where it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// Who was running (`khugepaged` or a process name doing MADV_COLLAPSE) and what: a
    /// headline such as `khugepaged on A (0x40000000) in child`.
    pub title: String,
    /// The scenario line that caused it (`file:line: text`), if known.
    pub line: Option<String>,
    pub records: Vec<CollapseReport>,
}

/// Groups records into attempts: consecutive records of the same process, range and context.
pub fn group(records: Vec<CollapseReport>) -> Vec<Vec<CollapseReport>> {
    let mut out: Vec<Vec<CollapseReport>> = Vec::new();
    for r in records {
        match out.last_mut() {
            Some(g)
                if g[0].pid == r.pid
                    && g[0].addr == r.addr
                    && g[0].context == r.context
                    && g.last().is_some_and(|l| continues(l.stage, r.stage)) =>
            {
                g.push(r)
            }
            _ => out.push(vec![r]),
        }
    }
    out
}

/// Whether a record of `next` stage belongs to the attempt that produced `prev`.
fn continues(prev: CollapseStage, next: CollapseStage) -> bool {
    matches!(
        (prev, next),
        (CollapseStage::ScanPmd, CollapseStage::CollapseHugePage)
            | (CollapseStage::ScanFile, CollapseStage::PteMappedThp)
    )
}

/// The kernel function a stage mirrors.
pub fn stage_name(s: CollapseStage) -> &'static str {
    match s {
        CollapseStage::ScanPmd => "hpage_collapse_scan_pmd",
        CollapseStage::CollapseHugePage => "collapse_huge_page",
        CollapseStage::ScanFile => "hpage_collapse_scan_file",
        CollapseStage::PteMappedThp => "collapse_pte_mapped_thp",
    }
}

/// Who decides: the khugepaged thread or MADV_COLLAPSE.
pub fn context_name(c: CollapseContext) -> &'static str {
    match c {
        CollapseContext::Khugepaged => "khugepaged",
        CollapseContext::Madvise => "MADV_COLLAPSE",
    }
}

/// The counts of one record, in the words of the kernel's tracepoints.
pub fn counts(r: &CollapseReport) -> String {
    let mut s = format!(
        "{}: {}  none_or_zero={} swap={} shared={} referenced={} writable={}",
        stage_name(r.stage),
        r.result,
        r.none_or_zero,
        r.swap,
        r.shared,
        r.referenced,
        r.writable
    );
    if r.stage == CollapseStage::ScanFile {
        let _ = write!(s, " present={}", r.present);
    }
    s
}

/// The sharing predicate's answers of one record: one line per folio, with runs of small
/// folios alike (same mapcount, same answer) on one line.
fn folio_lines(r: &CollapseReport) -> Vec<String> {
    let answer = |f: &FolioSeen| {
        if f.shared_ptes == 0 {
            "not shared".to_string()
        } else if f.shared_ptes == f.ptes {
            "shared".to_string()
        } else {
            format!("shared for {} of them", f.shared_ptes)
        }
    };
    let mut runs: Vec<Vec<&FolioSeen>> = Vec::new();
    for f in &r.folios {
        match runs.last_mut() {
            Some(run)
                if f.order == 0
                    && run[0].order == 0
                    && run[0].mapcount == f.mapcount
                    && answer(run[0]) == answer(f) =>
            {
                run.push(f)
            }
            _ => runs.push(vec![f]),
        }
    }
    runs.into_iter()
        .map(|run| {
            let f = run[0];
            let ptes: u32 = run.iter().map(|f| f.ptes).sum();
            let plural = if ptes == 1 { "" } else { "s" };
            if run.len() == 1 {
                format!(
                    "pfn {:#x} order {} mapcount {}: {ptes} PTE{plural} -> {}",
                    f.pfn,
                    f.order,
                    f.mapcount,
                    answer(f)
                )
            } else {
                format!(
                    "{} small folios, pfn {:#x} .. {:#x}, mapcount {} each: {ptes} PTE{plural} -> {}",
                    run.len(),
                    f.pfn,
                    run[run.len() - 1].pfn,
                    f.mapcount,
                    answer(f)
                )
            }
        })
        .collect()
}

/// The kinds present in either picture, in legend order.
fn kinds_in(pics: &[&RangePicture]) -> Vec<PageKind> {
    PageKind::ALL
        .into_iter()
        .filter(|k| pics.iter().any(|p| p.pages.contains(k)))
        .collect()
}

/// The picture of `before` and `after` side by side: 16 rows of 32 pages, each row labelled
/// with its first page.
pub fn grid(before: &RangePicture, after: &RangePicture) -> Vec<String> {
    let b = before.symbols();
    let a = after.symbols();
    let mut lines = vec![format!("      {:<w$}    after", "before", w = ROW)];
    for row in 0..HPAGE_PMD_NR / ROW {
        let r = row * ROW..(row + 1) * ROW;
        lines.push(format!("{:>5} {}    {}", row * ROW, &b[r.clone()], &a[r]));
    }
    lines
}

/// The legend of the kinds the pictures use.
pub fn legend(pics: &[&RangePicture]) -> Vec<String> {
    kinds_in(pics)
        .into_iter()
        .map(|k| format!("{} {}", k.symbol(), k.describe()))
        .collect()
}

impl Attempt {
    /// The picture before the first stage and after the last.
    pub fn pictures(&self) -> (&RangePicture, &RangePicture) {
        let first = self.records.first().expect("an attempt has a record");
        let last = self.records.last().expect("an attempt has a record");
        (&first.before, &last.after)
    }

    /// The whole explanation as text lines.
    pub fn text(&self) -> Vec<String> {
        let mut out = vec![self.title.clone()];
        if let Some(l) = &self.line {
            out.push(format!("  caused by {l}"));
        }
        for r in &self.records {
            out.push(format!("  {}", counts(r)));
            let folios = folio_lines(r);
            if !folios.is_empty() {
                out.push(format!("    sharing predicate {}:", r.predicate.name()));
                out.extend(folios.into_iter().map(|f| format!("      {f}")));
            }
        }
        let (before, after) = self.pictures();
        if before.pages.is_empty() || after.pages.is_empty() {
            out.push("  (no picture: the model's decision_detail is off)".into());
            return out;
        }
        if before == after && before.pages.iter().all(|k| *k == before.pages[0]) {
            // Nothing to look at: one kind throughout, unchanged.
            let k = before.pages[0];
            out.push(format!(
                "  range: all {} pages {} {} (unchanged)",
                before.pages.len(),
                k.symbol(),
                k.describe()
            ));
            return out;
        }
        out.extend(grid(before, after).into_iter().map(|l| format!("  {l}")));
        out.push("  legend:".into());
        out.extend(
            legend(&[before, after])
                .into_iter()
                .map(|l| format!("    {l}")),
        );
        out
    }

    /// The same explanation as a stand-alone SVG document.
    pub fn svg(&self) -> String {
        const CELL: usize = 12;
        const PAD: usize = 16;
        const LINE: usize = 16;
        let (before, after) = self.pictures();
        let mut text: Vec<String> = Vec::new();
        if let Some(l) = &self.line {
            text.push(format!("caused by {l}"));
        }
        for r in &self.records {
            text.push(counts(r));
            let folios = folio_lines(r);
            if !folios.is_empty() {
                text.push(format!("  sharing predicate {}:", r.predicate.name()));
                text.extend(folios.into_iter().map(|f| format!("    {f}")));
            }
        }
        let kinds = kinds_in(&[before, after]);
        let grid_w = ROW * CELL;
        let grid_h = HPAGE_PMD_NR / ROW * CELL;
        let label_w = 40;
        // Wide enough for both grids and for the longest text line (monospace 12 px: about
        // 7.2 px a character).
        let longest = text
            .iter()
            .chain(std::iter::once(&self.title))
            .map(|t| t.chars().count())
            .max()
            .unwrap_or(0);
        let width = (PAD * 2 + (label_w + grid_w) * 2 + PAD * 2).max(PAD * 2 + longest * 15 / 2);
        let text_top = PAD + LINE * 2;
        let grid_top = text_top + text.len() * LINE + LINE * 2;
        let legend_top = grid_top + grid_h + LINE * 2;
        let height = legend_top + kinds.len() * LINE + PAD;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
             viewBox=\"0 0 {width} {height}\" font-family=\"monospace\" font-size=\"12\">"
        );
        let _ = writeln!(
            s,
            "<rect width=\"{width}\" height=\"{height}\" fill=\"white\"/>"
        );
        let _ = writeln!(
            s,
            "<text x=\"{PAD}\" y=\"{}\" font-size=\"14\" font-weight=\"bold\">{}</text>",
            PAD + LINE,
            esc(&self.title)
        );
        for (i, t) in text.iter().enumerate() {
            let _ = writeln!(
                s,
                "<text x=\"{PAD}\" y=\"{}\" xml:space=\"preserve\">{}</text>",
                text_top + (i + 1) * LINE,
                esc(t)
            );
        }
        for (n, (name, pic)) in [("before", before), ("after", after)]
            .into_iter()
            .enumerate()
        {
            let x0 = PAD + label_w + n * (label_w + grid_w + PAD * 2);
            let _ = writeln!(
                s,
                "<text x=\"{x0}\" y=\"{}\" font-weight=\"bold\">{name}</text>",
                grid_top - 4
            );
            for row in 0..HPAGE_PMD_NR / ROW {
                let _ = writeln!(
                    s,
                    "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" font-size=\"10\">{}</text>",
                    x0 - 4,
                    grid_top + row * CELL + CELL - 2,
                    row * ROW
                );
            }
            for (i, k) in pic.pages.iter().enumerate() {
                let x = x0 + (i % ROW) * CELL;
                let y = grid_top + (i / ROW) * CELL;
                let _ = writeln!(
                    s,
                    "<rect x=\"{x}\" y=\"{y}\" width=\"{CELL}\" height=\"{CELL}\" fill=\"{}\" \
                     stroke=\"#ffffff\" stroke-width=\"1\"><title>page {i}: {}</title></rect>",
                    color(*k),
                    esc(k.describe())
                );
            }
        }
        for (i, k) in kinds.iter().enumerate() {
            let y = legend_top + i * LINE;
            let _ = writeln!(
                s,
                "<rect x=\"{PAD}\" y=\"{}\" width=\"{CELL}\" height=\"{CELL}\" fill=\"{}\" \
                 stroke=\"#888888\" stroke-width=\"1\"/>",
                y - CELL + 2,
                color(*k)
            );
            let _ = writeln!(
                s,
                "<text x=\"{}\" y=\"{y}\" xml:space=\"preserve\">{}  {}</text>",
                PAD + CELL + 8,
                esc(&k.symbol().to_string()),
                esc(k.describe())
            );
        }
        s.push_str("</svg>\n");
        s
    }
}

/// The fill of a page kind in the SVG: PMD mappings dark, exclusive pages green, shared
/// pages orange/red, page cache blue, holes light.
fn color(k: PageKind) -> &'static str {
    match k {
        PageKind::None => "#eeeeee",
        PageKind::Swap => "#9467bd",
        PageKind::Zero => "#c7c7c7",
        PageKind::HugeZero => "#7f7f7f",
        PageKind::Pmd { file: false } => "#1b5e20",
        PageKind::Pmd { file: true } => "#0d47a1",
        PageKind::Pte {
            file: false,
            large,
            shared,
        } => match (large, shared) {
            (true, false) => "#66bb6a",
            (true, true) => "#e65100",
            (false, false) => "#a5d6a7",
            (false, true) => "#ffb74d",
        },
        PageKind::Pte {
            file: true,
            large,
            shared,
        } => match (large, shared) {
            (true, false) => "#42a5f5",
            (true, true) => "#ad1457",
            (false, false) => "#90caf9",
            (false, true) => "#f48fb1",
        },
    }
}

/// XML text escaping.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
