//! A database of its own on a PostgreSQL server, migrated on creation and dropped with the value:
//! each test and benchmark run gets one.

use crate::store::StoreError;

pub struct ScratchDatabase {
    admin_url: String,
    name: String,
    /// Where the database is: the admin URL with its database name replaced.
    pub url: String,
}

impl ScratchDatabase {
    /// Create and migrate a fresh database on the server `admin_url` (a `postgres://` URL naming
    /// an existing database to connect to first, e.g. `postgres`).
    pub fn create(admin_url: &str) -> Result<ScratchDatabase, StoreError> {
        Self::create_with_prefix(admin_url, "callstream_scratch")
    }

    /// As `create`, the name starting with `prefix` (lowercase letters, digits, `_`), so that
    /// `drop_all` finds every database of one run.
    pub fn create_with_prefix(admin_url: &str, prefix: &str) -> Result<ScratchDatabase, StoreError> {
        super::off_async(|| Self::create_here(admin_url, prefix))
    }

    /// Drop every database whose name starts with `prefix`; answers how many.
    pub fn drop_all(admin_url: &str, prefix: &str) -> Result<usize, StoreError> {
        super::off_async(|| {
            let mut admin = super::connect(admin_url)?;
            let names: Vec<String> = admin
                .query("SELECT datname FROM pg_database WHERE starts_with(datname, $1)", &[&prefix])?
                .iter()
                .map(|row| row.get(0))
                .collect();
            for name in &names {
                admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))?;
            }
            Ok(names.len())
        })
    }

    fn create_here(admin_url: &str, prefix: &str) -> Result<ScratchDatabase, StoreError> {
        if !prefix.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
            return Err(StoreError::Backend(format!("`{prefix}` is not a database name prefix")));
        }
        let scheme_end = admin_url.find("://").map(|i| i + 3);
        let slash = admin_url.rfind('/').filter(|&slash| scheme_end.is_some_and(|start| slash >= start));
        let Some(slash) = slash else {
            return Err(StoreError::Backend(format!(
                "{} is not a postgres:// URL with a database name",
                super::redact(admin_url)
            )));
        };
        let mut admin = super::connect(admin_url)?;
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        admin.batch_execute(&format!("CREATE DATABASE {name}"))?;
        let database =
            ScratchDatabase { admin_url: admin_url.to_owned(), url: format!("{}/{name}", &admin_url[..slash]), name };
        super::schema::migrate(&mut database.connect()?)?;
        Ok(database)
    }

    pub fn connect(&self) -> Result<postgres::Client, StoreError> {
        super::connect(&self.url)
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        super::off_async(|| {
            if let Ok(mut admin) = super::connect(&self.admin_url) {
                let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
            }
        });
    }
}
