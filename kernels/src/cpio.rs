//! The initramfs format (cpio "newc", as the kernel's init/initramfs.c reads it), written for
//! the guest's initramfs and read back for the archive the guest sends out on its second
//! serial port.

/// One archive member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    /// S_IFDIR/S_IFREG/S_IFLNK | permissions.
    pub mode: u32,
    /// File contents, or the target of a symlink.
    pub data: Vec<u8>,
    /// Major and minor of a device node.
    pub rdev: (u32, u32),
}

pub const S_IFDIR: u32 = 0o040000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFCHR: u32 = 0o020000;

impl Entry {
    pub fn dir(name: &str) -> Entry {
        Entry {
            name: name.into(),
            mode: S_IFDIR | 0o755,
            data: Vec::new(),
            rdev: (0, 0),
        }
    }
    pub fn file(name: &str, mode: u32, data: Vec<u8>) -> Entry {
        Entry {
            name: name.into(),
            mode: S_IFREG | mode,
            data,
            rdev: (0, 0),
        }
    }
}

const MAGIC: &str = "070701";
const TRAILER: &str = "TRAILER!!!";

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn header(
    out: &mut Vec<u8>,
    ino: u32,
    mode: u32,
    nlink: u32,
    size: usize,
    rdev: (u32, u32),
    name: &str,
) {
    // magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor,
    // rdevminor, namesize (with the NUL), check.
    let fields = [
        ino,
        mode,
        0,
        0,
        nlink,
        0,
        size as u32,
        0,
        0,
        rdev.0,
        rdev.1,
        name.len() as u32 + 1,
        0,
    ];
    out.extend_from_slice(MAGIC.as_bytes());
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
}

/// Writes `entries` as a newc archive with its trailer.
pub fn write(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let nlink = if e.mode & S_IFDIR != 0 { 2 } else { 1 };
        header(
            &mut out,
            i as u32 + 1,
            e.mode,
            nlink,
            e.data.len(),
            e.rdev,
            &e.name,
        );
        out.extend_from_slice(&e.data);
        pad4(&mut out);
    }
    header(&mut out, 0, 0, 1, 0, (0, 0), TRAILER);
    out
}

/// Reads a newc archive. Err when it is malformed or ends before its trailer (the stream was
/// cut), saying where.
pub fn read(bytes: &[u8]) -> Result<Vec<Entry>, String> {
    let mut entries = Vec::new();
    let mut pos = 0usize;
    loop {
        let h = bytes.get(pos..pos + 110).ok_or_else(|| {
            format!(
                "archive cut at byte {pos} of {} (no trailer): the output was truncated",
                bytes.len()
            )
        })?;
        if &h[..6] != MAGIC.as_bytes() {
            return Err(format!("bad cpio magic at byte {pos}"));
        }
        let field = |i: usize| -> Result<usize, String> {
            let s = std::str::from_utf8(&h[6 + i * 8..14 + i * 8])
                .map_err(|_| format!("bad cpio header at byte {pos}"))?;
            usize::from_str_radix(s, 16).map_err(|_| format!("bad cpio header at byte {pos}"))
        };
        let mode = field(1)? as u32;
        let rdev = (field(9)? as u32, field(10)? as u32);
        let size = field(6)?;
        let namesize = field(11)?;
        let name_start = pos + 110;
        let name_bytes = bytes
            .get(name_start..name_start + namesize)
            .ok_or_else(|| format!("archive cut in a name at byte {name_start}"))?;
        let name = String::from_utf8_lossy(&name_bytes[..namesize.saturating_sub(1)]).into_owned();
        let data_start = (name_start + namesize).div_ceil(4) * 4;
        if name == TRAILER {
            return Ok(entries);
        }
        let data = bytes
            .get(data_start..data_start + size)
            .ok_or_else(|| {
                format!("archive cut in {name:?} at byte {data_start}: the output was truncated")
            })?
            .to_vec();
        entries.push(Entry {
            name,
            mode,
            data,
            rdev,
        });
        pos = (data_start + size).div_ceil(4) * 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_cut() {
        let entries = vec![
            Entry::dir("dir"),
            Entry::file("dir/file", 0o644, b"hello, world".to_vec()),
            Entry {
                name: "dev/console".into(),
                mode: S_IFCHR | 0o600,
                data: Vec::new(),
                rdev: (5, 1),
            },
        ];
        let bytes = write(&entries);
        assert_eq!(bytes.len() % 4, 0);
        assert_eq!(read(&bytes).unwrap(), entries);
        let cut = read(&bytes[..bytes.len() - 20]).unwrap_err();
        assert!(cut.contains("truncated") || cut.contains("cut"), "{cut}");
    }
}
