//! Fetching a kernel: the .debs through a private apt configuration (the system's sources are
//! never touched), unpacked with dpkg-deb into the cache, the uncompressed vmlinux extracted
//! from the bzImage, and the modules the guest needs picked with their dependencies.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::catalog::{self, Kernel};

/// A fetched kernel in the cache.
#[derive(Clone, Debug)]
pub struct Fetched {
    pub release: String,
    pub vmlinux: PathBuf,
    /// The unpacked packages.
    pub root: PathBuf,
    /// A kernel build tree: its .config and its built modules (instead of `root`'s).
    pub tree: Option<PathBuf>,
}

fn run(cmd: &mut Command, what: &str) -> Result<String, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: cannot start {:?}: {e}", cmd.get_program()))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The private apt configuration: own source list, lists and cache under the cache root.
struct Apt {
    dir: PathBuf,
}

impl Apt {
    fn new(cache: &Path) -> Result<Apt, String> {
        let dir = cache.join("apt");
        for d in ["lists/partial", "cache/archives/partial"] {
            fs::create_dir_all(dir.join(d))
                .map_err(|e| format!("creating {}: {e}", dir.display()))?;
        }
        let mut list = String::new();
        for s in catalog::SUITES {
            list.push_str(&format!(
                "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {} {s} main\n",
                catalog::ARCHIVE
            ));
        }
        fs::write(dir.join("sources.list"), list)
            .map_err(|e| format!("writing {}: {e}", dir.display()))?;
        Ok(Apt { dir })
    }

    fn opts(&self) -> Vec<String> {
        let d = self.dir.display();
        vec![
            format!("-o=Dir::Etc::sourcelist={d}/sources.list"),
            "-o=Dir::Etc::sourceparts=-".into(),
            format!("-o=Dir::State::Lists={d}/lists"),
            format!("-o=Dir::Cache={d}/cache"),
            "-o=Dir::State::status=/dev/null".into(),
            "-o=APT::Architecture=amd64".into(),
            "-o=APT::Sandbox::User=root".into(),
        ]
    }

    /// `apt-get update` when the lists are missing or older than a day.
    fn update_if_stale(&self) -> Result<(), String> {
        let stamp = self.dir.join("updated");
        let fresh = fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age.as_secs() < 86_400);
        if fresh {
            return Ok(());
        }
        run(
            Command::new("apt-get")
                .args(self.opts())
                .arg("-q")
                .arg("update"),
            "apt-get update (private configuration)",
        )?;
        fs::write(&stamp, "").map_err(|e| format!("writing {}: {e}", stamp.display()))
    }

    /// Version and the same-version linux-* packages a package depends on.
    fn show(&self, package: &str) -> Result<(String, Vec<String>), String> {
        let text = run(
            Command::new("apt-cache")
                .args(self.opts())
                .arg("show")
                .arg(package),
            &format!("apt-cache show {package}"),
        )
        .map_err(|_| {
            format!(
                "package gone: {package} is not in the archive's {} suites any more; pick a newer \
                 one (apt-cache search in the cache's private configuration, {}) and update \
                 kernels/src/catalog.rs",
                catalog::SUITES.join("/"),
                self.dir.display()
            )
        })?;
        let stanza = text.split("\n\n").next().unwrap_or("");
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                .unwrap_or("")
                .to_string()
        };
        let version = field("Version");
        let deps = field("Depends")
            .split(',')
            .filter_map(|d| {
                let d = d.trim();
                let name = d.split_whitespace().next()?;
                (name.starts_with("linux-binary-")
                    || name.starts_with("linux-modules-")
                    || name.starts_with("linux-base-"))
                .then(|| name.to_string())
            })
            .collect();
        Ok((version, deps))
    }

    fn download(&self, package: &str, version: &str, into: &Path) -> Result<PathBuf, String> {
        let prefix = format!("{package}_");
        let find = || -> Option<PathBuf> {
            fs::read_dir(into)
                .ok()?
                .flatten()
                .map(|e| e.path())
                .find(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
                })
        };
        if let Some(p) = find() {
            return Ok(p);
        }
        run(
            Command::new("apt-get")
                .current_dir(into)
                .args(self.opts())
                .arg("-q")
                .arg("download")
                .arg(format!("{package}={version}")),
            &format!("apt-get download {package}={version}"),
        )?;
        find().ok_or_else(|| {
            format!(
                "apt-get download {package} left no .deb in {}",
                into.display()
            )
        })
    }
}

/// Where a kernel's files go in the cache.
pub fn kernel_dir(k: &Kernel) -> PathBuf {
    catalog::cache_root().join("kernels").join(k.series)
}

/// The cached kernel, if it was fetched.
pub fn cached(k: &Kernel) -> Option<Fetched> {
    let dir = kernel_dir(k);
    let release = fs::read_to_string(dir.join("release")).ok()?;
    let vmlinux = dir.join("vmlinux");
    vmlinux.exists().then(|| Fetched {
        release: release.trim().to_string(),
        vmlinux,
        root: dir.join("root"),
        tree: None,
    })
}

/// Downloads, unpacks and prepares `k` (nothing to do when cached).
pub fn fetch(k: &Kernel) -> Result<Fetched, String> {
    if let Some(f) = cached(k) {
        return Ok(f);
    }
    let cache = catalog::cache_root();
    let debs = cache.join("debs");
    fs::create_dir_all(&debs).map_err(|e| format!("creating {}: {e}", debs.display()))?;
    let apt = Apt::new(&cache)?;
    apt.update_if_stale()?;
    let (version, deps) = apt.show(k.package)?;
    let mut files = vec![apt.download(k.package, &version, &debs)?];
    for d in deps {
        match apt.download(&d, &version, &debs) {
            Ok(f) => files.push(f),
            // linux-base-* (config, modules.builtin) and linux-modules-* are named by the
            // split packages but Debian did not publish them for every version (6.19.14,
            // 7.0.13 and 7.1.13 have neither): the guest then does without modules.
            Err(_) if d.starts_with("linux-base-") || d.starts_with("linux-modules-") => {
                eprintln!("{}: {d} is not in the archive, going without it", k.series)
            }
            Err(e) => return Err(e),
        }
    }
    let dir = kernel_dir(k);
    let root = dir.join("root");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&root).map_err(|e| format!("creating {}: {e}", root.display()))?;
    for f in &files {
        run(
            Command::new("dpkg-deb").arg("-x").arg(f).arg(&root),
            &format!("dpkg-deb -x {}", f.display()),
        )?;
    }
    let (release, vmlinuz) = find_vmlinuz(&root)?;
    let vmlinux = dir.join("vmlinux");
    extract_vmlinux(&vmlinuz, &vmlinux)?;
    fs::write(dir.join("release"), format!("{release}\n"))
        .map_err(|e| format!("writing {}: {e}", dir.display()))?;
    Ok(Fetched {
        release,
        vmlinux,
        root,
        tree: None,
    })
}

/// The bzImage and the release it is for: boot/vmlinuz-<release> (older packages) or
/// usr/lib/modules/<release>/vmlinuz (newer).
fn find_vmlinuz(root: &Path) -> Result<(String, PathBuf), String> {
    if let Ok(entries) = fs::read_dir(root.join("boot")) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(rel) = name.strip_prefix("vmlinuz-") {
                return Ok((rel.to_string(), e.path()));
            }
        }
    }
    for base in ["usr/lib/modules", "lib/modules"] {
        if let Ok(entries) = fs::read_dir(root.join(base)) {
            for e in entries.flatten() {
                let p = e.path().join("vmlinuz");
                if p.exists() {
                    return Ok((e.file_name().to_string_lossy().into_owned(), p));
                }
            }
        }
    }
    Err(format!(
        "no vmlinuz in the unpacked packages under {}",
        root.display()
    ))
}

/// Decompresses the kernel inside a bzImage: tries every offset where an xz, zstd or gzip
/// stream starts and keeps the first that yields an ELF file (what the kernel tree's
/// scripts/extract-vmlinux does).
pub fn extract_vmlinux(bzimage: &Path, out: &Path) -> Result<(), String> {
    let data = fs::read(bzimage).map_err(|e| format!("reading {}: {e}", bzimage.display()))?;
    if data.starts_with(b"\x7fELF") {
        return fs::copy(bzimage, out)
            .map(|_| ())
            .map_err(|e| format!("copying {}: {e}", bzimage.display()));
    }
    let formats: [(&[u8], &str, &[&str]); 3] = [
        (b"\xfd7zXZ\x00", "xz", &["-dc", "--single-stream"]),
        (b"\x28\xb5\x2f\xfd", "zstd", &["-dcq"]),
        (b"\x1f\x8b\x08", "gzip", &["-dcq"]),
    ];
    let mut tried = 0;
    for (magic, tool, args) in formats {
        let mut at = 0;
        while let Some(off) = find(&data[at..], magic).map(|o| o + at) {
            at = off + 1;
            tried += 1;
            let mut child = match Command::new(tool)
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
            {
                Ok(c) => c,
                Err(e) => return Err(format!("{tool} is needed to unpack the bzImage: {e}")),
            };
            let mut stdin = child.stdin.take().expect("piped stdin");
            let payload = data[off..].to_vec();
            let writer = std::thread::spawn(move || {
                let _ = stdin.write_all(&payload);
            });
            let output = child
                .wait_with_output()
                .map_err(|e| format!("{tool}: {e}"))?;
            let _ = writer.join();
            if output.stdout.starts_with(b"\x7fELF") {
                return fs::write(out, &output.stdout)
                    .map_err(|e| format!("writing {}: {e}", out.display()));
            }
        }
    }
    Err(format!(
        "{}: no xz, zstd or gzip stream holding an ELF kernel ({tried} candidate offsets tried)",
        bzimage.display()
    ))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The kernel's config file among the unpacked packages.
pub fn config_file(f: &Fetched) -> Option<PathBuf> {
    if let Some(t) = &f.tree {
        return Some(t.join(".config")).filter(|p| p.exists());
    }
    [
        f.root.join(format!("boot/config-{}", f.release)),
        f.root.join(format!("usr/lib/modules/{}/config", f.release)),
        f.root.join(format!("lib/modules/{}/config", f.release)),
    ]
    .into_iter()
    .find(|p| p.exists())
}

/// What the guest needs from modules: virtio for the disk and the random number device
/// (virtio-rng: the random pool is ready within the boot, so the tracepoints can hash
/// pointers), ext4 and the crc32c it asks the crypto API for, zram and the compressors it may
/// pick.
pub const WANTED_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_rng",
    "virtio_blk",
    "crc32c_generic",
    "crc32c_intel",
    "crc32c_cryptoapi",
    "ext4",
    "lzo",
    "lzo_rle",
    "lz4",
    "zstd",
    "zram",
];

/// A module decompressed and ready for finit_module.
pub struct Module {
    pub name: String,
    pub data: Vec<u8>,
}

fn module_name(file: &str) -> Option<String> {
    let stem = file
        .strip_suffix(".ko")
        .or_else(|| file.strip_suffix(".ko.xz"))
        .or_else(|| file.strip_suffix(".ko.zst"))
        .or_else(|| file.strip_suffix(".ko.gz"))?;
    Some(stem.replace('-', "_"))
}

fn index_modules(dir: &Path, out: &mut BTreeMap<String, PathBuf>) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                index_modules(&p, out);
            } else if let Some(n) = module_name(&e.file_name().to_string_lossy()) {
                out.entry(n).or_insert(p);
            }
        }
    }
}

fn decompress(path: &Path) -> Result<Vec<u8>, String> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        "xz"
    } else if name.ends_with(".zst") {
        "zstd"
    } else if name.ends_with(".gz") {
        "gzip"
    } else {
        return fs::read(path).map_err(|e| format!("reading {name}: {e}"));
    };
    let out = Command::new(tool)
        .arg("-dcq")
        .arg(path)
        .output()
        .map_err(|e| format!("{tool} (to unpack {name}): {e}"))?;
    if !out.status.success() {
        return Err(format!("{tool} -dc {name} failed"));
    }
    Ok(out.stdout)
}

/// The `depends=` list of a module's .modinfo section.
fn depends(data: &[u8]) -> Vec<String> {
    let key = b"\0depends=";
    let Some(at) = find(data, key) else {
        return Vec::new();
    };
    let rest = &data[at + key.len()..];
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end])
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.replace('-', "_"))
        .collect()
}

/// The wanted modules this package has as files (the rest are built in or absent), with
/// their dependencies, dependencies first. Also the names not found as files.
pub fn guest_modules(f: &Fetched) -> Result<(Vec<Module>, Vec<String>), String> {
    let mut index = BTreeMap::new();
    match &f.tree {
        Some(t) => index_modules(t, &mut index),
        None => {
            for base in ["usr/lib/modules", "lib/modules"] {
                index_modules(
                    &f.root.join(base).join(&f.release).join("kernel"),
                    &mut index,
                );
            }
        }
    }
    let mut loaded = BTreeSet::new();
    let mut order = Vec::new();
    let mut absent = Vec::new();
    fn visit(
        name: &str,
        index: &BTreeMap<String, PathBuf>,
        loaded: &mut BTreeSet<String>,
        order: &mut Vec<Module>,
        depth: usize,
    ) -> Result<bool, String> {
        if loaded.contains(name) {
            return Ok(true);
        }
        let Some(path) = index.get(name) else {
            return Ok(false);
        };
        if depth > 32 {
            return Err(format!("module dependency loop at {name}"));
        }
        let data = decompress(path)?;
        loaded.insert(name.to_string());
        for d in depends(&data) {
            visit(&d, index, loaded, order, depth + 1)?;
        }
        order.push(Module {
            name: name.to_string(),
            data,
        });
        Ok(true)
    }
    for w in WANTED_MODULES {
        if !visit(w, &index, &mut loaded, &mut order, 0)? {
            absent.push(w.to_string());
        }
    }
    Ok((order, absent))
}

/// A kernel of your own, by path: a kernel build tree (virtme-ng's, or any `make` tree: its
/// vmlinux, .config, include/config/kernel.release and built modules), a directory of .debs
/// or one .deb (unpacked into the cache like Debian's), or a bzImage or vmlinux file (then
/// everything the guest needs must be built in).
pub fn custom(path: &Path) -> Result<Fetched, String> {
    let abs = fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let tag: String = abs
        .to_string_lossy()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let dir = catalog::cache_root()
        .join("custom")
        .join(tag.trim_start_matches('_'));
    fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    if abs.is_dir() && abs.join("vmlinux").exists() {
        let release = fs::read_to_string(abs.join("include/config/kernel.release"))
            .map(|r| r.trim().to_string())
            .unwrap_or_else(|_| "custom".into());
        return Ok(Fetched {
            release,
            vmlinux: abs.join("vmlinux"),
            root: dir,
            tree: Some(abs),
        });
    }
    let debs: Vec<PathBuf> = if abs.is_dir() {
        let mut v: Vec<PathBuf> = fs::read_dir(&abs)
            .map_err(|e| format!("{}: {e}", abs.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "deb"))
            .collect();
        v.sort();
        v
    } else if abs.extension().is_some_and(|x| x == "deb") {
        vec![abs.clone()]
    } else {
        let vmlinux = dir.join("vmlinux");
        extract_vmlinux(&abs, &vmlinux)?;
        return Ok(Fetched {
            release: "custom".into(),
            vmlinux,
            root: dir,
            tree: None,
        });
    };
    if debs.is_empty() {
        return Err(format!(
            "{}: neither a kernel tree (no vmlinux) nor a directory of .debs",
            abs.display()
        ));
    }
    let root = dir.join("root");
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&root).map_err(|e| format!("creating {}: {e}", root.display()))?;
    for d in &debs {
        run(
            Command::new("dpkg-deb").arg("-x").arg(d).arg(&root),
            &format!("dpkg-deb -x {}", d.display()),
        )?;
    }
    let (release, vmlinuz) = find_vmlinuz(&root).map_err(|e| {
        format!("{e} (a split Debian kernel needs its linux-binary-* package too: pass a directory holding all of them)")
    })?;
    let vmlinux = dir.join("vmlinux");
    extract_vmlinux(&vmlinuz, &vmlinux)?;
    Ok(Fetched {
        release,
        vmlinux,
        root,
        tree: None,
    })
}

/// A kernel named on the command line: a series of the catalogue, or a path (see `custom`).
pub fn resolve(name: &str) -> Result<Fetched, String> {
    if name.contains('/') || Path::new(name).exists() {
        return custom(Path::new(name));
    }
    fetch(catalog::find(name)?)
}

/// Whether the guest will have `module` (a WANTED_MODULES name): a module file in the
/// package, a line of modules.builtin, or a bare custom kernel (which must have it built in).
pub fn has_module(f: &Fetched, module: &str) -> Result<bool, String> {
    if f.release == "custom" {
        return Ok(true);
    }
    let (files, absent) = guest_modules(f)?;
    if files.iter().any(|m| m.name == module) || !absent.iter().any(|a| a == module) {
        return Ok(true);
    }
    let mut builtin_lists = vec![
        f.root
            .join(format!("usr/lib/modules/{}/modules.builtin", f.release)),
        f.root
            .join(format!("lib/modules/{}/modules.builtin", f.release)),
    ];
    if let Some(t) = &f.tree {
        builtin_lists.push(t.join("modules.builtin"));
    }
    let suffix = format!("/{module}.ko");
    Ok(builtin_lists.iter().any(|p| {
        fs::read_to_string(p)
            .map(|t| t.lines().any(|l| l.replace('-', "_").ends_with(&suffix)))
            .unwrap_or(false)
    }))
}

/// Debian's kernel source packages (linux-source-<series>) that exist; the C selftest of a
/// release comes from its own series or the nearest of these.
pub const SOURCE_SERIES: &[&str] = &["6.1", "6.12", "7.2", "7.3"];

fn series_index(s: &str) -> Option<i64> {
    let mut it = s
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty());
    let major: i64 = it.next()?.parse().ok()?;
    let minor: i64 = it.next()?.parse().ok()?;
    // 6.19 is followed by 7.0.
    Some(match major {
        6 => minor,
        7 => 20 + minor,
        m => m * 20 + minor,
    })
}

/// The source series whose selftest goes with `release`: its own, else the nearest (the
/// older one on a tie).
pub fn selftest_series(release: &str) -> Option<&'static str> {
    let at = series_index(release)?;
    SOURCE_SERIES.iter().copied().min_by_key(|s| {
        let i = series_index(s).unwrap_or(0);
        ((i - at).abs(), i > at)
    })
}

/// Builds the C khugepaged selftest of `series` statically from Debian's linux-source
/// package (khugepaged.c, vm_util.c and thp_settings.c or hugepage_settings.c); cached.
/// Returns the binary and the package version it came from.
pub fn selftest_binary(series: &str) -> Result<(PathBuf, String), String> {
    let cache = catalog::cache_root();
    let out_dir = cache.join("selftest");
    let bin = out_dir.join(format!("khugepaged-{series}"));
    let version_file = out_dir.join(format!("khugepaged-{series}.version"));
    if bin.exists() {
        if let Ok(v) = fs::read_to_string(&version_file) {
            return Ok((bin, v.trim().to_string()));
        }
    }
    fs::create_dir_all(&out_dir).map_err(|e| format!("creating {}: {e}", out_dir.display()))?;
    let apt = Apt::new(&cache)?;
    apt.update_if_stale()?;
    let package = format!("linux-source-{series}");
    let (version, _) = apt.show(&package)?;
    let src = cache.join("src");
    fs::create_dir_all(&src).map_err(|e| format!("creating {}: {e}", src.display()))?;
    let deb = apt.download(&package, &version, &src)?;
    let x = src.join("x").join(series);
    let _ = fs::remove_dir_all(&x);
    fs::create_dir_all(&x).map_err(|e| format!("creating {}: {e}", x.display()))?;
    run(
        Command::new("sh").arg("-c").arg(format!(
            "dpkg-deb --fsys-tarfile '{}' | tar -x -C '{}' --wildcards '*.tar.xz'",
            deb.display(),
            x.display()
        )),
        &format!("unpacking {}", deb.display()),
    )?;
    let tarball = find_file(&x, ".tar.xz")
        .ok_or_else(|| format!("{}: no source tarball inside", deb.display()))?;
    run(
        Command::new("tar")
            .arg("-xJf")
            .arg(&tarball)
            .arg("-C")
            .arg(&x)
            .arg("--wildcards")
            .args([
                "*/tools/testing/selftests/mm/*",
                "*/tools/testing/selftests/vm/*",
                "*/tools/testing/selftests/kselftest*",
                "*/tools/include/uapi/*",
                "*/tools/arch/x86/include/uapi/*",
            ]),
        &format!("extracting the selftests from {}", tarball.display()),
    )
    .or_else(|e| {
        // A missing member pattern (vm/ or mm/) is fine when the files are there.
        if find_file(&x, "khugepaged.c").is_some() {
            Ok(String::new())
        } else {
            Err(e)
        }
    })?;
    let _ = fs::remove_file(&tarball);
    let khugepaged_c = find_file(&x, "khugepaged.c")
        .filter(|p| p.to_string_lossy().contains("selftests"))
        .ok_or_else(|| format!("no selftests khugepaged.c in {package}"))?;
    let mm = khugepaged_c.parent().map(PathBuf::from).unwrap_or_default();
    let tree = mm
        .ancestors()
        .nth(4)
        .map(PathBuf::from)
        .ok_or("unexpected source layout")?;
    let mut cmd = Command::new("gcc");
    cmd.args(["-static", "-O2", "-w", "-D_GNU_SOURCE"])
        .arg("-I")
        .arg(&mm)
        .arg("-I")
        .arg(tree.join("tools/testing/selftests"))
        .arg("-I")
        .arg(tree.join("tools/include/uapi"));
    for f in [
        "khugepaged.c",
        "vm_util.c",
        "thp_settings.c",
        "hugepage_settings.c",
    ] {
        if mm.join(f).exists() {
            cmd.arg(mm.join(f));
        }
    }
    cmd.arg("-o").arg(&bin);
    run(
        &mut cmd,
        &format!("building {package}'s khugepaged selftest"),
    )?;
    fs::write(&version_file, format!("{version}\n"))
        .map_err(|e| format!("writing {}: {e}", version_file.display()))?;
    Ok((bin, version))
}

fn find_file(dir: &Path, suffix: &str) -> Option<PathBuf> {
    for e in fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.is_dir() {
            if let Some(f) = find_file(&p, suffix) {
                return Some(f);
            }
        } else if p.to_string_lossy().ends_with(suffix) {
            return Some(p);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_source_series() {
        assert_eq!(selftest_series("6.1.0-50-amd64"), Some("6.1"));
        assert_eq!(selftest_series("6.12.95+deb12-amd64"), Some("6.12"));
        assert_eq!(selftest_series("6.16.12+deb13-amd64"), Some("6.12"));
        // 6.17 is five releases from 6.12 and from 7.2: the older wins.
        assert_eq!(selftest_series("6.17.13+deb13-amd64"), Some("6.12"));
        assert_eq!(selftest_series("6.18.15+deb13-amd64"), Some("7.2"));
        assert_eq!(selftest_series("7.0.13+deb13-amd64"), Some("7.2"));
        assert_eq!(selftest_series("7.3.4+deb13-amd64"), Some("7.3"));
        assert_eq!(selftest_series("custom"), None);
    }

    #[test]
    fn module_names_and_depends() {
        assert_eq!(module_name("lzo-rle.ko.xz").as_deref(), Some("lzo_rle"));
        assert_eq!(module_name("zram.ko").as_deref(), Some("zram"));
        assert_eq!(module_name("zram.ko.zst").as_deref(), Some("zram"));
        assert_eq!(module_name("README"), None);
        let modinfo = b"\0license=GPL\0depends=jbd2,mbcache,crc16\0vermagic=6.1\0";
        assert_eq!(depends(modinfo), vec!["jbd2", "mbcache", "crc16"]);
        assert!(depends(b"\0depends=\0").is_empty());
        assert!(depends(b"no modinfo").is_empty());
    }
}
