//! Small file helpers for the data folder, which holds keys and the embedded database: what the
//! service makes there only its own user may read.

use std::io::Write;
use std::path::Path;

use anyhow::Context;

/// Writes `contents` to a new file only the owner may read (keys live in these files).
pub fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Makes `path` (and missing parents) readable by the owner only; an existing folder is left as
/// it is (the operator chose its permissions).
pub fn create_private_dir(path: &Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(path)
        .with_context(|| format!("creating the data folder {}", path.display()))
}

/// Makes an empty file only the owner may read, unless it exists. SQLite gives its `-wal` and
/// `-shm` files the permissions of the database file, so making that one first covers all three.
pub fn create_private_file(path: &Path) -> anyhow::Result<()> {
    match write_private(path, b"") {
        Err(_) if path.exists() => Ok(()),
        other => other,
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_data_folder_and_its_files_are_the_owners_alone() {
        let root = tempfile::tempdir().unwrap();
        let folder = root.path().join("data/nested");
        create_private_dir(&folder).unwrap();
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&folder), 0o700);
        assert_eq!(mode(&root.path().join("data")), 0o700);
        let file = folder.join("totp.db");
        create_private_file(&file).unwrap();
        assert_eq!(mode(&file), 0o600);
        std::fs::write(&file, b"kept").unwrap();
        create_private_file(&file).unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"kept");
    }
}
