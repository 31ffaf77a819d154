//! The auth file (`--auth-file`, TOML) parsed into checked identities. Every
//! mistake is an error naming the identity and field (and, for TOML syntax,
//! the line): the server refuses to start on a bad file, and a reload keeps
//! the identities it had.
//!
//! ```toml
//! [[identity]]
//! name = "mofcom"                      # 1-64 of A-Z a-z 0-9 . _ : / -
//! token_sha256 = "9f86d081…"           # `caravan auth hash`; and/or:
//! cert_subject = "CN=mofcom-loader,O=MOFCOM"
//! scopes = ["ingest"]                  # ingest, read, admin, curate
//! feeds = ["mofcom"]                   # feeds it may write; "*" for any
//! quota = { append_events_per_sec = 20000 }   # overrides the server's defaults
//! ```
//!
//! Depends on serde, toml, the domain's names and the rest of `auth`.

use super::quota::Quotas;
use super::subject::Subject;
use super::token::TokenHash;
use super::{Feeds, Scope, Scopes};
use crate::domain::{FeedName, IdentityName};
use serde::Deserialize;
use std::collections::{BTreeSet, HashSet};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    identity: Vec<RawIdentity>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentity {
    name: String,
    token_sha256: Option<String>,
    cert_subject: Option<String>,
    scopes: Vec<String>,
    #[serde(default)]
    feeds: Vec<String>,
    #[serde(default)]
    quota: RawQuota,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawQuota {
    query_streams: Option<usize>,
    subscriptions: Option<usize>,
    append_events_per_sec: Option<u64>,
    append_bytes_per_sec: Option<u64>,
}

/// One identity as the file defines it.
#[derive(Clone, Debug)]
pub struct Defined {
    pub name: IdentityName,
    pub token: Option<TokenHash>,
    pub subject: Option<Subject>,
    pub scopes: Scopes,
    pub feeds: Feeds,
    pub quotas: Quotas,
}

/// Parses the text of an auth file; `defaults` are the server's quotas.
pub fn parse(text: &str, defaults: &Quotas) -> Result<Vec<Defined>, String> {
    let raw: RawFile = toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())?;
    let mut names = HashSet::new();
    let mut tokens = HashSet::new();
    let mut subjects = HashSet::new();
    let mut out = Vec::with_capacity(raw.identity.len());
    for (i, r) in raw.identity.into_iter().enumerate() {
        let at = |what: String| format!("identity {} ({:?}): {what}", i + 1, r.name);
        let name = IdentityName::parse(&r.name).map_err(|e| at(format!("name: {e}")))?;
        if !names.insert(name.clone()) {
            return Err(at("another identity has this name".into()));
        }
        let token = r
            .token_sha256
            .as_deref()
            .map(TokenHash::parse_hex)
            .transpose()
            .map_err(|e| at(format!("token_sha256: {e}")))?;
        if let Some(t) = token {
            if !tokens.insert(t) {
                return Err(at(
                    "token_sha256: another identity has this token; give each its own".into(),
                ));
            }
        }
        let subject = r
            .cert_subject
            .as_deref()
            .map(Subject::parse)
            .transpose()
            .map_err(|e| at(format!("cert_subject: {e}")))?;
        if let Some(s) = &subject {
            if !subjects.insert(s.clone()) {
                return Err(at(
                    "cert_subject: another identity has this certificate subject".into(),
                ));
            }
        }
        if token.is_none() && subject.is_none() {
            return Err(at(
                "needs a token_sha256 or a cert_subject (or both) to prove itself".into(),
            ));
        }
        let mut scopes = Scopes::default();
        for s in &r.scopes {
            scopes.insert(Scope::parse(s).map_err(|e| at(format!("scopes: {e}")))?);
        }
        if scopes.is_empty() {
            return Err(at(
                "scopes: at least one of ingest, read, admin, curate".into()
            ));
        }
        let feeds = if r.feeds.iter().any(|f| f == "*") {
            if r.feeds.len() > 1 {
                return Err(at("feeds: \"*\" (any feed) stands alone".into()));
            }
            Feeds::Any
        } else {
            let mut set = BTreeSet::new();
            for f in &r.feeds {
                set.insert(FeedName::parse(f).map_err(|e| at(format!("feeds: {f:?}: {e}")))?);
            }
            Feeds::Only(set)
        };
        let writes = scopes.has(Scope::Ingest) || scopes.has(Scope::Curate);
        match (&feeds, writes) {
            (Feeds::Only(set), true) if set.is_empty() => return Err(at(
                "feeds: an identity with the ingest or curate scope names the feeds it may write"
                    .into(),
            )),
            (Feeds::Any, false) => {
                return Err(at(
                    "feeds: only an identity with the ingest or curate scope writes feeds".into(),
                ))
            }
            (Feeds::Only(set), false) if !set.is_empty() => {
                return Err(at(
                    "feeds: only an identity with the ingest or curate scope writes feeds".into(),
                ))
            }
            _ => {}
        }
        let q = &r.quota;
        let quotas = Quotas {
            query_streams: q.query_streams.unwrap_or(defaults.query_streams),
            subscriptions: q.subscriptions.unwrap_or(defaults.subscriptions),
            append_events_per_sec: q
                .append_events_per_sec
                .unwrap_or(defaults.append_events_per_sec),
            append_bytes_per_sec: q
                .append_bytes_per_sec
                .unwrap_or(defaults.append_bytes_per_sec),
        };
        quotas.check().map_err(|e| at(format!("quota: {e}")))?;
        out.push(Defined {
            name,
            token,
            subject,
            scopes,
            feeds,
            quotas,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash() -> String {
        TokenHash::of(&"t".repeat(40)).to_hex()
    }

    #[test]
    fn a_file_of_identities_parses_with_defaults_and_overrides() {
        let text = format!(
            r#"
[[identity]]
name = "mofcom"
token_sha256 = "{}"
scopes = ["ingest"]
feeds = ["mofcom", "mofcom-monthly"]
quota = {{ append_events_per_sec = 20000 }}

[[identity]]
name = "analyst"
cert_subject = "CN=analyst,O=Ministry"
scopes = ["read"]

[[identity]]
name = "ops"
token_sha256 = "{}"
cert_subject = "CN=ops"
scopes = ["admin", "read", "ingest", "curate"]
feeds = ["*"]
"#,
            hash(),
            TokenHash::of(&"u".repeat(40)).to_hex()
        );
        let ids = parse(&text, &Quotas::default()).unwrap();
        assert_eq!(ids.len(), 3);
        assert_eq!(ids[0].quotas.append_events_per_sec, 20_000);
        assert_eq!(ids[0].quotas.query_streams, Quotas::default().query_streams);
        assert!(ids[0].scopes.has(Scope::Ingest) && !ids[0].scopes.has(Scope::Read));
        assert!(matches!(&ids[0].feeds, Feeds::Only(s) if s.len() == 2));
        assert!(ids[1].token.is_none() && ids[1].subject.is_some());
        assert!(matches!(ids[2].feeds, Feeds::Any));
        assert!(parse("", &Quotas::default()).unwrap().is_empty());
    }

    #[test]
    fn every_mistake_is_named() {
        let h = hash();
        let cases = [
            ("[[identity]\nname=", "expected"),
            (
                &format!("[[identity]]\nname = \"a b\"\ntoken_sha256 = \"{h}\"\nscopes = [\"read\"]"),
                "name",
            ),
            ("[[identity]]\nname = \"a\"\nscopes = [\"read\"]", "token_sha256 or a cert_subject"),
            (
                &format!("[[identity]]\nname = \"a\"\ntoken_sha256 = \"{h}\"\nscopes = [\"root\"]"),
                "scopes",
            ),
            (
                &format!("[[identity]]\nname = \"a\"\ntoken_sha256 = \"{h}\"\nscopes = [\"ingest\"]"),
                "names the feeds",
            ),
            (
                &format!(
                    "[[identity]]\nname = \"a\"\ntoken_sha256 = \"{h}\"\nscopes = [\"read\"]\nfeeds = [\"x\"]"
                ),
                "only an identity with the ingest",
            ),
            (
                &format!(
                    "[[identity]]\nname = \"a\"\ntoken_sha256 = \"{h}\"\nscopes = [\"read\"]\n\n[[identity]]\nname = \"b\"\ntoken_sha256 = \"{h}\"\nscopes = [\"read\"]"
                ),
                "another identity has this token",
            ),
            (
                &format!(
                    "[[identity]]\nname = \"a\"\ntoken_sha256 = \"{h}\"\nscopes = [\"read\"]\nquota = {{ query_streams = 0 }}"
                ),
                "quota",
            ),
            (
                &format!("[[identity]]\nname = \"a\"\ntoken_sha256 = \"{h}\"\nscopes = [\"read\"]\nrole = \"x\""),
                "unknown field",
            ),
            ("[[identity]]\nname = \"a\"\ntoken_sha256 = \"abc\"\nscopes = [\"read\"]", "64 hexadecimal"),
        ];
        for (text, expected) in cases {
            let e = parse(text, &Quotas::default()).unwrap_err();
            assert!(e.contains(expected), "{text}\n→ {e}");
        }
    }
}
