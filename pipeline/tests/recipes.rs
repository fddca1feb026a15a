//! Recipes end to end: a corpus of bad recipes, set-level checks on real folders, and
//! property tests that no input makes the parser panic.

use std::fs;
use std::path::{Path, PathBuf};

use autonomy_pipeline::recipe::{self, Kind, RecipeError, RecipeSet, Source};
use proptest::prelude::*;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/recipes")
}

/// Each file in `tests/recipes/bad` starts with `# expect: LINE | FIELD | FRAGMENT` (`-`: no
/// field), and parsing it must give an error at that line, for that field, saying that.
#[test]
fn bad_recipes_report_line_field_and_cause() {
    let dir = fixtures().join("bad");
    let mut files: Vec<_> = fs::read_dir(&dir)
        .expect("bad corpus")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    assert!(files.len() >= 30, "corpus is missing");
    for path in files {
        let text = fs::read_to_string(&path).expect("read");
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "));
        let parts: Vec<&str> = expect.expect("expect header").split(" | ").collect();
        let [line, field, fragment] = parts[..] else {
            panic!("bad header in {path:?}")
        };
        let (line, field) = (
            line.parse::<usize>().expect("line"),
            (field != "-").then_some(field),
        );
        let file = Path::new("bad").join(path.file_name().expect("name"));
        let errors = recipe::parse(&file, &text).expect_err(&format!("{file:?} should fail"));
        let shown: Vec<String> = errors.iter().map(RecipeError::to_string).collect();
        assert!(
            errors.iter().any(|e| e.line == line
                && e.field.as_deref() == field
                && e.message.contains(fragment)),
            "{file:?}: wanted line {line}, field {field:?}, {fragment:?}; got {shown:#?}"
        );
        assert!(
            shown
                .iter()
                .all(|s| s.starts_with(&format!("{}:", file.display())))
        );
    }
}

#[test]
fn loads_a_project() {
    let set = recipe::load_dir(&fixtures().join("good"));
    assert_eq!(set.errors, []);
    let order: Vec<&str> = set.build_order().iter().map(|r| r.name.as_str()).collect();
    assert_eq!(order, ["potion", "potion_glow", "rock", "sword", "shield"]);
    let glow = &set.recipes[0];
    assert_eq!(
        (glow.kind, glow.file.as_path()),
        (Kind::Animation, Path::new("fx/potion_glow.recipe.toml"))
    );
    assert_eq!(
        glow.img2img.as_ref().map(|i| &i.source),
        Some(&Source::Recipe("potion".into()))
    );
    let shield = set
        .recipes
        .iter()
        .find(|r| r.name == "shield")
        .expect("shield");
    assert_eq!(
        (shield.line, shield.output_dir()),
        (6, PathBuf::from("props"))
    );
    let dependents: Vec<&str> = set
        .dependents("potion")
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(dependents, ["potion_glow"]);
}

/// Writes `files` (path, text) under a fresh folder and loads it.
fn load(files: &[(&str, &str)]) -> RecipeSet {
    let root = tempfile::tempdir().expect("temp dir");
    for (path, text) in files {
        let path = root.path().join(path);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, text).expect("write");
    }
    recipe::load_dir(root.path())
}

fn sprite(source: &str) -> String {
    format!("kind = \"sprite\"\nprompt = \"thing\"\nsource = \"{source}\"\n")
}

#[test]
fn a_recipe_cannot_be_its_own_source() {
    let set = load(&[("self.recipe.toml", &sprite("recipe:self"))]);
    assert!(set.recipes.is_empty());
    let [e] = &set.errors[..] else {
        panic!("{:?}", set.errors)
    };
    assert_eq!(
        (e.line, e.column, e.field.as_deref()),
        (3, 10, Some("source"))
    );
    assert!(e.message.contains("is a cycle: self → self"), "{e}");
}

#[test]
fn cycles_name_their_chain() {
    let set = load(&[
        ("a.recipe.toml", &sprite("recipe:b")),
        ("b.recipe.toml", &sprite("recipe:a")),
        ("c.recipe.toml", &sprite("recipe:a")),
        ("d.recipe.toml", "kind = \"sprite\"\nprompt = \"fine\"\n"),
    ]);
    let names: Vec<&str> = set.recipes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["d"]);
    let errors: Vec<String> = set.errors.iter().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(
        errors[0].starts_with("a.recipe.toml:3:10: `source`: is a cycle: a → b → a"),
        "{errors:#?}"
    );
    assert!(
        errors[1].starts_with("b.recipe.toml:3:10: `source`: is a cycle: b → a → b"),
        "{errors:#?}"
    );
    assert!(
        errors[2].contains("its source `a` has errors"),
        "{errors:#?}"
    );
}

#[test]
fn duplicate_names_in_a_folder_name_both_places() {
    let set = load(&[
        (
            "props/potion.recipe.toml",
            "kind = \"sprite\"\nprompt = \"red potion\"\n",
        ),
        (
            "props/items.recipe.toml",
            "[assets.sword]\nkind = \"sprite\"\nprompt = \"sword\"\n[assets.potion]\nkind = \"sprite\"\nprompt = \"blue potion\"\n",
        ),
        (
            "other/potion.recipe.toml",
            "kind = \"sprite\"\nprompt = \"green potion\"\n",
        ),
    ]);
    assert_eq!(set.recipes.len(), 3, "same name in another folder is fine");
    let [e] = &set.errors[..] else {
        panic!("{:?}", set.errors)
    };
    assert_eq!(
        (e.file.as_path(), e.line),
        (Path::new("props/potion.recipe.toml"), 1)
    );
    assert!(
        e.message
            .contains("already defined at props/items.recipe.toml:4"),
        "{e}"
    );
}

#[test]
fn missing_recipe_sources_are_errors() {
    let set = load(&[("a.recipe.toml", &sprite("recipe:nothing"))]);
    let [e] = &set.errors[..] else {
        panic!("{:?}", set.errors)
    };
    assert!(e.message.contains("no asset of that name"), "{e}");
}

const VALID: &str = r##"[assets.potion]
kind = "animation"
prompt = "red potion"
negative_prompt = "blurry"
model = "registry:pixel"
seed = 7
size = 128
guidance = 4.5
frames = 8
pixel_art = { palette = ["#1a1c2c", "5d275d"], scale = 4 }
source = "art/potion.png"
strength = 0.5

[assets.rock]
kind = "material"
prompt = "rock"
pbr = ["normal", "ao"]
"##;

/// Parsing never panics, and every error points inside the file.
fn check_parse(text: &str) {
    let lines = text.lines().count() + 1;
    if let Err(errors) = recipe::parse(Path::new("p/x.recipe.toml"), text) {
        assert!(!errors.is_empty());
        for e in errors {
            assert!(
                e.line >= 1 && e.line <= lines,
                "{e} in a file of {lines} lines"
            );
        }
    }
}

#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, char),
    Delete(usize, usize),
    Replace(usize, char),
}

fn edit() -> impl Strategy<Value = Edit> {
    let ch = prop_oneof![
        prop::sample::select(vec![
            '"', '\'', '[', ']', '{', '}', '=', ',', '.', '#', '\n', '\\', '-', '0', 'x', ' '
        ]),
        any::<char>(),
    ];
    prop_oneof![
        (any::<usize>(), ch.clone()).prop_map(|(i, c)| Edit::Insert(i, c)),
        (any::<usize>(), 1usize..20).prop_map(|(i, n)| Edit::Delete(i, n)),
        (any::<usize>(), ch).prop_map(|(i, c)| Edit::Replace(i, c)),
    ]
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in ".*") {
        check_parse(&text);
    }

    #[test]
    fn mutated_recipes_never_panic(edits in prop::collection::vec(edit(), 1..8)) {
        assert!(recipe::parse(Path::new("p/x.recipe.toml"), VALID).is_ok());
        let mut chars: Vec<char> = VALID.chars().collect();
        for e in edits {
            match e {
                Edit::Insert(i, c) => chars.insert(i % (chars.len() + 1), c),
                Edit::Delete(i, n) if !chars.is_empty() => {
                    let at = i % chars.len();
                    chars.drain(at..(at + n).min(chars.len()));
                }
                Edit::Replace(i, c) if !chars.is_empty() => {
                    let at = i % chars.len();
                    chars[at] = c;
                }
                _ => {}
            }
        }
        check_parse(&chars.into_iter().collect::<String>());
    }
}
