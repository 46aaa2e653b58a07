//! The rules in force: the plain `ALLOWED_COMMANDS` list or a policy file
//! ([`super::file`]), checked for a [`Caller`], and [`LiveRules`], which
//! swaps them whole on reload (SIGHUP).

use super::file::PolicyFileError;
pub use super::file::{Allowed, Cooldown, PolicyFile, Rule, Scope};
use crate::egress::AllowList;
use crate::policy::{Argv, CommandPolicy, Languages, PolicyError};

/// The rules in force: the plain allowlist, or a policy file.
#[derive(Debug, Clone)]
pub enum Rules {
    List(CommandPolicy),
    File(Box<PolicyFile>),
}

impl Rules {
    /// Whether `line` may run for a principal with `roles` (the roles an
    /// API-key principal gets from the policy file are added here).
    pub fn check(&self, line: &str, caller: Caller<'_>) -> Result<Allowed, PolicyError> {
        match self {
            Rules::List(list) => {
                let argv = Argv::parse(line)?;
                list.check(&argv)?;
                let rule = Rule::Command(argv.program().to_string());
                Ok(Allowed {
                    argv,
                    rule,
                    cooldown: None,
                })
            }
            Rules::File(file) => file.check(line, &roles_of(file, caller)),
        }
    }

    /// Whether `caller` holds `role`: a token's claims name its roles; an
    /// API key's come from the policy file's `api_key_roles` (without a
    /// policy file, a key holds none).
    pub fn has_role(&self, caller: Caller<'_>, role: &str) -> bool {
        let roles = match (self, caller) {
            (Rules::File(file), caller) => roles_of(file, caller),
            (Rules::List(_), Caller::Token { roles }) => roles.to_vec(),
            (Rules::List(_), Caller::ApiKey { .. }) => Vec::new(),
        };
        roles.iter().any(|held| held == role)
    }

    /// The egress patterns `caller`'s sessions may be granted within
    /// `EGRESS_ALLOWED`: `None` when these rules do not narrow it (the plain
    /// list, or a policy file where no role says `egress`).
    pub fn egress_grant(&self, caller: Caller<'_>) -> Option<AllowList> {
        match self {
            Rules::List(_) => None,
            Rules::File(file) => file.egress_grant(&roles_of(file, caller)),
        }
    }
}

impl Rules {
    /// The configured languages whose interpreter these rules let run, as
    /// brig advertises them (MCP's tool schema): with the plain list, those
    /// whose interpreter it allows; with a policy file, every one (the
    /// caller's roles decide at request time).
    pub fn runnable_languages<'a>(&self, languages: &'a Languages) -> Vec<&'a str> {
        languages
            .iter()
            .filter(|(_, interpreter)| match self {
                Rules::List(list) => list.check(interpreter).is_ok(),
                Rules::File(_) => true,
            })
            .map(|(name, _)| name)
            .collect()
    }
}

/// The roles of `caller` under a policy file: an API key's come from the file.
fn roles_of(file: &PolicyFile, caller: Caller<'_>) -> Vec<String> {
    match caller {
        Caller::ApiKey { name } => file.api_key_roles(name),
        Caller::Token { roles } => roles.to_vec(),
    }
}

/// Who asks, as the rules see it: the credential decides where roles come from.
#[derive(Debug, Clone, Copy)]
pub enum Caller<'a> {
    /// An API key's principal: its roles are the file's `api_key_roles` entry.
    ApiKey { name: &'a str },
    /// A token's subject: its roles are the token's claims.
    Token { roles: &'a [String] },
}

/// The rules in force, swapped whole on reload: a request checks against one
/// consistent version, and none waits for a reload.
pub struct LiveRules {
    path: Option<std::path::PathBuf>,
    current: std::sync::RwLock<std::sync::Arc<Rules>>,
}

impl LiveRules {
    pub fn new(path: Option<std::path::PathBuf>, rules: Rules) -> Self {
        LiveRules {
            path,
            current: std::sync::RwLock::new(std::sync::Arc::new(rules)),
        }
    }

    /// The rules of `ALLOWED_COMMANDS_PATH` if it is set (the file must be
    /// valid), else the `ALLOWED_COMMANDS` list.
    pub fn load(path: Option<std::path::PathBuf>, commands: &CommandPolicy) -> Result<Self, PolicyFileError> {
        let rules = match &path {
            None => Rules::List(commands.clone()),
            Some(path) => Rules::File(Box::new(PolicyFile::load(path)?)),
        };
        Ok(Self::new(path, rules))
    }

    pub fn current(&self) -> std::sync::Arc<Rules> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Re-reads the policy file. An invalid file changes nothing: the error
    /// is returned and the previous rules stay in force. `Ok(false)` when
    /// there is no file to reload.
    pub fn reload(&self) -> Result<bool, PolicyFileError> {
        let Some(path) = &self.path else {
            return Ok(false);
        };
        let file = PolicyFile::load(path)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = std::sync::Arc::new(Rules::File(Box::new(file)));
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_are_advertised_only_when_the_list_lets_their_interpreter_run() {
        let languages = Languages::parse("python=python3 -,sh=sh -s,ruby=ruby -").unwrap();
        let list = Rules::List(CommandPolicy::from_list("sh,python3"));
        assert_eq!(list.runnable_languages(&languages), ["python", "sh"]);
        let none = Rules::List(CommandPolicy::from_list("ls"));
        assert!(none.runnable_languages(&languages).is_empty());
        let file = Rules::File(Box::new(PolicyFile::parse("commands = [\"ls\"]", false).unwrap()));
        assert_eq!(file.runnable_languages(&languages), ["python", "ruby", "sh"]);
    }
}
