//! The workspace's users and their logged-in sessions. Passwords arrive
//! here already hashed (argon2, by the workspace); session tokens arrive
//! as their SHA-256, so the table alone lets nobody in.

use super::text::StoredText;
use super::{Result, Store, flag};

/// What a user may do in the workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Sees everything and decides.
    Editor,
    /// Sees everything, changes nothing.
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        self.as_text()
    }

    pub fn parse(text: &str) -> Option<Role> {
        Self::ALL.iter().copied().find(|r| r.as_text() == text)
    }

    pub fn zh(self) -> &'static str {
        match self {
            Role::Editor => "编辑",
            Role::Viewer => "只读",
        }
    }
}

impl StoredText for Role {
    const ALL: &'static [Self] = &[Self::Editor, Self::Viewer];

    fn as_text(self) -> &'static str {
        match self {
            Self::Editor => "editor",
            Self::Viewer => "viewer",
        }
    }
}

/// A user of the workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub password_hash: String,
    pub role: Role,
    pub disabled: bool,
    pub created_at: i64,
}

#[derive(sqlx::FromRow)]
struct UserRow {
    name: String,
    password_hash: String,
    role: String,
    disabled: i64,
    created_at: i64,
}

impl UserRow {
    fn decode(self) -> Result<User> {
        Ok(User {
            role: Role::decode(&self.role, "app_user", &self.name, "role")?,
            disabled: flag(self.disabled, "app_user", self.name.as_str(), "disabled")?,
            name: self.name,
            password_hash: self.password_hash,
            created_at: self.created_at,
        })
    }
}

/// A live session with its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user: String,
    pub role: Role,
    pub csrf: String,
    pub expires_at: i64,
}

#[derive(sqlx::FromRow)]
struct SessionRow {
    user_name: String,
    role: String,
    csrf: String,
    expires_at: i64,
}

impl Store {
    /// Adds a user, or replaces the password and role of an existing one
    /// (enabling it again): `true` when the user is new.
    pub async fn put_user(&self, name: &str, hash: &str, role: Role, now: i64) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let existed: Option<String> =
            sqlx::query_scalar("SELECT name FROM app_user WHERE name = $1")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
        if existed.is_some() {
            sqlx::query(
                "UPDATE app_user SET password_hash = $1, role = $2, disabled = 0 WHERE name = $3",
            )
            .bind(hash)
            .bind(role.as_text())
            .bind(name)
            .execute(&mut *tx)
            .await?;
            // A new password ends the sessions opened with the old one.
            sqlx::query("DELETE FROM web_session WHERE user_name = $1")
                .bind(name)
                .execute(&mut *tx)
                .await?;
        } else {
            sqlx::query(
                "INSERT INTO app_user (name, password_hash, role, disabled, created_at)
                 VALUES ($1, $2, $3, 0, $4)",
            )
            .bind(name)
            .bind(hash)
            .bind(role.as_text())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(existed.is_none())
    }

    pub async fn user(&self, name: &str) -> Result<Option<User>> {
        let row: Option<UserRow> = sqlx::query_as(
            "SELECT name, password_hash, role, disabled, created_at FROM app_user WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.map(UserRow::decode).transpose()
    }

    pub async fn users(&self) -> Result<Vec<User>> {
        let rows: Vec<UserRow> = sqlx::query_as(
            "SELECT name, password_hash, role, disabled, created_at FROM app_user ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(UserRow::decode).collect()
    }

    /// Disables a user and ends its sessions: `false` when there is no
    /// such user.
    pub async fn disable_user(&self, name: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let changed = sqlx::query("UPDATE app_user SET disabled = 1 WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM web_session WHERE user_name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(changed > 0)
    }

    pub async fn create_session(
        &self,
        token_hash: &str,
        user: &str,
        csrf: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO web_session (token_hash, user_name, csrf, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token_hash)
        .bind(user)
        .bind(csrf)
        .bind(now)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The session of `token_hash` if it has not expired and its user is
    /// still enabled.
    pub async fn session(&self, token_hash: &str, now: i64) -> Result<Option<Session>> {
        let row: Option<SessionRow> = sqlx::query_as(
            "SELECT s.user_name, u.role, s.csrf, s.expires_at
             FROM web_session s JOIN app_user u ON u.name = s.user_name
             WHERE s.token_hash = $1 AND s.expires_at > $2 AND u.disabled = 0",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(Session {
                role: Role::decode(&r.role, "app_user", &r.user_name, "role")?,
                user: r.user_name,
                csrf: r.csrf,
                expires_at: r.expires_at,
            })
        })
        .transpose()
    }

    /// Ends one session, and drops every expired one.
    pub async fn end_session(&self, token_hash: &str, now: i64) -> Result<()> {
        sqlx::query("DELETE FROM web_session WHERE token_hash = $1 OR expires_at <= $2")
            .bind(token_hash)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
