//! The user's home directory, found as the docker CLI finds it.

use std::path::PathBuf;

/// os.UserHomeDir ($HOME), else the user database's home, as docker's
/// getHomeDir.
pub(crate) fn home_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(home);
    }
    // SAFETY: getpwuid returns a pointer to static storage or null; the
    // directory string is copied out before any other call.
    unsafe {
        let entry = libc::getpwuid(libc::geteuid());
        if !entry.is_null() && !(*entry).pw_dir.is_null() {
            let dir = std::ffi::CStr::from_ptr((*entry).pw_dir);
            return PathBuf::from(dir.to_string_lossy().into_owned());
        }
    }
    PathBuf::new()
}
