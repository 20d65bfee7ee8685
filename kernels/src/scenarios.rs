//! Scenario files for `ci/kernels run KERNEL -- scenario FILE...`: the files (and every file
//! they include) go into the guest's initramfs under `/scenarios`, the arguments are rewritten
//! to those paths, and a `--record DIR` records into the guest's `/out`, whose files come back
//! into DIR.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Component, Path, PathBuf};

use crate::cpio::Entry;

/// Where the files go in the guest.
const GUEST_DIR: &str = "scenarios";
/// Where a guest `--record` writes (inside the `/out` the init sends back).
const GUEST_RECORD: &str = "/out/scenario-recordings";

/// The harness arguments as the guest sees them, the files to add, and where recordings go.
#[derive(Clone, Debug, Default)]
pub struct Shipped {
    pub args: Vec<String>,
    /// (guest path without the leading '/', contents, mode).
    pub files: Vec<(String, Vec<u8>, u32)>,
    /// The host directory of `--record`, if given.
    pub record_dir: Option<PathBuf>,
}

/// Rewrites `args` for the guest when they run `scenario`; other arguments pass unchanged.
pub fn ship(args: &[String]) -> Result<Shipped, String> {
    if args.first().map(String::as_str) != Some("scenario") {
        return Ok(Shipped {
            args: args.to_vec(),
            ..Shipped::default()
        });
    }
    let mut out = Shipped::default();
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut it = args.iter().peekable();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--record" => {
                let dir = it.next().ok_or("scenario --record needs a directory")?;
                out.record_dir = Some(PathBuf::from(dir));
                out.args.push(a.clone());
                out.args.push(GUEST_RECORD.into());
            }
            "--profile" | "--backend" => {
                out.args.push(a.clone());
                if let Some(v) = it.next() {
                    out.args.push(v.clone());
                }
            }
            f if !f.starts_with('-') && a != "scenario" => {
                let path = Path::new(f);
                let name = path
                    .file_name()
                    .ok_or_else(|| format!("{f}: not a file"))?
                    .to_string_lossy()
                    .into_owned();
                let dir = path.parent().unwrap_or(Path::new("."));
                add_with_includes(dir, Path::new(&name), &mut files, 0)?;
                out.args.push(format!("/{GUEST_DIR}/{name}"));
            }
            _ => out.args.push(a.clone()),
        }
    }
    out.files = files
        .into_iter()
        .map(|(rel, data)| (format!("{GUEST_DIR}/{rel}"), data, 0o644))
        .collect();
    Ok(out)
}

/// Adds `rel` (relative to `base`) and, recursively, what its `include` lines name. Includes
/// must stay below `base` (the guest has only that tree).
fn add_with_includes(
    base: &Path,
    rel: &Path,
    files: &mut BTreeMap<String, Vec<u8>>,
    depth: usize,
) -> Result<(), String> {
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(format!(
            "{}: an included file must lie below {} to be shipped to the guest",
            rel.display(),
            base.display()
        ));
    }
    let key = rel.to_string_lossy().into_owned();
    if files.contains_key(&key) || depth > 16 {
        return Ok(());
    }
    let path = base.join(rel);
    let data = fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&data).into_owned();
    files.insert(key, data);
    let here = rel.parent().unwrap_or(Path::new(""));
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if let Some(inc) = line.strip_prefix("include ") {
            add_with_includes(base, &here.join(inc.trim()), files, depth + 1)?;
        }
    }
    Ok(())
}

impl Shipped {
    /// Writes the recordings the guest sent back into the `--record` directory (as
    /// `<release>/scenarios/<name>.trace`). Err when a recording was asked for and none came.
    pub fn bring_back(&self, out: &[Entry]) -> Result<(), String> {
        let Some(dir) = &self.record_dir else {
            return Ok(());
        };
        let prefix = format!("{}/", GUEST_RECORD.trim_start_matches("/out/"));
        let mut n = 0;
        for e in out {
            let Some(rel) = e.name.strip_prefix(&prefix) else {
                continue;
            };
            if !rel.ends_with(".trace")
                || Path::new(rel)
                    .components()
                    .any(|c| !matches!(c, Component::Normal(_)))
            {
                continue;
            }
            let dest = dir.join(rel);
            harness::crosscheck::write_atomically(&dest, &String::from_utf8_lossy(&e.data))?;
            eprintln!("ci/kernels: recorded {}", dest.display());
            n += 1;
        }
        if n == 0 {
            return Err("the guest sent back no scenario recordings".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_files_and_includes_are_shipped_and_record_comes_back() {
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/scenarios");
        let file = base
            .join("linux-mm-case.scn")
            .to_string_lossy()
            .into_owned();
        let args: Vec<String> = ["scenario", "--record", "/tmp/x", "--backend", "host", &file]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let s = ship(&args).unwrap();
        assert_eq!(
            s.args,
            [
                "scenario",
                "--record",
                GUEST_RECORD,
                "--backend",
                "host",
                "/scenarios/linux-mm-case.scn"
            ]
        );
        let names: Vec<&str> = s.files.iter().map(|f| f.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "scenarios/linux-mm-case.scn",
                "scenarios/linux-mm-setup.inc",
                "scenarios/prelude.inc"
            ]
        );
        assert_eq!(s.record_dir.as_deref(), Some(Path::new("/tmp/x")));
        // Other commands pass unchanged.
        let plain = vec!["--backend".to_string(), "both".into(), "all:anon".into()];
        assert_eq!(ship(&plain).unwrap().args, plain);
        // Nothing came back: an error, not silence.
        assert!(s.bring_back(&[]).is_err());
    }
}
