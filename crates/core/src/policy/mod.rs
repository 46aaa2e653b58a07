//! What a client may run: the command line split into argv, the allowlist
//! (`ALLOWED_COMMANDS`), the working directory and workspace paths, the
//! languages of `code` requests. Parsed once into validated types.
//!
//! [`file`]: the policy file (`ALLOWED_COMMANDS_PATH`: patterns, aliases,
//! roles, cooldowns); [`rules`]: the rules in force, reloaded on SIGHUP.

pub mod file;
pub mod rules;

use std::collections::BTreeSet;

/// Why a command or working directory was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("command is empty")]
    EmptyCommand,
    #[error("command is longer than {MAX_COMMAND_BYTES} bytes or {MAX_ARGS} words")]
    TooLong,
    #[error("command contains a NUL or other control character")]
    ControlCharacter,
    #[error("command cannot be split into words: {0}")]
    Unparsable(String),
    /// argv[0] (or the line) is not allowed; `hint` says what is, and how to
    /// change it.
    #[error("command {program:?} is not allowed; {hint}")]
    NotAllowed { program: String, hint: String },
    #[error("working_dir must be an absolute path inside /workspace or /tmp")]
    WorkingDir,
}

/// Longest command line accepted. Far below what the agent protocol carries
/// (2 MiB per frame, stdin included) and what Linux accepts per argument (128 KiB).
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;

/// Most words a command may have (the agent protocol's list bound).
pub const MAX_ARGS: usize = brig_protocol::MAX_LIST_LEN;

fn has_control(text: &str) -> bool {
    text.chars().any(char::is_control)
}

/// argv from a client's command line, split with POSIX word rules and executed
/// without a shell: `ls; id` is `ls` with the arguments `;` and `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Argv(Vec<String>);

impl Argv {
    pub fn parse(command: &str) -> Result<Self, PolicyError> {
        if command.len() > MAX_COMMAND_BYTES {
            return Err(PolicyError::TooLong);
        }
        if has_control(command) {
            return Err(PolicyError::ControlCharacter);
        }
        let words = shell_words::split(command).map_err(|err| PolicyError::Unparsable(err.to_string()))?;
        if words.is_empty() || words[0].is_empty() {
            return Err(PolicyError::EmptyCommand);
        }
        if words.len() > MAX_ARGS {
            return Err(PolicyError::TooLong);
        }
        Ok(Argv(words))
    }

    pub fn program(&self) -> &str {
        &self.0[0]
    }

    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    pub fn into_vec(self) -> Vec<String> {
        self.0
    }
}

/// The first-token allowlist (`ALLOWED_COMMANDS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandPolicy {
    allowed: BTreeSet<String>,
}

impl CommandPolicy {
    /// From a comma-separated list; blanks are ignored.
    pub fn from_list(list: &str) -> Self {
        CommandPolicy {
            allowed: list
                .split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(String::from)
                .collect(),
        }
    }

    pub fn allowed(&self) -> impl Iterator<Item = &str> {
        self.allowed.iter().map(String::as_str)
    }

    /// argv[0] must be a bare name (no `/`), byte-for-byte equal to an entry: no
    /// case folding, no normalisation, no PATH tricks.
    pub fn check(&self, argv: &Argv) -> Result<(), PolicyError> {
        let program = argv.program();
        if program.contains('/') || !self.allowed.contains(program) {
            let allowed: Vec<&str> = self.allowed().collect();
            return Err(PolicyError::NotAllowed {
                program: program.to_string(),
                hint: format!("allowed: {} (ALLOWED_COMMANDS){}", allowed.join(", "), shell_hint(argv)),
            });
        }
        Ok(())
    }
}

/// A hint for a command that looks like it expected a shell (`ls; id`,
/// `ls | wc -l`): none runs it.
pub(crate) fn shell_hint(argv: &Argv) -> &'static str {
    let shellish = argv
        .as_slice()
        .iter()
        .any(|word| word.contains([';', '|', '&', '<', '>', '$', '`']));
    if shellish {
        "; no shell runs commands, so shell syntax is just arguments: send `sh -c '…'` if sh is allowed"
    } else {
        ""
    }
}

/// `LANGUAGES`: language name → the interpreter command its code is fed to on
/// stdin (`python=python3 -,sh=sh -s`). The interpreter passes the allowlist
/// like any command, at request time.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Languages(std::collections::BTreeMap<String, Argv>);

impl Languages {
    /// From `name=command line` pairs separated by commas.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut languages = std::collections::BTreeMap::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, command) = entry
                .split_once('=')
                .ok_or_else(|| format!("{entry:?}: expected name=interpreter command"))?;
            let name = name.trim();
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-+.".contains(&b)) {
                return Err(format!("{entry:?}: a language name is letters, digits and _-+."));
            }
            let argv = Argv::parse(command).map_err(|err| format!("{name}: {err}"))?;
            if languages.insert(name.to_string(), argv).is_some() {
                return Err(format!("{name}: given twice"));
            }
        }
        Ok(Languages(languages))
    }

    pub fn interpreter(&self, language: &str) -> Option<&Argv> {
        self.0.get(language)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// Each language with its interpreter, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Argv)> {
        self.0.iter().map(|(name, argv)| (name.as_str(), argv))
    }
}

/// A file's path under `/workspace`, as the files endpoints take it: relative,
/// `/`-separated, without empty, `.` or `..` components or control characters.
/// (The agent checks again and follows no symlink.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspacePath(String);

impl WorkspacePath {
    /// `allow_empty`: the empty path, `/workspace` itself (for listings).
    pub fn parse(path: &str, allow_empty: bool) -> Result<Self, String> {
        if path.is_empty() {
            return if allow_empty {
                Ok(WorkspacePath(String::new()))
            } else {
                Err("a file path is needed".into())
            };
        }
        if path.len() > 4096 || has_control(path) {
            return Err("paths are at most 4096 bytes, without control characters".into());
        }
        for part in path.split('/') {
            if part.is_empty() || part == "." || part == ".." {
                return Err(format!(
                    "{path:?}: paths are relative to /workspace, without empty, . or .. components"
                ));
            }
            if part.len() > 255 {
                return Err("a path component is longer than 255 bytes".into());
            }
        }
        Ok(WorkspacePath(path.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A working directory lexically inside `/workspace` or `/tmp`. Lexical is
/// enough: the agent changes directory inside the sandbox, after the runtime
/// is done, so a symlink can only lead elsewhere inside the same sandbox (the
/// runc CVE-2024-21626 leak concerns the runtime's own cwd, which is fixed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkingDir(String);

impl WorkingDir {
    pub const DEFAULT: &'static str = "/workspace";

    pub fn parse(path: &str) -> Result<Self, PolicyError> {
        if !path.starts_with('/') || has_control(path) || path.len() > 4096 {
            return Err(PolicyError::WorkingDir);
        }
        let mut parts: Vec<&str> = Vec::new();
        for part in path.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    parts.pop().ok_or(PolicyError::WorkingDir)?;
                }
                other => parts.push(other),
            }
        }
        if !matches!(parts.first(), Some(&"workspace") | Some(&"tmp")) {
            return Err(PolicyError::WorkingDir);
        }
        Ok(WorkingDir(format!("/{}", parts.join("/"))))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for WorkingDir {
    fn default() -> Self {
        WorkingDir(Self::DEFAULT.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_split_like_a_posix_shell_without_running_one() {
        assert_eq!(Argv::parse("ls -la").unwrap().as_slice(), ["ls", "-la"]);
        assert_eq!(Argv::parse("ls; id").unwrap().as_slice(), ["ls;", "id"]);
        assert_eq!(
            Argv::parse("echo 'a b' \"c\"").unwrap().as_slice(),
            ["echo", "a b", "c"]
        );
        assert_eq!(Argv::parse("echo $(id)").unwrap().as_slice(), ["echo", "$(id)"]);
        assert_eq!(Argv::parse(""), Err(PolicyError::EmptyCommand));
        assert_eq!(
            Argv::parse(&format!("echo {}", "a".repeat(MAX_COMMAND_BYTES))),
            Err(PolicyError::TooLong)
        );
        assert_eq!(Argv::parse(&"a ".repeat(MAX_ARGS + 1)), Err(PolicyError::TooLong));
        assert_eq!(Argv::parse(&"a ".repeat(MAX_ARGS)).unwrap().as_slice().len(), MAX_ARGS);
        assert_eq!(Argv::parse("   "), Err(PolicyError::EmptyCommand));
        assert_eq!(Argv::parse("''"), Err(PolicyError::EmptyCommand));
        assert!(matches!(Argv::parse("echo 'open"), Err(PolicyError::Unparsable(_))));
        for bad in [
            "ls\0",
            "ls\n-la",
            "ls\t",
            "echo \u{1b}[2J",
            "echo \u{7f}",
            "echo \u{85}",
        ] {
            assert_eq!(Argv::parse(bad), Err(PolicyError::ControlCharacter), "{bad:?}");
        }
    }

    #[test]
    fn only_bare_names_exactly_on_the_list_are_allowed() {
        let policy = CommandPolicy::from_list("ls, cat ,echo,,");
        let check = |command: &str| policy.check(&Argv::parse(command).unwrap());
        assert!(check("ls -la").is_ok());
        assert!(check("cat /etc/passwd").is_ok());
        for refused in ["id", "LS", "/bin/ls", "./ls", "ls/", "ｌｓ", "ls\u{200b}", "sh -c ls"] {
            assert!(
                matches!(check(refused), Err(PolicyError::NotAllowed { .. })),
                "{refused:?}"
            );
        }
    }

    #[test]
    fn a_refusal_names_what_is_allowed_and_hints_at_the_missing_shell() {
        let policy = CommandPolicy::from_list("ls,echo");
        let refused = |line: &str| policy.check(&Argv::parse(line).unwrap()).unwrap_err().to_string();
        assert_eq!(
            refused("id"),
            "command \"id\" is not allowed; allowed: echo, ls (ALLOWED_COMMANDS)"
        );
        for shellish in ["ls; id", "cat x | wc -l", "id $(whoami)"] {
            assert!(refused(shellish).contains("sh -c"), "{shellish}: {}", refused(shellish));
        }
    }

    #[test]
    fn working_dirs_stay_inside_workspace_or_tmp() {
        assert_eq!(WorkingDir::parse("/workspace").unwrap().as_str(), "/workspace");
        assert_eq!(
            WorkingDir::parse("/workspace/a/../b/.").unwrap().as_str(),
            "/workspace/b"
        );
        assert_eq!(WorkingDir::parse("/tmp//x/").unwrap().as_str(), "/tmp/x");
        for bad in [
            "workspace",
            "/",
            "/proc/self/fd/7",
            "/workspace/../proc",
            "/workspace/../../tmp/..",
            "/workspacex",
            "/tmpfoo",
            "/tmp/\u{0}",
            "/etc",
            "/..",
        ] {
            assert_eq!(WorkingDir::parse(bad), Err(PolicyError::WorkingDir), "{bad:?}");
        }
    }
}

/// Property tests of the command gate: no input panics it, and nothing it lets
/// through runs a program off the list.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn no_command_line_panics_and_only_listed_bare_names_pass(
            command in r#"[a-z/.;&|$()`'" \t\n\r\\=*~#<>!{}-]{0,40}"#,
        ) {
            let policy = CommandPolicy::from_list("ls,echo");
            if let Ok(argv) = Argv::parse(&command) {
                prop_assert!(!argv.as_slice().is_empty());
                if policy.check(&argv).is_ok() {
                    prop_assert!(argv.program() == "ls" || argv.program() == "echo", "{:?}", argv);
                }
            }
        }

        #[test]
        fn arbitrary_unicode_never_panics(command in any::<String>(), dir in any::<String>()) {
            let policy = CommandPolicy::from_list("ls");
            if let Ok(argv) = Argv::parse(&command) {
                if policy.check(&argv).is_ok() {
                    prop_assert_eq!(argv.program(), "ls");
                }
            }
            if let Ok(dir) = WorkingDir::parse(&dir) {
                prop_assert!(dir.as_str() == "/workspace" || dir.as_str().starts_with("/workspace/")
                    || dir.as_str() == "/tmp" || dir.as_str().starts_with("/tmp/"));
                prop_assert!(!dir.as_str().split('/').any(|part| part == ".."));
            }
        }
    }
}
