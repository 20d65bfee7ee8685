//! The error numbers the modelled system calls return, with their Linux values.

use std::fmt;

/// A Linux errno as returned by a modelled system call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Errno {
    EPERM,
    ENOENT,
    EINTR,
    EAGAIN,
    ENOMEM,
    EFAULT,
    EBUSY,
    EEXIST,
    EINVAL,
    ENOSPC,
}

impl Errno {
    /// The numeric value on x86_64 Linux.
    pub fn number(self) -> i32 {
        match self {
            Errno::EPERM => 1,
            Errno::ENOENT => 2,
            Errno::EINTR => 4,
            Errno::EAGAIN => 11,
            Errno::ENOMEM => 12,
            Errno::EFAULT => 14,
            Errno::EBUSY => 16,
            Errno::EEXIST => 17,
            Errno::EINVAL => 22,
            Errno::ENOSPC => 28,
        }
    }

    /// The symbolic name, as `strerrorname_np` prints it.
    pub fn name(self) -> &'static str {
        match self {
            Errno::EPERM => "EPERM",
            Errno::ENOENT => "ENOENT",
            Errno::EINTR => "EINTR",
            Errno::EAGAIN => "EAGAIN",
            Errno::ENOMEM => "ENOMEM",
            Errno::EFAULT => "EFAULT",
            Errno::EBUSY => "EBUSY",
            Errno::EEXIST => "EEXIST",
            Errno::EINVAL => "EINVAL",
            Errno::ENOSPC => "ENOSPC",
        }
    }

    /// The C library's message (`strerror`), as `perror` prints it.
    pub fn strerror(self) -> &'static str {
        match self {
            Errno::EPERM => "Operation not permitted",
            Errno::ENOENT => "No such file or directory",
            Errno::EINTR => "Interrupted system call",
            Errno::EAGAIN => "Resource temporarily unavailable",
            Errno::ENOMEM => "Cannot allocate memory",
            Errno::EFAULT => "Bad address",
            Errno::EBUSY => "Device or resource busy",
            Errno::EEXIST => "File exists",
            Errno::EINVAL => "Invalid argument",
            Errno::ENOSPC => "No space left on device",
        }
    }

    /// Maps a raw errno back to the enum (None for values the model never produces).
    pub fn from_number(n: i32) -> Option<Errno> {
        [
            Errno::EPERM,
            Errno::ENOENT,
            Errno::EINTR,
            Errno::EAGAIN,
            Errno::ENOMEM,
            Errno::EFAULT,
            Errno::EBUSY,
            Errno::EEXIST,
            Errno::EINVAL,
            Errno::ENOSPC,
        ]
        .into_iter()
        .find(|e| e.number() == n)
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::error::Error for Errno {}
