//! The values settings parse into: origins, secrets that stay out of logs, the closed
//! choices, and the escaping that puts a secret into a URL.

use std::ffi::OsStr;
use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;

use clap::ValueEnum;
use clap::builder::TypedValueParser;

/// One `CORS_ORIGINS` entry: `*`, or a `scheme://host[:port]` origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsOrigin(pub String);

impl FromStr for CorsOrigin {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        // Browsers send origins lower-case and without a default port.
        let origin = text.trim().trim_end_matches('/').to_ascii_lowercase();
        let origin = origin
            .strip_prefix("https://")
            .and_then(|host| host.strip_suffix(":443"))
            .map(|host| format!("https://{host}"))
            .or_else(|| {
                origin
                    .strip_prefix("http://")
                    .and_then(|host| host.strip_suffix(":80"))
                    .map(|host| format!("http://{host}"))
            })
            .unwrap_or(origin);
        let well_formed = origin == "*"
            || origin.split_once("://").is_some_and(|(scheme, host)| {
                matches!(scheme, "http" | "https")
                    && !host.is_empty()
                    && !host.contains(['/', ' ', ','])
            });
        if well_formed {
            Ok(CorsOrigin(origin))
        } else {
            Err(format!(
                "'{text}' is not an origin like https://game.example or http://localhost:3000"
            ))
        }
    }
}

/// A value that must never reach a log line: its `Debug` prints a placeholder.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl FromStr for Secret {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        if value.is_empty() {
            Err("must not be empty".into())
        } else {
            Ok(Secret(value.to_owned()))
        }
    }
}

/// Parses a setting that holds secrets so that no error quotes it: clap's own error says
/// `invalid value '<the whole setting>'`, which would print every secret in it.
#[derive(Clone)]
pub(super) struct Concealed<T>(PhantomData<fn() -> T>);

impl<T> Concealed<T> {
    pub(super) fn new() -> Self {
        Concealed(PhantomData)
    }
}

impl<T> TypedValueParser for Concealed<T>
where
    T: FromStr<Err = String> + Clone + Send + Sync + 'static,
{
    type Value = T;

    fn parse_ref(
        &self,
        command: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        let reason = match value.to_str().map(str::parse) {
            Some(Ok(parsed)) => return Ok(parsed),
            Some(Err(reason)) => reason,
            None => "it is not UTF-8".to_owned(),
        };
        let env = arg.and_then(clap::Arg::get_env);
        let long = arg.and_then(clap::Arg::get_long);
        let setting = match (env, long) {
            (Some(env), Some(long)) => format!("{} (--{long})", env.to_string_lossy()),
            _ => "a setting".to_owned(),
        };
        let message =
            format!("invalid {setting}: {reason} (the value is not shown: it holds secrets)\n");
        Err(clap::Error::raw(clap::error::ErrorKind::ValueValidation, message).with_cmd(command))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GatewayEnv {
    Development,
    Production,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

/// A duration above zero, written as humantime reads it (`500ms`, `2s`).
pub(super) fn positive_duration(text: &str) -> Result<std::time::Duration, String> {
    match humantime::parse_duration(text) {
        Ok(duration) if duration.is_zero() => Err("must be longer than zero".into()),
        Ok(duration) => Ok(duration),
        Err(error) => Err(error.to_string()),
    }
}

/// Escapes everything but RFC 3986's unreserved characters, for a URL's userinfo.
pub(super) fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_delay_must_be_above_zero() {
        assert_eq!(
            positive_duration("250ms"),
            Ok(std::time::Duration::from_millis(250))
        );
        assert!(positive_duration("0s").is_err());
        assert!(positive_duration("soon").is_err());
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let secret: Secret = "hunter2".parse().unwrap();
        assert!(!format!("{secret:?}").contains("hunter2"));
    }

    #[test]
    fn cors_origins_are_read_as_browsers_send_them() {
        let origin = |text: &str| text.parse::<CorsOrigin>().map(|o| o.0);
        assert_eq!(
            origin("HTTPS://Game.Example:443/"),
            Ok("https://game.example".into())
        );
        assert_eq!(origin("http://localhost:80"), Ok("http://localhost".into()));
        assert_eq!(
            origin("http://localhost:3000"),
            Ok("http://localhost:3000".into())
        );
        assert_eq!(origin("*"), Ok("*".into()));
        for bad in ["game.example", "ftp://x", "https://", "https://a/b"] {
            assert!(origin(bad).is_err(), "{bad}");
        }
    }
}
