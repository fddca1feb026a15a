//! A folder of recipes: loading, the checks that need every file at once (unique names,
//! `recipe:` sources that exist, no cycles) and the order to build in.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::Path;

use super::error::{RecipeError, Report};
use super::parse::{MAX_FILE_BYTES, Parsed, parse_file, too_big};
use super::paths::slashed;
use super::{AssetRecipe, Source};

/// Folders never searched for recipes (besides hidden ones such as `.autonomy`).
const SKIPPED_DIRS: [&str; 2] = ["target", "node_modules"];

/// The recipes of a folder: those that can be built, and the errors of the rest.
#[derive(Debug, Clone, Default)]
pub struct RecipeSet {
    /// Recipes that are fine, in file order (sorted paths, then file order within a file).
    pub recipes: Vec<AssetRecipe>,
    /// Everything wrong, in file order; the recipes concerned are not in `recipes`.
    pub errors: Vec<RecipeError>,
}

/// Loads every `*.recipe.toml` under `root` (recursively, in sorted order, skipping hidden
/// files and folders, `target` and `node_modules`; symlinked folders are not followed), parses them
/// and checks the set: asset names are unique per output folder, `recipe:` sources name an
/// existing asset, and no recipe is its own source, directly or through others.
///
/// A broken file never stops the others: its errors are returned beside the recipes that are
/// fine. A recipe whose `recipe:` source has errors is left out too (with an error), so every
/// source of a returned recipe is itself returned.
pub fn load_dir(root: &Path) -> RecipeSet {
    let _span = tracing::info_span!("load_recipes", root = %root.display()).entered();
    let mut errors = Vec::new();
    let mut files = Vec::new();
    find_files(root, Path::new(""), &mut files, &mut errors);
    let mut parsed = Vec::new();
    for file in &files {
        match read(root, file).map(|text| parse_file(file, &text)) {
            Ok(Ok(assets)) => parsed.extend(assets),
            Ok(Err(file_errors)) => errors.extend(file_errors),
            Err(error) => errors.push(error),
        }
    }
    let file_errors = !errors.is_empty();
    let recipes = check(parsed, file_errors, &mut errors);
    errors.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    tracing::debug!(
        files = files.len(),
        recipes = recipes.len(),
        errors = errors.len(),
        "loaded recipes"
    );
    RecipeSet { recipes, errors }
}

impl RecipeSet {
    /// Recipes in an order where every `recipe:` source comes before its users.
    pub fn build_order(&self) -> Vec<&AssetRecipe> {
        let all: Vec<&AssetRecipe> = self.recipes.iter().collect();
        let sources = sources(&all);
        // 0: not placed, 1: on the chain being walked, 2: placed. Each recipe has at most
        // one source, so the dependencies of a recipe are a chain; the marks also stop at
        // cycles, which a set built by `load_dir` never has.
        let mut state = vec![0u8; all.len()];
        let mut order = Vec::with_capacity(all.len());
        for start in 0..all.len() {
            let mut chain = Vec::new();
            let mut next = Some(start);
            while let Some(i) = next.filter(|&i| state[i] == 0) {
                state[i] = 1;
                chain.push(i);
                next = sources[i];
            }
            for &i in chain.iter().rev() {
                state[i] = 2;
                order.push(all[i]);
            }
        }
        order
    }

    /// The asset a `recipe:<reference>` source of `from` names, resolved as [`load_dir`]
    /// checked it (same folder first, then the only asset of that name).
    pub fn source_of(&self, from: &AssetRecipe, reference: &str) -> Option<&AssetRecipe> {
        let all: Vec<&AssetRecipe> = self.recipes.iter().collect();
        resolve(&all, from, reference).ok().map(|i| all[i])
    }

    /// Assets that (transitively) use `name` as a `recipe:` source, in build order.
    ///
    /// `name` is written as after `recipe:`, but a bare `name` matches the assets of that
    /// name in every folder (a watcher would rather rebuild too much than too little).
    pub fn dependents(&self, name: &str) -> Vec<&AssetRecipe> {
        let all: Vec<&AssetRecipe> = self.recipes.iter().collect();
        let sources = sources(&all);
        let target: Vec<bool> = all.iter().map(|r| names(r, name)).collect();
        let depends = |start: usize| {
            let mut next = sources[start];
            // A path longer than the set has looped; only a hand-made set can have one.
            for _ in 0..all.len() {
                let Some(i) = next else { return false };
                if target[i] {
                    return true;
                }
                next = sources[i];
            }
            false
        };
        let wanted: Vec<&AssetRecipe> = (0..all.len())
            .filter(|&i| depends(i))
            .map(|i| all[i])
            .collect();
        self.build_order()
            .into_iter()
            .filter(|r| wanted.iter().any(|w| std::ptr::eq(*w, *r)))
            .collect()
    }
}

/// Appends the root-relative paths of recipe files under `root/rel` to `files`, sorted.
fn find_files(
    root: &Path,
    rel: &Path,
    files: &mut Vec<std::path::PathBuf>,
    errors: &mut Vec<RecipeError>,
) {
    let shown = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let entries = match fs::read_dir(root.join(rel)) {
        Ok(entries) => entries,
        Err(e) => {
            return errors.push(RecipeError::whole_file(
                shown,
                format!("cannot read folder: {e}"),
            ));
        }
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
    entries.sort_by_key(fs::DirEntry::file_name);
    for entry in entries {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Ok(file_type) = entry.file_type() else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let path = rel.join(&*name);
        if file_type.is_dir() {
            if !SKIPPED_DIRS.contains(&&*name) {
                find_files(root, &path, files, errors);
            }
        } else if name.ends_with(".recipe.toml") {
            files.push(path);
        }
    }
}

/// Reads a recipe file as text, refusing huge files before reading them.
fn read(root: &Path, file: &Path) -> Result<String, RecipeError> {
    let io_error = |e: std::io::Error| RecipeError::whole_file(file, format!("cannot read: {e}"));
    let handle = fs::File::open(root.join(file)).map_err(io_error)?;
    let len = handle.metadata().map_err(io_error)?.len();
    if len > MAX_FILE_BYTES as u64 {
        return Err(too_big(file, usize::try_from(len).unwrap_or(usize::MAX)));
    }
    let mut bytes = Vec::new();
    // `take` guards against a file that grows between the size check and the read.
    handle
        .take(MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    if bytes.len() > MAX_FILE_BYTES {
        return Err(too_big(file, bytes.len()));
    }
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let prefix = String::from_utf8_lossy(&e.as_bytes()[..valid]);
        let (line, column) = Report::new(file, &prefix).position(valid);
        RecipeError {
            line,
            column,
            ..RecipeError::whole_file(file, "is not UTF-8 text; save the recipe as UTF-8")
        }
    })
}

/// The checks across files; returns the recipes that pass, in load order.
fn check(
    parsed: Vec<Parsed>,
    file_errors: bool,
    errors: &mut Vec<RecipeError>,
) -> Vec<AssetRecipe> {
    // Unique names per output folder: the first one keeps the name.
    let mut first: HashMap<(std::path::PathBuf, &str), &Parsed> = HashMap::new();
    let mut unique = vec![true; parsed.len()];
    for (i, p) in parsed.iter().enumerate() {
        let key = (p.recipe.output_dir(), p.recipe.name.as_str());
        if let Some(earlier) = first.get(&key) {
            unique[i] = false;
            let message = format!(
                "asset `{}` is already defined at {}:{}; names must be unique per folder, \
                 since they name the output files",
                p.recipe.name,
                earlier.recipe.file.display(),
                earlier.recipe.line
            );
            errors.push(p.name_at.error(&p.recipe.file, message));
        } else {
            first.insert(key, p);
        }
    }
    let parsed: Vec<&Parsed> = parsed
        .iter()
        .zip(unique)
        .filter(|(_, u)| *u)
        .map(|(p, _)| p)
        .collect();
    let all: Vec<&AssetRecipe> = parsed.iter().map(|p| &p.recipe).collect();

    // Resolve `recipe:` sources.
    let mut ok = vec![true; all.len()];
    let mut source = vec![None; all.len()];
    for (i, r) in all.iter().enumerate() {
        let Some(reference) = recipe_source(r) else {
            continue;
        };
        match resolve(&all, r, reference) {
            Ok(j) => source[i] = Some(j),
            Err(mut message) => {
                if file_errors {
                    message.push_str(" (a recipe file with errors may define it)");
                }
                ok[i] = false;
                errors.push(parsed[i].source_at.error(&r.file, message));
            }
        }
    }

    // Cycles: each recipe has at most one source, so walking sources from any recipe
    // either ends or comes back onto the walk.
    let mut state = vec![0u8; all.len()]; // 0: unseen, 1: on this walk, 2: done
    for start in 0..all.len() {
        let mut walk = Vec::new();
        let mut next = Some(start);
        while let Some(i) = next.filter(|&i| state[i] == 0) {
            state[i] = 1;
            walk.push(i);
            next = source[i];
        }
        if let Some(back) = next.filter(|&i| state[i] == 1) {
            let cycle = walk
                .iter()
                .position(|&i| i == back)
                .map_or(&walk[..0], |at| &walk[at..]);
            for (k, &i) in cycle.iter().enumerate() {
                let chain: Vec<&str> = cycle[k..]
                    .iter()
                    .chain(&cycle[..=k])
                    .map(|&j| all[j].name.as_str())
                    .collect();
                ok[i] = false;
                let message = format!(
                    "is a cycle: {}; an asset cannot start from itself",
                    chain.join(" → ")
                );
                errors.push(parsed[i].source_at.error(&all[i].file, message));
            }
        }
        for i in walk {
            state[i] = 2;
        }
    }

    // A recipe whose source cannot be built cannot be built either.
    let mut changed = true;
    while changed {
        changed = false;
        for i in 0..all.len() {
            if let Some(j) = source[i].filter(|&j| ok[i] && !ok[j]) {
                ok[i] = false;
                changed = true;
                let message = format!(
                    "its source `{}` has errors, so it cannot be built",
                    all[j].name
                );
                errors.push(parsed[i].source_at.error(&all[i].file, message));
            }
        }
    }
    all.into_iter()
        .zip(ok)
        .filter(|(_, ok)| *ok)
        .map(|(r, _)| r.clone())
        .collect()
}

fn recipe_source(r: &AssetRecipe) -> Option<&str> {
    match r.img2img.as_ref().map(|i| &i.source) {
        Some(Source::Recipe(reference)) => Some(reference),
        _ => None,
    }
}

/// The resolved `recipe:` source of each recipe (unresolvable ones count as none).
fn sources(all: &[&AssetRecipe]) -> Vec<Option<usize>> {
    all.iter()
        .map(|r| recipe_source(r).and_then(|reference| resolve(all, r, reference).ok()))
        .collect()
}

/// Whether `r` is the asset `reference` (`name`, `folder/name` or `./name`) names, in any folder
/// for a bare name.
fn names(r: &AssetRecipe, reference: &str) -> bool {
    match reference.rsplit_once('/') {
        Some((folder, name)) => r.name == name && folder_of(r) == folder,
        None => r.name == reference,
    }
}

/// The output folder as written in `recipe:folder/name` (`.` for the root).
fn folder_of(r: &AssetRecipe) -> String {
    let dir = slashed(&r.output_dir());
    if dir.is_empty() { ".".into() } else { dir }
}

/// Finds the asset a `recipe:` source of `from` names; see the module docs for the rules.
fn resolve(all: &[&AssetRecipe], from: &AssetRecipe, reference: &str) -> Result<usize, String> {
    let found: Vec<usize> = (0..all.len())
        .filter(|&i| names(all[i], reference))
        .collect();
    let here: Vec<usize> = found
        .iter()
        .copied()
        .filter(|&i| all[i].output_dir() == from.output_dir())
        .collect();
    match (found.as_slice(), here.as_slice()) {
        (_, [i]) | ([i], _) => Ok(*i),
        ([], _) => Err(format!(
            "`recipe:{reference}`: no asset of that name under the recipe root"
        )),
        (many, _) => {
            let options: Vec<String> = many
                .iter()
                .map(|&i| format!("`recipe:{}/{}`", folder_of(all[i]), all[i].name))
                .collect();
            Err(format!(
                "`recipe:{reference}` is ambiguous; write one of {}",
                options.join(", ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `files` (path, text) under a fresh folder and loads it.
    fn load(files: &[(&str, &str)]) -> RecipeSet {
        let root = tempfile::tempdir().expect("temp dir");
        for (path, text) in files {
            let path = root.path().join(path);
            fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            fs::write(path, text).expect("write");
        }
        load_dir(root.path())
    }

    fn sprite(source: &str) -> String {
        let source = if source.is_empty() {
            String::new()
        } else {
            format!("source = \"{source}\"\n")
        };
        format!("kind = \"sprite\"\nprompt = \"thing\"\n{source}")
    }

    fn names<'a>(recipes: impl IntoIterator<Item = &'a AssetRecipe>) -> Vec<String> {
        recipes
            .into_iter()
            .map(|r| format!("{}/{}", folder_of(r), r.name))
            .collect()
    }

    #[test]
    fn orders_sources_first_and_finds_dependents() {
        let set = load(&[
            ("a.recipe.toml", &sprite("recipe:b")),
            ("b.recipe.toml", &sprite("recipe:ui/c")),
            ("d.recipe.toml", &sprite("recipe:b")),
            ("ui/c.recipe.toml", &sprite("")),
            ("ui/e.recipe.toml", &sprite("recipe:c")),
            (".autonomy/x.recipe.toml", "broken"),
            ("target/x.recipe.toml", "broken"),
            ("notes.toml", "broken"),
        ]);
        assert_eq!(set.errors, []);
        assert_eq!(names(&set.recipes), ["./a", "./b", "./d", "ui/c", "ui/e"]);
        assert_eq!(
            names(set.build_order()),
            ["ui/c", "./b", "./a", "./d", "ui/e"]
        );
        assert_eq!(names(set.dependents("c")), ["./b", "./a", "./d", "ui/e"]);
        assert_eq!(names(set.dependents("./b")), ["./a", "./d"]);
        assert_eq!(names(set.dependents("a")), Vec::<String>::new());
    }

    #[test]
    fn resolves_the_same_folder_first_and_reports_ambiguity() {
        let set = load(&[
            ("a/x.recipe.toml", &sprite("")),
            ("a/y.recipe.toml", &sprite("recipe:x")),
            ("b/x.recipe.toml", &sprite("")),
            ("z.recipe.toml", &sprite("recipe:x")),
        ]);
        assert_eq!(names(&set.recipes), ["a/x", "a/y", "b/x"]);
        let [error] = &set.errors[..] else {
            panic!("{:?}", set.errors)
        };
        assert_eq!(
            (error.file.as_path(), error.line, error.field.as_deref()),
            (Path::new("z.recipe.toml"), 3, Some("source"))
        );
        assert!(
            error
                .message
                .contains("ambiguous; write one of `recipe:a/x`, `recipe:b/x`"),
            "{error}"
        );
    }

    #[test]
    fn a_broken_file_stops_only_itself_and_its_users() {
        let set = load(&[
            ("a.recipe.toml", "kind = \"sprite\"\nprompt = "),
            ("b.recipe.toml", &sprite("recipe:a")),
            ("c.recipe.toml", &sprite("recipe:b")),
            ("d.recipe.toml", &sprite("")),
        ]);
        assert_eq!(names(&set.recipes), ["./d"]);
        let found: Vec<_> = set
            .errors
            .iter()
            .map(|e| (e.file.to_string_lossy().into_owned(), e.line))
            .collect();
        assert_eq!(
            found,
            [
                ("a.recipe.toml".into(), 2),
                ("b.recipe.toml".into(), 3),
                ("c.recipe.toml".into(), 3)
            ]
        );
        assert!(
            set.errors[1].message.contains("may define it"),
            "{}",
            set.errors[1]
        );
        assert!(
            set.errors[2].message.contains("source `b` has errors"),
            "{}",
            set.errors[2]
        );
    }

    #[test]
    fn unreadable_files_are_errors() {
        let root = tempfile::tempdir().expect("temp dir");
        fs::write(
            root.path().join("big.recipe.toml"),
            vec![b'#'; MAX_FILE_BYTES + 1],
        )
        .expect("write");
        fs::write(
            root.path().join("latin1.recipe.toml"),
            b"kind = \"sprite\"\nprompt = \"caf\xe9\"\n",
        )
        .expect("write");
        let set = load_dir(root.path());
        let found: Vec<_> = set.errors.iter().map(|e| (e.line, e.column)).collect();
        assert_eq!(found, [(0, 0), (2, 14)]);
        assert!(set.errors[0].message.contains("limited to 1048576 bytes"));
        assert!(set.errors[1].message.contains("not UTF-8"));
        assert_eq!(load_dir(&root.path().join("missing")).errors.len(), 1);
    }
}
