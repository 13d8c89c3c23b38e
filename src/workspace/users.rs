//! The workspace's users: passwords hashed with argon2 (RustCrypto's
//! `argon2`, PHC strings with their own salt and parameters), checked in
//! constant time by the crate.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use crate::store::{Role, Store, StoreError};

/// The shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("用户名只能由字母、数字、点、下划线和连字符组成（1 至 64 个字符）：{0}")]
    BadName(String),
    #[error("密码至少需要 {MIN_PASSWORD_CHARS} 个字符")]
    ShortPassword,
    #[error("无法计算密码摘要：{0}")]
    Hash(String),
    #[error("没有用户“{0}”")]
    Unknown(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An argon2id PHC string of `password` with a fresh random salt.
pub fn hash_password(password: &str) -> Result<String, UserError> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
        .map_err(|e| UserError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| UserError::Hash(e.to_string()))
}

/// Whether `password` matches the stored PHC string (a string that does
/// not decode matches nothing).
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Adds a user, or gives an existing one a new password and role:
/// `true` when the user is new.
pub async fn put(
    store: &Store,
    name: &str,
    password: &str,
    role: Role,
    now: i64,
) -> Result<bool, UserError> {
    if !valid_name(name) {
        return Err(UserError::BadName(name.to_string()));
    }
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(UserError::ShortPassword);
    }
    let hash = hash_password(password)?;
    Ok(store.put_user(name, &hash, role, now).await?)
}

/// Disables a user and ends its sessions.
pub async fn disable(store: &Store, name: &str) -> Result<(), UserError> {
    if store.disable_user(name).await? {
        Ok(())
    } else {
        Err(UserError::Unknown(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_against_their_hash_only() {
        let phc = hash_password("正确的密码 horse").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify_password("正确的密码 horse", &phc));
        assert!(!verify_password("正确的密码 horsE", &phc));
        assert!(!verify_password("x", "not a phc string"));
        assert_ne!(phc, hash_password("正确的密码 horse").unwrap(), "salted");
    }

    #[test]
    fn user_names_are_plain() {
        assert!(valid_name("li.ming_2"));
        assert!(!valid_name(""));
        assert!(!valid_name("李明"));
        assert!(!valid_name("a b"));
    }
}
