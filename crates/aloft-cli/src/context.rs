//! The build context `aloft deploy` sends: the app's directory as a tar archive, without
//! what `.dockerignore` (or `[build] ignorefile`) excludes, with Docker's rules:
//!
//! - one pattern per line, `#` starts a comment, blank lines are skipped;
//! - patterns are relative to the context root (a leading `/` or `./` is dropped), `*` and
//!   `?` do not cross `/`, `**` matches any number of directories;
//! - a pattern excludes a path it matches and everything under it;
//! - `!pattern` re-includes; the last matching line decides;
//! - the Dockerfile and the ignore file itself are always sent.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use globset::{Glob, GlobBuilder, GlobMatcher};

/// Parsed ignore rules.
#[derive(Debug, Default)]
pub(crate) struct Ignore {
    /// (pattern, excludes: false for `!` lines), in file order.
    rules: Vec<(GlobMatcher, bool)>,
}

impl Ignore {
    /// Parses ignore file text; `source` names it in errors.
    pub(crate) fn parse(text: &str, source: &str) -> anyhow::Result<Ignore> {
        let mut rules = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (pattern, excludes) = match line.strip_prefix('!') {
                Some(rest) => (rest.trim(), false),
                None => (line, true),
            };
            let pattern = clean(pattern);
            if pattern.is_empty() {
                continue;
            }
            let glob: Glob = GlobBuilder::new(&pattern)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .with_context(|| {
                    format!(
                        "{source} line {}: pattern {line:?} is not valid",
                        number + 1
                    )
                })?;
            rules.push((glob.compile_matcher(), excludes));
        }
        Ok(Ignore { rules })
    }

    /// Whether `path` (relative, `/`-separated) is left out of the context.
    pub(crate) fn excludes(&self, path: &str) -> bool {
        let mut excluded = false;
        for (matcher, excludes) in &self.rules {
            if excluded == *excludes {
                continue;
            }
            // A pattern matching a parent directory matches the path too.
            let matched = matcher.is_match(path)
                || path
                    .match_indices('/')
                    .any(|(at, _)| matcher.is_match(&path[..at]));
            if matched {
                excluded = *excludes;
            }
        }
        excluded
    }

    /// Whether some `!` rule could bring back a path under an excluded directory.
    fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|(_, excludes)| !excludes)
    }
}

/// Docker's cleaning of a pattern: no leading `/` or `./`, no trailing `/`.
fn clean(pattern: &str) -> String {
    let mut pattern = pattern.trim_start_matches("./").trim_start_matches('/');
    pattern = pattern.trim_end_matches('/');
    pattern.to_owned()
}

/// A packed context.
#[derive(Debug)]
pub(crate) struct Context {
    pub(crate) archive: Vec<u8>,
    /// The Dockerfile's path inside the archive.
    pub(crate) dockerfile: String,
    pub(crate) files: usize,
}

/// Packs `root` as a tar archive, leaving out what `ignore_file` (default
/// `root/.dockerignore`, when it exists) excludes; `dockerfile` must exist and is always
/// included (under `Dockerfile.aloft` when it lies outside `root`).
pub(crate) fn pack(
    root: &Path,
    dockerfile: &Path,
    ignore_file: Option<&Path>,
) -> anyhow::Result<Context> {
    let default_ignore = root.join(".dockerignore");
    let ignore_path = match ignore_file {
        Some(path) => Some(path.to_owned()),
        None => default_ignore.exists().then_some(default_ignore),
    };
    let ignore = match &ignore_path {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading ignore file {}", path.display()))?;
            Ignore::parse(&text, &path.display().to_string())?
        }
        None => Ignore::default(),
    };
    if !dockerfile.is_file() {
        anyhow::bail!("Dockerfile {} does not exist", dockerfile.display());
    }
    let relative = |path: &Path| -> Option<String> {
        let canonical_root = root.canonicalize().ok()?;
        let canonical = path.canonicalize().ok()?;
        let inside = canonical.strip_prefix(&canonical_root).ok()?;
        Some(inside.to_string_lossy().replace('\\', "/"))
    };
    let always: Vec<String> = [Some(dockerfile.to_owned()), ignore_path.clone()]
        .into_iter()
        .flatten()
        .filter_map(|p| relative(&p))
        .collect();
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    let mut files = 0;
    let mut walk = walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
        .min_depth(1)
        .into_iter();
    while let Some(entry) = walk.next() {
        let entry = entry.with_context(|| format!("reading {}", root.display()))?;
        let path = entry.path();
        let name = path
            .strip_prefix(root)
            .unwrap_or(path)
            .to_string_lossy()
            .replace('\\', "/");
        if ignore.excludes(&name) && !always.contains(&name) {
            if entry.file_type().is_dir() && !ignore.has_exceptions() {
                walk.skip_current_dir();
            }
            continue;
        }
        builder
            .append_path_with_name(path, &name)
            .with_context(|| format!("adding {} to the build context", path.display()))?;
        if !entry.file_type().is_dir() {
            files += 1;
        }
    }
    let dockerfile_name = match relative(dockerfile) {
        Some(name) => name,
        None => {
            let name = "Dockerfile.aloft".to_owned();
            builder
                .append_path_with_name(dockerfile, &name)
                .with_context(|| format!("adding {}", dockerfile.display()))?;
            files += 1;
            name
        }
    };
    let archive = builder
        .into_inner()
        .context("finishing the build context archive")?;
    Ok(Context {
        archive,
        dockerfile: dockerfile_name,
        files,
    })
}

/// The Dockerfile a deploy builds: `[build] dockerfile` (relative to the fly.toml's
/// directory), else `Dockerfile` there, if it exists.
pub(crate) fn dockerfile(base: &Path, configured: Option<&str>) -> Option<PathBuf> {
    match configured {
        Some(path) => Some(base.join(path)),
        None => {
            let path = base.join("Dockerfile");
            path.is_file().then_some(path)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> Ignore {
        Ignore::parse(text, ".dockerignore").unwrap()
    }

    #[test]
    fn patterns_follow_dockers_rules() {
        let ignore = rules("# comment\n\ntarget\n*.log\n!keep.log\n/secret/**\ndocs/*.md\n");
        assert!(ignore.excludes("target"));
        assert!(ignore.excludes("target/debug/app"), "under an excluded dir");
        assert!(ignore.excludes("app.log"));
        assert!(!ignore.excludes("keep.log"), "an exception");
        assert!(!ignore.excludes("logs/app.log"), "* does not cross /");
        assert!(ignore.excludes("secret/a/b"));
        assert!(ignore.excludes("docs/x.md"));
        assert!(!ignore.excludes("docs/sub/x.md"));
        assert!(!ignore.excludes("src/main.rs"));
        let any_depth = rules("**/*.tmp\n");
        assert!(any_depth.excludes("a.tmp") && any_depth.excludes("a/b/c.tmp"));
    }

    #[test]
    fn a_bad_pattern_names_its_line() {
        let error = Ignore::parse("ok\n[z-a\n", "app/.dockerignore").unwrap_err();
        assert!(
            format!("{error:#}").contains("app/.dockerignore line 2"),
            "{error:#}"
        );
    }

    #[test]
    fn the_archive_leaves_out_ignored_files_but_keeps_the_dockerfile() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(
            root.join(".dockerignore"),
            "Dockerfile\nsecret.txt\nbuild\n",
        )
        .unwrap();
        std::fs::write(root.join("index.html"), "hi").unwrap();
        std::fs::write(root.join("secret.txt"), "no").unwrap();
        std::fs::create_dir_all(root.join("build/deep")).unwrap();
        std::fs::write(root.join("build/deep/x"), "no").unwrap();
        let context = pack(root, &root.join("Dockerfile"), None).unwrap();
        assert_eq!(context.dockerfile, "Dockerfile");
        let mut names: Vec<String> = tar::Archive::new(context.archive.as_slice())
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [".dockerignore", "Dockerfile", "index.html"]);
        assert_eq!(context.files, 3);
    }
}
