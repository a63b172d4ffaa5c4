//! Who is calling and what they may do: bearer tokens mapped to roles,
//! compared by SHA-256 in constant time; with mutual TLS, the client
//! certificate's fingerprint names the caller too. Tokens are never logged.

use super::config::{ConfigError, Role, TokenEntry};
use sha2::{Digest, Sha256};
use tonic::{Request, Status};

/// The identity of a caller, for logs and the audit trail.
#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    /// Token name, `anonymous` when authentication is off.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// `sha256:` fingerprint prefix of the client certificate (mTLS).
    pub cert: Option<String>,
    /// Remote address.
    pub peer: Option<String>,
    /// The galleries it may use (None: every one).
    pub galleries: Option<Vec<String>>,
}

impl Caller {
    /// Whether the caller may use `gallery`.
    pub fn may(&self, gallery: &str) -> bool {
        self.galleries.as_ref().is_none_or(|g| g.iter().any(|x| x == gallery))
    }

    /// PERMISSION_DENIED unless the caller may use `gallery`.
    pub fn check_gallery(&self, gallery: &str) -> Result<(), Status> {
        if self.may(gallery) {
            Ok(())
        } else {
            Err(Status::permission_denied(format!("'{}' may not use gallery '{gallery}'", self.name)))
        }
    }

    /// One line naming the caller.
    pub fn describe(&self) -> String {
        let mut s = self.name.clone();
        if let Some(c) = &self.cert {
            s.push_str(&format!(" cert={c}"));
        }
        if let Some(p) = &self.peer {
            s.push_str(&format!(" peer={p}"));
        }
        s
    }
}

/// A refused call: the status to answer and who the caller was, as far as
/// it is known (a valid token with too small a role keeps its name, so the
/// audit trail says who tried).
#[derive(Debug, Clone)]
pub struct Denied {
    /// UNAUTHENTICATED or PERMISSION_DENIED.
    pub status: Status,
    /// One line naming the caller: token name (when the token was valid),
    /// certificate fingerprint and peer address.
    pub who: String,
}

/// The token table.
#[derive(Clone)]
pub struct Auth {
    tokens: Vec<Token>,
}

/// A token's SHA-256, its holder's name, role and galleries (none: all).
type Token = ([u8; 32], String, Role, Option<Vec<String>>);

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("tokens", &self.tokens.len()).finish()
    }
}

/// SHA-256 of `s`, as bytes.
pub fn sha256(s: &[u8]) -> [u8; 32] {
    Sha256::digest(s).into()
}

/// Lower-case hex of `b`.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if s.len() != 64 {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The token of an `authorization` value: the scheme `Bearer` in any case,
/// one or more spaces, the token.
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim()).filter(|t| !t.is_empty())
}

/// Constant-time equality of two digests.
pub fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Auth {
    /// From the configured tokens (plain ones are hashed here).
    pub fn new(entries: &[TokenEntry]) -> Result<Auth, ConfigError> {
        let mut tokens = Vec::with_capacity(entries.len());
        for e in entries {
            let h = match (&e.token, &e.token_sha256) {
                (Some(t), None) => sha256(t.as_bytes()),
                (None, Some(h)) => unhex(h).ok_or_else(|| {
                    ConfigError::Invalid(format!("token '{}': token_sha256 is not 64 hex digits", e.name))
                })?,
                _ => {
                    return Err(ConfigError::Invalid(format!(
                        "token '{}' needs one of token and token_sha256",
                        e.name
                    )));
                }
            };
            let scope = (!e.galleries.is_empty()).then(|| e.galleries.clone());
            tokens.push((h, e.name.clone(), e.role, scope));
        }
        Ok(Auth { tokens })
    }

    /// Whether any token is configured (else every caller is an anonymous admin).
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Checks the request's bearer token for role `need`. The scheme name
    /// is case-insensitive (RFC 7235 section 2.1): `Bearer`, `bearer`, `BEARER`.
    pub fn authorize<T>(&self, req: &Request<T>, need: Role) -> Result<Caller, Denied> {
        let peer = req.remote_addr().map(|a| a.to_string());
        let cert =
            req.peer_certs().and_then(|c| c.first().map(|c| format!("sha256:{}", &hex(&sha256(c.as_ref()))[..16])));
        if !self.enabled() {
            return Ok(Caller { name: "anonymous".into(), role: Role::Admin, cert, peer, galleries: None });
        }
        let unauthenticated = |msg: &str| {
            let who = Caller {
                name: "unauthenticated".into(),
                role: Role::Search,
                cert: cert.clone(),
                peer: peer.clone(),
                galleries: Some(Vec::new()),
            };
            Denied { status: Status::unauthenticated(msg), who: who.describe() }
        };
        let Some(value) = req.metadata().get("authorization") else {
            return Err(unauthenticated("missing bearer token: send metadata 'authorization: Bearer <token>'"));
        };
        let value = value.to_str().map_err(|_| unauthenticated("authorization metadata is not ASCII"))?;
        let token =
            bearer_token(value).ok_or_else(|| unauthenticated("authorization metadata must be 'Bearer <token>'"))?;
        let h = sha256(token.as_bytes());
        // Compare with every entry (no early exit on a match).
        let mut found: Option<(&str, Role, &Option<Vec<String>>)> = None;
        for (th, name, role, scope) in &self.tokens {
            if ct_eq(th, &h) {
                found = Some((name, *role, scope));
            }
        }
        let (name, role, scope) = found.ok_or_else(|| unauthenticated("invalid bearer token"))?;
        let caller = Caller { name: name.to_string(), role, cert, peer, galleries: scope.clone() };
        if !role.allows(need) {
            return Err(Denied {
                status: Status::permission_denied(format!("'{name}' has the {role:?} role; this call needs {need:?}")),
                who: caller.describe(),
            });
        }
        Ok(caller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, role: Role, token: &str) -> TokenEntry {
        TokenEntry { name: name.into(), role, token: Some(token.into()), token_sha256: None, galleries: vec![] }
    }

    #[test]
    fn tokens_map_to_roles() {
        let hashed = TokenEntry {
            name: "ops".into(),
            role: Role::Admin,
            token: None,
            token_sha256: Some(hex(&sha256(b"admin-token-0123456789"))),
            galleries: vec![],
        };
        let a = Auth::new(&[entry("station", Role::Search, "search-token-0123456789"), hashed]).unwrap();
        let with = |v: &str| {
            let mut r = Request::new(());
            r.metadata_mut().insert("authorization", v.parse().unwrap());
            r
        };
        let c = a.authorize(&with("Bearer search-token-0123456789"), Role::Search).unwrap();
        assert_eq!((c.name.as_str(), c.role), ("station", Role::Search));
        let e = a.authorize(&with("Bearer search-token-0123456789"), Role::Admin).unwrap_err();
        assert_eq!(e.status.code(), tonic::Code::PermissionDenied);
        assert!(e.status.message().contains("station") && !e.status.message().contains("search-token"));
        assert!(e.who.starts_with("station"), "a denied caller keeps its name: {}", e.who);
        assert_eq!(a.authorize(&with("Bearer admin-token-0123456789"), Role::Admin).unwrap().name, "ops");
        for scheme in ["bearer", "BEARER", "bEaReR"] {
            let c = a.authorize(&with(&format!("{scheme}  admin-token-0123456789")), Role::Admin).unwrap();
            assert_eq!(c.name, "ops", "{scheme}");
        }
        let code = |v: &str| a.authorize(&with(v), Role::Search).unwrap_err().status.code();
        assert_eq!(code("Bearer nope"), tonic::Code::Unauthenticated);
        assert_eq!(code("Basic x"), tonic::Code::Unauthenticated);
        assert_eq!(code("Bearer "), tonic::Code::Unauthenticated);
        assert_eq!(code("Bearersearch-token-0123456789"), tonic::Code::Unauthenticated);
        let e = a.authorize(&Request::new(()), Role::Search).unwrap_err();
        assert_eq!(e.status.code(), tonic::Code::Unauthenticated);
        assert!(e.who.starts_with("unauthenticated"));
        // Roles are kinds of call, not ranks: notify tokens only subscribe.
        let n = Auth::new(&[entry("agency", Role::Notify, "notify-token-0123456789")]).unwrap();
        assert!(n.authorize(&with("Bearer notify-token-0123456789"), Role::Notify).is_ok());
        assert!(n.authorize(&with("Bearer notify-token-0123456789"), Role::Search).is_err());
        assert!(a.authorize(&with("Bearer search-token-0123456789"), Role::Notify).is_err());
        assert!(a.authorize(&with("Bearer admin-token-0123456789"), Role::Notify).is_ok());
        // Gallery scopes.
        let mut e = entry("imm-ops", Role::Admin, "imm-admin-token-0123456789");
        e.galleries = vec!["immigration".into()];
        let s = Auth::new(&[e]).unwrap();
        let c = s.authorize(&with("Bearer imm-admin-token-0123456789"), Role::Admin).unwrap();
        assert!(c.may("immigration") && !c.may("criminal"));
        assert_eq!(c.check_gallery("criminal").unwrap_err().code(), tonic::Code::PermissionDenied);
        let open = Auth::new(&[]).unwrap();
        assert_eq!(open.authorize(&Request::new(()), Role::Admin).unwrap().name, "anonymous");
    }
}
