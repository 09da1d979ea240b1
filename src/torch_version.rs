//! Reads the version of a libtorch installation from its files. Shared by `build.rs` (the
//! libtorch built against) and `runtime` (the libtorch loaded), so both read it the same way.

use std::path::Path;

/// `root` is the folder above `lib/`: `torch/version.py` of a pip install
/// (`__version__ = '2.11.0+cu130'`), or `build-version` of a libtorch archive.
pub fn read(root: &Path) -> Option<String> {
    if let Ok(text) = std::fs::read_to_string(root.join("version.py")) {
        return text.lines().find_map(|line| {
            let rest = line.strip_prefix("__version__")?;
            Some(rest.trim_start_matches([' ', '=']).trim().trim_matches(['\'', '"']).to_string())
        });
    }
    std::fs::read_to_string(root.join("build-version")).ok().map(|s| s.trim().to_string())
}
