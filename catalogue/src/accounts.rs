//! Operator accounts and their console sessions.
//!
//! Passwords are kept as argon2id PHC strings (salted, the parameters inside). A login
//! makes a session: 32 random bytes the browser keeps in an `HttpOnly`, `SameSite=Strict`
//! (and, unless configured off, `Secure`) cookie; the database keeps only their SHA-256,
//! so its contents open no session. Each session has its CSRF token, which every form and
//! every mutating call made with the cookie must carry. Logins are limited per client
//! address and per account; a failed login takes as long whether or not the account
//! exists.

use std::net::IpAddr;
use std::time::Instant;

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use sha2::Digest;
use sqlx::Row;
use subtle::ConstantTimeEq;

use crate::{Catalogue, Error, text};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "jt_session";

/// An operator's account, as listed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OperatorAccount {
    /// Id.
    pub id: i64,
    /// Login name.
    pub name: String,
}

/// A logged-in operator.
#[derive(Debug, Clone)]
pub struct Session {
    /// The operator.
    pub operator: OperatorAccount,
    /// The CSRF token forms and mutating calls must carry.
    pub csrf: String,
}

/// Why a login failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// Wrong name or password (which of the two is not told).
    #[error("wrong name or password")]
    Wrong,
    /// Too many attempts from this address or for this account: wait a minute.
    #[error("too many login attempts; wait a minute")]
    TooMany,
    /// The database failed.
    #[error("the catalogue's database failed; try again")]
    Failed,
}

/// A new session: the cookie value for the browser, and its CSRF token.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// The cookie's value (shown once, to the browser).
    pub cookie: String,
    /// The session's CSRF token.
    pub csrf: String,
    /// Seconds until it expires.
    pub max_age_s: i64,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::fill(&mut b[..]);
    hex(&b)
}

fn session_hash(cookie: &str) -> String {
    hex(&sha2::Sha256::digest(cookie.as_bytes()))
}

/// Checks an operator name: 1-64 characters, letters, digits and `._-@`.
fn check_name(name: &str) -> Result<String, Error> {
    let n = text("name", name, 64, true, false)?;
    if !n
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
    {
        return Err(Error::Invalid(
            "name may hold letters, digits and . _ - @ only".into(),
        ));
    }
    Ok(n)
}

/// A PHC string of `password` (argon2id, a fresh salt).
pub fn hash_password(password: &str) -> Result<String, Error> {
    argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| Error::Invalid(format!("password: {e}")))
}

/// Whether `password` matches the PHC string `hash`.
pub fn verify_password(password: &str, hash: &str) -> bool {
    argon2::Argon2::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok()
}

/// A hash that matches no password, verified when the account does not exist so that a
/// wrong name costs as long as a wrong password.
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password(&random_hex(16)).unwrap_or_default())
}

impl Catalogue {
    /// Creates an operator account (`jiangtang operator add NAME`), or sets the password of
    /// an existing one when `replace`. Passwords need at least 10 characters.
    pub async fn add_operator(
        &self,
        name: &str,
        password: &str,
        replace: bool,
    ) -> Result<OperatorAccount, Error> {
        let name = check_name(name)?;
        if password.chars().count() < 10 {
            return Err(Error::Invalid(
                "the password needs at least 10 characters".into(),
            ));
        }
        if password.chars().count() > 1024 {
            return Err(Error::Invalid("the password is too long".into()));
        }
        let pw = password.to_string();
        let hash = tokio::task::spawn_blocking(move || hash_password(&pw))
            .await
            .map_err(|_| Error::Invalid("hashing failed".into()))??;
        let now = self.now();
        let sql = if replace {
            "INSERT INTO operators (name, password_hash, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET password_hash = excluded.password_hash, \
             disabled_at = NULL RETURNING id"
        } else {
            "INSERT INTO operators (name, password_hash, created_at) VALUES ($1, $2, $3) \
             RETURNING id"
        };
        let id: i64 = sqlx::query_scalar(sql)
            .bind(name.clone())
            .bind(hash)
            .bind(now)
            .fetch_one(&self.db().write)
            .await
            .map_err(|e| {
                if crate::db::is_unique_violation(&e) {
                    Error::Conflict(format!("operator {name:?} exists"))
                } else {
                    Error::Db(e)
                }
            })?;
        if replace {
            // A new password ends the old sessions.
            sqlx::query("DELETE FROM operator_sessions WHERE operator_id = $1")
                .bind(id)
                .execute(&self.db().write)
                .await?;
        }
        self.inner
            .has_operators
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(OperatorAccount { id, name })
    }

    /// The operator accounts.
    pub async fn operators(&self) -> Result<Vec<OperatorAccount>, Error> {
        let rows =
            sqlx::query("SELECT id, name FROM operators WHERE disabled_at IS NULL ORDER BY name")
                .fetch_all(&self.db().read)
                .await?;
        rows.iter()
            .map(|r| {
                Ok(OperatorAccount {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                })
            })
            .collect()
    }

    /// Whether any operator account exists (then loopback clients get no operator rights
    /// without logging in). Cached once true.
    pub async fn has_operators(&self) -> Result<bool, Error> {
        use std::sync::atomic::Ordering;
        if self.inner.has_operators.load(Ordering::Relaxed) {
            return Ok(true);
        }
        let any: Option<i64> =
            sqlx::query_scalar("SELECT id FROM operators WHERE disabled_at IS NULL LIMIT 1")
                .fetch_optional(&self.db().read)
                .await?;
        if any.is_some() {
            self.inner.has_operators.store(true, Ordering::Relaxed);
        }
        Ok(any.is_some())
    }

    /// Logs an operator in from `ip`: a new session, or why not.
    pub async fn login(
        &self,
        name: &str,
        password: &str,
        ip: IpAddr,
    ) -> Result<NewSession, LoginError> {
        let now = Instant::now();
        let account = name.trim().to_lowercase();
        if !self.inner.login_by_address.take(ip, now)
            || !self.inner.login_by_account.take(account, now)
        {
            tracing::warn!(%ip, "console login refused: too many attempts");
            return Err(LoginError::TooMany);
        }
        let row = sqlx::query(
            "SELECT id, name, password_hash FROM operators WHERE name = $1 AND disabled_at IS NULL",
        )
        .bind(name.trim().to_string())
        .fetch_optional(&self.db().read)
        .await
        .map_err(|e| {
            tracing::error!("catalogue: {e}");
            LoginError::Failed
        })?;
        let found = match &row {
            Some(r) => Some((
                r.try_get::<i64, _>("id").map_err(|_| LoginError::Failed)?,
                r.try_get::<String, _>("name")
                    .map_err(|_| LoginError::Failed)?,
                r.try_get::<String, _>("password_hash")
                    .map_err(|_| LoginError::Failed)?,
            )),
            None => None,
        };
        let hash = found
            .as_ref()
            .map(|f| f.2.clone())
            .unwrap_or_else(|| decoy_hash().to_string());
        let pw = password.to_string();
        let ok = tokio::task::spawn_blocking(move || verify_password(&pw, &hash))
            .await
            .unwrap_or(false);
        let Some((id, name, _)) = found.filter(|_| ok) else {
            tracing::info!(%ip, "console login failed");
            return Err(LoginError::Wrong);
        };
        let cookie = random_hex(32);
        let csrf = random_hex(32);
        let max_age_s = self.settings().session_s;
        let t = self.now();
        sqlx::query(
            "INSERT INTO operator_sessions (id_hash, operator_id, csrf, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(session_hash(&cookie))
        .bind(id)
        .bind(csrf.clone())
        .bind(t)
        .bind(t + max_age_s)
        .execute(&self.db().write)
        .await
        .map_err(|e| {
            tracing::error!("catalogue: {e}");
            LoginError::Failed
        })?;
        // Old sessions go now and then.
        let _ = sqlx::query("DELETE FROM operator_sessions WHERE expires_at < $1")
            .bind(t)
            .execute(&self.db().write)
            .await;
        tracing::info!(operator = %name, %ip, "console login");
        Ok(NewSession {
            cookie,
            csrf,
            max_age_s,
        })
    }

    /// The session a cookie value stands for, if it is current.
    pub async fn session(&self, cookie: &str) -> Result<Option<Session>, Error> {
        if cookie.len() != 64 || !cookie.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let row = sqlx::query(
            "SELECT o.id, o.name, s.csrf FROM operator_sessions s \
             JOIN operators o ON o.id = s.operator_id \
             WHERE s.id_hash = $1 AND s.expires_at > $2 AND o.disabled_at IS NULL",
        )
        .bind(session_hash(cookie))
        .bind(self.now())
        .fetch_optional(&self.db().read)
        .await?;
        row.map(|r| {
            Ok(Session {
                operator: OperatorAccount {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                },
                csrf: r.try_get("csrf")?,
            })
        })
        .transpose()
    }

    /// Ends the session of a cookie value.
    pub async fn logout(&self, cookie: &str) -> Result<(), Error> {
        sqlx::query("DELETE FROM operator_sessions WHERE id_hash = $1")
            .bind(session_hash(cookie))
            .execute(&self.db().write)
            .await?;
        Ok(())
    }
}

/// Whether a CSRF token presented matches the session's (constant time).
pub fn csrf_matches(session: &Session, presented: &str) -> bool {
    !presented.is_empty() && bool::from(session.csrf.as_bytes().ct_eq(presented.as_bytes()))
}

/// The session cookie's value in a `Cookie` header.
pub fn session_cookie(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.to_string())
}

/// The `Set-Cookie` value that gives a browser its session.
pub fn set_cookie(s: &NewSession, secure: bool) -> String {
    format!(
        "{SESSION_COOKIE}={}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{}",
        s.cookie,
        s.max_age_s,
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that removes it.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("correct horse batter", &h));
        assert_ne!(h, hash_password("correct horse battery").unwrap(), "salted");
    }

    #[test]
    fn cookies() {
        let mut h = axum::http::HeaderMap::new();
        h.insert(
            axum::http::header::COOKIE,
            "a=1; jt_session=abc; b=2".parse().unwrap(),
        );
        assert_eq!(session_cookie(&h).as_deref(), Some("abc"));
        let s = NewSession {
            cookie: "x".into(),
            csrf: "y".into(),
            max_age_s: 60,
        };
        let c = set_cookie(&s, true);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Secure"));
        assert!(!set_cookie(&s, false).contains("Secure"));
    }
}
