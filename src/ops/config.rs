//! The configuration file of `caravan serve` (`--config FILE`, TOML): its
//! keys are the long flags without `--` (`data-dir = "/var/lib/caravan"`,
//! `max-connections = 2048`, `insecure = true`), and a setting is taken from
//! the first of: the flag, its `CARAVAN_*` environment variable, the file,
//! the default. An unknown key or a value of the wrong type refuses the
//! start (and `caravan config check`) with the key named.
//!
//! How: the command line is parsed once to learn where each setting came
//! from; every key of the file whose setting came from neither a flag nor
//! the environment becomes a flag, and the command line is parsed again.
//! So a value in the file is checked exactly as the same flag would be.
//!
//! Depends on clap and toml.

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The argument id of the config file's own flag.
pub const CONFIG_ID: &str = "config";

/// Where each setting of the effective configuration came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Flag,
    Environment,
    File,
    Default,
}

/// Keys whose values are never printed (`caravan config check`).
const SECRET_WORDS: [&str; 3] = ["token", "password", "secret"];

/// The serve settings' subcommand inside `root` for `argv` (`serve`, or
/// `config check`), with its matches.
fn settings_of<'a>(root: &'a Command, m: &'a ArgMatches) -> Option<(&'a Command, &'a ArgMatches)> {
    match m.subcommand()? {
        ("serve", sub) => Some((root.find_subcommand("serve")?, sub)),
        ("config", sub) => match sub.subcommand()? {
            ("check", check) => Some((
                root.find_subcommand("config")?.find_subcommand("check")?,
                check,
            )),
            _ => None,
        },
        _ => None,
    }
}

/// `argv` with the config file's settings added as flags where neither a
/// flag nor the environment set them; `argv` itself when there is no file.
/// Also returns which settings the file gave.
pub fn layered(
    root: &Command,
    argv: Vec<OsString>,
) -> Result<(Vec<OsString>, Vec<String>), String> {
    let Ok(matches) = root.clone().try_get_matches_from(argv.clone()) else {
        // Let the real parse report the command line's own mistake.
        return Ok((argv, Vec::new()));
    };
    let Some((command, m)) = settings_of(root, &matches) else {
        return Ok((argv, Vec::new()));
    };
    let Some(path) = m.get_one::<PathBuf>(CONFIG_ID) else {
        return Ok((argv, Vec::new()));
    };
    let table = read(path)?;
    let mut out = argv;
    let mut from_file = Vec::new();
    for (key, value) in table {
        let arg = command
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()) && a.get_id() != CONFIG_ID)
            .ok_or_else(|| {
                format!(
                    "{}: unknown key {key:?}; the keys are the flags of `caravan serve` without \
                     the leading -- (see `caravan serve --help`)",
                    path.display()
                )
            })?;
        let id = arg.get_id().as_str();
        if matches!(
            m.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let is_switch = matches!(arg.get_action(), ArgAction::SetTrue);
        let text = match (&value, is_switch) {
            (toml::Value::Boolean(true), true) => {
                out.push(format!("--{key}").into());
                from_file.push(id.to_owned());
                continue;
            }
            (toml::Value::Boolean(false), true) => continue,
            (_, true) => {
                return Err(format!(
                    "{}: {key} must be true or false, not {value}",
                    path.display()
                ))
            }
            (toml::Value::String(s), false) => s.clone(),
            (toml::Value::Integer(i), false) => i.to_string(),
            (toml::Value::Float(f), false) => f.to_string(),
            (toml::Value::Boolean(b), false) => b.to_string(),
            // A list (`jetstream = ["nats://a", "nats://b"]`), for the flags
            // that take several values separated by commas.
            (toml::Value::Array(items), false)
                if arg.get_value_delimiter().is_some() && items.iter().all(|i| i.is_str()) =>
            {
                items
                    .iter()
                    .filter_map(|i| i.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            }
            (other, false) => {
                return Err(format!(
                    "{}: {key} must be a string, a number or a boolean, not {}",
                    path.display(),
                    other.type_str()
                ))
            }
        };
        // `--key=value`, so that a value starting with '-' stays a value.
        out.push(format!("--{key}={text}").into());
        from_file.push(id.to_owned());
    }
    Ok((out, from_file))
}

fn read(path: &Path) -> Result<toml::Table, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the config file {}: {e}", path.display()))?;
    text.parse::<toml::Table>().map_err(|e| {
        // One line: where, and what (toml's own text draws the line).
        let line = e.span().map_or(0, |s| {
            text[..s.start.min(text.len())].matches('\n').count() + 1
        });
        format!(
            "the config file {} is not valid TOML: line {line}: {}",
            path.display(),
            e.message().trim()
        )
    })
}

/// The effective settings of a parsed `caravan config check`, one line per
/// setting in the config file's own syntax, each with where it came from.
pub fn describe(command: &Command, m: &ArgMatches, from_file: &[String]) -> String {
    let mut out = String::new();
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        let Some(long) = arg.get_long() else { continue };
        if id == CONFIG_ID || long == "help" || long == "version" {
            continue;
        }
        let source = if from_file.iter().any(|f| f == id) {
            Source::File
        } else {
            match m.value_source(id) {
                Some(ValueSource::CommandLine) => Source::Flag,
                Some(ValueSource::EnvVariable) => Source::Environment,
                _ => Source::Default,
            }
        };
        let value: Option<String> = if matches!(arg.get_action(), ArgAction::SetTrue) {
            Some(m.get_flag(id).to_string())
        } else {
            // Every value of a list (`--jetstream a,b`), as it was given.
            m.get_raw(id).map(|values| {
                let v = values
                    .map(|v| v.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(",");
                if v.parse::<i64>().is_ok() {
                    v
                } else {
                    format!("{v:?}")
                }
            })
        };
        let value = match value {
            _ if SECRET_WORDS.iter().any(|w| long.contains(w)) => "\"<redacted>\"".to_owned(),
            Some(v) => v,
            None => {
                out.push_str(&format!("# {long} is not set\n"));
                continue;
            }
        };
        let from = match source {
            Source::Flag => "flag",
            Source::Environment => "environment",
            Source::File => "config file",
            Source::Default => "default",
        };
        out.push_str(&format!("{long} = {value}  # {from}\n"));
    }
    out
}
