//! The project layout: where a scenario's routines, reference images, needles
//! and inventory live. A project root is the nearest directory (from the
//! scenario upwards) that holds `routines/`, `reference/`, `needles/` or
//! `inventory.yaml`.

use std::path::{Path, PathBuf};

/// The folders of one project.
#[derive(Debug, Clone)]
pub struct Project {
    pub root: PathBuf,
}

impl Project {
    /// The project a file belongs to; the file's own directory when no marker is found.
    pub fn of_file(file: &Path) -> Project {
        let abs = absolute(file);
        let start = abs.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
        Project::find_from(&start).unwrap_or(Project { root: start })
    }

    /// The nearest project root at or above `dir`.
    pub fn find_from(dir: &Path) -> Option<Project> {
        let mut cur = Some(absolute(dir));
        while let Some(d) = cur {
            if ["routines", "reference", "needles"].iter().any(|m| d.join(m).is_dir())
                || d.join("inventory.yaml").is_file()
            {
                return Some(Project { root: d });
            }
            cur = d.parent().map(Path::to_path_buf);
        }
        None
    }

    pub fn routines_dir(&self) -> PathBuf {
        self.root.join("routines")
    }

    pub fn reference_dir(&self) -> PathBuf {
        self.root.join("reference")
    }

    pub fn needles_dir(&self) -> PathBuf {
        self.root.join("needles")
    }

    pub fn inventory_file(&self) -> PathBuf {
        self.root.join("inventory.yaml")
    }
}

/// An absolute version of `p` (relative to the current directory).
pub fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().map(|c| c.join(p)).unwrap_or_else(|_| p.to_path_buf())
    }
}

/// How a path is shown to users: relative to the current directory when below it.
pub fn display_path(p: &Path) -> String {
    let abs = absolute(p);
    if let Ok(cwd) = std::env::current_dir()
        && let Ok(rel) = abs.strip_prefix(&cwd)
    {
        return rel.display().to_string();
    }
    p.display().to_string()
}
