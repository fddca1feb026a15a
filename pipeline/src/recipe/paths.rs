//! Names and paths a recipe may use. Asset names become file names and recipe paths are
//! joined onto the project, so both are checked strictly: nothing a recipe says can reach
//! outside the recipe root.

use std::path::{Path, PathBuf};

/// Longest asset name.
const MAX_NAME: usize = 64;

/// Checks an asset name: 1..=64 of `[a-z0-9_-]`, not starting with `-`.
pub(super) fn check_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if name.is_empty() || name.len() > MAX_NAME || !ok_chars || name.starts_with('-') {
        Err(format!(
            "asset name `{name}` is not allowed: use 1 to {MAX_NAME} of a-z, 0-9, `_` and `-`, \
             not starting with `-` (it becomes a file name)"
        ))
    } else {
        Ok(())
    }
}

/// Resolves a path written in a recipe against the recipe's folder (`dir`, relative to
/// the root) and normalises it; the result is relative to the root and never leaves it.
pub(super) fn resolve_inside(dir: &Path, written: &str) -> Result<PathBuf, String> {
    if written.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if written.contains('\\') {
        return Err(format!("`{written}`: use `/` as the path separator"));
    }
    if written.starts_with('/') || written.contains(':') || Path::new(written).is_absolute() {
        return Err(format!(
            "`{written}` must be a path relative to the recipe's folder, not an absolute path"
        ));
    }
    let mut parts: Vec<&str> = dir.iter().filter_map(|c| c.to_str()).collect();
    for part in written.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(format!("`{written}` leads outside the recipe root"));
                }
            }
            _ => parts.push(part),
        }
    }
    if parts.is_empty() {
        return Err(format!(
            "`{written}` names the recipe root itself, not a file or folder in it"
        ));
    }
    Ok(parts.iter().collect())
}

/// A path as a `/`-separated string, the same on every platform.
pub(super) fn slashed(path: &Path) -> String {
    path.to_string_lossy()
        .replace(std::path::MAIN_SEPARATOR, "/")
}

/// Checks and normalises what follows `recipe:`: `name`, or `folder/name` with the folder
/// relative to the root (`./name` for the root itself).
pub(super) fn check_recipe_ref(written: &str) -> Result<String, String> {
    let Some((folder, name)) = written.rsplit_once('/') else {
        check_name(written)?;
        return Ok(written.to_owned());
    };
    check_name(name)?;
    let folder = match folder {
        "." | "" => ".".to_owned(),
        _ => slashed(&resolve_inside(Path::new(""), folder)?),
    };
    Ok(format!("{folder}/{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["potion", "a", "x_1-b", "9lives", &"a".repeat(64)] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            ".a",
            "A",
            "a b",
            "a/b",
            "..",
            "a\\b",
            "é",
            &"a".repeat(65),
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths_stay_inside_the_root() {
        let dir = Path::new("fx/fire");
        assert_eq!(
            resolve_inside(dir, "../img/./a.png"),
            Ok(PathBuf::from("fx/img/a.png"))
        );
        assert_eq!(
            resolve_inside(dir, "../../a.png"),
            Ok(PathBuf::from("a.png"))
        );
        for bad in [
            "../../../a.png",
            "/etc/passwd",
            "C:/x",
            "a\\b",
            "",
            "../..",
            "../../x/../..",
        ] {
            assert!(resolve_inside(dir, bad).is_err(), "{bad}");
        }
        assert_eq!(check_recipe_ref("a/./b/../x"), Ok("a/x".into()));
        assert_eq!(check_recipe_ref("./x"), Ok("./x".into()));
        assert!(check_recipe_ref("../x").is_err());
    }
}
