//! Who may do what. A server with an auth file (`--auth-file`) knows
//! identities: each proves itself with a bearer token (kept only as its
//! SHA-256) and/or a client-certificate subject, holds scopes, may write
//! certain feeds, and has quotas. A server without one is open: every
//! caller is the anonymous identity, which may do everything (as before
//! identities existed), and is allowed only on loopback or with
//! `--insecure`.
//!
//! Scopes (none implies another):
//! - `ingest`: Append, AppendStream, LookupEvents — for the feeds it may write;
//! - `read`: QueryService and SubscriptionService, and LookupEvents of
//!   every feed;
//! - `admin`: reflection when it is limited to admins, and the operations
//!   of later issues;
//! - `curate`: revise or retract figures, and amend or change the status of
//!   agreements, that another feed stored first.
//!
//! The file is re-read on SIGHUP ([`Access::reload`]); a bad file keeps the
//! identities there were. Quota use ([`quota::Usage`]) is kept per identity
//! name across reloads.
//!
//! `token` (hashes, generation), `subject` (certificate subjects), `quota`
//! (limits and usage), `file` (the TOML format). Depends on the domain's
//! names and `error`; must not depend on tonic, http or the store (the gRPC
//! edge's `grpc/access.rs` applies it).

pub mod file;
pub mod quota;
pub mod subject;
pub mod token;

use crate::domain::{FeedName, IdentityName};
use crate::error::Error;
use quota::{Held, OverRate, Quotas, Slot, Usage};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
pub use subject::Subject;
pub use token::TokenHash;

/// What an identity may do.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Scope {
    Ingest,
    Read,
    Admin,
    Curate,
    /// May scrape `/metrics` on `--metrics-listen` (nothing else).
    Metrics,
}

impl Scope {
    pub const ALL: [Scope; 5] = [
        Scope::Ingest,
        Scope::Read,
        Scope::Admin,
        Scope::Curate,
        Scope::Metrics,
    ];

    pub fn parse(s: &str) -> Result<Scope, String> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.name() == s)
            .ok_or_else(|| format!("{s:?} is not a scope: ingest, read, admin, curate or metrics"))
    }

    pub fn name(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Read => "read",
            Scope::Admin => "admin",
            Scope::Curate => "curate",
            Scope::Metrics => "metrics",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of scopes.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct Scopes(u8);

impl Scopes {
    pub fn all() -> Scopes {
        let mut s = Scopes::default();
        for scope in Scope::ALL {
            s.insert(scope);
        }
        s
    }
    pub fn insert(&mut self, scope: Scope) {
        self.0 |= scope.bit();
    }
    pub fn has(&self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }
}

/// The feeds an identity may write.
#[derive(Clone, Debug)]
pub enum Feeds {
    Any,
    Only(BTreeSet<FeedName>),
}

impl Feeds {
    pub fn allows(&self, feed: &FeedName) -> bool {
        match self {
            Feeds::Any => true,
            Feeds::Only(set) => set.contains(feed),
        }
    }
}

/// A caller, once authenticated.
#[derive(Debug)]
pub struct Identity {
    /// `None`: the anonymous caller of an open server.
    name: Option<IdentityName>,
    scopes: Scopes,
    feeds: Feeds,
    /// `None`: no limits (the anonymous caller).
    quotas: Option<Quotas>,
    usage: Arc<Usage>,
}

/// How long a client is told to wait for a stream or subscription slot of
/// its own to free up (no one knows when it will).
const SLOT_RETRY: Duration = Duration::from_secs(1);

impl Identity {
    /// The caller of a server without identities: every scope, every feed,
    /// no quota.
    pub fn anonymous() -> Arc<Identity> {
        Arc::new(Identity {
            name: None,
            scopes: Scopes::all(),
            feeds: Feeds::Any,
            quotas: None,
            usage: Arc::default(),
        })
    }

    /// An identity of the auth file.
    fn defined(d: file::Defined, usage: Arc<Usage>) -> Identity {
        Identity {
            name: Some(d.name),
            scopes: d.scopes,
            feeds: d.feeds,
            quotas: Some(d.quotas),
            usage,
        }
    }

    /// Its name; `None` for the anonymous caller.
    pub fn name(&self) -> Option<&IdentityName> {
        self.name.as_ref()
    }

    /// Its name for messages and logs.
    pub fn label(&self) -> &str {
        self.name.as_ref().map_or("anonymous", |n| n.as_str())
    }

    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.has(scope)
    }

    /// Whether it may append events under `feed`.
    pub fn may_write(&self, feed: &FeedName) -> bool {
        (self.has(Scope::Ingest) || self.has(Scope::Curate)) && self.feeds.allows(feed)
    }

    /// Its one feed, when it may write exactly one.
    pub fn only_feed(&self) -> Option<&FeedName> {
        match &self.feeds {
            Feeds::Only(set) if set.len() == 1 => set.iter().next(),
            _ => None,
        }
    }

    /// Its quotas; `None` for the anonymous caller (no limits).
    pub fn quotas(&self) -> Option<&Quotas> {
        self.quotas.as_ref()
    }

    fn slot(&self, held: Held, what: &str) -> Result<Option<Slot>, Error> {
        let Some(q) = &self.quotas else {
            return Ok(None);
        };
        let limit = match held {
            Held::QueryStream => q.query_streams,
            Held::Subscription => q.subscriptions,
        };
        self.usage
            .take(held, limit)
            .map(Some)
            .ok_or_else(|| Error::QuotaExceeded {
                identity: self.label().to_owned(),
                message: format!(
                    "identity {:?} already runs {limit} {what}, its quota; retry once one ends",
                    self.label()
                ),
                retry_after: Some(SLOT_RETRY),
            })
    }

    /// A query stream of its quota, held until dropped (`None`: unlimited).
    pub fn query_stream(&self) -> Result<Option<Slot>, Error> {
        self.slot(Held::QueryStream, "query streams")
    }

    /// A subscription of its quota, held until dropped (`None`: unlimited).
    pub fn subscription(&self) -> Result<Option<Slot>, Error> {
        self.slot(Held::Subscription, "subscriptions")
    }

    /// Charges an append of `events` events in `bytes` bytes to its rates,
    /// or says when it would fit (RESOURCE_EXHAUSTED with the wait).
    pub fn charge_append(&self, events: u64, bytes: u64) -> Result<(), Error> {
        let Some(q) = &self.quotas else {
            return Ok(());
        };
        self.usage
            .charge_append(events, bytes, q)
            .map_err(|over| self.over_rate(over, q))
    }

    /// How long an Append of this identity must wait, unread, before it is
    /// served: until the wait its last refused append was told has passed
    /// (`None`: it has), at most a second.
    pub fn append_hold(&self) -> Option<Duration> {
        self.quotas.as_ref()?;
        self.usage
            .append_hold()
            .map(|d| d.min(Duration::from_secs(1)))
    }

    /// For a stream: charges one message if it fits now (`Ok(None)`), else
    /// says how long to wait before asking again (`Ok(Some(wait))`); a
    /// message larger than a second of the quota is an error.
    pub fn pace_append(&self, events: u64, bytes: u64) -> Result<Option<Duration>, Error> {
        let Some(q) = &self.quotas else {
            return Ok(None);
        };
        match self.usage.charge_append(events, bytes, q) {
            Ok(()) => Ok(None),
            Err(OverRate::RetryAfter { wait, .. }) => Ok(Some(wait)),
            Err(over) => Err(self.over_rate(over, q)),
        }
    }

    fn over_rate(&self, over: OverRate, q: &Quotas) -> Error {
        let what = match &over {
            OverRate::RetryAfter { what, .. } | OverRate::TooLarge { what } => *what,
        };
        let limit = if what == "events" {
            q.append_events_per_sec
        } else {
            q.append_bytes_per_sec
        };
        let identity = self.label().to_owned();
        match over {
            OverRate::RetryAfter { wait, .. } => Error::QuotaExceeded {
                message: format!(
                    "identity {identity:?} may append {limit} {what} per second, its quota; \
                     retry in {} ms",
                    wait.as_millis().max(1)
                ),
                identity,
                retry_after: Some(wait),
            },
            OverRate::TooLarge { .. } => Error::QuotaExceeded {
                message: format!(
                    "this request alone is more {what} than identity {identity:?} may append \
                     in a second ({limit}); send it in smaller requests"
                ),
                identity,
                retry_after: None,
            },
        }
    }
}

/// What a call presents as its bearer token.
#[derive(Clone, Copy, Debug)]
pub enum Bearer<'a> {
    None,
    Token(&'a str),
    /// An `authorization` header that is not `Bearer <token>`.
    Malformed,
}

/// One identity of the file, with how it proves itself.
#[derive(Debug)]
struct Entry {
    identity: Arc<Identity>,
    token: Option<TokenHash>,
    subject: Option<Subject>,
}

/// The server's identities: none (open) or those of the auth file.
pub struct Access {
    mode: Mode,
}

enum Mode {
    Open(Arc<Identity>),
    File(FileAccess),
}

struct FileAccess {
    path: PathBuf,
    defaults: Quotas,
    /// The identities now in force, replaced whole by a reload.
    current: RwLock<Arc<Vec<Entry>>>,
    /// What each identity uses, by name, kept across reloads.
    usage: Mutex<HashMap<IdentityName, Arc<Usage>>>,
}

/// What a reload found.
#[derive(Debug, PartialEq, Eq)]
pub struct Reloaded {
    pub identities: usize,
}

impl Access {
    /// A server without identities.
    pub fn open() -> Access {
        Access {
            mode: Mode::Open(Identity::anonymous()),
        }
    }

    /// The identities of the auth file at `path`; `defaults` are the
    /// server's quotas, which the file may override per identity.
    pub fn load(path: &Path, defaults: Quotas) -> Result<Access, Error> {
        defaults
            .check()
            .map_err(|e| Error::Unavailable(format!("the default identity quotas: {e}")))?;
        let file = FileAccess {
            path: path.to_owned(),
            defaults,
            current: RwLock::new(Arc::new(Vec::new())),
            usage: Mutex::new(HashMap::new()),
        };
        let entries = file.read()?;
        if entries.is_empty() {
            tracing::warn!(path = %path.display(), "the auth file names no identity: every call but health is refused");
        }
        *file.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(entries);
        Ok(Access {
            mode: Mode::File(file),
        })
    }

    /// Whether calls must prove an identity (an auth file is in force).
    pub fn requires_credentials(&self) -> bool {
        matches!(self.mode, Mode::File(_))
    }

    /// Reads the auth file again. On success its identities replace the old
    /// ones for every later call; on failure nothing changes and the error
    /// says why.
    pub fn reload(&self) -> Result<Reloaded, Error> {
        match &self.mode {
            Mode::Open(_) => Ok(Reloaded { identities: 0 }),
            Mode::File(file) => {
                let entries = file.read()?;
                let n = entries.len();
                *file.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(entries);
                Ok(Reloaded { identities: n })
            }
        }
    }

    /// The identity a call proves with its bearer token (which decides when
    /// one is sent) or else its client certificate's subject; the anonymous
    /// identity on an open server.
    pub fn authenticate(
        &self,
        bearer: Bearer<'_>,
        subject: Option<&Subject>,
    ) -> Result<Arc<Identity>, Error> {
        let file = match &self.mode {
            Mode::Open(anonymous) => return Ok(Arc::clone(anonymous)),
            Mode::File(file) => file,
        };
        let entries = Arc::clone(&file.current.read().unwrap_or_else(|p| p.into_inner()));
        match bearer {
            Bearer::Malformed => Err(Error::Unauthenticated(
                "the authorization header is not `Bearer <token>`".into(),
            )),
            Bearer::Token(token) => {
                let presented = TokenHash::of(token);
                // Every hash is compared, each in constant time: how long
                // this takes does not tell which (if any) matched.
                let mut found = None;
                for e in entries.iter() {
                    if let Some(t) = &e.token {
                        if t.matches(&presented) {
                            found = Some(Arc::clone(&e.identity));
                        }
                    }
                }
                found.ok_or_else(|| {
                    Error::Unauthenticated(
                        "the bearer token names no identity of this server (mistyped, or revoked)"
                            .into(),
                    )
                })
            }
            Bearer::None => match subject {
                Some(s) => entries
                    .iter()
                    .find(|e| e.subject.as_ref() == Some(s))
                    .map(|e| Arc::clone(&e.identity))
                    .ok_or_else(|| {
                        Error::Unauthenticated(format!(
                            "the client certificate ({s}) names no identity of this server"
                        ))
                    }),
                None => Err(Error::Unauthenticated(
                    "this server requires credentials: send `authorization: Bearer <token>`, \
                     or connect with the client certificate of an identity"
                        .into(),
                )),
            },
        }
    }
}

impl FileAccess {
    fn read(&self) -> Result<Vec<Entry>, Error> {
        let path = self.path.display();
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| Error::Unavailable(format!("cannot read the auth file {path}: {e}")))?;
        let defined = file::parse(&text, &self.defaults)
            .map_err(|e| Error::Unavailable(format!("the auth file {path} is not valid: {e}")))?;
        let mut usage = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        // Forget the use of identities gone from the file once nothing
        // holds it any more.
        usage.retain(|name, u| Arc::strong_count(u) > 1 || defined.iter().any(|d| d.name == *name));
        Ok(defined
            .into_iter()
            .map(|d| {
                let u = Arc::clone(usage.entry(d.name.clone()).or_default());
                let (token, subject) = (d.token, d.subject.clone());
                Entry {
                    identity: Arc::new(Identity::defined(d, u)),
                    token,
                    subject,
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("auth.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    fn identity(name: &str, token: &str, scopes: &str) -> String {
        format!(
            "[[identity]]\nname = \"{name}\"\ntoken_sha256 = \"{}\"\nscopes = [{scopes}]\n",
            TokenHash::of(token).to_hex()
        )
    }

    #[test]
    fn tokens_and_subjects_name_identities_and_a_reload_revokes() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = ("a".repeat(40), "b".repeat(40));
        let text = format!(
            "{}\n{}\n[[identity]]\nname = \"cert\"\ncert_subject = \"CN=loader\"\nscopes = [\"read\"]\n",
            identity("alice", &a, "\"read\""),
            identity("bob", &b, "\"read\"")
        );
        let path = write(dir.path(), &text);
        let access = Access::load(&path, Quotas::default()).unwrap();
        assert!(access.requires_credentials());
        let who = |bearer, subject: Option<&Subject>| {
            access
                .authenticate(bearer, subject)
                .map(|i| i.label().to_owned())
        };
        assert_eq!(who(Bearer::Token(&a), None).unwrap(), "alice");
        assert_eq!(who(Bearer::Token(&b), None).unwrap(), "bob");
        let loader = Subject::parse("CN=loader").unwrap();
        assert_eq!(who(Bearer::None, Some(&loader)).unwrap(), "cert");
        // A token decides, even beside a known certificate.
        assert!(who(Bearer::Token("nope"), Some(&loader)).is_err());
        assert!(who(Bearer::Malformed, Some(&loader)).is_err());
        assert!(who(Bearer::None, None).is_err());
        let other = Subject::parse("CN=other").unwrap();
        assert!(who(Bearer::None, Some(&other)).is_err());

        // Bob is revoked; a broken file keeps what there is.
        write(dir.path(), &identity("alice", &a, "\"read\""));
        assert_eq!(access.reload().unwrap(), Reloaded { identities: 1 });
        assert!(who(Bearer::Token(&b), None).is_err());
        write(dir.path(), "[[identity]\n");
        let e = access.reload().unwrap_err().to_string();
        assert!(e.contains("auth.toml is not valid"), "{e}");
        assert_eq!(who(Bearer::Token(&a), None).unwrap(), "alice");
    }

    #[test]
    fn quota_use_survives_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let a = "a".repeat(40);
        let text = format!(
            "{}quota = {{ query_streams = 1 }}\n",
            identity("alice", &a, "\"read\"")
        );
        let path = write(dir.path(), &text);
        let access = Access::load(&path, Quotas::default()).unwrap();
        let alice = access.authenticate(Bearer::Token(&a), None).unwrap();
        let held = alice.query_stream().unwrap();
        assert!(held.is_some());
        access.reload().unwrap();
        let again = access.authenticate(Bearer::Token(&a), None).unwrap();
        let e = again.query_stream().unwrap_err();
        assert!(
            matches!(
                e,
                Error::QuotaExceeded {
                    retry_after: Some(_),
                    ..
                }
            ),
            "{e}"
        );
        drop(held);
        assert!(again.query_stream().unwrap().is_some());
    }

    #[test]
    fn the_anonymous_caller_of_an_open_server_may_do_everything() {
        let access = Access::open();
        assert!(!access.requires_credentials());
        let anyone = access.authenticate(Bearer::None, None).unwrap();
        assert!(Scope::ALL.iter().all(|s| anyone.has(*s)));
        assert!(anyone.may_write(&FeedName::parse("any").unwrap()));
        assert!(anyone.query_stream().unwrap().is_none(), "no quota");
        assert!(anyone.charge_append(u64::MAX / 2, u64::MAX / 2).is_ok());
        assert_eq!(anyone.label(), "anonymous");
    }
}
