//! Real files in a scratch directory, held open as [`File`]s until the selftest closes them.

use std::fs::{self, File, OpenOptions};
use std::path::PathBuf;

use super::FileSystem;

/// Files in `<parent>\ctxguard-selftest-<pid>`.
pub struct TempDirFileSystem {
    parent: PathBuf,
    dir: Option<PathBuf>,
}

impl TempDirFileSystem {
    /// Scratch directories go under `parent` (the temp directory when `None`).
    #[must_use]
    pub fn new(parent: Option<PathBuf>) -> Self {
        Self { parent: parent.unwrap_or_else(std::env::temp_dir), dir: None }
    }
}

/// The name the driver reports for an open file: its normalized NT name on Windows.
#[cfg(windows)]
fn driver_name(file: &File, _path: &std::path::Path) -> Result<String, String> {
    super::windows::nt_name(file)
}

/// Elsewhere there is no driver; the canonical path stands in.
#[cfg(not(windows))]
fn driver_name(_file: &File, path: &std::path::Path) -> Result<String, String> {
    fs::canonicalize(path).map(|path| path.display().to_string()).map_err(|error| format!("{}: {error}", path.display()))
}

/// Opens the directory itself (Windows needs FILE_FLAG_BACKUP_SEMANTICS for a directory).
fn open_directory(dir: &std::path::Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(windows)]
    {
        use std::os::windows::fs::OpenOptionsExt;
        options.custom_flags(windows_sys::Win32::Storage::FileSystem::FILE_FLAG_BACKUP_SEMANTICS);
    }
    options.open(dir)
}

impl FileSystem for TempDirFileSystem {
    type File = File;

    fn pid(&self) -> u32 {
        std::process::id()
    }

    fn prepare(&mut self) -> Result<String, String> {
        let dir = self.parent.join(format!("ctxguard-selftest-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(|error| format!("{}: {error}", dir.display()))?;
        self.dir = Some(dir.clone());
        let handle = open_directory(&dir).map_err(|error| format!("{}: {error}", dir.display()))?;
        driver_name(&handle, &dir)
    }

    fn create(&mut self, leaf: &str) -> Result<(File, String), String> {
        let dir = self.dir.as_ref().ok_or("the scratch directory was not prepared")?;
        let path = dir.join(leaf);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|error| format!("{}: {error}", path.display()))?;
        let name = driver_name(&file, &path)?;
        Ok((file, name))
    }

    fn close(&mut self, file: File) -> Result<(), String> {
        drop(file);
        Ok(())
    }

    fn remove_all(&mut self) -> Result<(), String> {
        match self.dir.take() {
            Some(dir) => fs::remove_dir_all(&dir).map_err(|error| format!("{}: {error}", dir.display())),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_created_held_and_removed() {
        let parent = std::env::temp_dir().join(format!("ctxguard-selftest-unit-{}", std::process::id()));
        fs::create_dir_all(&parent).unwrap();
        let mut files = TempDirFileSystem::new(Some(parent.clone()));
        let scratch = files.prepare().unwrap();
        let (file, name) = files.create("a.txt").unwrap();
        assert!(name.starts_with(&scratch) && name.ends_with("a.txt"), "{name} under {scratch}");
        assert!(files.create("a.txt").is_err(), "create_new refuses an existing file");
        files.close(file).unwrap();
        files.remove_all().unwrap();
        assert!(fs::read_dir(&parent).unwrap().next().is_none());
        fs::remove_dir(&parent).unwrap();
    }
}
