//! The portable SQL surface (`store::sql::db`) on the synchronous `postgres` client. `?N`
//! placeholders become `$N`; statements are prepared once per connection and kept by their text.
//! Parameters adapt to the type PostgreSQL inferred for them (an integer bound where it expects
//! INT4 is sent as INT4), so the shared statements need no casts for plain comparisons.

use std::cell::RefCell;
use std::collections::HashMap;
use std::error::Error;

use bytes::BytesMut;
use postgres::types::{IsNull, Type, to_sql_checked};

use crate::store::StoreError;
use crate::store::sql::db::{Result, Row as AnyRow, ToSql, Value, ValueRef};

pub type Row = postgres::Row;
pub type Statement = postgres::Statement;

/// One client with its statement cache. Transactions are driven by statements (`BEGIN`,
/// `SAVEPOINT`, `COMMIT`), as on SQLite, so the same writer loop serves both.
pub struct Conn {
    client: RefCell<postgres::Client>,
    statements: RefCell<HashMap<String, postgres::Statement>>,
}

impl Conn {
    pub fn new(client: postgres::Client) -> Conn {
        Conn { client: RefCell::new(client), statements: RefCell::new(HashMap::new()) }
    }

    /// Whether the connection is gone (the server restarted, a failover, a network cut).
    pub fn is_closed(&self) -> bool {
        self.client.borrow().is_closed()
    }

    /// Replace a lost connection; prepared statements belonged to it.
    pub fn replace(&self, client: postgres::Client) {
        *self.client.borrow_mut() = client;
        self.statements.borrow_mut().clear();
    }

    /// The client itself, for what the portable surface does not cover (bulk inserts, LISTEN).
    pub fn client(&self) -> std::cell::RefMut<'_, postgres::Client> {
        self.client.borrow_mut()
    }

    /// `sql` prepared once on this connection (kept by its text), for the client itself.
    pub fn statement(&self, sql: &str) -> Result<Statement> {
        if let Some(statement) = self.statements.borrow().get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.borrow_mut().prepare(&placeholders(sql))?;
        self.statements.borrow_mut().insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }
}

impl From<postgres::Error> for StoreError {
    fn from(err: postgres::Error) -> Self {
        let lost = err.code().is_some_and(|code| {
            // admin_shutdown, crash_shutdown, cannot_connect_now, or a connection exception.
            ["57P01", "57P02", "57P03"].contains(&code.code()) || code.code().starts_with("08")
        });
        if err.is_closed() || lost {
            // The server restarted, failed over or the network cut: a retry gets a new connection.
            return StoreError::Unavailable { reason: "the database connection was lost", retry_after_secs: Some(1) };
        }
        StoreError::Backend(match err.as_db_error() {
            Some(db) => format!("PostgreSQL: {}: {}", db.code().code(), db.message()),
            None => format!("PostgreSQL: {err}"),
        })
    }
}

/// `?N` → `$N`, outside quoted literals.
fn placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quoted = false;
    for c in sql.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.push(c);
            }
            '?' if !quoted => out.push('$'),
            _ => out.push(c),
        }
    }
    out
}

/// PostgreSQL's text cannot hold NUL (SQLite's can); a payload string may carry one (the log keeps
/// it, JSON-escaped), so projection columns get U+FFFD in its place, the same way on every replay.
pub fn without_nul(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') { text.replace('\0', "\u{fffd}").into() } else { text.into() }
}

/// A portable value, sent as the type PostgreSQL expects for its placeholder.
#[derive(Debug)]
struct Param<'a>(Value<'a>);

impl postgres::types::ToSql for Param<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> std::result::Result<IsNull, Box<dyn Error + Sync + Send>> {
        match self.0 {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) => match *ty {
                Type::INT8 => postgres::types::ToSql::to_sql(&i, ty, out),
                Type::INT4 => postgres::types::ToSql::to_sql(&i32::try_from(i)?, ty, out),
                Type::INT2 => postgres::types::ToSql::to_sql(&i16::try_from(i)?, ty, out),
                Type::BOOL => postgres::types::ToSql::to_sql(&(i != 0), ty, out),
                Type::FLOAT8 => postgres::types::ToSql::to_sql(&(i as f64), ty, out),
                _ => Err(format!("an integer cannot be sent as {ty}").into()),
            },
            Value::Real(f) => match *ty {
                Type::FLOAT8 => postgres::types::ToSql::to_sql(&f, ty, out),
                Type::FLOAT4 => postgres::types::ToSql::to_sql(&(f as f32), ty, out),
                _ => Err(format!("a number cannot be sent as {ty}").into()),
            },
            Value::Text(text) => postgres::types::ToSql::to_sql(&without_nul(text).as_ref(), ty, out),
            Value::Blob(bytes) => postgres::types::ToSql::to_sql(&bytes, ty, out),
            Value::OutOfRange => Err("an unsigned integer past i64::MAX".into()),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn bind<'a>(params: &'a [&'a dyn ToSql]) -> Vec<Param<'a>> {
    params.iter().map(|p| Param(p.to_sql())).collect()
}

fn refs<'a>(params: &'a [Param<'a>]) -> Vec<&'a (dyn postgres::types::ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn postgres::types::ToSql + Sync)).collect()
}

pub fn statement(conn: &Conn, sql: &str) -> Result<Statement> {
    conn.statement(sql)
}

pub fn execute(conn: &Conn, sql: &str, params: &[&dyn ToSql]) -> Result<usize> {
    execute_prepared(conn, &conn.statement(sql)?, params)
}

pub fn execute_prepared(conn: &Conn, statement: &Statement, params: &[&dyn ToSql]) -> Result<usize> {
    let bound = bind(params);
    let changed = conn.client.borrow_mut().execute(statement, &refs(&bound))?;
    usize::try_from(changed).map_err(|_| StoreError::Backend("row count beyond usize".into()))
}

pub fn batch(conn: &Conn, sql: &str) -> Result<()> {
    Ok(conn.client.borrow_mut().batch_execute(sql)?)
}

pub fn for_each(
    conn: &Conn,
    sql: &str,
    params: &[&dyn ToSql],
    visit: &mut dyn FnMut(&AnyRow<'_>) -> Result<bool>,
) -> Result<()> {
    let statement = conn.statement(sql)?;
    let bound = bind(params);
    let rows = conn.client.borrow_mut().query(&statement, &refs(&bound))?;
    for row in &rows {
        if !visit(&AnyRow::Postgres(row))? {
            break;
        }
    }
    Ok(())
}

pub fn value(row: &Row, index: usize) -> Result<ValueRef<'_>> {
    let column =
        row.columns().get(index).ok_or_else(|| StoreError::Backend(format!("no column {index} in the answer")))?;
    let int = |v: Option<i64>| v.map_or(ValueRef::Null, ValueRef::Int);
    Ok(match *column.type_() {
        Type::INT8 => int(row.try_get::<_, Option<i64>>(index)?),
        Type::INT4 => int(row.try_get::<_, Option<i32>>(index)?.map(i64::from)),
        Type::INT2 => int(row.try_get::<_, Option<i16>>(index)?.map(i64::from)),
        Type::BOOL => int(row.try_get::<_, Option<bool>>(index)?.map(i64::from)),
        Type::FLOAT8 => row.try_get::<_, Option<f64>>(index)?.map_or(ValueRef::Null, ValueRef::Real),
        Type::FLOAT4 => row.try_get::<_, Option<f32>>(index)?.map_or(ValueRef::Null, |f| ValueRef::Real(f64::from(f))),
        Type::BYTEA => row.try_get::<_, Option<&[u8]>>(index)?.map_or(ValueRef::Null, ValueRef::Blob),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
            row.try_get::<_, Option<&str>>(index)?.map_or(ValueRef::Null, ValueRef::Text)
        }
        ref other => {
            return Err(StoreError::Backend(format!(
                "column {index} ({}) has type {other}, which the portable surface does not read: cast it",
                column.name()
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn placeholders_are_numbered_for_postgres_outside_literals() {
        assert_eq!(
            super::placeholders("SELECT a FROM t WHERE b = ?1 AND c = '?2' AND d = ?12"),
            "SELECT a FROM t WHERE b = $1 AND c = '?2' AND d = $12"
        );
    }
}
