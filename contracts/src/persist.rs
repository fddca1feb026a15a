//! Atomic file replacement: write a sibling temporary file, flush it to disk, rename it over.

use std::io::Write;
use std::path::Path;

use crate::LedgerError;

/// Replaces `path` with `bytes` so that a reader (or a crash) sees the old file or the new one,
/// never a mix.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), LedgerError> {
    let io = |action: &'static str| {
        move |source| LedgerError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io("create the folder of"))?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let temp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result.map_err(io("write"))
}
