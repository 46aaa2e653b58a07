//! What a principal may run: the `ALLOWED_COMMANDS` list, or the policy file
//! at `ALLOWED_COMMANDS_PATH` (TOML, or JSON if the name ends in `.json`),
//! which supersedes it:
//!
//! ```toml
//! commands = ["ls", "cat", "echo"]          # bare names allowed as argv[0]
//!
//! [[patterns]]                              # anchored over the whole command line
//! name = "restart-unit"
//! regex = 'systemctl restart [a-z0-9@._-]+'
//!
//! [aliases]                                 # the client sends the name, nothing else
//! disk = ["df", "-h", "/workspace"]
//!
//! [roles.ops]                               # names from above, or "*"
//! commands = ["*"]
//! patterns = ["restart-unit"]
//! aliases = ["disk"]
//!
//! [roles.default]                           # principals without a role (else: everything)
//! commands = ["ls", "cat", "echo"]
//! egress = ["pypi.org", "*.pythonhosted.org"] # what its sessions may be granted
//!
//! [api_key_roles]                           # roles of API-key principals
//! ci-bot = ["ops"]
//!
//! [[cooldowns]]                             # at most once per N seconds per scope
//! pattern = "restart-unit"                  # or command = "...", or alias = "..."
//! seconds = 60
//! scope = "global"                          # session | principal | global
//! ```
//!
//! A principal with roles gets the union of those roles' grants; roles the file
//! does not define grant nothing (fail closed). `egress` narrows what a
//! principal's sessions may be granted within `EGRESS_ALLOWED` (which stays
//! the deployment's bound, and its switch): once any role says `egress`, a
//! role that does not grants none; `"*"` is the whole of `EGRESS_ALLOWED`; a
//! file where no role says `egress` narrows nothing. Every error at load names the
//! offending entry. Regexes are `regex` crate syntax: linear time, no backtracking.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use regex::Regex;
use serde::Deserialize;

use crate::egress::AllowList;
use crate::policy::{Argv, PolicyError};

/// Largest policy file read.
const MAX_POLICY_BYTES: u64 = 1 << 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    commands: Vec<String>,
    #[serde(default)]
    patterns: Vec<RawPattern>,
    #[serde(default)]
    aliases: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    roles: BTreeMap<String, RawRole>,
    #[serde(default)]
    api_key_roles: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    cooldowns: Vec<RawCooldown>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPattern {
    name: String,
    regex: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRole {
    #[serde(default)]
    commands: Vec<String>,
    #[serde(default)]
    patterns: Vec<String>,
    #[serde(default)]
    aliases: Vec<String>,
    egress: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCooldown {
    command: Option<String>,
    pattern: Option<String>,
    alias: Option<String>,
    seconds: f64,
    scope: Scope,
}

/// Over whom a cooldown counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Session,
    Principal,
    Global,
}

/// Which rule allowed a command.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rule {
    Command(String),
    Pattern(String),
    Alias(String),
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rule::Command(name) => write!(f, "command:{name}"),
            Rule::Pattern(name) => write!(f, "pattern:{name}"),
            Rule::Alias(name) => write!(f, "alias:{name}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cooldown {
    pub every: Duration,
    pub scope: Scope,
}

/// An allowed command: what to run, why it is allowed, and its cooldown.
#[derive(Debug, Clone, PartialEq)]
pub struct Allowed {
    pub argv: Argv,
    pub rule: Rule,
    pub cooldown: Option<Cooldown>,
}

/// A set of names, or all of them.
#[derive(Debug, Clone, Default)]
enum Names {
    #[default]
    None,
    Some(BTreeSet<String>),
    All,
}

impl Names {
    fn contains(&self, name: &str) -> bool {
        match self {
            Names::None => false,
            Names::Some(names) => names.contains(name),
            Names::All => true,
        }
    }
}

/// The egress patterns a grant lets a principal's sessions ask for.
#[derive(Debug, Clone, Default)]
enum EgressGrant {
    #[default]
    None,
    Some(AllowList),
    /// All of `EGRESS_ALLOWED`.
    All,
}

impl EgressGrant {
    fn merge(&self, other: &EgressGrant) -> EgressGrant {
        match (self, other) {
            (EgressGrant::All, _) | (_, EgressGrant::All) => EgressGrant::All,
            (EgressGrant::None, other) | (other, EgressGrant::None) => other.clone(),
            (EgressGrant::Some(a), EgressGrant::Some(b)) => EgressGrant::Some(a.extended(b)),
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Grant {
    commands: Names,
    patterns: Names,
    aliases: Names,
    egress: EgressGrant,
}

impl Grant {
    fn all() -> Self {
        Grant {
            commands: Names::All,
            patterns: Names::All,
            aliases: Names::All,
            egress: EgressGrant::All,
        }
    }
}

/// A loaded, validated policy file.
#[derive(Debug, Clone)]
pub struct PolicyFile {
    commands: BTreeSet<String>,
    patterns: Vec<(String, Regex)>,
    aliases: BTreeMap<String, Argv>,
    roles: BTreeMap<String, Grant>,
    default: Grant,
    api_key_roles: BTreeMap<String, Vec<String>>,
    cooldowns: BTreeMap<Rule, Cooldown>,
}

/// Why a policy file was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyFileError {
    #[error("{path}: {source}")]
    Unreadable {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: larger than 1 MiB")]
    TooLarge { path: String },
    /// The file's content is not a valid policy.
    #[error("{path}: {source}")]
    InFile {
        path: String,
        #[source]
        source: Box<PolicyFileError>,
    },
    /// Not TOML (or JSON) of the policy's shape.
    #[error("{0}")]
    Syntax(String),
    /// An entry that cannot work: the message names it (`aliases.x: ...`).
    #[error("{0}")]
    Invalid(String),
}

impl PolicyFile {
    /// The roles the file gives the API key named `name`.
    pub(super) fn api_key_roles(&self, name: &str) -> Vec<String> {
        self.api_key_roles.get(name).cloned().unwrap_or_default()
    }

    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Self, PolicyFileError> {
        use std::io::Read;
        let shown = || path.display().to_string();
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|file| file.take(MAX_POLICY_BYTES + 1).read_to_string(&mut text))
            .map_err(|source| PolicyFileError::Unreadable { path: shown(), source })?;
        if text.len() as u64 > MAX_POLICY_BYTES {
            return Err(PolicyFileError::TooLarge { path: shown() });
        }
        let json = path.extension().is_some_and(|ext| ext == "json");
        Self::parse(&text, json).map_err(|source| PolicyFileError::InFile {
            path: shown(),
            source: Box::new(source),
        })
    }

    /// Parses and validates a policy; `json` selects JSON instead of TOML.
    pub fn parse(text: &str, json: bool) -> Result<Self, PolicyFileError> {
        let raw: RawPolicy = if json {
            serde_json::from_str(text).map_err(|err| PolicyFileError::Syntax(err.to_string()))?
        } else {
            toml::from_str(text).map_err(|err| PolicyFileError::Syntax(err.to_string()))?
        };
        Self::compile(raw).map_err(PolicyFileError::Invalid)
    }

    /// Checks every entry of a parsed policy and compiles its patterns.
    fn compile(raw: RawPolicy) -> Result<Self, String> {
        let mut commands = BTreeSet::new();
        for (i, command) in raw.commands.iter().enumerate() {
            if !is_bare_name(command) {
                return Err(format!("commands[{i}]: {command:?} is not a bare program name"));
            }
            commands.insert(command.clone());
        }
        let mut patterns = Vec::new();
        for (i, pattern) in raw.patterns.iter().enumerate() {
            let at = format!("patterns[{i}] ({:?})", pattern.name);
            if pattern.name.is_empty() || patterns.iter().any(|(name, _)| *name == pattern.name) {
                return Err(format!("{at}: names must be non-empty and unique"));
            }
            let regex = regex::RegexBuilder::new(&format!("^(?:{})$", pattern.regex))
                .size_limit(1 << 20)
                .build()
                .map_err(|err| format!("{at}: invalid regex: {err}"))?;
            patterns.push((pattern.name.clone(), regex));
        }
        let mut aliases = BTreeMap::new();
        for (name, argv) in &raw.aliases {
            if !is_bare_name(name) {
                return Err(format!("aliases.{name}: an alias name is one word"));
            }
            let line = shell_words::join(argv);
            let parsed = Argv::parse(&line).map_err(|err| format!("aliases.{name}: {err}"))?;
            if parsed.as_slice() != argv.as_slice() || !is_bare_name(parsed.program()) {
                return Err(format!(
                    "aliases.{name}: argv must be non-empty words starting with a bare program name"
                ));
            }
            aliases.insert(name.clone(), parsed);
        }
        let names = |kind: &str, role: &str, listed: &[String], known: &dyn Fn(&str) -> bool| {
            if listed.iter().any(|name| name == "*") {
                return Ok(Names::All);
            }
            for name in listed {
                if !known(name) {
                    return Err(format!("roles.{role}.{kind}: unknown {kind} entry {name:?}"));
                }
            }
            Ok(Names::Some(listed.iter().cloned().collect()))
        };
        // Roles narrow egress only once one of them speaks of it.
        let egress_by_role = raw.roles.values().any(|role| role.egress.is_some());
        let egress = |role: &str, listed: &Option<Vec<String>>| match listed {
            _ if !egress_by_role => Ok(EgressGrant::All),
            None => Ok(EgressGrant::None),
            Some(listed) if listed.iter().any(|entry| entry == "*") => Ok(EgressGrant::All),
            Some(listed) => AllowList::parse(listed)
                .map(EgressGrant::Some)
                .map_err(|err| format!("roles.{role}.egress: {err}")),
        };
        let mut roles = BTreeMap::new();
        for (role, grant) in &raw.roles {
            let grant = Grant {
                egress: egress(role, &grant.egress)?,
                commands: names("commands", role, &grant.commands, &|n| commands.contains(n))?,
                patterns: names("patterns", role, &grant.patterns, &|n| {
                    patterns.iter().any(|(p, _)| p == n)
                })?,
                aliases: names("aliases", role, &grant.aliases, &|n| aliases.contains_key(n))?,
            };
            roles.insert(role.clone(), grant);
        }
        let default = roles.get("default").cloned().unwrap_or_else(Grant::all);
        for (principal, listed) in &raw.api_key_roles {
            if let Some(role) = listed.iter().find(|role| !roles.contains_key(role.as_str())) {
                return Err(format!("api_key_roles.{principal}: unknown role {role:?}"));
            }
        }
        let mut cooldowns = BTreeMap::new();
        for (i, cooldown) in raw.cooldowns.iter().enumerate() {
            let rule = match (&cooldown.command, &cooldown.pattern, &cooldown.alias) {
                (Some(name), None, None) if commands.contains(name) => Rule::Command(name.clone()),
                (None, Some(name), None) if patterns.iter().any(|(p, _)| p == name) => Rule::Pattern(name.clone()),
                (None, None, Some(name)) if aliases.contains_key(name) => Rule::Alias(name.clone()),
                (None, None, None) | (Some(_), Some(_), _) | (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => {
                    return Err(format!("cooldowns[{i}]: name exactly one of command, pattern, alias"))
                }
                _ => return Err(format!("cooldowns[{i}]: names an entry the policy does not define")),
            };
            if !(cooldown.seconds.is_finite() && cooldown.seconds > 0.0 && cooldown.seconds <= 31_536_000.0) {
                return Err(format!("cooldowns[{i}]: seconds must be positive (at most a year)"));
            }
            let every = Duration::from_secs_f64(cooldown.seconds);
            if cooldowns
                .insert(
                    rule.clone(),
                    Cooldown {
                        every,
                        scope: cooldown.scope,
                    },
                )
                .is_some()
            {
                return Err(format!("cooldowns[{i}]: {rule} has two cooldowns"));
            }
        }
        Ok(PolicyFile {
            commands,
            patterns,
            aliases,
            roles,
            default,
            api_key_roles: raw.api_key_roles,
            cooldowns,
        })
    }

    fn grant(&self, roles: &[String]) -> Grant {
        if roles.is_empty() {
            return self.default.clone();
        }
        let mut union = Grant::default();
        for grant in roles.iter().filter_map(|role| self.roles.get(role)) {
            union.commands = merge(&union.commands, &grant.commands);
            union.patterns = merge(&union.patterns, &grant.patterns);
            union.aliases = merge(&union.aliases, &grant.aliases);
            union.egress = union.egress.merge(&grant.egress);
        }
        union
    }

    /// What the sessions of a principal with `roles` may be granted, within
    /// `EGRESS_ALLOWED`: `None` when the file does not narrow it.
    pub(super) fn egress_grant(&self, roles: &[String]) -> Option<AllowList> {
        match self.grant(roles).egress {
            EgressGrant::All => None,
            EgressGrant::None => Some(AllowList::default()),
            EgressGrant::Some(list) => Some(list),
        }
    }

    pub(super) fn check(&self, line: &str, roles: &[String]) -> Result<Allowed, PolicyError> {
        let grant = self.grant(roles);
        let allowed = |argv: Argv, rule: Rule| Allowed {
            cooldown: self.cooldowns.get(&rule).cloned(),
            argv,
            rule,
        };
        let trimmed = line.trim();
        if let Some(argv) = self.aliases.get(trimmed) {
            if grant.aliases.contains(trimmed) {
                return Ok(allowed(argv.clone(), Rule::Alias(trimmed.to_string())));
            }
        }
        let argv = Argv::parse(line)?;
        if self.aliases.contains_key(argv.program()) && argv.as_slice().len() > 1 {
            return Err(PolicyError::NotAllowed {
                program: argv.program().to_string(),
                hint: "an alias takes no arguments".into(),
            });
        }
        let program = argv.program().to_string();
        if self.commands.contains(&program) && grant.commands.contains(&program) {
            return Ok(allowed(argv, Rule::Command(program)));
        }
        for (name, regex) in &self.patterns {
            if grant.patterns.contains(name) && regex.is_match(line) {
                return Ok(allowed(argv, Rule::Pattern(name.clone())));
            }
        }
        Err(PolicyError::NotAllowed {
            hint: format!(
                "not granted to your roles by the policy file (ALLOWED_COMMANDS_PATH){}",
                super::shell_hint(&argv)
            ),
            program,
        })
    }
}

fn merge(a: &Names, b: &Names) -> Names {
    match (a, b) {
        (Names::All, _) | (_, Names::All) => Names::All,
        (Names::None, other) | (other, Names::None) => other.clone(),
        (Names::Some(a), Names::Some(b)) => Names::Some(a.union(b).cloned().collect()),
    }
}

fn is_bare_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('/') && !name.chars().any(|c| c.is_whitespace() || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::rules::{Caller, Rules};

    const POLICY: &str = r#"
commands = ["ls", "echo", "cat"]

[[patterns]]
name = "restart"
regex = 'systemctl restart [a-z0-9@._-]+'

[aliases]
disk = ["df", "-h", "/workspace"]

[roles.ops]
commands = ["*"]
patterns = ["restart"]
aliases = ["disk"]

[roles.default]
commands = ["ls", "echo"]

[api_key_roles]
ci-bot = ["ops"]

[[cooldowns]]
pattern = "restart"
seconds = 60
scope = "global"
"#;

    fn check(line: &str, roles: &[&str]) -> Result<Allowed, PolicyError> {
        let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
        Rules::File(Box::new(PolicyFile::parse(POLICY, false).unwrap())).check(line, Caller::Token { roles: &roles })
    }

    #[test]
    fn every_construct_allows_what_it_should_and_nothing_else() {
        assert_eq!(check("ls -la", &[]).unwrap().rule, Rule::Command("ls".into()));
        assert!(check("cat x", &[]).is_err(), "default role lacks cat");
        assert_eq!(check("cat x", &["ops"]).unwrap().rule, Rule::Command("cat".into()));
        let restart = check("systemctl restart nginx", &["ops"]).unwrap();
        assert_eq!(restart.rule, Rule::Pattern("restart".into()));
        assert_eq!(restart.cooldown.unwrap().scope, Scope::Global);
        for refused in [
            "systemctl restart nginx; id",
            "systemctl restart 'a b'",
            "systemctl stop nginx",
            "xsystemctl restart nginx",
            "systemctl restart nginx ",
        ] {
            assert!(check(refused, &["ops"]).is_err(), "{refused:?}");
        }
        assert!(
            check("systemctl restart nginx", &[]).is_err(),
            "default role lacks the pattern"
        );
        let disk = check("disk", &["ops"]).unwrap();
        assert_eq!(disk.argv.as_slice(), ["df", "-h", "/workspace"]);
        assert!(check("disk /etc", &["ops"]).is_err(), "aliases take no arguments");
        assert!(
            check("df -h /", &["ops"]).is_err(),
            "the alias's program is not a command"
        );
        assert!(check("ls", &["stranger"]).is_err(), "unknown roles grant nothing");
        assert!(check("ls", &["stranger", "default"]).is_ok());
    }

    #[test]
    fn api_key_principals_get_their_configured_roles() {
        let rules = Rules::File(Box::new(PolicyFile::parse(POLICY, false).unwrap()));
        assert!(rules.check("cat x", Caller::ApiKey { name: "ci-bot" }).is_ok());
        assert!(
            rules.check("cat x", Caller::Token { roles: &[] }).is_err(),
            "a JWT subject is not an API key"
        );
        assert!(rules.check("cat x", Caller::ApiKey { name: "other" }).is_err());
    }

    #[test]
    fn roles_narrow_egress_once_one_of_them_speaks_of_it() {
        let grant = |policy: &str, roles: &[&str]| {
            let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
            let rules = Rules::File(Box::new(PolicyFile::parse(policy, false).unwrap()));
            rules
                .egress_grant(Caller::Token { roles: &roles })
                .map(|list| list.patterns().iter().map(ToString::to_string).collect::<Vec<_>>())
        };
        assert_eq!(grant(POLICY, &["ops"]), None, "no role says egress: no narrowing");
        assert_eq!(grant(POLICY, &[]), None);
        let policy = r#"
commands = ["ls"]
[roles.agents]
egress = ["pypi.org", "*.pythonhosted.org"]
[roles.fetch]
egress = ["api.example.com:443"]
[roles.ops]
egress = ["*"]
[roles.plain]
commands = ["ls"]
"#;
        assert_eq!(
            grant(policy, &["agents", "fetch"]).unwrap(),
            ["pypi.org", "*.pythonhosted.org", "api.example.com:443"]
        );
        assert_eq!(grant(policy, &["ops", "plain"]), None, "\"*\" is all of EGRESS_ALLOWED");
        assert_eq!(grant(policy, &["plain"]).unwrap(), Vec::<String>::new());
        assert_eq!(grant(policy, &["stranger"]).unwrap(), Vec::<String>::new());
        assert_eq!(grant(policy, &[]), None, "no default role: everything, as for commands");
        assert!(Rules::List(crate::policy::CommandPolicy::from_list("ls"))
            .egress_grant(Caller::Token { roles: &[] })
            .is_none());
    }

    #[test]
    fn errors_name_the_offending_entry() {
        for (policy, expected) in [
            (r#"commands = ["/bin/sh"]"#, "commands[0]"),
            (
                "[[patterns]]\nname = \"p\"\nregex = \"(\"",
                "patterns[0] (\"p\"): invalid regex",
            ),
            ("[aliases]\nx = []", "aliases.x"),
            (
                "[roles.r]\ncommands = [\"nope\"]",
                "roles.r.commands: unknown commands entry \"nope\"",
            ),
            (
                "[api_key_roles]\nbot = [\"ghost\"]",
                "api_key_roles.bot: unknown role \"ghost\"",
            ),
            (
                "commands = [\"ls\"]\n[[cooldowns]]\ncommand = \"cat\"\nseconds = 1\nscope = \"global\"",
                "cooldowns[0]: names an entry",
            ),
            (
                "commands = [\"ls\"]\n[[cooldowns]]\ncommand = \"ls\"\nseconds = 0\nscope = \"global\"",
                "cooldowns[0]: seconds",
            ),
            ("comands = [\"ls\"]", "unknown field"),
            (
                "[roles.r]\negress = [\"10.0.0.0/33\"]",
                "roles.r.egress: \"10.0.0.0/33\"",
            ),
        ] {
            let err = PolicyFile::parse(policy, false).unwrap_err();
            assert!(err.to_string().contains(expected), "{policy:?}: {err}");
        }
        let json = r#"{"commands": ["ls"], "patterns": [{"name": "p", "regex": "echo [0-9]+"}]}"#;
        assert!(PolicyFile::parse(json, true).is_ok());
    }
}
