//! Collapse decisions in the kernel's tracepoint terms, the form in which a model and a real
//! kernel are compared: scenarios (`scenario::run`) and the selftest catalogue's traces
//! (`trace`) both print them. The model's come from its `CollapseReport`s
//! ([`model_decisions`]); a host's from the huge_memory tracepoints (`host::decisions`).

use model::scan_result::ScanResult;
use once_cell::sync::Lazy;
use regex::Regex;

/// A process handle of a [`ScenarioExt`] backend.
pub type ProcId = u64;

/// One collapse decision the backend recorded (model: a `CollapseReport`; host: a huge_memory
/// tracepoint).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub process: ProcId,
    /// The PMD-aligned address of the range; None when the backend cannot tell (the host's
    /// tracepoints name the mm and a page, not the address: a scan that met no page is not
    /// placed).
    pub addr: Option<u64>,
    /// When `addr` is None but the decision is known to be on one of a run of PMD ranges
    /// (the host's file decisions on 6.1, whose tracepoints name neither the range nor a page
    /// the process maps): the first range's address and the end of the last.
    pub span: Option<(u64, u64)>,
    pub result: ScanResult,
    /// The decision as the kernel's tracepoint states it (`scan_pmd none_or_zero=1
    /// referenced=0 unmapped=0`), the form both backends are compared in; None for a decision
    /// the kernel does not trace (the model's collapse_pte_mapped_thp).
    pub record: Option<String>,
    /// The decision record in words, for logs and failures.
    pub text: String,
}

/// The model's collapse reports as decisions. A `scan_pmd` that said go and the
/// `collapse_huge_page` that followed are one decision, as the kernel traces them: one
/// mm_khugepaged_scan_pmd event, after the collapse, with the scan's counts and the final
/// result.
/// `with_writable`: the release's mm_khugepaged_scan_pmd has the `writable` field (up to 6.17,
/// the releases that require a writable PTE).
pub fn model_decisions(
    reports: Vec<model::khugepaged::CollapseReport>,
    with_writable: bool,
) -> Vec<Decision> {
    use model::khugepaged::{CollapseContext, CollapseStage};
    let mut out: Vec<Decision> = Vec::new();
    let mut pending_scan: Option<model::khugepaged::CollapseReport> = None;
    for r in reports {
        let ctx = match r.context {
            CollapseContext::Khugepaged => "khugepaged",
            CollapseContext::Madvise => "MADV_COLLAPSE",
        };
        let counts = format!(
            "{} none={} swap={} shared={} referenced={} writable={} present={}",
            r.result, r.none_or_zero, r.swap, r.shared, r.referenced, r.writable, r.present
        );
        let (scan, stage, record) = match r.stage {
            CollapseStage::ScanPmd if r.result == ScanResult::Succeed => {
                pending_scan = Some(r);
                continue;
            }
            CollapseStage::ScanPmd => (None, "scan_pmd", Some(scan_pmd_record(&r, with_writable))),
            CollapseStage::CollapseHugePage => {
                let scan = pending_scan
                    .take()
                    .filter(|s| s.pid == r.pid && s.addr == r.addr);
                let rec = scan.as_ref().map(|s| scan_pmd_record(s, with_writable));
                (scan, "collapse_huge_page", rec)
            }
            CollapseStage::ScanFile => (
                None,
                "scan_file",
                Some(format!("scan_file present={} swap={}", r.present, r.swap)),
            ),
            CollapseStage::PteMappedThp => (None, "collapse_pte_mapped_thp", None),
        };
        // The pair's result is what the scan traced after its collapse attempts (7.2's mTHP
        // walk may try many blocks; `outcome`), else the collapse's own.
        let result = scan.as_ref().and_then(|s| s.outcome).unwrap_or(r.result);
        let text = match &scan {
            Some(s) => format!(
                "{ctx} scan_pmd {:#x}: {} none={} swap={} shared={} referenced={} writable={} present={}; {stage}: {}",
                s.addr, s.result, s.none_or_zero, s.swap, s.shared, s.referenced, s.writable, s.present, result
            ),
            None => format!("{ctx} {stage} {:#x}: {counts}", r.addr),
        };
        out.push(Decision {
            process: r.pid as ProcId,
            addr: Some(r.addr),
            span: None,
            result,
            record,
            text,
        });
    }
    // A scan that said go but whose collapse was not reported (cannot happen in the model's
    // hpage_collapse_scan_pmd; kept rather than lost).
    if let Some(s) = pending_scan {
        out.push(Decision {
            process: s.pid as ProcId,
            addr: Some(s.addr),
            span: None,
            result: s.result,
            record: Some(scan_pmd_record(&s, with_writable)),
            text: format!("scan_pmd {:#x}: {}", s.addr, s.result),
        });
    }
    out
}

/// The counts mm_khugepaged_scan_pmd prints: none_or_zero, referenced and unmapped (swap
/// PTEs) on every release from 6.1 to 7.x; `writable` (whether any PTE was writable) up to
/// 6.17. The sharing count was never in it.
fn scan_pmd_record(r: &model::khugepaged::CollapseReport, with_writable: bool) -> String {
    let writable = if with_writable {
        format!(" writable={}", u32::from(r.writable > 0))
    } else {
        String::new()
    };
    format!(
        "scan_pmd none_or_zero={} referenced={} unmapped={}{writable}",
        r.none_or_zero, r.referenced, r.swap
    )
}

/// A decision of a catalogue trace: `decision pmd 1: SCAN_SUCCEED scan_pmd none_or_zero=0
/// referenced=512 unmapped=0`, the PMD range counted from the selftest's `BASE_ADDR` (the
/// test area's start in every test), `[parent]` before it for the parent's memory seen from a
/// forked child. A decision known only to be on one of a run of ranges says `pmd 0-3` (see
/// [`within_spans`] for how it is compared); one the backend could not place at all says
/// `pmd ?` and why, so it differs from any placed one. None for a decision the kernel does not
/// trace.
pub fn catalogue_line(parent: bool, d: &Decision) -> Option<(i64, String)> {
    let rec = &referenced_class(d.record.as_ref()?);
    let who = if parent { " [parent]" } else { "" };
    let pmd = model::HPAGE_PMD_SIZE as i64;
    let index = |a: u64| (a as i64 - crate::catalogue::BASE_ADDR as i64).div_euclid(pmd);
    Some(match (d.addr, d.span) {
        (Some(a), _) => {
            let i = index(a);
            (i, format!("decision{who} pmd {i}: {} {rec}", d.result))
        }
        (None, Some((start, end))) => {
            let (i, j) = (index(start), index(end) - 1);
            (i, format!("decision{who} pmd {i}-{j}: {} {rec}", d.result))
        }
        (None, None) => (
            i64::MAX,
            format!("decision{who} pmd ?: {} {rec} ({})", d.result, d.text),
        ),
    })
}

/// A catalogue decision line's parts.
struct DecisionLine<'a> {
    /// The text up to the range (`  decision [parent] pmd `).
    head: &'a str,
    /// First and last range (equal for a placed decision); None for `?`.
    range: Option<(i64, i64)>,
    /// What follows `: ` (result and record).
    rest: &'a str,
}

fn decision_parts(line: &str) -> Option<DecisionLine<'_>> {
    static LINE: Lazy<Regex> = Lazy::new(|| {
        Regex::new(r"^(\s*decision(?: \[parent\])? pmd )(?:(-?\d+)(?:-(-?\d+))?|\?): (.*)$")
            .expect("valid")
    });
    let c = LINE.captures(line)?;
    let range = match (c.get(2), c.get(3)) {
        (Some(i), j) => {
            let i: i64 = i.as_str().parse().ok()?;
            let j: i64 = j.map_or(Ok(i), |j| j.as_str().parse()).ok()?;
            Some((i, j))
        }
        _ => None,
    };
    Some(DecisionLine {
        head: c.get(1)?.as_str(),
        range,
        rest: c.get(4)?.as_str(),
    })
}

/// The model's decision lines compared with a kernel whose tracepoints could place some
/// decisions only on a run of ranges (`pmd 0-3`, [`catalogue_line`]): in each call, a model
/// decision on a range of such a run with the same process, result and record becomes the
/// kernel's line, then the call's lines are deduplicated and ordered as [`call_lines`] does.
/// So the kernel's line must be matched by the model on at least one range of its run, and
/// every other model decision there must be one the kernel made too; how many ranges of the
/// run had it is not compared. Calls are matched by the number of other lines before them.
pub fn within_spans(kernel: &[String], model: Vec<String>) -> Vec<String> {
    // Call key (lines that are not decisions before it) -> the kernel's span lines there.
    let mut spans: std::collections::BTreeMap<usize, Vec<(DecisionLine, &String)>> =
        Default::default();
    let mut others = 0;
    for l in kernel {
        match decision_parts(l) {
            Some(d) if d.range.is_some_and(|(i, j)| j > i) => {
                spans.entry(others).or_default().push((d, l))
            }
            Some(_) => {}
            None => others += 1,
        }
    }
    if spans.is_empty() {
        return model;
    }
    let mut out: Vec<String> = Vec::with_capacity(model.len());
    let mut run: Vec<String> = Vec::new();
    let mut others = 0;
    let flush = |run: &mut Vec<String>, out: &mut Vec<String>, key: usize| {
        let Some(lines) = spans.get(&key) else {
            out.append(run);
            return;
        };
        let mut set: std::collections::BTreeSet<(i64, String)> = Default::default();
        for l in run.drain(..) {
            let Some(DecisionLine {
                head,
                range: Some((n, m)),
                rest,
            }) = decision_parts(&l)
            else {
                set.insert((i64::MAX, l));
                continue;
            };
            let to = lines.iter().find_map(|(k, kernel_line)| {
                let (i, j) = k.range?;
                (k.head == head && k.rest == rest && n == m && (i..=j).contains(&n))
                    .then_some((i, kernel_line))
            });
            match to {
                Some((i, kernel_line)) => set.insert((i, kernel_line.to_string())),
                None => set.insert((n, l)),
            };
        }
        out.extend(set.into_iter().map(|(_, l)| l));
    };
    for l in model {
        if decision_parts(&l).is_some() {
            run.push(l);
        } else {
            flush(&mut run, &mut out, others);
            others += 1;
            out.push(l);
        }
    }
    flush(&mut run, &mut out, others);
    out
}

/// A scan_pmd record with its `referenced` count as the class khugepaged's verdict uses
/// (`hpage_collapse_scan_pmd`: SCAN_LACK_REFERENCED_PAGE when none is referenced, or when
/// PTEs are swapped out and fewer than half are): `referenced=0`, and otherwise `1+` without
/// swap PTEs, `1-255` or `256+` with. The count itself is of young PTEs and
/// PG_referenced/young folios, which the machine's page aging sets and clears outside the
/// test: two recordings of collapse_max_ptes_shared on one host saw 255 and 511 for the same
/// refusal. MADV_COLLAPSE never counts (0).
pub fn referenced_class(record: &str) -> String {
    let field = |k: &str| {
        record
            .split(' ')
            .find_map(|w| w.strip_prefix(k)?.parse::<u64>().ok())
    };
    let (Some(referenced), Some(unmapped)) = (field("referenced="), field("unmapped=")) else {
        return record.to_string();
    };
    let half = model::HPAGE_PMD_NR as u64 / 2;
    let class = match (referenced, unmapped) {
        (0, _) => "0".to_string(),
        (_, 0) => "1+".to_string(),
        (r, _) if r < half => format!("1-{}", half - 1),
        _ => format!("{half}+"),
    };
    record.replace(
        &format!("referenced={referenced}"),
        &format!("referenced={class}"),
    )
}

/// The decision lines of one call (a khugepaged wait or MADV_COLLAPSE): an identical decision
/// repeated within the call once (how often khugepaged passes a range in one wait depends on
/// the other MMs of the machine), ordered by PMD range, then by text.
pub fn call_lines(lines: impl IntoIterator<Item = (i64, String)>) -> Vec<String> {
    let set: std::collections::BTreeSet<(i64, String)> = lines.into_iter().collect();
    set.into_iter().map(|(_, l)| l).collect()
}

/// Whether a trace body line is a decision line (`decision ...`, indented as calls are).
pub fn is_decision_line(line: &str) -> bool {
    line.trim_start().starts_with("decision ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(addr: Option<u64>, none: u32) -> Decision {
        Decision {
            process: 1,
            addr,
            span: None,
            result: ScanResult::ExceedNonePte,
            record: Some(format!(
                "scan_pmd none_or_zero={none} referenced=0 unmapped=0"
            )),
            text: "khugepaged scan_pmd".into(),
        }
    }

    #[test]
    fn span_lines_take_the_model_decisions_they_cover_and_no_other() {
        let base = crate::catalogue::BASE_ADDR;
        let pmd = model::HPAGE_PMD_SIZE;
        let file = |span: Option<(u64, u64)>, addr: Option<u64>, r: ScanResult| Decision {
            process: 1,
            addr,
            span,
            result: r,
            record: Some("scan_file present=512 swap=0".into()),
            text: "khugepaged scan_file".into(),
        };
        let (_, span_line) = catalogue_line(
            false,
            &file(Some((base, base + 4 * pmd)), None, ScanResult::Succeed),
        )
        .unwrap();
        assert_eq!(
            span_line,
            "decision pmd 0-3: SCAN_SUCCEED scan_file present=512 swap=0"
        );
        let model_call = |results: &[(u64, ScanResult)]| -> Vec<String> {
            let lines =
                call_lines(results.iter().filter_map(|&(i, r)| {
                    catalogue_line(false, &file(None, Some(base + i * pmd), r))
                }));
            let mut body = vec!["  wait for khugepaged = done".to_string()];
            body.extend(lines.into_iter().map(|l| format!("  {l}")));
            body.push("  fill(0x40000000, 2048 pages) = 0".to_string());
            body
        };
        let kernel = vec![
            "  wait for khugepaged = done".to_string(),
            format!("  {span_line}"),
            "  fill(0x40000000, 2048 pages) = 0".to_string(),
        ];
        use ScanResult::*;
        // Every range, or some: the kernel's one line.
        for model in [
            model_call(&[(0, Succeed), (1, Succeed), (2, Succeed), (3, Succeed)]),
            model_call(&[(2, Succeed)]),
        ] {
            assert_eq!(within_spans(&kernel, model), kernel);
        }
        // Another result on one range, a range outside the span, or nothing: still differs.
        for model in [
            model_call(&[(0, Succeed), (1, PteMappedHugepage)]),
            model_call(&[(0, Succeed), (4, Succeed)]),
            model_call(&[]),
        ] {
            assert_ne!(within_spans(&kernel, model), kernel);
        }
        // Not applied to a call the span line is not in.
        let mut later = model_call(&[(0, Succeed)]);
        later.insert(
            0,
            "  madvise(0x40000000, 0x800000, MADV_HUGEPAGE) = 0".into(),
        );
        assert_eq!(within_spans(&kernel, later.clone()), later);
        assert_eq!(within_spans(&[], later.clone()), later);
    }

    #[test]
    fn catalogue_lines_are_placed_by_pmd_and_deduplicated() {
        let base = crate::catalogue::BASE_ADDR;
        let pmd = model::HPAGE_PMD_SIZE;
        let lines = call_lines(
            [
                catalogue_line(false, &d(Some(base + pmd), 511)),
                catalogue_line(false, &d(Some(base), 511)),
                catalogue_line(false, &d(Some(base + pmd), 511)),
                catalogue_line(true, &d(Some(base), 3)),
                catalogue_line(false, &d(None, 2)),
            ]
            .into_iter()
            .flatten(),
        );
        assert_eq!(
            lines,
            [
                "decision [parent] pmd 0: SCAN_EXCEED_NONE_PTE scan_pmd none_or_zero=3 referenced=0 unmapped=0",
                "decision pmd 0: SCAN_EXCEED_NONE_PTE scan_pmd none_or_zero=511 referenced=0 unmapped=0",
                "decision pmd 1: SCAN_EXCEED_NONE_PTE scan_pmd none_or_zero=511 referenced=0 unmapped=0",
                "decision pmd ?: SCAN_EXCEED_NONE_PTE scan_pmd none_or_zero=2 referenced=0 unmapped=0 (khugepaged scan_pmd)",
            ]
        );
        let untraced = Decision {
            record: None,
            ..d(Some(base), 0)
        };
        assert_eq!(catalogue_line(false, &untraced), None);
        assert!(is_decision_line("  decision pmd 0: SCAN_SUCCEED"));
        let rec = |r: u32, u: u32| {
            referenced_class(&format!(
                "scan_pmd none_or_zero=0 referenced={r} unmapped={u} writable=1"
            ))
        };
        assert_eq!(
            rec(0, 3),
            "scan_pmd none_or_zero=0 referenced=0 unmapped=3 writable=1"
        );
        assert_eq!(rec(255, 0), rec(511, 0));
        assert_eq!(
            rec(511, 0),
            "scan_pmd none_or_zero=0 referenced=1+ unmapped=0 writable=1"
        );
        assert_eq!(
            rec(255, 1),
            "scan_pmd none_or_zero=0 referenced=1-255 unmapped=1 writable=1"
        );
        assert_eq!(
            rec(256, 1),
            "scan_pmd none_or_zero=0 referenced=256+ unmapped=1 writable=1"
        );
        assert_eq!(
            referenced_class("scan_file present=3 swap=0"),
            "scan_file present=3 swap=0"
        );
        assert!(!is_decision_line("  # decision"));
    }
}
