//! Step lines: what a test prints ("Collapse multiple fully populated PTE table... OK"), kept
//! as data so the runner can print them kernel-style or as KTAP diagnostics, and ship them from
//! a forked child to its parent.

use std::fmt;

/// How a step ended: `success()`, `fail()` or `skip()` in khugepaged.c, or a message printed
/// on its own line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Verdict {
    Ok,
    Fail,
    Skip,
    /// A line with no verdict (informational, or the message before an exit).
    #[default]
    Info,
}

/// One printed step.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Step {
    /// The text before the verdict, e.g. "Collapse multiple fully populated PTE table...".
    pub text: String,
    pub verdict: Verdict,
    /// The verdict word(s) as printed: "OK", "Fail", "Timeout", "Fail: Bad return value".
    pub word: String,
    /// Extra diagnostics (expected vs observed, the page map), one line each.
    pub detail: Vec<String>,
    /// When tracing: the system calls made since the previous step, one line each.
    pub calls: Vec<String>,
    /// When tracing: what /proc showed of the test area at this step.
    pub obs: Vec<String>,
}

impl Step {
    /// Serialises to one line per field group, for the pipe from a forked child.
    pub fn encode(&self) -> String {
        let v = match self.verdict {
            Verdict::Ok => "ok",
            Verdict::Fail => "fail",
            Verdict::Skip => "skip",
            Verdict::Info => "info",
        };
        let mut s = format!("S\t{v}\t{}\t{}\n", escape(&self.word), escape(&self.text));
        for d in &self.detail {
            s.push_str(&format!("D\t{}\n", escape(d)));
        }
        for c in &self.calls {
            s.push_str(&format!("C\t{}\n", escape(c)));
        }
        for o in &self.obs {
            s.push_str(&format!("V\t{}\n", escape(o)));
        }
        s
    }

    /// [`Step::decode_all`] of a stream read from `source` (a forked child's pipe, a case
    /// process's stdout); the error names the source, so a garbled stream is never mistaken
    /// for a run without steps.
    pub fn decode_from(text: &str, source: &str) -> Result<Vec<Step>, String> {
        Step::decode_all(text)
            .map_err(|e| format!("the step stream from {source} could not be decoded: {e}"))
    }

    /// Parses what [`Step::encode`] wrote (several steps, in order).
    pub fn decode_all(text: &str) -> Result<Vec<Step>, String> {
        let mut out: Vec<Step> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let mut f = line.splitn(4, '\t');
            match f.next() {
                Some("S") => {
                    let verdict = match f.next() {
                        Some("ok") => Verdict::Ok,
                        Some("fail") => Verdict::Fail,
                        Some("skip") => Verdict::Skip,
                        Some("info") => Verdict::Info,
                        other => return Err(format!("line {}: bad verdict {other:?}", n + 1)),
                    };
                    let word = unescape(f.next().unwrap_or(""));
                    let text = unescape(f.next().unwrap_or(""));
                    out.push(Step {
                        text,
                        verdict,
                        word,
                        ..Step::default()
                    });
                }
                Some(kind @ ("D" | "C" | "V")) => {
                    let d = unescape(line.get(2..).unwrap_or(""));
                    let last = out
                        .last_mut()
                        .ok_or(format!("line {}: record before any step", n + 1))?;
                    match kind {
                        "D" => last.detail.push(d),
                        "C" => last.calls.push(d),
                        _ => last.obs.push(d),
                    }
                }
                Some("") | None => {}
                Some(other) => return Err(format!("line {}: unknown record {other:?}", n + 1)),
            }
        }
        Ok(out)
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('\t', "\\t")
        .replace('\n', "\\n")
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            match it.next() {
                Some('t') => out.push('\t'),
                Some('n') => out.push('\n'),
                Some(o) => out.push(o),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.word.is_empty() {
            write!(f, "{}", self.text)
        } else {
            write!(f, "{} {}", self.text, self.word)
        }
    }
}

/// How a case ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    /// The first failing step (or the abort message), for the summary.
    Fail(String),
    /// Why the case could not run, or the Skip step it printed.
    Skip(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_round_trip() {
        let steps = vec![
            Step {
                text: "Collapse\tweird\\name...".into(),
                verdict: Verdict::Fail,
                word: "Fail".into(),
                detail: vec!["a\nb".into(), "c".into()],
                calls: vec!["mmap(0x40000000, 0x200000, anon) = 0x40000000".into()],
                obs: vec!["map(0x40000000+1): 0 none".into()],
            },
            Step {
                text: "x".into(),
                verdict: Verdict::Ok,
                word: "OK".into(),
                ..Step::default()
            },
        ];
        let text: String = steps.iter().map(|s| s.encode()).collect();
        assert_eq!(Step::decode_all(&text).unwrap(), steps);
        assert!(Step::decode_all("X\tbad").is_err());
        let e = Step::decode_from("S\tmaybe\tx\ty", "the case process").unwrap_err();
        assert!(
            e.contains("the case process") && e.contains("bad verdict"),
            "{e}"
        );
    }
}
