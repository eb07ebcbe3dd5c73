//! The shipped defaults, `config/default.toml`, compiled in.
//!
//! A leaf module: a section's owner (e.g. `dosimetry`) takes its defaults from
//! here without importing the aggregate `crate::config`, which imports every
//! owner (that import was a circle).

use serde::de::DeserializeOwned;

/// The defaults shipped in `config/default.toml`.
pub const DEFAULT_TOML: &str = include_str!("../../../config/default.toml");

/// Section `[name]` of the shipped defaults.
pub fn section<T: DeserializeOwned>(name: &str) -> T {
    // The shipped defaults are checked by a test (`config::tests`), so none of
    // these can fail in a release.
    let mut all: toml::Table = toml::from_str(DEFAULT_TOML).expect("config/default.toml is valid");
    all.remove(name)
        .unwrap_or_else(|| panic!("config/default.toml has a [{name}] section"))
        .try_into()
        .unwrap_or_else(|e| panic!("config/default.toml [{name}]: {e}"))
}
