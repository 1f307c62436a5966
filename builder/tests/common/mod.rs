//! Shared by the integration tests: what a test does when a tool or fixture it needs is
//! missing. On a developer's machine it skips with a message; under CI (`CI` set, as CI
//! systems do) or with `BERTH_REQUIRE_TOOLS=1` (which `ci/test` sets) it fails, naming the
//! tool and the package to install, so a test can never pass without having checked anything.

#![allow(dead_code)]

use std::path::PathBuf;

/// Whether a missing tool or fixture fails the test instead of skipping it.
pub fn strict() -> bool {
    let on = |v: &str| std::env::var(v).is_ok_and(|s| !s.is_empty() && s != "0" && s != "false");
    on("CI") || on("BERTH_REQUIRE_TOOLS")
}

/// `tool`'s path, found on `PATH` the way a shell would.
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    if tool.contains('/') {
        let p = PathBuf::from(tool);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// True when `tool` is on `PATH`. When it is not: false (the caller returns, skipping) on a
/// developer's machine; a panic naming the tool and its Debian package under CI.
pub fn require_tool(tool: &str, package: &str) -> bool {
    require(
        find_tool(tool).is_some(),
        &format!("`{tool}` is not on PATH"),
        &format!("install the Debian package {package} (ci/install-deps does)"),
    )
}

/// True when `present`. Otherwise false with a SKIP line, or (under CI) a panic saying what is
/// missing and how to get it.
pub fn require(present: bool, what: &str, hint: &str) -> bool {
    if present {
        return true;
    }
    if strict() {
        panic!("{what}: {hint}. Under CI a missing tool or fixture fails the test instead of skipping it");
    }
    eprintln!("SKIP: {what}: {hint}");
    false
}
