//! Reading variables: [`Env`] collects every bad value instead of stopping at
//! the first, and the parsers shared by the sub-configurations.

use std::time::Duration;

/// A configuration value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {message}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub message: String,
}

impl ConfigError {
    pub fn new(variable: &'static str, message: impl Into<String>) -> Self {
        ConfigError {
            variable,
            message: message.into(),
        }
    }
}

/// Every problem found, one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration:\n  {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "))]
pub struct ConfigErrors(pub Vec<ConfigError>);

type Lookup<'a> = Box<dyn Fn(&str) -> Option<String> + 'a>;

/// Reads variables from a source (the process environment, or a map in tests)
/// and collects every error instead of stopping at the first.
pub struct Env<'a> {
    lookup: Lookup<'a>,
    errors: Vec<ConfigError>,
}

impl<'a> Env<'a> {
    pub fn process() -> Self {
        Env::from_fn(|name| std::env::var(name).ok())
    }

    pub fn from_fn(lookup: impl Fn(&str) -> Option<String> + 'a) -> Self {
        Env {
            lookup: Box::new(lookup),
            errors: Vec::new(),
        }
    }

    /// A set, non-blank variable.
    pub fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name).filter(|v| !v.trim().is_empty())
    }

    /// Parses `name` with `parse`, or returns `default` when unset. A bad value
    /// is recorded and `default` returned so parsing can go on.
    pub fn parse<T>(&mut self, name: &'static str, default: T, parse: impl FnOnce(&str) -> Result<T, String>) -> T {
        match self.get(name) {
            None => default,
            Some(raw) => parse(raw.trim()).unwrap_or_else(|message| {
                self.errors.push(ConfigError::new(name, message));
                default
            }),
        }
    }

    pub fn error(&mut self, variable: &'static str, message: impl Into<String>) {
        self.errors.push(ConfigError::new(variable, message));
    }

    pub fn finish<T>(self, value: T) -> Result<T, ConfigErrors> {
        if self.errors.is_empty() {
            Ok(value)
        } else {
            Err(ConfigErrors(self.errors))
        }
    }
}

pub(crate) fn positive<T: std::str::FromStr + PartialOrd + Default>(raw: &str) -> Result<T, String> {
    raw.parse::<T>()
        .ok()
        .filter(|n| *n > T::default())
        .ok_or_else(|| "must be a positive integer".into())
}

pub(crate) fn seconds(raw: &str) -> Result<Duration, String> {
    raw.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0 && *s <= 365.0 * 86400.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| "must be a positive number of seconds".into())
}

/// Instance names end up in labels and container names: keep them plain.
pub fn parse_instance(value: &str) -> Result<String, ConfigError> {
    let ok = !value.is_empty()
        && value.len() <= 32
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(value.to_string())
    } else {
        Err(ConfigError::new(
            "BRIG_INSTANCE",
            "use 1-32 characters of a-z, 0-9 and '-'",
        ))
    }
}

/// Docker-style sizes: `256m`, `1g`, `512k`, `1048576` (bytes). Binary units.
pub fn parse_size(variable: &'static str, value: &str) -> Result<u64, ConfigError> {
    let value = value.trim().to_ascii_lowercase();
    let value = value.strip_suffix('b').unwrap_or(&value);
    let (digits, shift) = match value.char_indices().last() {
        Some((i, 'k')) => (&value[..i], 10),
        Some((i, 'm')) => (&value[..i], 20),
        Some((i, 'g')) => (&value[..i], 30),
        _ => (value, 0),
    };
    digits
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .and_then(|n| n.checked_mul(1 << shift))
        .filter(|n| *n <= i64::MAX as u64)
        .ok_or_else(|| ConfigError::new(variable, format!("{value:?} is not a size like 256m or 1g")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("X", "256m").unwrap(), 256 << 20);
        assert_eq!(parse_size("X", "1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("X", "512kb").unwrap(), 512 << 10);
        assert_eq!(parse_size("X", "4096").unwrap(), 4096);
        for bad in ["", "m", "-1m", "0", "1.5g", "99999999999999g", "12q"] {
            assert!(parse_size("X", bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn instance_names_are_restricted() {
        assert!(parse_instance("test-1a").is_ok());
        for bad in ["", "UPPER", "a b", "x/y", &"a".repeat(33)] {
            assert!(parse_instance(bad).is_err(), "{bad:?} accepted");
        }
    }
}
