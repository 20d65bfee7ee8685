//! The CI gate for model changes: every trace recorded on a real kernel (fixtures/<release>/)
//! is replayed on the model with the matching profile; any difference fails with a readable
//! diff. A fixture that says it depends on something the model does not model is listed as
//! ignored, with that reason. A fixture named in its release's AWAITING file disagrees with
//! the model and waits on a model issue: it is listed as ignored with that issue, and a
//! second trial fails as soon as it agrees, so the marker cannot go stale.

use std::collections::BTreeSet;
use std::path::Path;

use harness::crosscheck::{awaiting, list_fixtures, replay, AWAITING};
use libtest_mimic::{Arguments, Failed, Trial};

fn main() {
    let args = Arguments::from_args();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
    let mut trials = Vec::new();
    let mut seen = BTreeSet::new();
    for path in list_fixtures(&root) {
        let name = path
            .strip_prefix(&root)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| path.display().to_string());
        let dir = path.parent().unwrap_or(&root).to_path_buf();
        let file = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        seen.insert((dir.clone(), file.clone()));
        // Fixtures that need something the model does not model are known up front.
        let unmodelled = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| harness::trace::parse(&t).ok())
            .map(|(h, _)| h.unmodelled)
            .unwrap_or_default();
        let waits = match awaiting(&dir) {
            Ok(a) => a.get(&file).cloned(),
            Err(e) => {
                trials.push(Trial::test(format!("fixture/{name}"), move || {
                    Err(Failed::from(e))
                }));
                continue;
            }
        };
        if let Some(reason) = waits {
            let p = path.clone();
            trials.push(
                Trial::test(format!("fixture/{name}"), || Ok(()))
                    .with_kind(format!("awaiting {reason}"))
                    .with_ignored_flag(true),
            );
            trials.push(Trial::test(
                format!("fixture-awaiting/{name}"),
                move || match replay(&p) {
                    Err(_) => Ok(()),
                    Ok(_) => Err(Failed::from(format!(
                        "{}: now agrees with the model: remove its line from {AWAITING} \
                         (it waited on {reason})",
                        p.display()
                    ))),
                },
            ));
            continue;
        }
        let trial = Trial::test(format!("fixture/{name}"), move || match replay(&path) {
            Ok(_) => Ok(()),
            Err(diff) => Err(Failed::from(diff)),
        });
        trials.push(if unmodelled.is_empty() {
            trial
        } else {
            trial
                .with_kind(format!("unmodelled: {}", unmodelled.join("; ")))
                .with_ignored_flag(true)
        });
    }
    // An AWAITING line must name a fixture that exists.
    if let Ok(releases) = std::fs::read_dir(&root) {
        for r in releases.flatten() {
            let dir = r.path();
            if let Ok(entries) = awaiting(&dir) {
                for file in entries.into_keys() {
                    if !seen.contains(&(dir.clone(), file.clone())) {
                        let where_ = dir.join(AWAITING).display().to_string();
                        trials.push(Trial::test(
                            format!(
                                "fixture-awaiting/{}/{file}",
                                r.file_name().to_string_lossy()
                            ),
                            move || {
                                Err(Failed::from(format!(
                                    "{where_}: names {file}, which is not a fixture there"
                                )))
                            },
                        ));
                    }
                }
            }
        }
    }
    libtest_mimic::run(&args, trials).exit();
}
